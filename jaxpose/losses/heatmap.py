"""Heatmap regression losses of the 2D top-down models.

* ``joints_mse_loss``: HRNet/SimpleBaseline ``JointsMSELoss`` (``lib/core/loss.py``):
  for each joint ``0.5 * mean((pred * w - gt * w)^2)`` over batch and pixels, averaged over
  joints.
* ``joints_ohkm_mse_loss``: HRNet's ``JointsOHKMMSELoss``: per sample, the mean of the
  ``topk`` largest per-joint losses ``0.5 * mean_pixels((pred * w - gt * w)^2)``, averaged
  over the batch.
* ``mspn_loss``: MSPN's ``_calculate_loss`` with ``JointsL2Loss`` (``lib/utils/loss.py``):
  every stage and upsample unit against the coarse-to-fine targets; units 0-2 use a plain
  MSE with targets of joints with ``valid <= 1`` zeroed (the prediction is not masked) and
  are divided by 4; unit 3 uses online hard keypoint mining (top-8 of the per-joint MSEs
  of joints with ``valid > 0``) when ``ohkm``.

Shapes: heatmaps ``[B, H, W, K]``; ``target_weight``/``valid`` ``[B, K]`` or ``[B, K, 1]``.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxpose.models.layers import at_least_float32


def _per_joint(weights: jax.Array) -> jax.Array:
  """``[B, K]`` from ``[B, K]`` or ``[B, K, 1]``."""
  return weights.reshape(weights.shape[0], -1)


def _check(pred: jax.Array, target: jax.Array, weights: jax.Array, name: str) -> None:
  if pred.shape != target.shape or pred.ndim != 4:
    raise ValueError(f"{name}: predictions {pred.shape} and targets {target.shape} must both "
                     "be [B, H, W, K]")
  if _per_joint(weights).shape != (pred.shape[0], pred.shape[-1]):
    raise ValueError(f"{name}: weights {weights.shape} must be [B, K] with K={pred.shape[-1]}")


def joints_mse_loss(pred: jax.Array, target: jax.Array, target_weight: jax.Array | None = None
                    ) -> jax.Array:
  """HRNet's ``JointsMSELoss(use_target_weight=...)`` (scalar, float32).

  Args:
    pred: ``[B, H, W, K]`` predicted heatmaps.
    target: ``[B, H, W, K]`` Gaussian targets (peak 1).
    target_weight: ``[B, K]`` or ``[B, K, 1]``; ``None`` for ``use_target_weight=False``.
  """
  if target_weight is None:
    target_weight = jnp.ones(pred.shape[:1] + pred.shape[-1:], pred.dtype)
  _check(pred, target, target_weight, "joints_mse_loss")
  pred, target = at_least_float32(pred), at_least_float32(target)
  w = _per_joint(target_weight)[:, None, None, :].astype(pred.dtype)
  diff = (pred - target.astype(pred.dtype)) * w
  return 0.5 * jnp.mean(jnp.square(diff))


def joints_ohkm_mse_loss(pred: jax.Array, target: jax.Array, target_weight: jax.Array,
                         topk: int = 8) -> jax.Array:
  """HRNet's ``JointsOHKMMSELoss(use_target_weight=True, topk)`` (scalar)."""
  _check(pred, target, target_weight, "joints_ohkm_mse_loss")
  pred, target = at_least_float32(pred), at_least_float32(target)
  w = _per_joint(target_weight)[:, None, None, :].astype(pred.dtype)
  diff = (pred - target.astype(pred.dtype)) * w
  per_joint = 0.5 * jnp.mean(jnp.square(diff), axis=(1, 2))  # [B, K]
  hardest = jax.lax.top_k(per_joint, min(topk, per_joint.shape[-1]))[0]
  return jnp.mean(jnp.mean(hardest, axis=-1))


def mspn_unit_loss(pred: jax.Array, target: jax.Array, valid: jax.Array, *, ohkm: bool,
                   topk: int = 8) -> jax.Array:
  """MSPN ``JointsL2Loss`` of one upsample unit (scalar).

  Without OHKM: ``mean((pred - target * (valid > 1))^2)`` per sample, averaged over the
  batch. With OHKM: per sample the mean of the ``topk`` largest per-joint MSEs after
  zeroing joints with ``valid <= 0``.
  """
  _check(pred, target, valid, "mspn_unit_loss")
  v = _per_joint(valid)
  pred = at_least_float32(pred)
  target = target.astype(pred.dtype)
  if not ohkm:
    gt = target * (v > 1.0)[:, None, None, :]
    return jnp.mean(jnp.square(pred - gt))
  per_joint = jnp.mean(jnp.square(pred - target), axis=(1, 2)) * (v > 0.0)
  hardest = jax.lax.top_k(per_joint, min(topk, per_joint.shape[-1]))[0]
  return jnp.mean(jnp.mean(hardest, axis=-1))


def mspn_loss(stages: Sequence[Sequence[jax.Array]], labels: jax.Array, valid: jax.Array, *,
              ohkm: bool = True, topk: int = 8, coarse_to_fine: bool = True
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """MSPN's total training loss over all stages and upsample units.

  Args:
    stages: per stage, the four unit heatmaps ``[B, H, W, K]`` (coarse to fine), as the
      model's ``"stages"`` output.
    labels: ``[B, L, H, W, K]`` targets for the kernels coarse to fine (L = 5 with
      ``coarse_to_fine``: unit j of stage s uses label j, or j + 1 in the last stage).
    valid: ``[B, K]`` or ``[B, K, 1]`` visibility after the in-crop rule (0/1/2).

  Returns:
    ``(loss, {"stage{s}_unit{j}": loss})``.
  """
  num_stages = len(stages)
  total = jnp.zeros((), jnp.float32)
  parts = {}
  for s, units in enumerate(stages):
    if len(units) != 4:
      raise ValueError(f"mspn_loss: stage {s} has {len(units)} units, expected 4")
    for j, pred in enumerate(units):
      index = j + 1 if (coarse_to_fine and s == num_stages - 1) else j
      if index >= labels.shape[1]:
        raise ValueError(f"mspn_loss: needs label {index}, labels have {labels.shape[1]}")
      unit = mspn_unit_loss(pred, labels[:, index], valid, ohkm=ohkm and j == 3, topk=topk)
      if j < 3:
        unit = unit / 4.0
      parts[f"stage{s}_unit{j}"] = unit
      total = total + unit
  return total, parts
