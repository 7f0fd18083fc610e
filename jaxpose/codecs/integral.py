"""Integral regression codec (Sun et al., "Integral Human Pose Regression").

The network emits, per joint, a volume of ``D`` depth bins over the ``H x W`` heatmap
grid. In jaxpose's channels-last layout the raw output is ``[B, H, W, J * D]`` with
channel ``j * D + d`` (joint-major, as in the original ``ResPoseNet``). Decoding is a
soft-argmax: a softmax over each joint's whole ``D * H * W`` volume, then the expected
voxel index along each axis.

Coordinate conventions (those of the original ``softmax_integral_tensor``):

* normalised coordinates: ``x = E[ix] / W - 0.5``, ``y = E[iy] / H - 0.5``,
  ``z = E[iz] / D - 0.5``, where ``ix`` etc. are integer voxel indices. There is no
  half-voxel offset, so a one-hot volume at voxel ``(iz, iy, ix)`` decodes to
  ``ix / W - 0.5`` (in ``[-0.5, 0.5)``).
* 2D models are the 3D path with ``D = 1``; their ``z`` is then the constant ``-0.5``.
* patch pixels (``joint_location_result`` of the normalised coordinates):
  ``u = (x + 0.5) * patch_width``, ``v = (y + 0.5) * patch_height`` and depth
  ``z * patch_width`` (depth is measured in patch-width units, root-relative, so it is
  *not* shifted back by 0.5).
* labels (``joint_location_label``, a training target that lives in
  ``jaxpose.data.targets`` and is re-exported here) are the inverse map:
  ``(u / patch_width - 0.5, v / patch_height - 0.5, depth / patch_width)``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxpose.data.targets import joint_location_label  # noqa: F401  (re-export)

Array = jax.Array


def _compute_dtype(dtype) -> jnp.dtype:
  """At least float32 for the softmax and the sums (bfloat16 would lose the expectation)."""
  return jnp.promote_types(dtype, jnp.float32)


def joint_volumes(raw: Array, num_joints: int, depth: int | None = None) -> Array:
  """Reshapes a channels-last integral output into per-joint volumes.

  Args:
    raw: ``[B, H, W, J * D]`` raw network output, channel ``j * D + d``.
    num_joints: ``J``; must divide the channel count.
    depth: ``D`` if known; checked against ``channels / J`` when given.

  Returns:
    ``[B, J, D, H, W]``, same dtype as ``raw``.

  Raises:
    ValueError: if ``raw`` is not rank 4 or its channels are not ``J * D``.
  """
  if raw.ndim != 4:
    raise ValueError(f"integral output must be [B, H, W, J*D], got shape {raw.shape}")
  if num_joints <= 0 or raw.shape[-1] % num_joints:
    raise ValueError(
        f"integral output has {raw.shape[-1]} channels, not a multiple of num_joints="
        f"{num_joints} (expected J*D channels, channel = j*D + d)")
  b, h, w, c = raw.shape
  if depth is not None and c != num_joints * depth:
    raise ValueError(
        f"integral output has {c} channels, expected num_joints * depth = "
        f"{num_joints} * {depth} = {num_joints * depth}")
  d = c // num_joints
  return raw.reshape(b, h, w, num_joints, d).transpose(0, 3, 4, 1, 2)


@jax.jit
def soft_argmax_volumes(volumes: Array) -> Array:
  """Soft-argmax of per-joint volumes in normalised coordinates.

  Args:
    volumes: ``[B, J, D, H, W]`` logits (any float dtype).

  Returns:
    ``[B, J, 3]`` with ``(x, y, z) = (E[ix]/W - 0.5, E[iy]/H - 0.5, E[iz]/D - 0.5)``,
    the expectation under a softmax over each joint's whole ``D*H*W`` volume; the dtype
    of ``volumes`` (computed in at least float32).
  """
  if volumes.ndim != 5:
    raise ValueError(f"volumes must be [B, J, D, H, W], got shape {volumes.shape}")
  b, j, d, h, w = volumes.shape
  dtype = _compute_dtype(volumes.dtype)
  logits = volumes.astype(dtype).reshape(b, j, d * h * w)
  prob = jax.nn.softmax(logits, axis=-1).reshape(b, j, d, h, w)

  def expected_index(marginal: Array, size: int) -> Array:
    return jnp.sum(marginal * jnp.arange(size, dtype=dtype), axis=-1)

  ex = expected_index(prob.sum(axis=(2, 3)), w)
  ey = expected_index(prob.sum(axis=(2, 4)), h)
  ez = expected_index(prob.sum(axis=(3, 4)), d)
  coords = jnp.stack([ex / w - 0.5, ey / h - 0.5, ez / d - 0.5], axis=-1)
  return coords.astype(volumes.dtype)


@functools.partial(jax.jit, static_argnames=("num_joints", "depth"))
def softmax_integral(raw: Array, num_joints: int, depth: int | None = None) -> Array:
  """Decodes a channels-last integral output to normalised joint coordinates.

  Equivalent of the original ``softmax_integral_tensor(preds, J, True, W, H, D)``, except
  that the result is ``[B, J, 3]`` rather than flattened to ``[B, J * 3]``.

  Args:
    raw: ``[B, H, W, J * D]`` raw output, channel ``j * D + d``.
    num_joints: ``J``.
    depth: ``D`` (1 for 2D models); optional, checked against the channel count.

  Returns:
    ``[B, J, 3]`` normalised ``(x, y, z)`` (see the module docstring), dtype of ``raw``.
  """
  return soft_argmax_volumes(joint_volumes(raw, num_joints, depth))


@jax.jit
def joint_location_result(coords: Array, patch_width: float, patch_height: float) -> Array:
  """Maps normalised soft-argmax coordinates to patch (network input) pixels.

  Equivalent of the original ``get_joint_location_result`` applied after
  ``softmax_integral`` (the original decodes inside and infers ``D = W``; here the
  decoding is ``softmax_integral``'s, with any ``D``).

  Args:
    coords: ``[..., J, 3]`` normalised ``(x, y, z)`` from ``softmax_integral``.
    patch_width: width of the network input patch in pixels.
    patch_height: height of the network input patch in pixels.

  Returns:
    ``[..., J, 4]``: ``u = (x + 0.5) * patch_width``, ``v = (y + 0.5) * patch_height``
    (pixels), depth ``z * patch_width`` (root-relative, in patch-pixel units) and a
    constant score 1 in the last column (the original's layout); dtype of ``coords``.
  """
  if coords.ndim < 2 or coords.shape[-1] != 3:
    raise ValueError(f"coords must be [..., J, 3] normalised (x, y, z), got shape {coords.shape}")
  dtype = _compute_dtype(coords.dtype)
  c = coords.astype(dtype)
  u = (c[..., 0] + 0.5) * patch_width
  v = (c[..., 1] + 0.5) * patch_height
  z = c[..., 2] * patch_width
  out = jnp.stack([u, v, z, jnp.ones_like(u)], axis=-1)
  return out.astype(coords.dtype)
