"""The top-down input pipeline: instance selection, augmentation, samples, grain iteration."""
from __future__ import annotations

import numpy as np
import pytest

from jaxpose.codecs import heatmap as heatmap_codec
from jaxpose.data import augment, pipeline, topdown, transforms
from jaxpose.data import keypoints as kp

K = 17


def _person(pid, bbox, vis, area=100.0, iscrowd=False, num=None, kpts=None):
  vis = np.asarray(vis, np.int32)
  return dict(id=pid, bbox=np.asarray(bbox, np.float64), area=area, iscrowd=iscrowd,
              num_keypoints=int((vis > 0).sum()) if num is None else num,
              keypoints=np.zeros((K, 2)) if kpts is None else np.asarray(kpts, np.float64),
              keypoint_visibility=vis)


def _example(image_id, persons, width=100, height=80):
  objects = {k: np.stack([np.asarray(p[k]) for p in persons]) if persons else np.zeros((0,))
             for k in ("id", "bbox", "area", "iscrowd", "num_keypoints", "keypoints",
                       "keypoint_visibility")}
  return {"image/id": image_id, "image/width": width, "image/height": height, "objects": objects}


def _spec(method="hrnet", size=(64, 48), heat=(16, 12), **kw):
  return topdown.SampleSpec(method, size, heat, "rgb", kp.COCO_FLIP_PAIRS,
                            kp.COCO_UPPER_BODY_IDS, **kw)


ONE = np.eye(K, dtype=np.int32)[0] * 2  # one visible keypoint


def test_hrnet_and_mspn_selection_rules():
  persons = [
      _person(1, [10, 10, 20, 40], ONE),                       # kept by both
      _person(2, [10, 10, 20, 40], ONE, iscrowd=True),         # crowd: dropped
      _person(3, [10, 10, 20, 40], ONE, area=0.0),             # zero area: HRNet drops
      _person(4, [120, 10, 20, 40], ONE),                      # box outside the image: HRNet drops
      _person(5, [10, 10, 20, 40], np.zeros(K, np.int32)),      # no keypoints: both drop
      _person(6, [10, 10, 0, 40], ONE),                        # zero width: MSPN drops
  ]
  examples = [(0, _example(7, persons)), (1, _example(8, []))]
  table, skipped = topdown.ground_truth_instances(examples, "hrnet", K, 0.75)
  assert table.annotation_id.tolist() == [1, 6]
  assert skipped == {"crowd": 1, "zero_area": 1, "empty_box": 1, "no_keypoints": 1}
  table, _ = topdown.ground_truth_instances(examples, "mspn", K, 0.75)
  assert table.annotation_id.tolist() == [1, 3, 4]
  # HRNet: padded, aspect-fitted box; MSPN: raw centre and size.
  hr, _ = topdown.ground_truth_instances(examples[:1], "hrnet", K, 0.75)
  np.testing.assert_allclose(hr.center[0], [19.5, 29.5])  # clipped box [10, 10, 19, 39]
  np.testing.assert_allclose(hr.scale[0], np.array([39 * 0.75, 39]) / 200 * 1.25, rtol=1e-6)
  ms, _ = topdown.ground_truth_instances(examples[:1], "mspn", K, 0.75)
  np.testing.assert_allclose(ms.center[0], [20, 30])
  np.testing.assert_allclose(ms.scale[0], [0.1, 0.2])
  with pytest.raises(ValueError, match="unknown method"):
    topdown.ground_truth_instances(examples, "simplebaseline", K, 0.75)


def test_mpii_instances_apply_the_originals_adjustments():
  people = {"index": np.array([4, 9]), "center": np.array([[50.0, 40.0], [-1.0, 30.0]]),
            "scale": np.array([1.0, 0.5]), "joints": np.full((2, 16, 2), 11.0),
            "joints_vis": np.ones((2, 16), np.int32)}
  ex = {"image/width": 200, "image/height": 100, "people": people}
  hr = topdown.mpii_instances([(3, ex)], "hrnet")
  np.testing.assert_allclose(hr.center, [[49, 54], [-2, 29]])  # +15 s, -1 (not for x=-1)
  np.testing.assert_allclose(hr.scale, [[1.25, 1.25], [0.5, 0.5]])
  np.testing.assert_allclose(hr.keypoints, 10.0)
  assert hr.visibility.max() == 2 and hr.annotation_id.tolist() == [4, 9]
  ms = topdown.mpii_instances([(3, ex)], "mspn")
  np.testing.assert_allclose(ms.scale, [[1.0, 1.0], [0.5, 0.5]])


def test_detection_instances():
  from jaxpose.evaluation.coco import PersonDetections
  dets = {5: PersonDetections(np.array([[0, 0, 10, 20], [1, 1, 0, 5], [2, 2, 8, 8.0]]),
                              np.array([0.9, 0.8, 0.05])),
          6: PersonDetections(np.array([[0, 0, 5, 5.0]]), np.array([0.7]))}
  table, missing = topdown.detection_instances(dets, {5: (0, 64, 48)}, K, "hrnet", 0.75,
                                               image_thre=0.1)
  assert missing == 1 and table.score.tolist() == pytest.approx([0.9])
  assert table.example_index.tolist() == [0] and table.annotation_id.tolist() == [-1]


