"""Image-based 3D data: the originals' sample geometry, targets and protocols (recorded cases
in ``tests/image3d_cases``), the joint maps and the mixture of datasets."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import grain
import jax.numpy as jnp
import numpy as np
import pytest

from data_builders.h36m_images import h36m_images
from jaxpose.codecs import hg3d as hg3d_codec
from jaxpose.data import augment, image3d, joint_maps, mixing, transforms
from jaxpose.data import keypoints as kp
from jaxpose.evaluation import h36m_image
from jaxpose.train.tasks import image3d as image3d_task

CASES = Path(__file__).resolve().parent / "image3d_cases"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _load(name: str) -> tuple[dict, dict[str, np.ndarray]]:
  meta = json.loads((CASES / f"{name}.json").read_text())
  with np.load(CASES / f"{name}.npz") as z:
    return meta, dict(z)


class FixedDraws:
  """A generator whose draws are the listed numbers (the originals' patched np.random)."""

  def __init__(self, draws):
    self.draws = list(draws)

  def standard_normal(self):
    return self.draws.pop(0)

  def random(self):
    return self.draws.pop(0)

  def uniform(self, low, high):
    return self.draws.pop(0)


def _chw(images: np.ndarray, pixel_scale: float, color=None) -> np.ndarray:
  x = image3d_task.normalize(jnp.asarray(images[None]), IMAGENET_MEAN, IMAGENET_STD,
                             pixel_scale, None if color is None else jnp.asarray([color]))
  return np.asarray(x)[0].transpose(2, 0, 1)


# ----------------------------------------------------------------------------------------
# integral-human-pose
# ----------------------------------------------------------------------------------------


def test_patch_transform_is_the_originals_bit_for_bit():
  meta, a = _load("integral_patch_transform")
  for i in range(meta["cases"]):
    cx, cy, w, h, pw, ph, scale, rot, inv = a[f"case{i}_args"]
    got = transforms.patch_transform((cx, cy), (w, h), (int(pw), int(ph)), scale, rot,
                                     inv=bool(inv))
    np.testing.assert_array_equal(got, a[f"case{i}_trans"], err_msg=f"case {i}")


def test_integral_samples_equal_get_single_patch_sample():
  """Patch pixels (after the device's colour gains and normalisation), labels and weights,
  for the hm36 depth rule (mm / 2000 mm box) and the challenge rule (pixels / box width),
  flips with joint swaps, rotations, and a 2D sample."""
  meta, a = _load("integral_patch_sample")
  rgb = a["image"][..., ::-1]
  for i in range(meta["cases"]):
    box = a[f"case{i}_box"]
    pw, ph = (int(v) for v in a[f"case{i}_patch_size"])
    scale, rot, flip, *color = a[f"case{i}_aug"]
    joints = a[f"case{i}_joints"].copy()
    if not a[f"case{i}_depth_in_image"]:
      joints[:, 2] = joints[:, 2] / 2000.0 * box[2]  # mm of a 2000 mm box -> box pixels
    row = {"box_center": box[:2], "box_size": box[2:], "joints": joints,
           "joints_vis": a[f"case{i}_joints_vis"]}
    spec = image3d.IntegralSpec((ph, pw), kp.H36M18.flip_pairs)
    draw = augment.PatchAugment(float(scale), float(rot), bool(flip), tuple(color))
    out = image3d.integral_sample(spec, row, rgb, draw)
    np.testing.assert_allclose(_chw(out["image"], 255.0, out["color_scale"]), a[f"case{i}_patch"],
                               rtol=0, atol=2e-5, err_msg=f"case {i}")
    np.testing.assert_allclose(out["target"].reshape(-1), a[f"case{i}_label"], rtol=1e-6,
                               atol=1e-6, err_msg=f"case {i}")
    np.testing.assert_array_equal(out["target_weight"].reshape(-1), a[f"case{i}_label_weight"])


def test_integral_augmentation_draws_in_the_originals_order():
  draw = augment.integral_augmentation(FixedDraws([2.0, 0.5, -0.4, 0.3, 0.9, 1.1, 0.95]),
                                       augment.IntegralAugment())
  assert draw == augment.PatchAugment(1.25, -12.0, True, (0.9, 1.1, 0.95))
  draw = augment.integral_augmentation(FixedDraws([-0.2, 0.7, 0.6, 1.0, 1.0, 1.0]),
                                       augment.IntegralAugment())
  assert draw.rotation == 0.0 and not draw.flip and draw.scale == pytest.approx(0.95)


def test_joint_box_is_calc_kpt_bound_pad():
  meta, a = _load("integral_joint_box")
  for i in range(meta["cases"]):
    center, size = transforms.joint_box(a[f"case{i}_kpts"], a[f"case{i}_vis"][:, 0],
                                        float(a[f"case{i}_aspect"]))
    np.testing.assert_allclose(np.concatenate([center, size]), a[f"case{i}_box"], rtol=1e-12)
  with pytest.raises(ValueError, match="no visible joint"):
    transforms.joint_box(np.zeros((3, 2)), np.zeros(3), 1.0)


def test_integral_protocols_equal_the_originals():
  _, a = _load("integral_protocols")
  # Human3.6M: patch -> image -> camera (true root depth), MPJPE and the rigid "align".
  box, pelvis = a["case0_box"], a["case0_pelvis"]
  n = len(box)
  camera = np.tile(a["case0_camera"], (n, 1))
  pose = h36m_image.backproject(a["case0_pred_patch"][..., :3], box[:, :2], box[:, 2:], (64, 64),
                                pelvis / 1000.0, camera)
  gt = a["case0_joints_3d_cam"]
  errors = h36m_image.pose_errors(pose, gt, "rigid_root")
  np.testing.assert_allclose(errors["MPJPE"].mean(), a["case0_mpjpe"], rtol=1e-9)
  np.testing.assert_allclose(errors["P-MPJPE"].mean(), a["case0_mpjpe_align"], rtol=1e-9)
  # The ECCV'18 challenge: rescaled to 4502.881 mm of bones, rigid align without re-rooting.
  rescaled = h36m_image.rescale_to_bone_length(a["case1_pred_patch"], kp.H36M18_PARENT_IDS)
  np.testing.assert_allclose(rescaled, a["case1_rescaled"], rtol=1e-12, atol=1e-9)
  errors = h36m_image.pose_errors(rescaled, a["case1_gt_relative"], "rigid")
  np.testing.assert_allclose(errors["MPJPE"].mean(), a["case1_mpjpe"], rtol=1e-9)
  np.testing.assert_allclose(errors["P-MPJPE"].mean(), a["case1_mpjpe_align"], rtol=1e-9)


# ----------------------------------------------------------------------------------------
# pytorch-pose-hg-3d
# ----------------------------------------------------------------------------------------


def _hg3d_h36m_rows(a) -> image3d.PersonTable:
  """The fixture's challenge db through the builder's reader, the example features and the
  people reader, in MPII order (pytorch-pose-hg-3d's h36m_to_mpii)."""
  db = [{"joints_3d": a[f"db{k}_joints_3d"], "joints_3d_relative": a[f"db{k}_joints_3d_relative"],
         **dict(zip(("center_x", "center_y", "width", "height"), a[f"db{k}_box"]))}
        for k in range(3)]
  records = h36m_images.eccv18_records(db, Path("db.pkl"), Path("IMG"))
  examples = []
  for k, record in enumerate(records):
    image = cv2.imdecode(a[f"jpeg{k}"], cv2.IMREAD_COLOR)
    examples.append((k, h36m_images.example(record, a[f"jpeg{k}"].tobytes(), *image.shape[:2])))
  table, _ = image3d.h36m_image_people(examples)
  return table.remap(joint_maps.joint_map("h36m", "mpii"))


def _mpii_rows(a) -> image3d.PersonTable:
  examples = []
  for k in range(2):
    image = cv2.imdecode(a[f"mpii_jpeg{k}"], cv2.IMREAD_COLOR)
    people = {"index": np.array([k]), "center": a[f"mpii{k}_center"][None],
              "scale": a[f"mpii{k}_scale"][None], "joints": a[f"mpii{k}_joints"][None],
              "joints_vis": a[f"mpii{k}_joints_vis"][None].astype(np.int32)}
    examples.append((k, {"people": people, "image/width": image.shape[1],
                         "image/height": image.shape[0]}))
  table, _ = image3d.mpii_people(examples)
  return table


def _check_hg3d(out: dict, a: dict, prefix: str, what: str, input_atol: float) -> None:
  np.testing.assert_allclose(_chw(out["image"], 256.0), a[f"{prefix}_input"], rtol=0,
                             atol=input_atol, err_msg=what)
  np.testing.assert_allclose(out["heatmaps"].transpose(2, 0, 1), a[f"{prefix}_target"], rtol=0,
                             atol=1e-7, err_msg=what)
  np.testing.assert_array_equal(out["reg_ind"], a[f"{prefix}_reg_ind"], err_msg=what)
  np.testing.assert_array_equal(out["reg_mask"], a[f"{prefix}_reg_mask"], err_msg=what)
  np.testing.assert_allclose(out["reg_target"], a[f"{prefix}_reg_target"][:, 0], rtol=1e-6,
                             err_msg=what)
  np.testing.assert_array_equal(np.round(out["gt_2d"] * 16).astype(int), a[f"{prefix}_pts_crop"],
                                err_msg=what)


def test_hg3d_samples_equal_the_originals():
  """H36M.__getitem__ (evaluation; training with scale and flip) and Fusion3D's MPII branch
  (rotation, flip, 1-based joints, an unlabelled joint counted as visible at cell (0, 0))."""
  meta, a = _load("hg3d_samples")
  spec = image3d.HG3DSpec((64, 64), (16, 16), kp.MPII.flip_pairs, 2.0)
  h36m = _hg3d_h36m_rows(a)
  for c, (_, index, draws) in enumerate(meta["h36m_cases"]):
    image = cv2.imdecode(a[f"jpeg{index}"], cv2.IMREAD_COLOR)
    draw = ((1.0, 0.0, False) if not draws
            else augment.hg3d_augmentation(FixedDraws(draws), spec.aug, rotate=False))
    out = image3d.hg3d_sample(spec, h36m.row(index), image, draw)
    _check_hg3d(out, a, f"h36m{c}", f"h36m case {c}", 1e-5)
  mpii = _mpii_rows(a)
  for c, (index, draws) in enumerate(meta["mpii_cases"]):
    image = cv2.imdecode(a[f"mpii_jpeg{index}"], cv2.IMREAD_COLOR)
    draw = augment.hg3d_augmentation(FixedDraws(draws), spec.aug, rotate=True)
    out = image3d.hg3d_sample(spec, mpii.row(index), image, draw, joint_shift=1.0)
    # The original keeps MPII's centre in float32; the crop pixels differ by that rounding.
    _check_hg3d(out, a, f"mpii{c}", f"mpii case {c}", 2e-3)


def test_hg3d_protocol_equals_convert_eval_format_and_mpjpe():
  _, a = _load("hg3d_samples")
  hm = jnp.asarray(a["eval_heatmap"].transpose(0, 2, 3, 1))
  depth = jnp.asarray(a["eval_depth"].transpose(0, 2, 3, 1))
  converted = h36m_image.hg3d_to_h36m(np.asarray(hg3d_codec.get_preds_3d(hm, depth)))
  np.testing.assert_allclose(converted, a["eval_converted"], rtol=1e-5, atol=1e-3)
  errors = h36m_image.pose_errors(converted, a["eval_gt_3d"])
  np.testing.assert_allclose(errors["MPJPE"].mean(), a["eval_mpjpe"], rtol=1e-5)
  assert "P-MPJPE" not in errors


# ----------------------------------------------------------------------------------------
# Joint maps, the mixture
# ----------------------------------------------------------------------------------------


def test_joint_maps_follow_the_originals_tables():
  mpii = np.arange(16 * 2, dtype=np.float64).reshape(16, 2)
  joints, vis = joint_maps.joint_map("mpii", "h36m18").apply(mpii, np.ones(16))
  assert vis.tolist() == [1] * 7 + [0, 1, 0] + [1] * 8  # no spine, no nose
  np.testing.assert_array_equal(joints[17], mpii[7])  # MPII's thorax = the shoulder centre
  np.testing.assert_array_equal(joints[10], mpii[9])  # head top -> head
  h36m = np.random.RandomState(0).rand(2, 17, 3)
  ext, _ = joint_maps.joint_map("h36m", "h36m18").apply(h36m, np.ones((2, 17)))
  np.testing.assert_allclose(ext[:, 17], (h36m[:, 11] + h36m[:, 14]) / 2)
  back, _ = joint_maps.joint_map("h36m18", "mpii").apply(ext, np.ones((2, 18)))
  np.testing.assert_array_equal(back[:, 7], ext[:, 17])
  hg, _ = joint_maps.joint_map("h36m", "mpii").apply(h36m, np.ones((2, 17)))
  np.testing.assert_array_equal(hg[:, 7], h36m[:, 7])  # hg3d: MPII thorax <- H36M spine
  with pytest.raises(ValueError, match="no joint map from 'coco' to 'mpii'; known: "):
    joint_maps.joint_map("coco", "mpii")


class _Rows(grain.sources.RandomAccessDataSource):
  def __init__(self, n: int, tag: int):
    self.n, self.tag = n, tag

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return {"tag": self.tag, "i": i}


class _Sample(grain.transforms.RandomMap):
  def random_map(self, element, rng):
    return {"tag": np.int32(element["tag"]), "i": np.int32(element["i"]),
            "draw": np.float64(rng.random())}


def test_mixture_holds_the_ratio_in_every_batch_and_resumes():
  parts = [mixing.MixPart(_Rows(5, 0), _Sample(), 1, "2d"),
           mixing.MixPart(_Rows(7, 1), _Sample(), 3, "3d")]
  assert mixing.epoch_examples(parts) == 20  # one pass over the first part, in proportion
  it = mixing.mixed_train_iterator(parts, batch_size=8, seed=3)
  seen = {0: [], 1: []}
  for _ in range(10):
    batch = next(it)
    assert np.bincount(batch["tag"], minlength=2).tolist() == [2, 6]
    for tag, i in zip(batch["tag"], batch["i"]):
      seen[int(tag)].append(int(i))
  # Each part is reshuffled every epoch and seen evenly.
  assert sorted(seen[0][:5]) == list(range(5)) and seen[0][:5] != seen[0][5:10]
  state = it.get_state()
  expected = next(it)
  it.set_state(state)
  resumed = next(it)
  for key in expected:
    np.testing.assert_array_equal(expected[key], resumed[key])
  # Two hosts: their batches together are the one-host global batch.
  hosts = [mixing.mixed_train_iterator(parts, batch_size=4, seed=3, process_index=h,
                                       process_count=2) for h in range(2)]
  one = mixing.mixed_train_iterator(parts, batch_size=8, seed=3)
  for _ in range(3):
    both = [next(h) for h in hosts]
    whole = next(one)
    keys = ("tag", "i", "draw")
    together = zip(*(np.concatenate([b[k] for b in both]).tolist() for k in keys))
    assert sorted(together) == sorted(zip(*(whole[k].tolist() for k in keys)))
  with pytest.raises(ValueError, match="does not divide by the mixture period"):
    mixing.mixed_train_iterator(parts, batch_size=6, seed=0)
  with pytest.raises(ValueError, match="positive integers"):
    mixing.check_weights([1, 0], 4)
