"""Conformance checkers for the 3D function fixtures (integral, hg3d, H36M metrics, cameras).

``CHECKERS[name](fixture, arrays, case)`` runs jaxpose's function on the arguments of
case ``case`` of ``functions/NAME.npz`` and asserts every result array stored for that case.
Fixtures store NCHW network outputs; the checkers transpose them to jaxpose's channels-last
layout. Every ``case{i}_*`` array of the case must be consumed (as an argument, a checked
parameter or a checked result), so a result added to a fixture cannot go unchecked.

Tolerances are float32 rounding, stated per result as a number of float32 epsilons times the
magnitude the rounding acts on (for a value obtained by cancellation, such as ``E[x]/W - 0.5``,
that is the magnitude before the cancellation). Integer and argmax results are exact.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpose.codecs import hg3d as hg3d_codec
from jaxpose.codecs import integral as integral_codec
from jaxpose.evaluation import h36m
from jaxpose.geometry import camera
from jaxpose.losses import hg3d as hg3d_losses
from jaxpose.losses import integral as integral_losses

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


class _Case:
  """Reads ``case{i}_<name>`` arrays and remembers which were used."""

  def __init__(self, fixture: dict, arrays: Mapping[str, np.ndarray], index: int):
    self.fixture_name = fixture.get("name", "?")
    self.prefix = f"case{index}_"
    self.arrays = arrays
    self.listed = set(fixture.get("arrays", {}))
    self.keys = {k[len(self.prefix):] for k in arrays if k.startswith(self.prefix)}
    if not self.keys:
      raise AssertionError(f"{self.fixture_name}: no arrays for case {index}")
    unlisted = self.keys - self.listed
    if unlisted:
      raise AssertionError(f"{self.fixture_name} case {index}: arrays {sorted(unlisted)} "
                           "are not described in the json")
    self.used: set[str] = set()

  def has(self, name: str) -> bool:
    return name in self.keys

  def __getitem__(self, name: str) -> np.ndarray:
    if name not in self.keys:
      raise AssertionError(f"{self.fixture_name}: missing array {self.prefix}{name}")
    self.used.add(name)
    return np.asarray(self.arrays[self.prefix + name])

  def scalar(self, name: str) -> Any:
    return self[name].item()

  def finish(self) -> None:
    unused = self.keys - self.used
    if unused:
      raise AssertionError(
          f"{self.fixture_name}: {self.prefix}{sorted(unused)} present but not checked")


def _close(actual, expected, atol: float, what: str, rtol: float = 0.0) -> None:
  actual = np.asarray(actual)
  expected = np.asarray(expected)
  if actual.shape != expected.shape:
    raise AssertionError(f"{what}: shape {actual.shape}, expected {expected.shape}")
  np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                             rtol=rtol, atol=atol, err_msg=what)


def _ulps(expected, n: float, floor: float = 0.0) -> float:
  """``n`` float32 epsilons of ``max(|expected|, floor)``."""
  mag = float(np.max(np.abs(expected))) if np.size(expected) else 0.0
  return n * EPS32 * max(mag, floor)


def _nchw_to_nhwc(x: np.ndarray) -> jax.Array:
  return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


# ---------------------------------------------------------------------------------------
# integral_softmax_integral
# ---------------------------------------------------------------------------------------

# A normalised coordinate is E[i]/size - 0.5 with E[i]/size in [0, 1]: the softmax and the
# sums over D*H*W voxels leave a few float32 epsilons of absolute error on E[i]/size, which
# the -0.5 does not shrink. 16 epsilons covers the log2(D*H*W) growth of pairwise sums.
_COORD_ATOL = 16 * EPS32


@functools.partial(jax.jit, static_argnames=("num_joints", "depth"))
def _integral_outputs(raw, target, vis, patch_width, patch_height, num_joints: int, depth: int):
  """Every jnp result of one integral case in one compilation."""
  coords = integral_codec.softmax_integral(raw, num_joints, depth)
  return {
      "coords": coords,
      "l1": integral_losses.l1_joint_location_loss(raw, target, vis),
      "l2": integral_losses.l2_joint_location_loss(raw, target, vis),
      "patch": integral_codec.joint_location_result(coords, patch_width, patch_height),
  }


def check_integral(fixture: dict, arrays: Mapping[str, np.ndarray], case: int) -> None:
  c = _Case(fixture, arrays, case)
  preds = c["preds"]
  j, w, h, d = (int(c.scalar(k)) for k in ("num_joints", "hm_width", "hm_height", "hm_depth"))
  b = preds.shape[0]
  assert preds.shape == (b, j * d, h, w), (
      f"case {case}: preds {preds.shape} disagree with J={j}, D={d}, H={h}, W={w}")
  target = c["gt_joints"].reshape(b, j, 3)
  vis = c["gt_joints_vis"].reshape(b, j, 3)
  has_patch = c.has("patch_width") or c.has("patch_coords") or c.has("label")
  pw, ph = ((int(c.scalar("patch_width")), int(c.scalar("patch_height"))) if has_patch
            else (1, 1))
  out = _integral_outputs(_nchw_to_nhwc(preds), target, vis, pw, ph, num_joints=j, depth=d)
  out = {k: np.asarray(v) for k, v in out.items()}

  assert out["coords"].dtype == np.float32
  _close(out["coords"].reshape(b, j * 3), c["coords"], _COORD_ATOL, f"case {case} coords")

  ref_coords = c["coords"].reshape(b, j, 3)
  # Loss error = coordinate error propagated through the weighted sum (/ B), plus the
  # rounding of the sum itself.
  l1_ref = c["l1_loss"]
  _close(out["l1"], l1_ref, _COORD_ATOL * vis.sum() / b + 8 * EPS32 * abs(l1_ref),
         f"case {case} l1")
  l2_ref = c["l2_loss"]
  l2_prop = 2 * _COORD_ATOL * np.sum((np.abs(ref_coords - target) + _COORD_ATOL) * vis) / b
  _close(out["l2"], l2_ref, l2_prop + 8 * EPS32 * abs(l2_ref), f"case {case} l2")

  if has_patch:
    if c.has("patch_coords"):
      patch = out["patch"]
      # x, y and depth are normalised coordinates times the patch size (+ 0.5 * size).
      _close(patch, c["patch_coords"], _COORD_ATOL * max(pw, ph) + _ulps(c["patch_coords"], 2),
             f"case {case} patch_coords")
    if c.has("label"):
      label_joints = c["label_joints"]
      label = integral_codec.joint_location_label(label_joints, pw, ph)
      assert label.dtype == label_joints.dtype
      # Same float32 operations as the original: one rounding per division/subtraction.
      _close(label.reshape(-1), c["label"], _ulps(c["label"], 1, floor=0.5),
             f"case {case} label")
  c.finish()


# ---------------------------------------------------------------------------------------
# hg3d_losses
# ---------------------------------------------------------------------------------------


def _bone_scales(depth: np.ndarray, visible: np.ndarray, mask: np.ndarray, xy: np.ndarray,
                 var_weight: float) -> tuple[float, float]:
  """Float64 magnitudes on which float32 rounding acts in VarLoss and its gradient.

  Returns ``(value_scale, grad_scale)``: ``var_weight / B * sum l**2`` over the counted bones
  of 2D-only samples (a length error of eps * l moves a term (l - E)**2 by at most ~2 eps l**2),
  and ``var_weight / B * max_joint sum w**2 |dz|`` over the bones at a joint (the gradient's
  factor (l - E) / l carries an absolute error of a few eps).
  """
  b, k = depth.shape
  is_2d = np.all(mask == 0, axis=1)
  value = 0.0
  grad = np.zeros((b, k))
  for pairs, weights in zip(hg3d_losses.MPII_BONE_GROUPS, hg3d_losses.MPII_BONE_WEIGHTS):
    for (a, e), wgt in zip(pairs, weights):
      counted = is_2d & (visible[:, a] > 0.5) & (visible[:, e] > 0.5)
      sq = np.sum((xy[:, a] - xy[:, e]) ** 2, axis=-1) + (depth[:, a] - depth[:, e]) ** 2
      value += float(np.sum(np.where(counted, wgt**2 * sq, 0.0)))
      dz = np.where(counted, wgt**2 * np.abs(depth[:, a] - depth[:, e]), 0.0)
      grad[:, a] += dz
      grad[:, e] += dz
  return var_weight / b * value, var_weight / b * float(grad.max(initial=0.0))


@jax.jit
def _hg3d_outputs(depth, heatmap, mask, ind, target, gt_2d, reg_weight, var_weight):
  """Every jnp result of one hg3d case in one compilation."""
  gathered = hg3d_codec.gather_depth(depth, ind)
  var, grad = jax.value_and_grad(
      lambda z: hg3d_losses.var_loss(z, target, mask, gt_2d, var_weight))(gathered)
  return {
      "gathered": gathered,
      "reg": hg3d_losses.reg_loss(depth, mask, ind, target),
      "var": var,
      "grad": grad,
      "fusion": hg3d_losses.fusion_loss(depth, mask, ind, target, gt_2d, reg_weight, var_weight),
      "preds_2d": hg3d_codec.get_preds(heatmap),
      "ints": hg3d_codec.argmax_coords(heatmap),
      "preds_3d": hg3d_codec.get_preds_3d(heatmap, depth),
  }


def check_hg3d(fixture: dict, arrays: Mapping[str, np.ndarray], case: int) -> None:
  c = _Case(fixture, arrays, case)
  depth = _nchw_to_nhwc(c["depth_map"])
  heatmap = _nchw_to_nhwc(c["heatmap"])
  b, k = c["reg_ind"].shape
  mask = c["reg_mask"]
  ind = c["reg_ind"]
  target = c["reg_target"].reshape(b, k)
  gt_2d = c["gt_2d"].reshape(b, k, 2)
  reg_weight, var_weight = float(c.scalar("reg_weight")), float(c.scalar("var_weight"))
  out = _hg3d_outputs(depth, heatmap, mask, ind, target, gt_2d, reg_weight, var_weight)
  out = {name: np.asarray(v) for name, v in out.items()}

  ref_gathered = c["gathered_depth"].reshape(b, k)
  np.testing.assert_array_equal(out["gathered"], ref_gathered,
                                err_msg=f"case {case} gathered_depth")

  # Smooth L1 of float32 values: rounding of each term and of the sum, relative to the value
  # (each term is nonnegative).
  reg_ref = c["reg_loss"]
  _close(out["reg"], reg_ref, 8 * EPS32 * abs(reg_ref), f"case {case} reg_loss")

  value_scale, grad_scale = _bone_scales(ref_gathered.astype(np.float64), target, mask,
                                         gt_2d.astype(np.float64),
                                         var_weight)
  var_ref = c["var_loss"].reshape(())
  _close(out["var"], var_ref, 8 * EPS32 * (value_scale + abs(var_ref)), f"case {case} var_loss")
  grad_ref = c["var_loss_grad"].reshape(b, k)
  _close(out["grad"], grad_ref, 8 * EPS32 * grad_scale + _ulps(grad_ref, 4),
         f"case {case} var_loss_grad")

  fusion_ref = c["fusion_loss"]
  fusion_atol = 8 * EPS32 * (abs(reg_weight) * abs(reg_ref) + value_scale + abs(fusion_ref))
  _close(out["fusion"], fusion_ref, fusion_atol, f"case {case} fusion_loss")

  ref_2d = c["preds_2d"]
  # x is an exact integer; y = idx / W is one float32 division of an exact integer.
  np.testing.assert_array_equal(out["preds_2d"][..., 0], ref_2d[..., 0],
                                err_msg=f"case {case} preds_2d x")
  _close(out["preds_2d"][..., 1], ref_2d[..., 1], 0.0, f"case {case} preds_2d y", rtol=EPS32)
  # The integer variant is the original's astype(int32) of get_preds, exactly.
  np.testing.assert_array_equal(out["ints"], ref_2d.astype(np.int32),
                                err_msg=f"case {case} integer argmax")

  ref_3d = c["preds_3d"]
  # (x, y) / max(H, W) and depth, each minus the root's: two float32 roundings.
  _close(out["preds_3d"], ref_3d, _ulps(ref_3d, 2, floor=1.0), f"case {case} preds_3d")
  c.finish()


# ---------------------------------------------------------------------------------------
# h36m_metrics
# ---------------------------------------------------------------------------------------


@jax.jit
def _h36m_outputs(pred, target, w, seq_pred, seq_target):
  """Every jnp metric of one case in one compilation."""
  return {
      "mpjpe": h36m.mpjpe(pred, target),
      "weighted_mpjpe": h36m.weighted_mpjpe(pred, target, w),
      "n_mpjpe": h36m.n_mpjpe(pred[None], target[None]),
      "mean_velocity_error": h36m.mean_velocity_error(seq_pred, seq_target),
  }


def check_h36m(fixture: dict, arrays: Mapping[str, np.ndarray], case: int) -> None:
  c = _Case(fixture, arrays, case)
  pred, target = c["predicted"], c["target"]
  seq_p, seq_t = c["seq_predicted"], c["seq_target"]
  out = _h36m_outputs(pred, target, c["w"], seq_p, seq_t)
  out = {name: np.asarray(v) for name, v in out.items()}

  # Means of float32 norms: a few roundings relative to the value (a mean of nonnegatives).
  for name in ("mpjpe", "weighted_mpjpe"):
    ref = c[name]
    _close(out[name], ref, 8 * EPS32 * abs(ref), f"case {case} {name}")

  # n_mpjpe: the scale is a ratio of means; its rounding is relative to the pose size.
  pose_scale = max(float(np.abs(pred).max()), float(np.abs(target).max()))
  ref = c["n_mpjpe"]
  _close(out["n_mpjpe"], ref, 8 * EPS32 * (abs(ref) + pose_scale), f"case {case} n_mpjpe")

  # Velocities are differences of float32 coordinates: rounding relative to their size.
  seq_scale = max(float(np.abs(seq_p).max()), float(np.abs(seq_t).max()))
  ref = c["mean_velocity_error"]
  _close(out["mean_velocity_error"], ref, 8 * EPS32 * (abs(ref) + seq_scale),
         f"case {case} mean_velocity_error")

  # Procrustes: the aligned pose carries rounding relative to the centred pose's size
  # (identical poses give ~eps * size, not 0).
  centred = float(np.abs(target - target.mean(axis=1, keepdims=True)).max())
  p32 = np.asarray(h36m.p_mpjpe(pred, target))
  assert p32.dtype == np.float32, f"p_mpjpe on float32 input gave {p32.dtype}"
  ref = c["p_mpjpe"]
  _close(p32, ref, 32 * EPS32 * (abs(ref) + centred), f"case {case} p_mpjpe")
  if c.has("p_mpjpe_f64"):
    p64 = np.asarray(h36m.p_mpjpe(pred.astype(np.float64), target.astype(np.float64)))
    assert p64.dtype == np.float64, f"p_mpjpe on float64 input gave {p64.dtype}"
    ref64 = c["p_mpjpe_f64"]
    _close(p64, ref64, 32 * EPS64 * (abs(ref64) + centred), f"case {case} p_mpjpe_f64")
  c.finish()


# ---------------------------------------------------------------------------------------
# videopose3d_camera
# ---------------------------------------------------------------------------------------


@jax.jit
def _camera_outputs(x_world, r, t, x_cam_ref, x_cam_project, params):
  """Every jnp camera result of one case in one compilation."""
  return {
      "world_to_camera": camera.world_to_camera(x_world, r, t),
      # The round trip starts from the original's camera points, as the original's did.
      "camera_to_world": camera.camera_to_world(x_cam_ref, r, t),
      "project_to_2d": camera.project_to_2d(x_cam_project, params),
      "project_to_2d_linear": camera.project_to_2d_linear(x_cam_project, params),
  }


def check_camera(fixture: dict, arrays: Mapping[str, np.ndarray], case: int) -> None:
  c = _Case(fixture, arrays, case)
  x_world, r, t = c["X_world"], c["R"], c["t"]
  x_cam_ref = c["world_to_camera"]
  x_cam, params = c["X_cam_project"], c["camera_params"]
  out = _camera_outputs(x_world, r, t, x_cam_ref, x_cam, params)
  out = {name: np.asarray(v) for name, v in out.items()}

  # Quaternion rotation: two cross products, a few roundings of the coordinates' size.
  _close(out["world_to_camera"], x_cam_ref, 8 * EPS32 * float(np.abs(x_world - t).max()),
         f"case {case} world_to_camera")
  _close(out["camera_to_world"], c["camera_to_world"],
         8 * EPS32 * (float(np.abs(x_cam_ref).max()) + float(np.abs(t).max())),
         f"case {case} camera_to_world")

  for name in ("project_to_2d", "project_to_2d_linear"):
    assert out[name].dtype == np.float32
    # f * (distorted ratio) + c with |ratio| <= 1: rounding relative to |f| + |c|.
    _close(out[name], c[name], 16 * EPS32 * float(np.abs(params[:, :4]).max()),
           f"case {case} {name}")

  w, h = int(c.scalar("res_w")), int(c.scalar("res_h"))
  pixels = c["pixels"]
  ref_norm = c["normalize_screen_coordinates"]
  norm = camera.normalize_screen_coordinates(pixels, w, h)
  assert isinstance(norm, np.ndarray) and norm.dtype == pixels.dtype
  # pixel / w * 2 - offset: three roundings of values of size ~1 (the original's last
  # subtraction runs in float64, ours in float32).
  _close(norm, ref_norm, _ulps(ref_norm, 4, floor=1.0), f"case {case} normalize_screen_coordinates")
  ref_img = c["image_coordinates"]
  img = camera.image_coordinates(ref_norm.astype(np.float32), w, h)
  _close(img, ref_img, _ulps(ref_img, 4, floor=float(w)), f"case {case} image_coordinates")
  c.finish()


CHECKERS: dict[str, Callable[[dict, Mapping[str, np.ndarray], int], None]] = {
    "integral_softmax_integral": check_integral,
    "hg3d_losses": check_hg3d,
    "h36m_metrics": check_h36m,
    "videopose3d_camera": check_camera,
}