def _gray_image(h=80, w=100):
  rs = np.random.RandomState(0)
  return rs.randint(0, 255, (h, w, 3)).astype(np.uint8)


def _instance(center=(50, 40), scale=(0.3, 0.4), joints=None, vis=None):
  joints = np.asarray(joints if joints is not None else np.tile([[50.0, 40.0]], (K, 1)), np.float32)
  vis = np.asarray(vis if vis is not None else np.full(K, 2), np.int32)
  return {"center": np.asarray(center, np.float32), "scale": np.asarray(scale, np.float32),
          "keypoints": joints, "visibility": vis, "bbox": np.array([20, 10, 60, 60.0]),
          "score": np.float32(1), "image_id": np.int64(3), "area": 1.0, "annotation_id": 1}


def test_train_sample_without_augmentation_puts_the_peak_on_the_joint():
  no_aug = augment.HRNetAugment(scale_factor=0, rotation_factor=0, flip_prob=0, half_body_prob=0)
  spec = _spec(hrnet_aug=no_aug)
  joints = np.tile([[50.0, 40.0]], (K, 1))
  joints[3] = [60.0, 30.0]
  sample = topdown.train_sample(spec, _instance(joints=joints), _gray_image(),
                                np.random.default_rng(0))
  assert sample["image"].shape == (64, 48, 3) and sample["image"].dtype == np.uint8
  assert sample["target"].shape == (16, 12, K) and sample["target_weight"].shape == (K,)
  trans = transforms.get_affine_transform(np.float32([50, 40]), np.float32([0.3, 0.4]), 0, (48, 64))
  crop = transforms.affine_transform_points(joints[3:4].astype(np.float64), trans)[0] / 4
  peak = np.unravel_index(np.argmax(sample["target"][..., 3]), (16, 12))
  assert (peak[1], peak[0]) == (int(crop[0] + 0.5), int(crop[1] + 0.5))
  assert sample["target"][..., 3].max() == pytest.approx(1.0)


def test_flipped_sample_swaps_left_and_right():
  always_flip = augment.HRNetAugment(scale_factor=0, rotation_factor=0, flip_prob=1.0,
                                     half_body_prob=0)
  joints = np.tile([[50.0, 40.0]], (K, 1))
  joints[5] = [40.0, 40.0]  # left shoulder, left of the centre
  vis = np.zeros(K, np.int32)
  vis[5] = 2
  s = topdown.train_sample(_spec(hrnet_aug=always_flip), _instance(joints=joints, vis=vis),
                           _gray_image(), np.random.default_rng(0))
  assert s["target_weight"][6] == 1 and s["target_weight"][5] == 0  # now a right shoulder
  x = np.argmax(s["target"][..., 6].max(axis=0))
  assert x > 6  # mirrored to the right half of the 12-wide map


def test_hrnet_augmentation_distributions():
  aug = augment.HRNetAugment()
  rng = np.random.default_rng(0)
  joints = np.random.default_rng(1).uniform(20, 80, (K, 2)).astype(np.float32)
  vis = np.ones(K, np.float32)
  crops = [augment.hrnet_crop(rng, np.float32([50, 50]), np.float32([0.3, 0.4]), joints, vis, 100,
                              aug=aug, aspect_ratio=0.75, flip_pairs=kp.COCO_FLIP_PAIRS,
                              upper_body_ids=kp.COCO_UPPER_BODY_IDS) for _ in range(4000)]
  rotated = np.array([c.rotation != 0 for c in crops])
  assert abs(rotated.mean() - 0.6) < 0.03
  assert max(abs(c.rotation) for c in crops) <= 90
  assert abs(np.mean([c.flipped for c in crops]) - 0.5) < 0.03
  full = np.array([c.scale[1] / 0.4 for c in crops if abs(c.center[1] - 50) < 1e-6])
  assert full.min() >= 0.65 - 1e-6 and full.max() <= 1.35 + 1e-6
  half = np.mean([abs(c.center[1] - 50) > 1e-6 for c in crops])  # half-body moves the centre
  assert abs(half - 0.3) < 0.04


def test_mspn_sample_and_eval_crop():
  spec = _spec("mspn", size=(64, 48), heat=(16, 12))
  s = topdown.train_sample(spec, _instance(), _gray_image(), np.random.default_rng(0))
  assert s["labels"].shape == (5, 16, 12, K) and s["valid"].shape == (K,)
  assert s["labels"].max() == pytest.approx(255.0, rel=1e-6)
  e = topdown.eval_sample(spec, _instance(center=(50, 40), scale=(0.3, 0.4)), _gray_image())
  # test margins (x1.09, x1.135), then widened to the 48/64 aspect ratio
  np.testing.assert_allclose(e["scale"], [0.4 * 1.135 * 0.75, 0.4 * 1.135], rtol=1e-6)
  e = topdown.eval_sample(_spec(), _instance(), _gray_image())
  np.testing.assert_allclose(e["scale"], [0.3, 0.4])


