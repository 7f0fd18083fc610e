"""Tests of the synthetic_people generator (jaxpose.data.synthetic): COCO validity,
label semantics and determinism. Pure numpy/OpenCV/pycocotools, no TensorFlow."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from jaxpose.data import coco_format, synthetic
from jaxpose.data.keypoints import COCO_FLIP_PAIRS, COCO_KEYPOINT_NAMES, COCO_SKELETON

# pycocotools' mask decoding trips a NumPy 2 deprecation inside its own code.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

SMALL = dict(image_size=(80, 112), person_height=(40.0, 100.0))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
  out = tmp_path_factory.mktemp("synthetic")
  path = synthetic.generate_coco_dataset(out, "val", 8, seed=3, **SMALL)
  return out, path


def test_files_are_a_valid_coco_keypoint_dataset(small_set):
  out, path = small_set
  assert path == out / "annotations" / "person_keypoints_val.json"
  data = json.loads(path.read_text())
  (category,) = data["categories"]
  assert category["name"] == "person" and category["id"] == 1
  assert category["keypoints"] == list(COCO_KEYPOINT_NAMES)
  assert category["skeleton"] == [[a + 1, b + 1] for a, b in COCO_SKELETON]

  coco = COCO(str(path))  # pycocotools indexes it
  assert sorted(coco.getImgIds()) == list(range(1, 9))
  ann_ids = [a["id"] for a in data["annotations"]]
  assert ann_ids == list(range(1, len(ann_ids) + 1))
  assert len(ann_ids) >= 8

  records = coco_format.load_person_keypoints(path)  # our own validator accepts it
  assert [r.id for r in records] == list(range(1, 9))
  for info in data["images"]:
    image = cv2.imread(str(out / "val" / info["file_name"]))
    assert image is not None and image.shape == (info["height"], info["width"], 3)


def test_annotations_follow_coco_conventions(small_set):
  _, path = small_set
  data = json.loads(path.read_text())
  sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
  for ann in data["annotations"]:
    kpts = np.array(ann["keypoints"], np.float64).reshape(17, 3)
    v = kpts[:, 2]
    assert set(v.tolist()) <= {0.0, 1.0, 2.0}
    assert ann["num_keypoints"] == np.count_nonzero(v)
    np.testing.assert_array_equal(kpts[v == 0, :2], 0.0)
    h, w = sizes[ann["image_id"]]
    lab = kpts[v > 0]
    assert np.all((lab[:, 0] >= -0.5) & (lab[:, 0] < w - 0.5))
    assert np.all((lab[:, 1] >= -0.5) & (lab[:, 1] < h - 0.5))
    # area and bbox are those of the segmentation, as in COCO.
    rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
    assert ann["area"] == float(mask_utils.area(rle)) > 0
    np.testing.assert_array_equal(ann["bbox"], mask_utils.toBbox(rle))
    assert ann["iscrowd"] == 0 and ann["category_id"] == 1
    # Visible keypoints lie on the person's own visible pixels.
    mask = mask_utils.decode(rle)
    for x, y in kpts[v == 2, :2]:
      assert mask[int(round(y)), int(round(x))] == 1


def test_generation_is_deterministic_and_independent_of_size(tmp_path):
  a = synthetic.generate_coco_dataset(tmp_path / "a", "train", 3, seed=7, **SMALL)
  b = synthetic.generate_coco_dataset(tmp_path / "b", "train", 3, seed=7, **SMALL)
  c = synthetic.generate_coco_dataset(tmp_path / "c", "train", 2, seed=7, **SMALL)
  synthetic.generate_coco_dataset(tmp_path / "d", "train", 2, seed=8, **SMALL)
  assert a.read_bytes() == b.read_bytes()
  for i in (1, 2, 3):
    name = f"{i:012d}.jpg"
    assert (tmp_path / "a/train" / name).read_bytes() == (tmp_path / "b/train" / name).read_bytes()
  ja, jc = json.loads(a.read_text()), json.loads(c.read_text())
  assert ja["images"][:2] == jc["images"]
  assert [x for x in ja["annotations"] if x["image_id"] <= 2] == jc["annotations"]
  assert (tmp_path / "c/train/000000000001.jpg").read_bytes() != (
      tmp_path / "d/train/000000000001.jpg").read_bytes()


def _scenes(n, **config):
  cfg = synthetic.SceneConfig(**{**SMALL, **config})
  return [synthetic.render_scene(synthetic.split_seed(11, "test", i), cfg) for i in range(n)]


def test_truncation_and_occlusion_produce_the_coco_flags():
  body = slice(5, 17)  # body joints are 0 only when outside the image
  truncated = _scenes(12, truncation_prob=1.0, occluder_prob=0.0)
  flags = np.concatenate([p["visibility"][None] for _, ps in truncated for p in ps])
  assert np.any(flags[:, body] == 0)
  occluded = _scenes(12, truncation_prob=0.0, occluder_prob=1.0)
  flags = np.concatenate([p["visibility"][None] for _, ps in occluded for p in ps])
  assert np.any(flags[:, body] == 1) and not np.any(flags[:, body] == 0)
  clean = _scenes(6, truncation_prob=0.0, occluder_prob=0.0, persons_per_image=(1, 1))
  flags = np.concatenate([p["visibility"][None] for _, ps in clean for p in ps])
  assert np.mean(flags[:, body] == 2) > 0.8


def test_left_and_right_limbs_carry_distinct_colours():
  """Left limbs are red-magenta (R > B), right limbs blue-cyan (B > R)."""
  left = [COCO_KEYPOINT_NAMES.index(n) for n in ("left_elbow", "left_knee")]
  pairs = dict(COCO_FLIP_PAIRS)
  right = [pairs[k] for k in left]
  votes = []
  for image, persons in _scenes(10, truncation_prob=0.0, occluder_prob=0.0):
    for p in persons:
      for joints, sign in ((left, 1.0), (right, -1.0)):
        for k in joints:
          if p["visibility"][k] == 2:
            x, y = np.round(p["keypoints"][k]).astype(int)
            b, _, r = image[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].reshape(-1, 3).mean(0)
            votes.append(sign * (r - b) > 0)
  assert len(votes) > 20
  assert np.mean(votes) > 0.95


def test_invalid_arguments_are_rejected(tmp_path):
  with pytest.raises(ValueError, match="num_images"):
    synthetic.generate_coco_dataset(tmp_path, "train", 0)
  with pytest.raises(ValueError, match="split"):
    synthetic.generate_coco_dataset(tmp_path, "a/b", 1)
  with pytest.raises(ValueError, match="person_height"):
    synthetic.generate_coco_dataset(tmp_path, "train", 1, person_height=(100.0, 50.0))
  with pytest.raises(ValueError, match="occluder_prob"):
    synthetic.SceneConfig(occluder_prob=1.5)
