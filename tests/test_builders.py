"""TFDS builders on small dummy data written in the original file formats.

Each test writes COCO / MPII files (JSON, JPEG, .mat) into a temporary manual directory,
builds array_record files with the real builders and reads them back by random access.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data_builders import _common
from data_builders.mpii import mpii
from jaxpose.data import builders, coco_format, synthetic

K = 17
REPO = pathlib.Path(__file__).resolve().parents[1]


def _jpeg(path: pathlib.Path, height: int, width: int, seed: int) -> bytes:
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
  ok, data = cv2.imencode(".jpg", image)
  assert ok
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data.tobytes())
  return data.tobytes()


def _person(ann_id, image_id, n_labelled, iscrowd=0):
  kpts = np.zeros((K, 3))
  for k in range(n_labelled):
    kpts[k] = (10.0 + 2 * k + ann_id, 20.0 + k, 1 + (k % 2))
  return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": iscrowd,
          "bbox": [5.5 + ann_id, 6.25, 30.0, 40.5], "area": 812.5 + ann_id,
          "segmentation": [[5, 6, 35, 6, 35, 46]] if not iscrowd else
          {"size": [48, 64], "counts": [0, 3072]},
          "keypoints": kpts.reshape(-1).tolist(), "num_keypoints": n_labelled}


def _write_coco(root: pathlib.Path, split: str, offset: int) -> dict:
  """A COCO split with all the edge cases; returns its JSON dict."""
  folder = root / f"{split}2017"
  images, annotations = [], []
  specs = [  # (image id, file state, annotations)
      (offset + 1, "ok", [_person(offset + 11, offset + 1, 17),
                          _person(offset + 12, offset + 1, 0)]),       # 0 keypoints
      (offset + 2, "ok", [_person(offset + 13, offset + 2, 0, iscrowd=1),
                          _person(offset + 14, offset + 2, 5)]),       # crowd
      (offset + 3, "ok", []),                                          # no people
      (offset + 4, "corrupt", [_person(offset + 15, offset + 4, 3)]),
      (offset + 5, "missing", [_person(offset + 16, offset + 5, 3)]),
      (offset + 6, "truncated", []),
      (offset + 7, "wrong size", [_person(offset + 17, offset + 7, 2)]),
  ]
  for image_id, state, anns in specs:
    name = f"{image_id:012d}.jpg"
    height, width = 48 + image_id % 3, 64
    images.append({"id": image_id, "file_name": name, "height": height, "width": width})
    annotations += anns
    if state == "ok":
      _jpeg(folder / name, height, width, image_id)
    elif state == "wrong size":
      _jpeg(folder / name, height + 1, width, image_id)
    elif state == "corrupt":
      folder.mkdir(parents=True, exist_ok=True)
      (folder / name).write_bytes(b"this is not a jpeg" * 10)
    elif state == "truncated":
      data = _jpeg(folder / name, height, width, image_id)
      (folder / name).write_bytes(data[: len(data) // 2])
  data = {"images": images, "annotations": annotations,
          "categories": [coco_format.person_category()]}
  (root / "annotations").mkdir(parents=True, exist_ok=True)
  (root / f"annotations/person_keypoints_{split}2017.json").write_text(json.dumps(data))
  return data


@pytest.fixture(scope="module")
def coco_build(tmp_path_factory):
  manual = tmp_path_factory.mktemp("coco_manual")
  truth = {"train": _write_coco(manual, "train", 0),
           "validation": _write_coco(manual, "val", 100)}
  data_dir = tmp_path_factory.mktemp("coco_data")
  handler = _Records()
  logging.getLogger().addHandler(handler)
  try:
    builder = builders.build_dataset("coco_keypoints", data_dir, manual_dir=manual)
  finally:
    logging.getLogger().removeHandler(handler)
  return builder, truth, manual, handler.messages, data_dir


class _Records(logging.Handler):
  def __init__(self):
    super().__init__(logging.WARNING)
    self.messages: list[str] = []

  def emit(self, record):
    self.messages.append(record.getMessage())


def test_coco_keeps_every_readable_image_with_all_its_people(coco_build):
  builder, truth, _, _, _ = coco_build
  assert builder.info.file_format.value == "array_record"
  for split, data in truth.items():
    source = builder.as_data_source(split)
    examples = {int(source[i]["image/id"]): source[i] for i in range(len(source))}
    off = 0 if split == "train" else 100
    assert sorted(examples) == [off + 1, off + 2, off + 3]  # 4-7 skipped
    assert examples[off + 3]["objects"]["keypoints"].shape == (0, K, 2)
    anns = {a["id"]: a for a in data["annotations"]}
    for image_id, ex in examples.items():
      info = next(im for im in data["images"] if im["id"] == image_id)
      assert ex["image"].shape == (info["height"], info["width"], 3)
      assert (int(ex["image/height"]), int(ex["image/width"])) == (info["height"], info["width"])
      assert ex["image/filename"].decode() == info["file_name"]
      obj = ex["objects"]
      expected = [a for a in data["annotations"] if a["image_id"] == image_id]
      assert obj["id"].tolist() == [a["id"] for a in expected]
      for i, ann_id in enumerate(obj["id"].tolist()):
        ann = anns[ann_id]
        kpts = np.array(ann["keypoints"]).reshape(K, 3)
        np.testing.assert_array_equal(obj["bbox"][i], ann["bbox"])
        assert obj["area"][i] == ann["area"]
        assert bool(obj["iscrowd"][i]) == bool(ann["iscrowd"])
        assert obj["num_keypoints"][i] == ann["num_keypoints"]
        np.testing.assert_array_equal(obj["keypoints"][i], kpts[:, :2])
        np.testing.assert_array_equal(obj["keypoint_visibility"][i], kpts[:, 2])


def test_coco_images_are_the_original_jpeg_bytes(coco_build):
  _, _, manual, _, data_dir = coco_build
  source = tfds.data_source("coco_keypoints", data_dir=data_dir, split="validation",
                            decoders={"image": tfds.decode.SkipDecoding()})
  for i in range(len(source)):
    ex = source[i]
    original = (manual / "val2017" / ex["image/filename"].decode()).read_bytes()
    assert ex["image"] == original


def test_coco_unreadable_images_are_skipped_with_a_warning_naming_the_file(coco_build):
  _, _, manual, messages, _ = coco_build
  text = "\n".join(messages)
  for split, off in (("train", 0), ("val", 100)):
    # OpenCV 5 refuses truncated JPEGs outright ("corrupt"); OpenCV 4 decodes them
    # grey-filled and the missing end-of-image marker gives them away ("truncated").
    for image_id, what in ((off + 4, ("corrupt",)), (off + 5, ("missing",)),
                           (off + 6, ("truncated", "corrupt")), (off + 7, ("but",))):
      path = manual / f"{split}2017" / f"{image_id:012d}.jpg"
      assert any(str(path) in m and any(w in m for w in what) for m in messages), (path, text)
  assert sum("skipped 4 of 7 images" in m for m in messages) == 2


def test_coco_ground_truth_round_trip_and_evaluation(coco_build):
  builder, truth, _, _, _ = coco_build
  source = builder.as_data_source("validation")
  gt = coco_format.ground_truth_from_examples(source[i] for i in range(len(source)))
  kept = {im["id"] for im in gt["images"]}
  expected = [a for a in truth["validation"]["annotations"] if a["image_id"] in kept]
  got = sorted(gt["annotations"], key=lambda a: a["id"])
  assert [a["id"] for a in got] == [a["id"] for a in expected]
  for a, b in zip(got, expected):
    for key in ("image_id", "bbox", "area", "iscrowd", "num_keypoints", "keypoints"):
      assert a[key] == b[key], key
  _assert_perfect_detections_score_one(gt)


def _assert_perfect_detections_score_one(gt: dict) -> None:
  coco = COCO()
  coco.dataset = gt
  coco.createIndex()
  dets = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"],
           "score": 1.0} for a in gt["annotations"]
          if not a["iscrowd"] and a["num_keypoints"] > 0]
  evaluator = COCOeval(coco, coco.loadRes(dets), "keypoints")
  evaluator.evaluate()
  evaluator.accumulate()
  evaluator.summarize()
  assert evaluator.stats[0] == pytest.approx(1.0)


def _coco_manual_with(tmp_path, edit):
  manual = tmp_path / "manual"
  data = _write_coco(manual, "train", 0)
  _write_coco(manual, "val", 100)
  edit(data)
  (manual / "annotations/person_keypoints_train2017.json").write_text(json.dumps(data))
  return manual


def test_coco_malformed_annotation_names_file_and_id(tmp_path):
  def cut_keypoints(data):
    data["annotations"][2]["keypoints"] = data["annotations"][2]["keypoints"][:-1]

  manual = _coco_manual_with(tmp_path, cut_keypoints)
  with pytest.raises(ValueError, match=r"person_keypoints_train2017\.json: annotation id 13: "
                                       r"'keypoints' must hold 51 numbers"):
    builders.build_dataset("coco_keypoints", tmp_path / "data", manual_dir=manual)

  def bad_flag(data):
    data["annotations"][0]["keypoints"][2] = 3

  manual = _coco_manual_with(tmp_path / "b", bad_flag)
  with pytest.raises(ValueError, match=r"annotation id 11: keypoint visibility flags"):
    builders.build_dataset("coco_keypoints", tmp_path / "b/data", manual_dir=manual)


def test_coco_missing_manual_files_give_one_error_listing_all(tmp_path):
  manual = tmp_path / "manual"
  _write_coco(manual, "val", 100)
  (manual / "annotations/person_keypoints_val2017.json").unlink()
  with pytest.raises(_common.MissingManualFilesError) as info:
    builders.build_dataset("coco_keypoints", tmp_path / "data", manual_dir=manual)
  message = str(info.value)
  for missing in ("annotations/person_keypoints_train2017.json",
                  "annotations/person_keypoints_val2017.json", "train2017/"):
    assert str(manual / missing.rstrip("/")) in message
  assert "val2017/" not in message.split("\n\n")[0]
  assert "cocodataset.org" in message
  with pytest.raises(_common.MissingManualFilesError, match="4 required path"):
    builders.build_dataset("coco_keypoints", tmp_path / "data2",
                           manual_dir=tmp_path / "does_not_exist")


# ----------------------------------------------------------------------------------------
# MPII
# ----------------------------------------------------------------------------------------


def _mpii_person(rng, image):
  joints = rng.uniform(1, 60, (16, 2)).round(1)
  vis = (rng.random(16) > 0.3).astype(int)
  return {"image": image, "center": joints.mean(0).round(2).tolist(),
          "scale": round(float(rng.uniform(0.2, 0.5)), 3), "joints": joints.tolist(),
          "joints_vis": vis.tolist()}


def _write_mpii(root: pathlib.Path, with_gt: bool) -> dict:
  rng = np.random.default_rng(0)
  train = [_mpii_person(rng, "000001.jpg"), _mpii_person(rng, "000002.jpg"),
           _mpii_person(rng, "000001.jpg"), _mpii_person(rng, "000009.jpg")]  # 9: missing
  valid = [_mpii_person(rng, "000003.jpg"), _mpii_person(rng, "000004.jpg"),
           _mpii_person(rng, "000003.jpg")]
  for i in (1, 2, 3, 4):
    _jpeg(root / "images" / f"{i:06d}.jpg", 50 + i, 64, i)
  (root / "annot").mkdir(parents=True, exist_ok=True)
  (root / "annot/train.json").write_text(json.dumps(train))
  (root / "annot/valid.json").write_text(json.dumps(valid))
  gt = None
  if with_gt:
    n = len(valid)
    names = np.empty((1, 16), dtype=object)
    names[0, :] = list(mpii.MAT_JOINT_NAMES)
    gt = {"dataset_joints": names,
          "pos_gt_src": rng.uniform(1, 60, (16, 2, n)),
          "jnt_missing": (rng.random((16, n)) > 0.8).astype(np.uint8),
          "headboxes_src": rng.uniform(1, 60, (2, 2, n))}
    scipy.io.savemat(root / "annot/gt_valid.mat", gt)
  return {"train": train, "validation": valid, "gt": gt}


@pytest.mark.parametrize("with_gt", [True, False])
def test_mpii_groups_people_per_image_with_raw_values(tmp_path, with_gt):
  truth = _write_mpii(tmp_path / "manual", with_gt)
  builder = builders.build_dataset("mpii", tmp_path / "data", manual_dir=tmp_path / "manual")
  for split in ("train", "validation"):
    source = builder.as_data_source(split)
    examples = {source[i]["image/filename"].decode(): source[i] for i in range(len(source))}
    people = truth[split]
    expected_images = {p["image"] for p in people} - {"000009.jpg"}
    assert set(examples) == expected_images
    seen = []
    for name, ex in examples.items():
      assert ex["image"].shape == (int(ex["image/height"]), int(ex["image/width"]), 3)
      rows = ex["people"]["index"].tolist()
      assert rows == [i for i, p in enumerate(people) if p["image"] == name]
      seen += rows
      for j, row in enumerate(rows):
        p = people[row]
        np.testing.assert_array_equal(ex["people"]["center"][j], p["center"])
        assert ex["people"]["scale"][j] == p["scale"]
        np.testing.assert_array_equal(ex["people"]["joints"][j], p["joints"])
        np.testing.assert_array_equal(ex["people"]["joints_vis"][j], p["joints_vis"])
        has_gt = with_gt and split == "validation"
        assert bool(ex["people"]["has_eval_gt"][j]) == has_gt
        if has_gt:
          gt = truth["gt"]
          np.testing.assert_array_equal(ex["people"]["eval_joints"][j],
                                     gt["pos_gt_src"][:, :, row])
          np.testing.assert_array_equal(ex["people"]["eval_joints_missing"][j],
                                        gt["jnt_missing"][:, row].astype(bool))
          np.testing.assert_array_equal(ex["people"]["head_box"][j],
                                     gt["headboxes_src"][:, :, row].reshape(4))
    assert sorted(seen) == [i for i, p in enumerate(people) if p["image"] != "000009.jpg"]


def test_mpii_malformed_entries_and_ground_truth_are_reported(tmp_path):
  manual = tmp_path / "manual"
  truth = _write_mpii(manual, with_gt=True)
  valid = json.loads(json.dumps(truth["validation"]))  # a copy to break
  valid[1]["joints"] = valid[1]["joints"][:15]
  (manual / "annot/valid.json").write_text(json.dumps(valid))
  with pytest.raises(ValueError, match=r"valid\.json: entry 1 \(image 000004\.jpg\): 'joints'"):
    builders.build_dataset("mpii", tmp_path / "data", manual_dir=manual)

  (manual / "annot/valid.json").write_text(json.dumps(truth["validation"][:2]))
  with pytest.raises(ValueError, match=r"gt_valid\.mat: 'pos_gt_src' has shape"):
    builders.build_dataset("mpii", tmp_path / "data", manual_dir=manual)


def test_mpii_missing_manual_files_give_one_error(tmp_path):
  (tmp_path / "manual/images").mkdir(parents=True)
  _jpeg(tmp_path / "manual/images/000001.jpg", 20, 20, 0)
  with pytest.raises(_common.MissingManualFilesError) as info:
    builders.build_dataset("mpii", tmp_path / "data", manual_dir=tmp_path / "manual")
  message = str(info.value)
  assert "2 required path" in message
  assert "annot/train.json" in message and "annot/valid.json" in message


# ----------------------------------------------------------------------------------------
# Splits where every image fails; the command line's one-line errors
# ----------------------------------------------------------------------------------------


def _coco_manual_without_val_images(root: pathlib.Path) -> pathlib.Path:
  """COCO files whose val2017/ holds no image of the annotations (only a stray file)."""
  manual = root / "manual"
  _write_coco(manual, "train", 0)
  _write_coco(manual, "val", 100)
  for image in (manual / "val2017").iterdir():
    image.unlink()
  (manual / "val2017" / "README.txt").write_text("images go here")
  return manual


def test_a_split_whose_images_all_fail_is_an_error_not_an_empty_split(tmp_path):
  manual = _coco_manual_without_val_images(tmp_path)
  with pytest.raises(_common.NoExamplesError) as info:
    builders.build_dataset("coco_keypoints", tmp_path / "data", manual_dir=manual)
  message = str(info.value)
  assert "\n" not in message
  assert message.startswith("coco_keypoints[validation]: all 7 images failed")
  assert str(manual / "val2017" / "000000000101.jpg") in message  # the first failure
  assert not list((tmp_path / "data").rglob("dataset_info.json"))  # nothing prepared
  assert not list((tmp_path / "data").rglob("*.array_record*"))


def test_mpii_split_whose_images_all_fail_is_an_error(tmp_path):
  manual = tmp_path / "manual"
  _write_mpii(manual, with_gt=False)
  valid = json.loads((manual / "annot/valid.json").read_text())
  for person in valid:
    person["image"] = "not_there.jpg"
  (manual / "annot/valid.json").write_text(json.dumps(valid))
  with pytest.raises(_common.NoExamplesError, match=r"^mpii\[validation\]: all 1 images failed "
                                                     r"\(first: missing image file .*not_there"):
    builders.build_dataset("mpii", tmp_path / "data", manual_dir=manual)


def _cli_error(capsys, argv) -> str:
  """Runs the command line expecting an input error; returns its single stderr line."""
  capsys.readouterr()
  with pytest.raises(SystemExit) as info:
    builders.main(argv)
  assert info.value.code == 1
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if line.startswith("python -m jaxpose.data.builders")]
  assert len(lines) == 1, err
  assert "Traceback" not in err
  return lines[0]


def test_command_line_reports_input_errors_in_one_line(tmp_path, capsys):
  manual = tmp_path / "manual"
  _write_coco(manual, "val", 100)
  line = _cli_error(capsys, ["coco_keypoints", "--data_dir", str(tmp_path / "d1"),
                             "--manual_dir", str(manual)])
  assert line.startswith("python -m jaxpose.data.builders: error: coco_keypoints: missing from "
                         f"the manual directory {manual}: ")
  for missing in ("annotations/person_keypoints_train2017.json", "train2017/"):
    assert str(manual / missing.rstrip("/")) in line
  assert "val2017" not in line

  def bad_flag(data):
    data["annotations"][0]["keypoints"][2] = 3

  manual = _coco_manual_with(tmp_path / "b", bad_flag)
  line = _cli_error(capsys, ["coco_keypoints", "--data_dir", str(tmp_path / "d2"),
                             "--manual_dir", str(manual)])
  assert "person_keypoints_train2017.json: annotation id 11: keypoint visibility flags" in line

  manual = _coco_manual_without_val_images(tmp_path / "c")
  line = _cli_error(capsys, ["coco_keypoints", "--data_dir", str(tmp_path / "d3"),
                             "--manual_dir", str(manual)])
  assert "coco_keypoints[validation]: all 7 images failed" in line

  manual = tmp_path / "mpii"
  _write_mpii(manual, with_gt=False)
  (manual / "annot/train.json").write_text("[{]")
  line = _cli_error(capsys, ["mpii", "--data_dir", str(tmp_path / "d4"),
                             "--manual_dir", str(manual)])
  assert f"{manual / 'annot/train.json'}: not a valid JSON file" in line


def test_command_line_in_a_subprocess_prints_no_traceback(tmp_path):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
  result = subprocess.run(
      [sys.executable, "-m", "jaxpose.data.builders", "mpii", "--data_dir", str(tmp_path / "d"),
       "--manual_dir", str(tmp_path / "nowhere")],
      capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
  assert result.returncode == 1, result.stderr
  assert "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("python -m jaxpose.data.builders: error: mpii: missing from the manual "
                         f"directory {tmp_path / 'nowhere'}: ")
  assert "annot/train.json" in last and "images/" in last


def test_command_line_rejects_unknown_configs(capsys, tmp_path):
  with pytest.raises(SystemExit) as info:
    builders.main(["synthetic_people", "--data_dir", str(tmp_path), "--config", "huge"])
  assert info.value.code == 2
  assert "valid configs: default, tiny" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------
# synthetic_people and build_dataset
# ----------------------------------------------------------------------------------------


def test_synthetic_people_reads_back_its_coco_files(tmp_path, capsys):
  builder = builders.build_dataset("synthetic_people", tmp_path, config="tiny")
  config = builder.builder_config
  assert builder.info.file_format.value == "array_record"
  generated = builder.data_dir  # .../synthetic_people/tiny/1.0.0
  folder = tmp_path / "downloads" / "synthetic_people" / f"tiny-{builder.version}"
  for split, file_split, n in (("train", "train", config.num_train_images),
                               ("validation", "val", config.num_val_images)):
    source = builder.as_data_source(split)
    assert len(source) == n
    truth = json.loads(synthetic.annotation_path(folder, file_split).read_text())
    gt = coco_format.ground_truth_from_examples(source[i] for i in range(len(source)))
    assert sorted(gt["images"], key=lambda im: im["id"]) == [
        {k: im[k] for k in ("id", "file_name", "height", "width")} for im in truth["images"]]
    strip = lambda a: {k: a[k] for k in (  # noqa: E731
        "id", "image_id", "category_id", "bbox", "area", "iscrowd", "num_keypoints",
        "keypoints")}
    assert sorted(gt["annotations"], key=lambda a: a["id"]) == [
        strip(a) for a in truth["annotations"]]
    _assert_perfect_detections_score_one(gt)
  # A second call (here through the command line) reuses the prepared dataset.
  stamp = (pathlib.Path(generated) / "dataset_info.json").stat().st_mtime_ns
  again = builders.main(["synthetic_people", "--data_dir", str(tmp_path), "--config", "tiny"])
  assert (pathlib.Path(again.data_dir) / "dataset_info.json").stat().st_mtime_ns == stamp
  assert f"train: {config.num_train_images} examples" in capsys.readouterr().out


def test_build_dataset_rejects_unknown_names(tmp_path):
  with pytest.raises(ValueError, match="coco_keypoints, h36m_images, h36m_poses, mpii, "
                                       "synthetic_mocap, synthetic_people, synthetic_people3d"):
    builders.build_dataset("coco", tmp_path)
