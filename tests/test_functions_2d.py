"""Unit tests of the 2D pre/post-processing beyond the reference fixtures.

Geometry of the crop transform, target/decoder round trips, flip identities, the jnp flip
against the numpy one, the conformance checkers' ability to reject wrong results, and
clear errors on bad input.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpose.codecs import heatmap as heatmap_codec
from jaxpose.codecs import mspn as mspn_codec
from jaxpose.data import keypoints, targets, transforms
from tests.conformance import fixtures, functions_2d

REFERENCE_DIR = fixtures.PROJECT_DIR  # the project's copy of the reference fixtures


# ----------------------------------------------------------------------------------------
# keypoints
# ----------------------------------------------------------------------------------------


def test_keypoint_layouts_are_consistent():
  assert len(keypoints.COCO_KEYPOINT_NAMES) == 17 and len(keypoints.MPII_JOINT_NAMES) == 16
  for names, pairs in ((keypoints.COCO_KEYPOINT_NAMES, keypoints.COCO_FLIP_PAIRS),
                       (keypoints.MPII_JOINT_NAMES, keypoints.MPII_FLIP_PAIRS)):
    for a, b in pairs:  # a flip pair is the same part on the other side
      assert names[a].replace("left", "right") == names[b] or \
          names[a].replace("right", "left") == names[b]
    perm = keypoints.flip_permutation(len(names), pairs)
    np.testing.assert_array_equal(perm[perm], np.arange(len(names)))
  assert len(keypoints.COCO_SKELETON) == 19 and len(keypoints.MPII_SKELETON) == 15
  assert keypoints.COCO_JOINTS_WEIGHT.shape == (17, 1)
  assert sorted(keypoints.COCO_UPPER_BODY_IDS + keypoints.COCO_LOWER_BODY_IDS) == list(range(17))
  assert sorted(keypoints.MPII_UPPER_BODY_IDS + keypoints.MPII_LOWER_BODY_IDS) == list(range(16))


@pytest.mark.parametrize("pairs", [[(0, 0)], [(0, 1), (1, 2)], [(0, 17)], [(1, 2, 3)]])
def test_flip_permutation_rejects_bad_pairs(pairs):
  with pytest.raises(ValueError, match="flip pair"):
    keypoints.flip_permutation(17, pairs)


# ----------------------------------------------------------------------------------------
# transforms
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rot", [0.0, 30.0, -45.0, 90.0, 180.0])
def test_affine_transform_geometry_and_round_trip(rot):
  center = np.array([320.5, 240.25], np.float32)
  scale = np.array([1.2, 1.6], np.float32)
  size = (192, 256)
  fwd = transforms.get_affine_transform(center, scale, rot, size)
  inv = transforms.get_affine_transform(center, scale, rot, size, inv=True)
  assert fwd.shape == inv.shape == (2, 3) and fwd.dtype == np.float64
  # A similarity whose scale is set by the box width only.
  zoom = size[0] / (scale[0] * 200)
  linear = fwd[:, :2] / zoom
  np.testing.assert_allclose(linear @ linear.T, np.eye(2), atol=1e-6)
  np.testing.assert_allclose(np.linalg.det(fwd[:, :2]), zoom**2, rtol=1e-6)
  # The center goes to the crop's middle; the point above it (rotated by rot) to the top.
  a = np.deg2rad(rot)
  up = center + (scale[0] * 100) * np.array([np.sin(a), -np.cos(a)])
  mapped = transforms.affine_transform_points(np.stack([center, up]), fwd)
  np.testing.assert_allclose(mapped, [[96, 128], [96, 32]], atol=1e-3)
  # Round trip through the inverse.
  points = np.random.default_rng(0).uniform(-500, 1000, (20, 2))
  back = transforms.affine_transform_points(transforms.affine_transform_points(points, fwd), inv)
  np.testing.assert_allclose(back, points, atol=1e-3)


def test_affine_transform_shift_and_scalar_scale():
  center = np.array([100.0, 50.0], np.float32)
  shifted = transforms.get_affine_transform(center, np.array([1.0, 1.0], np.float32), 0,
                                            (64, 64), shift=np.array([0.1, -0.05], np.float32))
  # The shifted box center (center + shift * 200) lands on the crop middle.
  np.testing.assert_allclose(transforms.affine_transform_points([[120.0, 40.0]], shifted),
                             [[32, 32]], atol=1e-4)
  np.testing.assert_array_equal(
      transforms.get_affine_transform(center, 1.5, 10, (64, 48)),
      transforms.get_affine_transform(center, np.array([1.5, 1.5]), 10, (64, 48)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(scale=np.array([0.0, 1.0], np.float32)), "scale"),
    (dict(scale=np.array([-1.0, 1.0], np.float32)), "scale"),
    (dict(center=np.array([np.nan, 1.0], np.float32)), "center"),
    (dict(center=np.zeros(3, np.float32)), "center"),
    (dict(rot=np.inf), "rot"),
    (dict(output_size=(0, 64)), "output_size"),
    (dict(output_size=(64,)), "output_size"),
])
def test_affine_transform_rejects_bad_input(kwargs, match):
  args = dict(center=np.zeros(2, np.float32), scale=np.ones(2, np.float32), rot=0.0,
              output_size=(48, 64))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    transforms.get_affine_transform(**args)


def test_affine_transform_points_rejects_bad_shapes():
  with pytest.raises(ValueError, match="points"):
    transforms.affine_transform_points(np.zeros((3, 3)), np.zeros((2, 3)))
  with pytest.raises(ValueError, match="trans"):
    transforms.affine_transform_points(np.zeros((3, 2)), np.zeros((3, 3)))


@pytest.mark.parametrize("shape", [(120, 160), (120, 160, 3), (120, 160, 1)])
def test_warp_to_crop_moves_a_dot_where_the_transform_says(shape):
  image = np.zeros(shape, np.float32)
  image[70, 90] = 1.0
  center, scale, rot, size = np.array([80.0, 60.0], np.float32), np.array(
      [0.4, 0.4], np.float32), 20.0, (48, 64)
  crop = transforms.warp_to_crop(image, center, scale, rot, size)
  assert crop.shape == (64, 48) + shape[2:] and crop.dtype == np.float32
  trans = transforms.get_affine_transform(center, scale, rot, size)
  expected = transforms.affine_transform_points([[90.0, 70.0]], trans)[0]
  plane = crop if crop.ndim == 2 else crop[..., 0]
  y, x = np.unravel_index(np.argmax(plane), plane.shape)
  assert abs(x - expected[0]) <= 1 and abs(y - expected[1]) <= 1
  with pytest.raises(ValueError, match="image"):
    transforms.warp_to_crop(np.zeros((2, 2, 2, 2)), center, scale, rot, size)


def test_box_to_center_scale():
  aspect = 192 / 256
  center, scale = transforms.box_to_center_scale([10, 20, 30, 100], aspect)
  assert center.dtype == scale.dtype == np.float32
  np.testing.assert_array_equal(center, [25, 70])
  # Too narrow: widened to the aspect ratio, then padded by 1.25.
  np.testing.assert_allclose(scale, np.array([100 * aspect, 100]) / 200 * 1.25, rtol=1e-6)
  _, wide = transforms.box_to_center_scale([0, 0, 300, 100], aspect, padding=1.0)
  np.testing.assert_allclose(wide, [1.5, 2.0], rtol=1e-6)
  # The original skips the padding for the sentinel center x == -1.
  _, sentinel = transforms.box_to_center_scale([-16, 0, 30, 40], aspect)
  np.testing.assert_allclose(sentinel, [0.15, 0.2], rtol=1e-6)
  for bad in ([0, 0, -1, 5], [0, 0, 0, 0], [0, np.nan, 1, 1], [0, 0, 1]):
    with pytest.raises(ValueError, match="box"):
      transforms.box_to_center_scale(bad, aspect)
  with pytest.raises(ValueError, match="aspect_ratio"):
    transforms.box_to_center_scale([0, 0, 1, 1], 0.0)


def test_fliplr_joints_twice_is_identity():
  rng = np.random.default_rng(1)
  joints = rng.uniform(0, 200, (17, 3))
  vis = rng.choice([0.0, 1.0], (17, 1)).repeat(3, axis=1)
  flipped, fvis = transforms.fliplr_joints(joints, vis, 640, keypoints.COCO_FLIP_PAIRS)
  # x mirrored about (640 - 1) / 2 and left/right swapped.
  np.testing.assert_allclose(flipped[2, 0], (639 - joints[1, 0]) * vis[1, 0])
  again, again_vis = transforms.fliplr_joints(flipped, fvis, 640, keypoints.COCO_FLIP_PAIRS)
  np.testing.assert_allclose(again, joints * vis, atol=1e-12)
  np.testing.assert_array_equal(again_vis, vis)
  # MSPN keeps coordinates of 0/1/2-visibility joints unscaled.
  mspn_vis = rng.choice([0.0, 1.0, 2.0], (16, 1))
  j16 = joints[:16, :2]
  m, mv = transforms.fliplr_joints(j16, mspn_vis, 640, keypoints.MPII_FLIP_PAIRS,
                                   multiply_by_visibility=False)
  m2, mv2 = transforms.fliplr_joints(m, mv, 640, keypoints.MPII_FLIP_PAIRS,
                                     multiply_by_visibility=False)
  np.testing.assert_allclose(m2, j16, atol=1e-12)
  np.testing.assert_array_equal(mv2, mspn_vis)
  with pytest.raises(ValueError, match="joints_vis"):
    transforms.fliplr_joints(joints, vis[:5], 640, keypoints.COCO_FLIP_PAIRS)


# ----------------------------------------------------------------------------------------
# HRNet targets and decoding
# ----------------------------------------------------------------------------------------


def _identity_box(width: int, height: int, n: int = 1):
  """center/scale whose inverse crop transform is the identity on a W x H heatmap."""
  center = np.tile(np.array([width / 2, height / 2], np.float32), (n, 1))
  scale = np.tile(np.array([width / 200, height / 200], np.float32), (n, 1))
  return center, scale


def test_gaussian_targets_peak_at_the_rounded_joint():
  joints = np.array([[50.0, 90.0, 0], [-3.0, 10.0, 0], [191.0, 255.0, 0], [-30.0, 5.0, 0],
                     [500.0, 5.0, 0], [40.0, 40.0, 0]], np.float32)
  vis = np.array([1, 1, 1, 1, 1, 0], np.float32)[:, None].repeat(3, axis=1)
  target, weight = targets.gaussian_targets(joints, vis, (192, 256), (48, 64), sigma=2)
  assert target.shape == (64, 48, 6) and target.dtype == np.float32
  # mu = int(joint / 4 + 0.5): (13, 23); x = -3 truncates toward zero to 0; (48, 64) is
  # outside but the patch still touches the map.
  for k, (mx, my) in enumerate([(13, 23), (0, 3), (48, 64)]):
    if mx < 48 and my < 64:
      assert target[my, mx, k] == 1.0 and target[..., k].max() == 1.0
      assert np.unravel_index(np.argmax(target[..., k]), (64, 48)) == (my, mx)
  assert 0 < target[..., 2].max() < 1  # cut tail of a joint beyond the corner
  np.testing.assert_array_equal(weight[:, 0], [1, 1, 1, 1, 0, 0])
  # x = -30: mu = -7, br = mu + 7 = 0 still counts as touching but pastes nothing.
  assert weight[3, 0] == 1 and not target[..., 3].any()
  assert not target[..., 4].any() and not target[..., 5].any()
  # Per-joint weights multiply the visibility.
  _, weighted = targets.gaussian_targets(joints, vis, (192, 256), (48, 64), 2,
                                         joints_weight=np.arange(6, dtype=np.float32))
  np.testing.assert_array_equal(weighted[:, 0], weight[:, 0] * np.arange(6))


@pytest.mark.parametrize("kwargs, match", [
    (dict(joints=np.full((3, 3), np.nan, np.float32)), "joints"),
    (dict(joints=np.zeros((3,), np.float32)), "joints"),
    (dict(joints_vis=np.ones((4, 3), np.float32)), "joints_vis"),
    (dict(sigma=0), "sigma"),
    (dict(heatmap_size=(0, 64)), "heatmap_size"),
    (dict(joints_weight=np.ones(5, np.float32)), "joints_weight"),
])
def test_gaussian_targets_reject_bad_input(kwargs, match):
  args = dict(joints=np.zeros((3, 3), np.float32), joints_vis=np.ones((3, 3), np.float32),
              image_size=(192, 256), heatmap_size=(48, 64), sigma=2)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    targets.gaussian_targets(**args)


def test_get_final_preds_recovers_target_joints():
  rng = np.random.default_rng(3)
  w, h, k = 48, 64, 17
  joints = np.zeros((k, 3), np.float32)
  joints[:, :2] = rng.uniform(12, [w * 4 - 12, h * 4 - 12], (k, 2))
  target, _ = targets.gaussian_targets(joints, np.ones((k, 3), np.float32), (w * 4, h * 4),
                                       (w, h), 2)
  center, scale = _identity_box(w, h)
  preds, maxvals = heatmap_codec.get_final_preds(target[None], center, scale)
  np.testing.assert_array_equal(maxvals, np.ones((1, k, 1), np.float32))
  # A symmetric patch has equal neighbours (no quarter step): the decoded point is mu.
  mu = np.trunc(joints[:, :2] / 4 + 0.5)
  np.testing.assert_allclose(preds[0], mu, atol=1e-4)
  # ... which is within half a heatmap pixel of the joint.
  assert np.all(np.abs(preds[0] - joints[:, :2] / 4) <= 0.5 + 1e-4)


def test_get_final_preds_quarter_step_and_border_rule():
  w, h = 12, 10
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  peaks = [(5.3, 4.8), (1.0, 5.0), (w - 2.0, 5.2), (5.0, 1.2), (0.0, 0.0)]
  maps = np.stack([np.exp(-((xx - px)**2 + (yy - py)**2) / 2) for px, py in peaks], -1)
  maps[..., 4] = -1.0  # max <= 0: (0, 0)
  center, scale = _identity_box(w, h)
  preds, maxvals = heatmap_codec.get_final_preds(maps[None], center, scale)
  np.testing.assert_allclose(preds[0], [
      [5.25, 4.75],  # strictly inside: a quarter step toward the higher neighbour
      [1.0, 5.0],  # px == 1 is not refined
      [w - 2.0, 5.25],  # px == W - 2 is refined (y toward 5.2, x neighbours equal-ish)
      [5.0, 1.0],  # py == 1 is not refined
      [0.0, 0.0],
  ], atol=1e-4)
  assert maxvals[0, 4, 0] == -1.0
  raw, _ = heatmap_codec.get_final_preds(maps[None], center, scale, post_process=False)
  np.testing.assert_allclose(raw[0, 0], [5, 5], atol=1e-4)
  # Maps without a strictly inner pixel decode without refinement (no index errors).
  tiny, _ = heatmap_codec.get_final_preds(np.ones((1, 1, 2, 1), np.float32), *_identity_box(2, 1))
  np.testing.assert_allclose(tiny[0, 0], [0, 0], atol=1e-6)


def test_get_final_preds_back_projects_with_the_box_width():
  maps = np.zeros((1, 64, 48, 1), np.float32)
  maps[0, 10, 20, 0] = 1.0
  center = np.array([[300.0, 200.0]], np.float32)
  scale = np.array([[0.96, 5.0]], np.float32)  # 192 px wide: 4 image px per heatmap px
  preds, _ = heatmap_codec.get_final_preds(maps, center, scale)
  # x = 20 * 4 + 300 - 96; y uses the same factor about the center: 10 * 4 + 200 - 128.
  np.testing.assert_allclose(preds[0, 0], [284, 112], atol=1e-3)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 8, 8), np.float32), r"\[N, H, W, K\]"),
    (np.full((1, 8, 8, 2), np.nan, np.float32), "NaN"),
    (np.zeros((1, 8, 8, 2), np.int32), "floating"),
])
def test_decoders_reject_bad_heatmaps(bad, match):
  center, scale = _identity_box(8, 8)
  with pytest.raises(ValueError, match=match):
    heatmap_codec.get_final_preds(bad, center, scale)
  with pytest.raises(ValueError, match=match):
    mspn_codec.decode(bad, center, scale, (32, 32), kernel=5)


def test_get_final_preds_rejects_bad_boxes():
  maps = np.ones((2, 8, 8, 3), np.float32)
  with pytest.raises(ValueError, match="center and scale"):
    heatmap_codec.get_final_preds(maps, np.zeros((1, 2)), np.ones((1, 2)))
  with pytest.raises(ValueError, match="scale"):
    heatmap_codec.get_final_preds(maps, np.zeros((2, 2)), np.zeros((2, 2)))


# ----------------------------------------------------------------------------------------
# flips
# ----------------------------------------------------------------------------------------


def test_flip_back_twice_is_identity_and_shift_keeps_column_zero():
  rng = np.random.default_rng(4)
  maps = rng.normal(size=(2, 6, 5, 17)).astype(np.float32)
  pairs = keypoints.COCO_FLIP_PAIRS
  once = heatmap_codec.flip_back(maps, pairs)
  np.testing.assert_array_equal(once[:, :, 0, 1], maps[:, :, -1, 2])
  np.testing.assert_array_equal(heatmap_codec.flip_back(once, pairs), maps)
  zeros = np.zeros_like(maps)
  shifted = heatmap_codec.flip_test_average(zeros, maps, pairs) * 2
  np.testing.assert_array_equal(shifted[:, :, 1:], once[:, :, :-1])
  np.testing.assert_array_equal(shifted[:, :, 0], once[:, :, 0])
  unshifted = heatmap_codec.flip_test_average(zeros, maps, pairs, shift_heatmap=False) * 2
  np.testing.assert_array_equal(unshifted, once)
  np.testing.assert_array_equal(mspn_codec.flip_test_average(zeros, maps, pairs) * 2, once)
  with pytest.raises(ValueError, match="same shape"):
    heatmap_codec.flip_test_average(maps, maps[:1], pairs)


@pytest.mark.parametrize("shift", [True, False])
def test_jax_flip_equals_numpy_flip(shift):
  rng = np.random.default_rng(5)
  out = rng.normal(size=(3, 8, 6, 16)).astype(np.float32)
  flipped = rng.normal(size=(3, 8, 6, 16)).astype(np.float32)
  pairs = keypoints.MPII_FLIP_PAIRS
  fn = jax.jit(lambda a, b: (heatmap_codec.flip_back_jax(b, pairs),
                             heatmap_codec.flip_test_average_jax(a, b, pairs, shift)))
  back, avg = fn(jnp.asarray(out), jnp.asarray(flipped))
  np.testing.assert_array_equal(np.asarray(back), heatmap_codec.flip_back(flipped, pairs))
  np.testing.assert_array_equal(
      np.asarray(avg), heatmap_codec.flip_test_average(out, flipped, pairs, shift))
  if not shift:
    np.testing.assert_array_equal(
        np.asarray(jax.jit(lambda a, b: mspn_codec.flip_test_average_jax(a, b, pairs))(
            out, flipped)), np.asarray(avg))


# ----------------------------------------------------------------------------------------
# MSPN
# ----------------------------------------------------------------------------------------


def test_mspn_visibility_rule():
  joints = np.array([[0, 0], [191, 255], [191.01, 5], [-0.01, 5], [5, 256], [5, 5]], float)
  vis = np.array([2, 1, 2, 2, 2, 0], np.float32)[:, None]
  valid = targets.mspn_visibility(joints, vis, (256, 192))
  np.testing.assert_array_equal(valid[:, 0], [2, 1, 0, 0, 0, 0])


def test_mspn_targets_and_decode_round_trip():
  rng = np.random.default_rng(6)
  k = 17
  joints = rng.uniform(32, [192 - 32, 256 - 32], (k, 2))  # >= 8 heatmap px from the edge
  labels, valid = targets.mspn_targets(joints, np.full((k, 1), 2.0, np.float32), (256, 192),
                                       (64, 48))
  assert labels.shape == (5, 64, 48, k) and labels.dtype == np.float32
  # map / (max / 255) in float32, as the original: 255 within one rounding.
  np.testing.assert_allclose(labels.max(axis=(1, 2)), np.full((5, k), 255), rtol=2**-22)
  cells = np.trunc(joints * np.array([48 / 192, 64 / 256])).astype(int)  # (x, y)
  for level in range(5):
    peaks = labels[level].reshape(-1, k).argmax(axis=0)
    np.testing.assert_array_equal(np.stack([peaks % 48, peaks // 48], -1), cells)
  center, scale = np.array([[96, 128]], np.float32), np.array([[0.96, 1.28]], np.float32)
  for kernel in (5, 9, 11):
    preds, maxvals = mspn_codec.decode(labels[-1][None], center, scale, (256, 192), kernel)
    # Heatmap pixel i is the center 4 i + 2 of its input cell; one quarter step (1 px).
    step = np.linalg.norm(preds[0] - (cells * 4 + 2), axis=-1)
    np.testing.assert_allclose(step, 1.0, atol=1e-9)
    np.testing.assert_array_equal(maxvals[0, :, 0], np.full(k, 1.5))


def test_mspn_targets_reflect_at_the_border():
  # BORDER_REFLECT_101: a peak one pixel from the edge gets mirrored mass, so with the
  # [1, 4, 6, 4, 1] / 16 kernel column 0 (4 + 4) outweighs column 1 (6 + 1); column 2: 4.
  labels, valid = targets.mspn_targets(np.array([[4.0, 40.0]]), np.array([[2.0]]), (64, 48),
                                       (16, 12), kernels=[5])
  assert valid[0, 0] == 2
  np.testing.assert_allclose(labels[0, 10, :3, 0], [255, 255 * 7 / 8, 255 * 4 / 8], rtol=1e-6)


def test_mspn_decode_empty_map_and_errors():
  maps = np.zeros((1, 16, 12, 2), np.float32)
  maps[0, 0, 0, 1] = -51.0
  center, scale = np.array([[100, 100]], np.float32), np.array([[0.24, 0.32]], np.float32)
  preds, maxvals = mspn_codec.decode(maps, center, scale, (64, 48), kernel=5)
  # The zero border wins: clipped to heatmap (0, 0) = image (2, 2) - box / 2 + center.
  np.testing.assert_allclose(preds[0], [[78, 70], [78, 70]])
  np.testing.assert_allclose(maxvals[0, :, 0], [0.5, np.float32(-51 / 255) + np.float32(0.5)])
  with pytest.raises(ValueError, match="stride 4"):
    mspn_codec.decode(maps, center, scale, (64, 50), kernel=5)
  with pytest.raises(ValueError, match="odd"):
    mspn_codec.decode(maps, center, scale, (64, 48), kernel=4)
  with pytest.raises(ValueError, match="scales"):
    mspn_codec.decode(maps, center, np.zeros((1, 2), np.float32), (64, 48), kernel=5)
  with pytest.raises(ValueError, match="outside"):
    targets.mspn_heatmaps(np.array([[-10.0, 5.0]]), np.array([[2.0]]), (64, 48), (16, 12))
  with pytest.raises(ValueError, match="odd"):
    targets.mspn_heatmaps(np.array([[1.0, 5.0]]), np.array([[2.0]]), (64, 48), (16, 12), 6)


# ----------------------------------------------------------------------------------------
# the conformance checkers are not vacuous
# ----------------------------------------------------------------------------------------


def _fixture(name: str):
  path = REFERENCE_DIR / "functions" / f"{name}.json"
  assert path.exists(), f"reference fixture {path} is missing from the project's copy"
  return json.loads(path.read_text()), dict(np.load(path.with_suffix(".npz")))


@pytest.mark.parametrize("name", sorted(functions_2d.CHECKERS))
def test_checker_rejects_wrong_results(name):
  fixture, arrays = _fixture(name)
  check = functions_2d.CHECKERS[name]
  check(fixture, arrays, 0)
  results = [k for k in arrays if k.startswith("case0_") and k[6:] in {
      "trans", "trans_inv", "points_fwd", "points_fwd_then_inv", "target", "target_weight",
      "preds", "maxvals", "flipped_back", "averaged", "valid", "labels"}]
  assert results
  for key in results:
    broken = dict(arrays)
    value = arrays[key].copy()
    flat = value.reshape(-1)
    i = int(np.argmax(np.abs(flat)))
    flat[i] = flat[i] + 1e-3 * max(1.0, abs(float(flat[i])))
    broken[key] = value
    with pytest.raises(AssertionError):
      check(fixture, broken, 0)
  with pytest.raises(AssertionError, match="neither"):
    check(fixture, {**arrays, "case0_mystery": np.zeros(1)}, 0)
