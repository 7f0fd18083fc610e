"""Heatmap + depth-map codec of the weakly-supervised 3D model (Zhou et al., pytorch-pose-hg-3d).

The network has two heads on the same ``H x W`` grid, channels-last in jaxpose:
``heatmaps: [B, H, W, J]`` (2D joint heatmaps) and ``depth: [B, H, W, J]`` (one depth map per
joint). A joint's depth is read from its depth map at the joint's 2D location.

Flat depth index convention (``flat_depth_index``): the original transposes the NCHW depth
output to NHWC and flattens each sample, so the depth of joint ``j`` at grid cell ``(x, y)``
sits at ``y * W * J + x * J + j``. jaxpose's depth maps are already ``[B, H, W, J]``, so that
index addresses ``depth.reshape(B, -1)`` directly.

Joint order is MPII's (16 joints, pelvis = 6).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array

#: Index of the pelvis in MPII joint order; ``get_preds_3d`` is relative to it.
MPII_PELVIS = 6


def flat_depth_index(x: Array, y: Array, joint: Array, width: int, num_joints: int) -> Array:
  """Flat index of ``depth[b, y, x, joint]`` in ``depth.reshape(B, -1)``.

  Works on numpy (data pipeline) and JAX integer arrays alike; the arguments broadcast.

  Args:
    x: integer grid column(s).
    y: integer grid row(s).
    joint: depth-map channel(s).
    width: ``W`` of the ``[B, H, W, J]`` depth maps.
    num_joints: ``J``, their channel count.

  Returns:
    ``y * W * J + x * J + joint`` (the original's ``reg_ind``).
  """
  return (y * width + x) * num_joints + joint


@jax.jit
def gather_depth(depth: Array, ind: Array) -> Array:
  """Reads depth values at flat indices (original ``_tranpose_and_gather_scalar``).

  Args:
    depth: ``[B, H, W, J]`` depth maps (channels-last).
    ind: ``[B, K]`` integer flat indices ``y * W * J + x * J + j`` into
      ``depth.reshape(B, -1)`` (see ``flat_depth_index``). Out-of-range indices are an
      error in the original; here they are clamped by JAX's gather semantics, so build
      them with ``flat_depth_index``.

  Returns:
    ``[B, K]`` gathered depths, dtype of ``depth``.
  """
  if depth.ndim != 4:
    raise ValueError(f"depth must be [B, H, W, J], got shape {depth.shape}")
  if ind.ndim != 2 or ind.shape[0] != depth.shape[0]:
    raise ValueError(
        f"ind must be [B, K] with B={depth.shape[0]} (the depth batch), got shape {ind.shape}")
  if not jnp.issubdtype(ind.dtype, jnp.integer):
    raise ValueError(f"ind must be an integer array, got dtype {ind.dtype}")
  flat = jnp.reshape(depth, (depth.shape[0], -1))
  return jnp.take_along_axis(flat, jnp.asarray(ind), axis=1, mode="clip")


def _flat_argmax(heatmaps: Array) -> Array:
  """``[B, H, W, J]`` -> ``[B, J]`` int32 index ``y * W + x`` of each heatmap's maximum."""
  if heatmaps.ndim != 4:
    raise ValueError(f"heatmaps must be [B, H, W, J], got shape {heatmaps.shape}")
  b, h, w, j = heatmaps.shape
  per_joint = jnp.transpose(heatmaps, (0, 3, 1, 2)).reshape(b, j, h * w)
  # First maximum in row-major (y, x) order, as numpy.argmax on the flattened NCHW map.
  return jnp.argmax(per_joint, axis=-1).astype(jnp.int32)


@jax.jit
def argmax_coords(heatmaps: Array) -> Array:
  """Integer grid location of each heatmap's maximum.

  Args:
    heatmaps: ``[B, H, W, J]``.

  Returns:
    ``[B, J, 2]`` int32 ``(x, y)`` grid cells (first maximum in row-major order).
  """
  idx = _flat_argmax(heatmaps)
  w = heatmaps.shape[2]
  return jnp.stack([idx % w, idx // w], axis=-1)


@jax.jit
def get_preds(heatmaps: Array) -> Array:
  """The original ``utils/eval.py get_preds``, faithfully: ``y`` is *fractional*.

  The original computes ``x = idx % W`` and ``y = idx / W`` with Python 3 true division,
  so ``y = row + x / W`` rather than the row. Its accuracy metric (``accuracy``) compares
  two such values, which is why this is kept as is; use ``argmax_coords`` for the
  integer location.

  Args:
    heatmaps: ``[B, H, W, J]``.

  Returns:
    ``[B, J, 2]`` ``(x, idx / W)`` in float32 (float64 under x64), heatmap grid units.
  """
  idx = _flat_argmax(heatmaps)
  w = heatmaps.shape[2]
  dtype = jnp.promote_types(heatmaps.dtype, jnp.float32)
  x = (idx % w).astype(dtype)
  y = idx.astype(dtype) / w
  return jnp.stack([x, y], axis=-1)


@functools.partial(jax.jit, static_argnames=("root",))
def get_preds_3d(heatmaps: Array, depth: Array, root: int = MPII_PELVIS) -> Array:
  """Root-relative 3D prediction (original ``utils/eval.py get_preds_3d``).

  Each joint's ``(x, y)`` is the integer argmax of its heatmap divided by
  ``max(H, W)``; its depth is ``depth[b, y, x, min(j, Jd - 1)]`` (a model with fewer
  depth maps than joints reuses the last one). The whole pose is then made relative to
  joint ``root``.

  Args:
    heatmaps: ``[B, H, W, J]``.
    depth: ``[B, H, W, Jd]`` depth maps on the same grid.
    root: joint the result is relative to (MPII pelvis 6 by default).

  Returns:
    ``[B, J, 3]`` ``(x, y, depth) - (x, y, depth)[root]``; x and y in units of the
    output resolution ``max(H, W)``; dtype of ``depth`` (at least float32).
  """
  coords = argmax_coords(heatmaps)
  b, h, w, j = heatmaps.shape
  if depth.ndim != 4 or depth.shape[:3] != (b, h, w):
    raise ValueError(
        f"depth must be [B, H, W, Jd] = [{b}, {h}, {w}, Jd] like the heatmaps, got {depth.shape}")
  if not 0 <= root < j:
    raise ValueError(f"root joint {root} out of range for {j} joints")
  dtype = jnp.promote_types(depth.dtype, jnp.float32)
  channel = jnp.minimum(jnp.arange(j), depth.shape[-1] - 1)
  ind = flat_depth_index(coords[..., 0], coords[..., 1], channel[None, :], w, depth.shape[-1])
  z = gather_depth(depth, ind).astype(dtype)
  xy = coords.astype(dtype) / max(h, w)
  pose = jnp.concatenate([xy, z[..., None]], axis=-1)
  return pose - pose[:, root:root + 1]