def test_corrupt_stored_image_names_the_image():
  with pytest.raises(topdown.BadImageError, match="image id 42"):
    topdown.decode_image(b"not a jpeg", "rgb", 42)


# ---------------------------------------------------------------------------------------
# grain iteration over a built dataset
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  from jaxpose.data import builders
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  builders.build_dataset("synthetic_people", data_dir, config="tiny")
  ref = pipeline.DatasetRef("synthetic_people", data_dir, "train", "tiny")
  spec = _spec()
  return ref, spec, pipeline.instances(ref, spec, K, read=topdown.ground_truth_instances)


def _take(it, n):
  return [next(it)["image"].copy() for _ in range(n)]


def test_iterator_is_deterministic_resumable_and_worker_independent(tiny):
  ref, spec, table = tiny
  a = pipeline.train_iterator(ref, table, spec, batch_size=2, seed=3)
  first = _take(a, 2)
  state = a.get_state()
  rest = _take(a, 3)
  b = pipeline.train_iterator(ref, table, spec, batch_size=2, seed=3)
  b.set_state(state)
  np.testing.assert_array_equal(np.stack(_take(b, 3)), np.stack(rest))
  workers = pipeline.train_iterator(ref, table, spec, batch_size=2, seed=3, num_workers=2)
  np.testing.assert_array_equal(np.stack(_take(workers, 5)), np.stack(first + rest))
  other_seed = pipeline.train_iterator(ref, table, spec, batch_size=2, seed=4)
  assert not np.array_equal(_take(other_seed, 1)[0], first[0])


def test_epochs_reshuffle_and_hosts_split_the_stream(tiny):
  ref, spec, table = tiny
  n = len(table)
  whole = pipeline.train_iterator(ref, table, spec, batch_size=1, seed=0)
  stream = [b[0] for b in _take(whole, 2 * n)]
  assert any(not np.array_equal(x, y) for x, y in zip(stream[:n], stream[n:]))
  hosts = [pipeline.train_iterator(ref, table, spec, batch_size=1, seed=0, process_index=i,
                                   process_count=2) for i in range(2)]
  for i in range(4):
    np.testing.assert_array_equal(_take(hosts[i % 2], 1)[0][0], stream[i])


def test_eval_batches_are_padded_and_masked(tiny):
  ref, spec, table = tiny
  batches = list(pipeline.eval_batches(ref, table, spec, batch_size=4))
  assert sum(int(b["mask"].sum()) for b in batches) == len(table)
  assert all(b["image"].shape == (4, 64, 48, 3) for b in batches)
  assert np.concatenate([b["annotation_id"][b["mask"]] for b in batches]).tolist() == \
      table.annotation_id.tolist()


def test_missing_dataset_is_a_clear_error(tmp_path):
  ref = pipeline.DatasetRef("synthetic_people", str(tmp_path), "train", "tiny")
  with pytest.raises(FileNotFoundError, match="python -m jaxpose.data.builders synthetic_people"):
    pipeline.open_source(ref)


def test_decoded_targets_recover_sample_keypoints(tiny):
  """Pipeline + decoding agree: decoding a sample's own targets lands near its keypoints."""
  ref, spec, table = tiny
  spec = _spec(hrnet_aug=augment.HRNetAugment(scale_factor=0, rotation_factor=0, flip_prob=0,
                                              half_body_prob=0))
  row = table.row(0)
  image = topdown.decode_image(pipeline.open_source(ref)[int(row["example_index"])]["image"], "rgb")
  sample = topdown.train_sample(spec, row, image, np.random.default_rng(0))
  preds, maxvals = heatmap_codec.get_final_preds(sample["target"][None], row["center"][None],
                                                 row["scale"][None])
  labelled = (row["visibility"] > 0) & (sample["target_weight"] > 0)
  err = np.linalg.norm(preds[0, labelled] - row["keypoints"][labelled], axis=-1)
  pixel = row["scale"][0] * 200 / spec.heatmap_size[1]  # one heatmap pixel in the image
  assert err.max() <= pixel


def test_coordinate_targets_for_integral_regression():
  no_aug = augment.HRNetAugment(scale_factor=0, rotation_factor=0, flip_prob=0, half_body_prob=0)
  spec = _spec(hrnet_aug=no_aug, target="coordinates")
  joints = np.tile([[50.0, 40.0]], (K, 1))
  joints[2] = [500.0, 40.0]  # far outside the crop
  vis = np.full(K, 2)
  vis[4] = 0
  s = topdown.train_sample(spec, _instance(joints=joints, vis=vis), _gray_image(),
                           np.random.default_rng(0))
  assert s["joints"].shape == (K, 3) and s["joints_vis"].shape == (K, 3)
  np.testing.assert_allclose(s["joints"][0], [24 / 48 - 0.5, 32 / 64 - 0.5, 0], atol=1e-5)
  assert s["joints_vis"][0].tolist() == [1, 1, 1]
  assert s["joints_vis"][2].sum() == 0 and s["joints_vis"][4].sum() == 0
  with pytest.raises(ValueError, match="unknown target"):
    _spec(target="offsets")
