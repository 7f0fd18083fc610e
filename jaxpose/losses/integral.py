"""Integral regression losses (Sun et al.): weighted L1 / L2 on soft-argmax coordinates.

Both losses decode the raw channels-last output with
``jaxpose.codecs.integral.softmax_integral`` and compare the normalised coordinates with
targets from ``joint_location_label``. As in the original ``L1JointLocationLoss`` /
``L2JointLocationLoss`` (``size_average=True``), the weighted per-coordinate errors are
*summed* over joints and coordinates and divided by the batch size only, not by the
number of visible coordinates.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxpose.codecs import integral as integral_codec

Array = jax.Array


def _check_targets(raw: Array, target: Array, target_weight: Array) -> None:
  if target.ndim != 3 or target.shape[-1] != 3:
    raise ValueError(f"target must be [B, J, 3] normalised (x, y, z), got shape {target.shape}")
  if raw.ndim != 4 or raw.shape[0] != target.shape[0]:
    raise ValueError(
        f"raw output must be [B, H, W, J*D] with the target's batch {target.shape[0]}, "
        f"got shape {raw.shape}")
  try:
    jnp.broadcast_shapes(target_weight.shape, target.shape)
  except ValueError:
    raise ValueError(
        f"target_weight of shape {target_weight.shape} does not broadcast to the target "
        f"shape {target.shape} (expected per-coordinate weights [B, J, 3])") from None


def weighted_l1_loss(pred: Array, target: Array, weight: Array) -> Array:
  """``sum(|pred - target| * weight) / batch``; all arrays ``[B, ...]`` (broadcastable)."""
  return jnp.sum(jnp.abs(pred - target) * weight) / pred.shape[0]


def weighted_l2_loss(pred: Array, target: Array, weight: Array) -> Array:
  """``sum((pred - target)**2 * weight) / batch``; all arrays ``[B, ...]`` (broadcastable)."""
  return jnp.sum(jnp.square(pred - target) * weight) / pred.shape[0]


@jax.jit
def l1_joint_location_loss(raw: Array, target: Array, target_weight: Array) -> Array:
  """Integral L1 loss (original ``L1JointLocationLoss(output_3d=True)``).

  Args:
    raw: ``[B, H, W, J * D]`` raw network output, channel ``j * D + d`` (``D = 1`` for 2D).
    target: ``[B, J, 3]`` normalised targets ``(x/pw - 0.5, y/ph - 0.5, z/pw)``.
    target_weight: ``[B, J, 3]`` per-coordinate weights (0/1 visibility), or any shape
      broadcasting to it.

  Returns:
    Scalar ``sum(|coords - target| * weight) / B`` in the dtype of ``raw``.
  """
  _check_targets(raw, target, target_weight)
  coords = integral_codec.softmax_integral(raw, target.shape[1])
  return weighted_l1_loss(coords, target.astype(coords.dtype), target_weight.astype(coords.dtype))


@jax.jit
def l2_joint_location_loss(raw: Array, target: Array, target_weight: Array) -> Array:
  """Integral L2 loss (original ``L2JointLocationLoss(output_3d=True)``).

  Args:
    raw: ``[B, H, W, J * D]`` raw network output, channel ``j * D + d`` (``D = 1`` for 2D).
    target: ``[B, J, 3]`` normalised targets.
    target_weight: ``[B, J, 3]`` per-coordinate weights, or broadcastable to it.

  Returns:
    Scalar ``sum((coords - target)**2 * weight) / B`` in the dtype of ``raw``.
  """
  _check_targets(raw, target, target_weight)
  coords = integral_codec.softmax_integral(raw, target.shape[1])
  return weighted_l2_loss(coords, target.astype(coords.dtype), target_weight.astype(coords.dtype))
