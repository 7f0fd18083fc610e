"""Losses of the weakly-supervised 3D model (Zhou et al., pytorch-pose-hg-3d).

Batches mix Human3.6M samples (depth supervised) with MPII samples (2D only). With
``K = 16`` MPII-order joints per sample:

* ``reg_mask: [B, K]`` is 1 where a joint has depth supervision (the 3D samples);
* ``reg_ind: [B, K]`` are flat depth indices ``y * W * J + x * J + j`` (see
  ``jaxpose.codecs.hg3d.flat_depth_index``) of each joint's ground-truth 2D cell;
* ``reg_target: [B, K]`` is the depth target of 3D samples and, for 2D-only samples, the
  joint visibility (1 visible, 0 not) that ``var_loss`` reads;
* ``gt_2d: [B, K, 2]`` are the ground-truth 2D locations in grid cells divided by the
  output height (the original's ``pts_crop / output_res``).

``reg_loss`` is a smooth-L1 on the supervised depths; ``var_loss`` is the geometric
constraint for 2D-only samples: within each group of bones whose length ratios are fixed
(``MPII_BONE_GROUPS``, scaled by ``MPII_BONE_WEIGHTS``), the 3D bone lengths
``w * sqrt(|xy1 - xy2|**2 + (z1 - z2)**2)`` should be equal, so their variance is
penalised. ``var_loss`` has a custom VJP that is the original's hand-written gradient.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxpose.codecs import hg3d as hg3d_codec

Array = jax.Array

#: Groups of bones, as (joint, joint) pairs in MPII order (0 r-ankle, 1 r-knee, 2 r-hip,
#: 3 l-hip, 4 l-knee, 5 l-ankle, 6 pelvis, 7 thorax, 8 neck, 9 head-top, 10 r-wrist,
#: 11 r-elbow, 12 r-shoulder, 13 l-shoulder, 14 l-elbow, 15 l-wrist): legs (shins and
#: thighs), arms (forearms and upper arms), hips (hip to pelvis) and shoulders (shoulder
#: to neck). Bones in a group are expected to have equal weighted lengths.
MPII_BONE_GROUPS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((0, 1), (1, 2), (3, 4), (4, 5)),
    ((10, 11), (11, 12), (13, 14), (14, 15)),
    ((2, 6), (3, 6)),
    ((12, 8), (13, 8)),
)

#: Per-bone length multipliers, aligned with ``MPII_BONE_GROUPS`` (the original's
#: Human3.6M-derived ratios: shin/thigh and forearm/upper-arm).
MPII_BONE_WEIGHTS: tuple[tuple[float, ...], ...] = (
    (1.0085885098415446, 1.0, 1.0, 1.0085885098415446),
    (1.1375361376887123, 1.0, 1.0, 1.1375361376887123),
    (1.0, 1.0),
    (1.0, 1.0),
)


def _check_per_joint(name: str, value: Array, batch: int, joints: int) -> None:
  if value.shape != (batch, joints):
    raise ValueError(f"{name} must be [B, K] = [{batch}, {joints}], got shape {value.shape}")


@jax.jit
def masked_smooth_l1(pred: Array, target: Array, mask: Array) -> Array:
  """Smooth L1 (beta 1) summed over supervised entries, divided by ``mask.sum() + 1e-4``.

  Args:
    pred: ``[B, K]`` predicted depths.
    target: ``[B, K]`` target depths.
    mask: ``[B, K]`` 0/1 supervision mask (any numeric dtype).

  Returns:
    Scalar loss in the dtype of ``pred`` (at least float32).
  """
  dtype = jnp.promote_types(pred.dtype, jnp.float32)
  m = mask.astype(dtype)
  diff = pred.astype(dtype) * m - target.astype(dtype) * m
  ad = jnp.abs(diff)
  per_entry = jnp.where(ad < 1.0, 0.5 * diff * diff, ad - 0.5)
  return jnp.sum(per_entry) / (jnp.sum(m) + 1e-4)


@jax.jit
def reg_loss(depth: Array, reg_mask: Array, reg_ind: Array, reg_target: Array) -> Array:
  """Depth regression loss (original ``RegLoss``).

  Args:
    depth: ``[B, H, W, J]`` depth maps.
    reg_mask: ``[B, K]`` 1 where the joint's depth is supervised.
    reg_ind: ``[B, K]`` integer flat indices into ``depth.reshape(B, -1)``.
    reg_target: ``[B, K]`` target depths.

  Returns:
    Scalar ``smooth_l1`` over supervised joints / (number supervised + 1e-4).
  """
  pred = hg3d_codec.gather_depth(depth, reg_ind)
  b, k = pred.shape
  _check_per_joint("reg_mask", reg_mask, b, k)
  _check_per_joint("reg_target", reg_target, b, k)
  return masked_smooth_l1(pred, reg_target, reg_mask)


def _flat_bones() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """All bones of ``MPII_BONE_GROUPS`` flattened: ``(joint_a, joint_b, weight, group)``."""
  pairs = [(pair, w, g) for g, (group, weights) in
           enumerate(zip(MPII_BONE_GROUPS, MPII_BONE_WEIGHTS)) for pair, w in zip(group, weights)]
  joint_a = np.array([p[0] for p, _, _ in pairs])
  joint_b = np.array([p[1] for p, _, _ in pairs])
  weight = np.array([w for _, w, _ in pairs])
  group = np.array([g for _, _, g in pairs])
  return joint_a, joint_b, weight, group


def _bone_terms(z: Array, visible: Array, xy: Array):
  """Per-bone quantities for every sample, all bones of all groups at once.

  A bone is counted when both its joints have visibility > 0.5; an uncounted bone has
  length 0. ``num`` and ``mean`` are the count and mean length of the bone's group.

  Returns:
    ``(length, num, mean, dz)``, each ``[B, NB]`` (``NB`` = number of bones), where
    ``dz = z_a - z_b``.
  """
  joint_a, joint_b, weight, group = _flat_bones()
  w = jnp.asarray(weight, z.dtype)
  # [NB, G] bone-to-group membership; sums over it are plain reductions (no matmul,
  # whose default precision may be reduced on accelerators).
  member = jnp.asarray(group[:, None] == np.arange(len(MPII_BONE_GROUPS))[None, :], z.dtype)
  counted = (visible[:, joint_a] > 0.5) & (visible[:, joint_b] > 0.5)
  dz = z[:, joint_a] - z[:, joint_b]
  sq = jnp.sum(jnp.square(xy[:, joint_a] - xy[:, joint_b]), axis=-1) + jnp.square(dz)
  # Uncounted bones are never evaluated by the original; keep their sqrt argument positive
  # so that no NaN can leak through the where.
  length = jnp.where(counted, w * jnp.sqrt(jnp.where(counted, sq, 1.0)), 0.0)

  def per_group(x: Array) -> Array:  # [B, NB] -> [B, G] sums over each group's bones
    return jnp.sum(x[:, :, None] * member, axis=1)

  def per_bone(x: Array) -> Array:  # [B, G] -> [B, NB] the value of each bone's group
    return jnp.sum(x[:, None, :] * member, axis=2)

  num_g = per_group(counted.astype(z.dtype))
  mean_g = per_group(length) / jnp.maximum(num_g, 1.0)
  return length, per_bone(num_g), per_bone(mean_g), dz


def _var_loss_sum(z: Array, visible: Array, is_2d: Array, xy: Array) -> Array:
  """Sum over 2D-only samples and bone groups of the bone-length variance terms."""
  length, num, mean, _ = _bone_terms(z, visible, xy)
  # Zero-length bones (uncounted ones included) are left out of the sum, as in the
  # original, but still count in ``num``.
  terms = jnp.where(length > 0, jnp.square(length - mean) / 2.0 / jnp.maximum(num, 1.0), 0.0)
  return jnp.sum(terms * is_2d[:, None])


def _var_loss_grad(z: Array, visible: Array, is_2d: Array, xy: Array) -> Array:
  """The original VarLoss.backward without the factor ``var_weight / B``: ``[B, K]``.

  For each counted bone of positive length ``l`` with endpoints ``(a, b)`` and weight ``w``:
  ``d/dz_a += w**2 / num * (l - mean) / l * (z_a - z_b)`` and the opposite for ``b``.
  """
  joint_a, joint_b, weight, _ = _flat_bones()
  w = jnp.asarray(weight, z.dtype)
  length, num, mean, dz = _bone_terms(z, visible, xy)
  positive = length > 0
  coef = w * w / jnp.maximum(num, 1.0) * (length - mean) / jnp.where(positive, length, 1.0)
  contrib = jnp.where(positive, coef * dz, 0.0) * is_2d[:, None]  # [B, NB]
  k = z.shape[1]
  incidence = (jnp.asarray(joint_a[:, None] == np.arange(k)[None, :], z.dtype)
               - jnp.asarray(joint_b[:, None] == np.arange(k)[None, :], z.dtype))  # [NB, K]
  return jnp.sum(contrib[:, :, None] * incidence, axis=1)


@jax.custom_vjp
def _var_loss_core(z: Array, visible: Array, is_2d: Array, xy: Array) -> Array:
  return _var_loss_sum(z, visible, is_2d, xy) / z.shape[0]


def _var_loss_core_fwd(z, visible, is_2d, xy):
  return _var_loss_core(z, visible, is_2d, xy), (z, visible, is_2d, xy)


def _var_loss_core_bwd(residuals, g):
  z, visible, is_2d, xy = residuals
  # The original ignores its incoming gradient (it is 1 when the loss is used as is);
  # scaling by it keeps the chain rule right when the loss is scaled or composed.
  grad_z = g * _var_loss_grad(z, visible, is_2d, xy) / z.shape[0]
  return grad_z, jnp.zeros_like(visible), jnp.zeros_like(is_2d), jnp.zeros_like(xy)


_var_loss_core.defvjp(_var_loss_core_fwd, _var_loss_core_bwd)


@jax.jit
def var_loss(pred_depth: Array, visible: Array, reg_mask: Array, gt_2d: Array,
             var_weight: float | Array) -> Array:
  """Geometric bone-length-ratio loss for 2D-only samples (original ``VarLoss``).

  Only samples whose ``reg_mask`` is all zero (no depth supervision) contribute. In
  each bone group, with ``l_i = w_i * sqrt(|xy_a - xy_b|**2 + (z_a - z_b)**2)`` for the
  ``num`` bones whose two joints have visibility > 0.5 and ``E`` their mean, the group
  adds ``sum_{l_i > 0} (l_i - E)**2 / 2 / num``. The total is ``var_weight * sum / B``.
  Its gradient (custom VJP) is the original's hand-written one, which equals the exact
  derivative of this value wherever all counted lengths are positive.

  Args:
    pred_depth: ``[B, K]`` depths gathered at the ground-truth 2D locations.
    visible: ``[B, K]`` joint visibility (the original passes ``reg_target``).
    reg_mask: ``[B, K]`` depth supervision mask; samples with any nonzero entry are skipped.
    gt_2d: ``[B, K, 2]`` ground-truth 2D joints in the original's units (grid cells /
      output height).
    var_weight: loss weight.

  Returns:
    Scalar loss in the dtype of ``pred_depth`` (at least float32).
  """
  if pred_depth.ndim != 2:
    raise ValueError(f"pred_depth must be [B, K], got shape {pred_depth.shape}")
  b, k = pred_depth.shape
  _check_per_joint("visible", visible, b, k)
  _check_per_joint("reg_mask", reg_mask, b, k)
  if gt_2d.shape != (b, k, 2):
    raise ValueError(f"gt_2d must be [B, K, 2] = [{b}, {k}, 2], got shape {gt_2d.shape}")
  needed = 1 + max(max(max(pair) for pair in group) for group in MPII_BONE_GROUPS)
  if k < needed:
    raise ValueError(f"var_loss needs the {needed} MPII joints, got K={k}")
  dtype = jnp.promote_types(pred_depth.dtype, jnp.float32)
  is_2d = jnp.all(reg_mask == 0, axis=-1).astype(dtype)
  core = _var_loss_core(pred_depth.astype(dtype), visible.astype(dtype), is_2d,
                        gt_2d.astype(dtype))
  return var_weight * core


@jax.jit
def fusion_loss(depth: Array, reg_mask: Array, reg_ind: Array, reg_target: Array,
                gt_2d: Array, reg_weight: float | Array, var_weight: float | Array) -> Array:
  """``reg_weight * reg + var`` (original ``FusionLoss``); a term with weight <= 0 is off.

  Args:
    depth: ``[B, H, W, J]`` depth maps.
    reg_mask: ``[B, K]`` depth supervision mask.
    reg_ind: ``[B, K]`` flat depth indices (``jaxpose.codecs.hg3d.flat_depth_index``).
    reg_target: ``[B, K]`` depth targets (3D samples) / visibility (2D-only samples).
    gt_2d: ``[B, K, 2]`` ground-truth 2D joints / output height.
    reg_weight: weight of the depth regression term.
    var_weight: weight of the bone-length term (applied inside ``var_loss``).

  Returns:
    Scalar loss.
  """
  pred = hg3d_codec.gather_depth(depth, reg_ind)
  b, k = pred.shape
  _check_per_joint("reg_mask", reg_mask, b, k)
  _check_per_joint("reg_target", reg_target, b, k)
  reg = masked_smooth_l1(pred, reg_target, reg_mask)
  var = var_loss(pred, reg_target, reg_mask, gt_2d, var_weight)
  zero = jnp.zeros((), reg.dtype)
  return (jnp.where(jnp.asarray(reg_weight) > 0, reg_weight * reg, zero)
          + jnp.where(jnp.asarray(var_weight) > 0, var, zero))
