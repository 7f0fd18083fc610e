"""Unit tests of the 3D codecs, losses, metrics and cameras beyond the reference fixtures."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpose.codecs import hg3d as hg3d_codec
from jaxpose.codecs import integral as integral_codec
from jaxpose.evaluation import h36m
from jaxpose.geometry import camera
from jaxpose.geometry import h36m_cameras
from jaxpose.geometry.quaternion import qinverse, qrot
from jaxpose.losses import hg3d as hg3d_losses
from jaxpose.losses import integral as integral_losses
from tests.conformance import fixtures

REFERENCE_DIR = fixtures.PROJECT_DIR  # the project's copy of the reference fixtures
EPS32 = float(np.finfo(np.float32).eps)


def _fixture(name: str):
  path = REFERENCE_DIR / "functions" / f"{name}.json"
  assert path.exists(), f"reference fixture {path} is missing from the project's copy"
  return json.loads(path.read_text()), np.load(path.with_suffix(".npz"))


def _random_pose(rng: np.random.RandomState, n: int, joints: int = 17) -> np.ndarray:
  return rng.standard_normal((n, joints, 3)) * 0.3


def _rotation(rng: np.random.RandomState) -> np.ndarray:
  q, r = np.linalg.qr(rng.standard_normal((3, 3)))
  q = q * np.sign(np.diag(r))
  if np.linalg.det(q) < 0:
    q[:, 0] *= -1
  return q


# ---------------------------------------------------------------------------------------
# Integral codec and losses
# ---------------------------------------------------------------------------------------


def _one_hot_raw(b, h, w, j, d, voxels):
  """Channels-last logits with a single dominant voxel per joint: voxels[(b, j)] = (z, y, x)."""
  raw = np.zeros((b, h, w, j * d), np.float32)
  for (bi, ji), (z, y, x) in voxels.items():
    raw[bi, y, x, ji * d + z] = 60.0  # exp(-60) ~ 1e-26: the softmax is one-hot in float32
  return jnp.asarray(raw)


def test_soft_argmax_of_one_hot_volume_lands_on_the_voxel():
  b, h, w, j, d = 2, 5, 7, 3, 4
  voxels = {(0, 0): (0, 0, 0), (0, 1): (3, 4, 6), (0, 2): (2, 1, 5),
            (1, 0): (1, 2, 3), (1, 1): (0, 4, 0), (1, 2): (3, 0, 6)}
  raw = _one_hot_raw(b, h, w, j, d, voxels)
  coords = np.asarray(integral_codec.softmax_integral(raw, j, depth=d))
  assert coords.shape == (b, j, 3) and coords.dtype == np.float32
  for (bi, ji), (z, y, x) in voxels.items():
    np.testing.assert_allclose(coords[bi, ji], [x / w - 0.5, y / h - 0.5, z / d - 0.5], atol=1e-6)
  # Volumes are [B, J, D, H, W] with channel j * D + d.
  vol = np.asarray(integral_codec.joint_volumes(raw, j))
  assert vol.shape == (b, j, d, h, w)
  assert vol[0, 1, 3, 4, 6] == 60.0 and vol.sum() == 60.0 * len(voxels)


def test_soft_argmax_uniform_volume_is_the_centre_and_2d_has_constant_depth():
  raw = jnp.zeros((1, 4, 6, 2), jnp.float32)  # J=2, D=1
  coords = np.asarray(integral_codec.softmax_integral(raw, 2))
  np.testing.assert_allclose(coords[..., 0], (6 - 1) / 2 / 6 - 0.5, atol=1e-7)
  np.testing.assert_allclose(coords[..., 1], (4 - 1) / 2 / 4 - 0.5, atol=1e-7)
  np.testing.assert_array_equal(coords[..., 2], -0.5)


def test_soft_argmax_preserves_dtype():
  raw = jnp.asarray(np.random.RandomState(11).standard_normal((2, 4, 4, 6)), jnp.float32)
  out = integral_codec.softmax_integral(raw.astype(jnp.bfloat16), 3)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32),
                             np.asarray(integral_codec.softmax_integral(raw, 3)), atol=1e-2)


def test_joint_location_result_and_label_are_inverse():
  b, h, w, j, d = 1, 8, 8, 2, 8
  voxels = {(0, 0): (5, 2, 7), (0, 1): (0, 6, 1)}
  coords = integral_codec.softmax_integral(_one_hot_raw(b, h, w, j, d, voxels), j, depth=d)
  pw, ph = 32, 48
  pix = np.asarray(integral_codec.joint_location_result(coords, pw, ph))
  assert pix.shape == (b, j, 4)
  for (_, ji), (z, y, x) in voxels.items():
    np.testing.assert_allclose(pix[0, ji], [x / w * pw, y / h * ph, (z / d - 0.5) * pw, 1.0],
                               atol=1e-4)
  joints = pix[0, :, :3].astype(np.float32)
  label = integral_codec.joint_location_label(joints, pw, ph)
  assert label.dtype == np.float32 and label.shape == (j, 3)
  np.testing.assert_allclose(label, np.asarray(coords)[0], atol=1e-6)
  # The input is not modified (the original wrote into it).
  np.testing.assert_array_equal(joints, pix[0, :, :3].astype(np.float32))


def test_integral_losses_match_their_definition():
  rng = np.random.RandomState(0)
  b, h, w, j, d = 3, 6, 5, 4, 3
  raw = jnp.asarray(rng.standard_normal((b, h, w, j * d)), jnp.float32)
  target = rng.uniform(-0.5, 0.5, (b, j, 3)).astype(np.float32)
  weight = (rng.uniform(size=(b, j, 3)) > 0.3).astype(np.float32)
  coords = np.asarray(integral_codec.softmax_integral(raw, j), np.float64)
  l1 = integral_losses.l1_joint_location_loss(raw, jnp.asarray(target), jnp.asarray(weight))
  l2 = integral_losses.l2_joint_location_loss(raw, jnp.asarray(target), jnp.asarray(weight))
  np.testing.assert_allclose(l1, np.sum(np.abs(coords - target) * weight) / b, rtol=1e-6)
  np.testing.assert_allclose(l2, np.sum((coords - target) ** 2 * weight) / b, rtol=1e-6)
  # Perfect targets give zero loss; invisible coordinates do not matter.
  exact = jnp.asarray(coords, jnp.float32)
  assert float(integral_losses.l1_joint_location_loss(raw, exact, jnp.ones_like(exact))) < 1e-6
  assert float(integral_losses.l2_joint_location_loss(raw, exact + 1, jnp.zeros_like(exact))) == 0
  # Differentiable end to end.
  grad = jax.grad(integral_losses.l1_joint_location_loss)(raw, jnp.asarray(target),
                                                          jnp.asarray(weight))
  assert grad.shape == raw.shape and np.all(np.isfinite(grad))


def test_integral_bad_shapes_raise():
  raw = jnp.zeros((2, 4, 4, 6))
  with pytest.raises(ValueError, match="multiple of num_joints"):
    integral_codec.softmax_integral(raw, 4)
  with pytest.raises(ValueError, match=r"num_joints \* depth"):
    integral_codec.softmax_integral(raw, 3, depth=3)
  with pytest.raises(ValueError, match=r"\[B, H, W, J\*D\]"):
    integral_codec.softmax_integral(raw[0], 3)
  with pytest.raises(ValueError, match=r"target must be \[B, J, 3\]"):
    integral_losses.l1_joint_location_loss(raw, jnp.zeros((2, 9)), jnp.ones((2, 9)))
  with pytest.raises(ValueError, match="target_weight"):
    integral_losses.l2_joint_location_loss(raw, jnp.zeros((2, 3, 3)), jnp.ones((2, 2, 3)))
  with pytest.raises(ValueError, match=r"\[J, 3\]"):
    integral_codec.joint_location_label(np.zeros((3, 2)), 64, 64)
  with pytest.raises(ValueError, match=r"\[\.\.\., J, 3\]"):
    integral_codec.joint_location_result(jnp.zeros((2, 3, 2)), 64, 64)


# ---------------------------------------------------------------------------------------
# hg3d codec and losses
# ---------------------------------------------------------------------------------------


def test_gather_depth_uses_the_nhwc_flat_index_of_the_original():
  rng = np.random.RandomState(1)
  b, j, h, w = 2, 5, 3, 4
  depth_nchw = rng.standard_normal((b, j, h, w)).astype(np.float32)
  x = rng.randint(0, w, (b, j))
  y = rng.randint(0, h, (b, j))
  joint = np.tile(np.arange(j), (b, 1))
  ind = hg3d_codec.flat_depth_index(x, y, joint, w, j)
  # The original's layout: depth.permute(0, 2, 3, 1).reshape(B, -1)[ind].
  expected = np.transpose(depth_nchw, (0, 2, 3, 1)).reshape(b, -1)[np.arange(b)[:, None], ind]
  np.testing.assert_array_equal(expected, depth_nchw[np.arange(b)[:, None], joint, y, x])
  got = hg3d_codec.gather_depth(jnp.asarray(np.transpose(depth_nchw, (0, 2, 3, 1))), ind)
  np.testing.assert_array_equal(np.asarray(got), expected)


def test_get_preds_keeps_the_fractional_y_and_argmax_coords_is_integer():
  hm = np.zeros((1, 4, 5, 2), np.float32)  # [B, H, W, J]
  hm[0, 2, 3, 0] = 1.0  # joint 0 at (x=3, y=2)
  hm[0, 0, 4, 1] = 1.0  # joint 1 at (x=4, y=0)
  hm[0, 3, 0, 1] = 1.0  # a later equal maximum: the first one (row-major) wins
  preds = np.asarray(hg3d_codec.get_preds(jnp.asarray(hm)))
  np.testing.assert_allclose(preds, [[[3, (2 * 5 + 3) / 5], [4, 4 / 5]]], rtol=1e-7)
  ints = np.asarray(hg3d_codec.argmax_coords(jnp.asarray(hm)))
  assert ints.dtype == np.int32
  np.testing.assert_array_equal(ints, [[[3, 2], [4, 0]]])


def test_get_preds_3d_is_root_relative_and_reuses_the_last_depth_map():
  b, h, w, j = 1, 4, 8, 8
  hm = np.zeros((b, h, w, j), np.float32)
  locs = [(x % w, (3 * x) % h) for x in range(j)]
  for k, (x, y) in enumerate(locs):
    hm[0, y, x, k] = 1.0
  depth = np.arange(h * w, dtype=np.float32).reshape(1, h, w, 1)  # one shared depth map
  out = np.asarray(hg3d_codec.get_preds_3d(jnp.asarray(hm), jnp.asarray(depth)))
  absolute = np.array([[x / w, y / w, depth[0, y, x, 0]] for x, y in locs])
  np.testing.assert_allclose(out[0], absolute - absolute[6], rtol=1e-6, atol=1e-6)
  out_root0 = np.asarray(hg3d_codec.get_preds_3d(jnp.asarray(hm), jnp.asarray(depth), root=0))
  np.testing.assert_allclose(out_root0[0], absolute - absolute[0], rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="root joint"):
    hg3d_codec.get_preds_3d(jnp.asarray(hm), jnp.asarray(depth), root=8)
  with pytest.raises(ValueError, match="like the heatmaps"):
    hg3d_codec.get_preds_3d(jnp.asarray(hm), jnp.asarray(depth[:, :2]))


def _hg3d_batch(rng, b=4, k=16):
  z = rng.standard_normal((b, k)).astype(np.float32) * 0.3
  visible = (rng.uniform(size=(b, k)) > 0.2).astype(np.float32)
  mask = np.zeros((b, k), np.uint8)
  mask[0] = 1  # sample 0 has depth supervision and is skipped by var_loss
  xy = rng.randint(0, 64, (b, k, 2)).astype(np.float32) / 64
  return z, visible, mask, xy


@jax.jit
def _custom_and_autodiff_var_grads(z, visible, mask, xy, var_weight):
  """(loss, hand-written gradient) and (loss, jax.grad of the same forward) in one compile."""

  def autodiff_loss(z):
    is_2d = jnp.all(mask == 0, axis=-1).astype(z.dtype)
    return var_weight * hg3d_losses._var_loss_sum(z, visible, is_2d, xy) / z.shape[0]

  custom_loss = lambda z: hg3d_losses.var_loss(z, visible, mask, xy, var_weight)
  scaled = jax.grad(lambda z: 3.0 * custom_loss(z))(z)
  return (jax.value_and_grad(custom_loss)(z), jax.value_and_grad(autodiff_loss)(z), scaled)


def test_var_loss_custom_gradient_equals_autodiff_of_the_forward():
  rng = np.random.RandomState(2)
  z, visible, mask, xy = _hg3d_batch(rng)
  (v_custom, g_custom), (v_auto, g_auto), g3 = _custom_and_autodiff_var_grads(
      z, visible, mask, xy, 0.5)
  np.testing.assert_allclose(v_custom, v_auto, rtol=1e-6)
  g_custom, g_auto = np.asarray(g_custom), np.asarray(g_auto)
  np.testing.assert_allclose(g_custom, g_auto, rtol=1e-5, atol=1e-7)
  assert np.any(g_custom[1:] != 0) and np.all(g_custom[0] == 0)
  # The cotangent scales the hand-written gradient (the original ignored it; it is 1 there).
  np.testing.assert_allclose(g3, 3 * g_custom, rtol=1e-6)


def test_var_loss_gradient_on_the_fixture_equals_autodiff():
  fixture, arrays = _fixture("hg3d_losses")
  # Samples are independent in VarLoss (up to the common factor var_weight / B), so all
  # cases' samples run as one batch: one compilation.
  parts = {"gathered_depth": [], "reg_target": [], "reg_mask": [], "gt_2d": []}
  for case in range(fixture["cases"]):
    b = arrays[f"case{case}_reg_mask"].shape[0]
    for name in parts:
      parts[name].append(arrays[f"case{case}_{name}"].reshape(b, 16, -1))
  z, visible, mask, xy = (np.concatenate(parts[n]) for n in parts)
  (_, g_custom), (_, g_auto), _ = _custom_and_autodiff_var_grads(
      z[..., 0], visible[..., 0], mask[..., 0], xy, 1.0)
  assert np.any(np.asarray(g_custom) != 0)
  # Both are float32 evaluations of the same derivative: a few roundings of its size.
  scale = float(np.abs(g_auto).max())
  np.testing.assert_allclose(g_custom, g_auto, atol=16 * EPS32 * scale)


def _consistent_mpii_pose() -> np.ndarray:
  """[16, 2] MPII joints whose bone lengths, times MPII_BONE_WEIGHTS, agree within each group."""
  leg = hg3d_losses.MPII_BONE_WEIGHTS[0][0]  # shin weight
  arm = hg3d_losses.MPII_BONE_WEIGHTS[1][0]  # forearm weight
  xy = np.zeros((16, 2))
  xy[6] = (0.0, 0.0)  # pelvis
  xy[2], xy[3] = (-0.1, 0.0), (0.1, 0.0)  # hips, equally far from the pelvis
  xy[1], xy[4] = xy[2] + (0, 0.4), xy[3] + (0, 0.4)  # knees: thighs of 0.4
  xy[0], xy[5] = xy[1] + (0, 0.4 / leg), xy[4] + (0, 0.4 / leg)  # ankles: weighted shins 0.4
  xy[8] = (0.0, -0.5)  # neck
  xy[12], xy[13] = (-0.15, -0.5), (0.15, -0.5)  # shoulders, equally far from the neck
  xy[11], xy[14] = xy[12] + (0, 0.3), xy[13] + (0, 0.3)  # elbows
  xy[10], xy[15] = xy[11] + (0, 0.3 / arm), xy[14] + (0, 0.3 / arm)  # wrists
  xy[7], xy[9] = (0.0, -0.3), (0.0, -0.7)  # thorax, head top: in no bone group
  return xy.astype(np.float32)


def test_var_loss_is_zero_for_consistent_bone_lengths_and_skips_3d_samples():
  xy = np.stack([_consistent_mpii_pose()] * 2)
  z = np.zeros((2, 16), np.float32)
  visible = np.ones((2, 16), np.float32)
  mask = np.zeros((2, 16), np.uint8)
  assert float(hg3d_losses.var_loss(z, visible, mask, xy, 1.0)) < 1e-12
  # Moving a wrist in depth lengthens one forearm only: a positive loss.
  z_bad = z.copy()
  z_bad[:, 10] = 0.2
  assert float(hg3d_losses.var_loss(z_bad, visible, mask, xy, 1.0)) > 1e-4
  # A sample with depth supervision never contributes.
  mask[:, 0] = 1
  assert float(hg3d_losses.var_loss(z_bad, visible, mask, xy, 1.0)) == 0.0
  # An invisible wrist removes its forearm from the group.
  mask[:] = 0
  visible[:, 10] = 0
  assert float(hg3d_losses.var_loss(z_bad, visible, mask, xy, 1.0)) < 1e-12


def test_reg_and_fusion_losses():
  rng = np.random.RandomState(4)
  b, h, w, j = 3, 4, 5, 16
  depth = rng.standard_normal((b, h, w, j)).astype(np.float32) * 2
  x, y = rng.randint(0, w, (b, j)), rng.randint(0, h, (b, j))
  ind = hg3d_codec.flat_depth_index(x, y, np.arange(j)[None], w, j)
  target = rng.standard_normal((b, j)).astype(np.float32)
  mask = np.zeros((b, j), np.uint8)
  mask[1] = 1
  pred = depth[np.arange(b)[:, None], y, x, np.arange(j)[None]]
  diff = (pred - target) * mask
  smooth = np.where(np.abs(diff) < 1, 0.5 * diff**2, np.abs(diff) - 0.5)
  expected_reg = smooth.sum() / (mask.sum() + 1e-4)
  reg = hg3d_losses.reg_loss(depth, mask, ind, target)
  np.testing.assert_allclose(reg, expected_reg, rtol=1e-6)
  xy = rng.randint(0, 64, (b, j, 2)).astype(np.float32) / 64
  var = hg3d_losses.var_loss(jnp.asarray(pred), target, mask, xy, 0.01)
  fusion = hg3d_losses.fusion_loss(depth, mask, ind, target, xy, 0.1, 0.01)
  np.testing.assert_allclose(fusion, 0.1 * expected_reg + var, rtol=1e-6)
  # A weight <= 0 switches its term off (also when traced).
  np.testing.assert_allclose(hg3d_losses.fusion_loss(depth, mask, ind, target, xy, 0.0, 0.01),
                             var, rtol=1e-6)
  np.testing.assert_allclose(
      jax.jit(hg3d_losses.fusion_loss)(depth, mask, ind, target, xy, 0.1, -1.0),
      0.1 * expected_reg, rtol=1e-6)
  grad = jax.grad(hg3d_losses.fusion_loss)(jnp.asarray(depth), mask, ind, target, xy, 0.1, 0.01)
  assert grad.shape == depth.shape and np.all(np.isfinite(grad))
  assert float(hg3d_losses.reg_loss(depth, np.zeros_like(mask), ind, target)) == 0.0


def test_hg3d_bad_inputs_raise():
  depth = jnp.zeros((2, 4, 4, 16))
  ind = jnp.zeros((2, 16), jnp.int32)
  with pytest.raises(ValueError, match="integer"):
    hg3d_codec.gather_depth(depth, ind.astype(jnp.float32))
  with pytest.raises(ValueError, match=r"ind must be \[B, K\]"):
    hg3d_codec.gather_depth(depth, ind[:1])
  with pytest.raises(ValueError, match="reg_target"):
    hg3d_losses.reg_loss(depth, jnp.ones((2, 16)), ind, jnp.zeros((2, 16, 1)))
  with pytest.raises(ValueError, match="gt_2d"):
    hg3d_losses.var_loss(jnp.zeros((2, 16)), jnp.ones((2, 16)), jnp.zeros((2, 16)),
                         jnp.zeros((2, 32)), 1.0)
  with pytest.raises(ValueError, match="MPII joints"):
    hg3d_losses.var_loss(jnp.zeros((2, 8)), jnp.ones((2, 8)), jnp.zeros((2, 8)),
                         jnp.zeros((2, 8, 2)), 1.0)


# ---------------------------------------------------------------------------------------
# Human3.6M metrics
# ---------------------------------------------------------------------------------------


def test_p_mpjpe_removes_similarity_transforms():
  rng = np.random.RandomState(5)
  target = _random_pose(rng, 6)
  moved = np.stack([2.5 * pose @ _rotation(rng) + rng.standard_normal(3) for pose in target])
  assert h36m.p_mpjpe(moved, target) < 1e-12
  p32 = h36m.p_mpjpe(moved.astype(np.float32), target.astype(np.float32))
  assert np.asarray(p32).dtype == np.float32 and p32 < 1e-5
  aligned = h36m.procrustes_align(moved, target)
  np.testing.assert_allclose(aligned, target, atol=1e-12)
  # A mirror image is not a rotation: the reflection fix keeps it from being aligned away.
  mirrored = target * np.array([-1.0, 1.0, 1.0])
  assert h36m.p_mpjpe(mirrored, target) > 0.05
  # Protocol 1 sees the transform in full.
  assert float(h36m.mpjpe(moved.astype(np.float32), target.astype(np.float32))) > 0.1


def test_mpjpe_family():
  rng = np.random.RandomState(6)
  target = _random_pose(rng, 4).astype(np.float32)
  offset = np.array([0.03, -0.04, 0.0], np.float32)  # |offset| = 0.05
  np.testing.assert_allclose(h36m.mpjpe(target + offset, target), 0.05, rtol=1e-5)
  np.testing.assert_allclose(h36m.weighted_mpjpe(target + offset, target, np.ones(4)), 0.05,
                             rtol=1e-5)
  w = np.array([0.0, 1.0, 2.0, 1.0], np.float32)
  np.testing.assert_allclose(h36m.weighted_mpjpe(target + offset, target, w), 0.05, rtol=1e-5)
  np.testing.assert_allclose(h36m.weighted_mpjpe(target + offset, target, w[:, None]), 0.05,
                             rtol=1e-5)
  assert float(h36m.n_mpjpe(1.7 * target, target)) < 1e-6
  assert float(h36m.n_mpjpe(1.7 * target[None], target[None])) < 1e-6
  np.testing.assert_allclose(h36m.mean_velocity_error(target + offset, target), 0.0, atol=1e-6)
  seq = np.cumsum(_random_pose(rng, 5), axis=0).astype(np.float32)
  shifted = seq.copy()
  shifted[2:] += offset  # one jump of |offset| between frames 1 and 2, over 4 velocities
  np.testing.assert_allclose(h36m.mean_velocity_error(shifted, seq), 0.05 / 4, rtol=1e-4)


def test_metric_shape_errors():
  a = np.zeros((3, 17, 3), np.float32)
  with pytest.raises(ValueError, match="same shape"):
    h36m.mpjpe(a, a[:2])
  with pytest.raises(ValueError, match="same shape"):
    h36m.p_mpjpe(a, a[:, :16])
  with pytest.raises(ValueError, match="leading dimension"):
    h36m.weighted_mpjpe(a, a, np.ones(2))


# ---------------------------------------------------------------------------------------
# Cameras
# ---------------------------------------------------------------------------------------


def test_quaternion_rotation():
  v = jnp.asarray(np.random.RandomState(7).standard_normal((5, 3)), jnp.float32)
  identity = jnp.array([1.0, 0.0, 0.0, 0.0])
  np.testing.assert_allclose(qrot(identity, v), v, atol=1e-7)
  half = np.sqrt(0.5)
  about_z = jnp.array([half, 0.0, 0.0, half])  # +90 degrees about z: x -> y
  np.testing.assert_allclose(qrot(about_z, jnp.array([1.0, 0.0, 0.0])), [0.0, 1.0, 0.0],
                             atol=1e-6)
  q = jnp.asarray(h36m_cameras.h36m_camera("S9", 2).orientation)
  np.testing.assert_allclose(qrot(q, qrot(qinverse(q), v)), v, atol=1e-5)
  with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
    qrot(jnp.zeros(3), v)


def test_world_camera_round_trip_and_projection_of_the_optical_axis():
  cam = h36m_cameras.h36m_camera("S1", 1)
  rng = np.random.RandomState(8)
  world = (rng.standard_normal((3, 17, 3)) + [0, 0, 1]).astype(np.float32)
  x_cam = camera.world_to_camera(world, cam.orientation, cam.translation)
  back = camera.camera_to_world(x_cam, cam.orientation, cam.translation)
  np.testing.assert_allclose(back, world, atol=1e-5)
  # The camera centre maps to the origin of camera space.
  np.testing.assert_allclose(
      camera.world_to_camera(cam.translation[None], cam.orientation, cam.translation), 0,
      atol=1e-6)
  # A point on the optical axis projects onto the principal point.
  on_axis = jnp.array([[[0.0, 0.0, 4.0]]])
  params = jnp.asarray(cam.intrinsic)[None]
  np.testing.assert_allclose(camera.project_to_2d(on_axis, params)[0, 0], cam.intrinsic[2:4],
                             atol=1e-7)


def test_projection_without_distortion_is_linear_and_clamps():
  rng = np.random.RandomState(9)
  x = rng.uniform(-1, 1, (2, 17, 3)).astype(np.float32)
  x[..., 2] = rng.uniform(0.5, 3, (2, 17))
  x[0, 0] = [5.0, -7.0, 1.0]  # beyond the clamp in both axes
  params = np.array([[2.3, 2.2, 0.01, -0.02] + [0.0] * 5] * 2, np.float32)
  lin = np.asarray(camera.project_to_2d_linear(x, params))
  np.testing.assert_allclose(camera.project_to_2d(x, params), lin, atol=1e-6)
  np.testing.assert_allclose(lin[0, 0], [2.3 + 0.01, -2.2 - 0.02], atol=1e-6)
  # One camera for all points.
  np.testing.assert_allclose(camera.project_to_2d_linear(x, params[0]), lin, atol=1e-6)
  with pytest.raises(ValueError, match="camera_params"):
    camera.project_to_2d(x, params[:, :8])
  with pytest.raises(ValueError, match="one row per"):
    camera.project_to_2d(x, np.concatenate([params, params]))


def test_screen_coordinates_round_trip_in_numpy_and_jax():
  pix = np.random.RandomState(10).uniform(0, 1000, (4, 17, 2)).astype(np.float32)
  norm = camera.normalize_screen_coordinates(pix, 1000, 1002)
  assert isinstance(norm, np.ndarray) and norm.dtype == np.float32
  np.testing.assert_allclose(norm[..., 0], pix[..., 0] / 500 - 1, atol=1e-6)
  np.testing.assert_allclose(camera.image_coordinates(norm, 1000, 1002), pix, atol=1e-4)
  norm_jax = camera.normalize_screen_coordinates(jnp.asarray(pix), 1000, 1002)
  assert isinstance(norm_jax, jax.Array) and norm_jax.dtype == jnp.float32
  np.testing.assert_allclose(norm_jax, norm, atol=2 * EPS32)  # XLA may fold / w * 2
  assert camera.image_coordinates(pix.astype(np.float64), 1000, 1000).dtype == np.float64
  with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
    camera.normalize_screen_coordinates(np.zeros((4, 3)), 1000, 1000)


def test_h36m_camera_table():
  assert h36m_cameras.H36M_SUBJECTS == ("S1", "S5", "S6", "S7", "S8", "S9", "S11")
  for subject in h36m_cameras.H36M_SUBJECTS:
    for cam in h36m_cameras.h36m_cameras(subject):
      assert cam.intrinsic.shape == (9,) and cam.intrinsic.dtype == np.float32
      np.testing.assert_allclose(np.linalg.norm(cam.orientation), 1.0, atol=1e-6)
      assert 1.0 < np.linalg.norm(cam.translation) < 10.0  # meters
  with pytest.raises(ValueError, match="valid: S1"):
    h36m_cameras.h36m_camera("S2", 0)
  with pytest.raises(ValueError, match="0-3"):
    h36m_cameras.h36m_camera("S1", 4)


def test_h36m_camera_table_reproduces_the_fixture_cameras_exactly():
  fixture, arrays = _fixture("videopose3d_camera")
  cams = [h36m_cameras.h36m_camera(s, i) for s in h36m_cameras.H36M_SUBJECTS for i in range(4)]
  for case in range(fixture["cases"]):
    r, t = arrays[f"case{case}_R"], arrays[f"case{case}_t"]
    match = [c for c in cams if np.array_equal(c.orientation, r)]
    assert len(match) == 1, f"case {case}: orientation {r} not in the camera table"
    np.testing.assert_array_equal(match[0].translation, t)
    for row in arrays[f"case{case}_camera_params"]:
      np.testing.assert_array_equal(match[0].intrinsic, row)
    assert (match[0].res_w, match[0].res_h) == (int(arrays[f"case{case}_res_w"]),
                                                int(arrays[f"case{case}_res_h"]))
