"""h36m_images (both layouts, dummy files written here) and synthetic_people3d."""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_builders import _common
from data_builders.h36m_images import h36m_images
from data_builders.synthetic_people3d import synthetic_people3d
from jaxpose.data import builders, render3d, safe_npz

RS = np.random.RandomState(7)


def _jpeg(path: Path, height: int = 40, width: int = 32) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  image = RS.randint(0, 255, (height, width, 3)).astype(np.uint8)
  path.write_bytes(cv2.imencode(".jpg", image)[1].tobytes())


def _challenge_entry(k: int) -> dict:
  joints = RS.uniform(2, 30, (18, 3))
  joints[:, 2] -= joints[0, 2]
  rel = RS.uniform(-500, 500, (18, 3))
  rel[0] = 0
  # numpy scalars, as MSRA's cache holds them
  return {"image": f"/somewhere/Train/IMG/{k + 1:05d}.jpg", "joints_3d": joints,
          "joints_3d_vis": np.ones((18, 3)), "joints_3d_relative": rel,
          "center_x": np.float64(16.0 + k), "center_y": np.float64(20.0), "width": np.float64(24.0),
          "height": np.float64(32.0), "bone_len": 4400.0, "s": 0.1, "rot": np.eye(2),
          "t": np.zeros(2), "flip_pairs": np.array([[1, 4]]), "parent_ids": np.arange(18)}


def write_eccv18(root: Path, sizes=(("Train", 3), ("Val", 2)), protocol: int = 4) -> dict:
  """The challenge layout; returns the db lists."""
  dbs = {}
  for set_name, n in sizes:
    db = [_challenge_entry(k) for k in range(n)]
    for k in range(n):
      _jpeg(root / "ECCV18_Challenge" / set_name / "IMG" / f"{k + 1:05d}.jpg")
    cache = (root / "msra_cache" / f"HM36_eccv_challenge_{set_name}_cache"
             / f"HM36_eccv_challenge_{set_name}_w288xh384_keypoint_jnt_bbox_db.pkl")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(db, protocol=protocol))
    dbs[set_name] = db
  return dbs


class _Records(logging.Handler):
  def __init__(self):
    super().__init__()
    self.messages: list[str] = []

  def emit(self, record):
    self.messages.append(record.getMessage())


def _read(builder, split):
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def test_eccv18_layout_with_a_corrupt_image(tmp_path):
  manual = tmp_path / "manual"
  dbs = write_eccv18(manual, protocol=2)  # a Python-2-era pickle protocol
  bad = manual / "ECCV18_Challenge" / "Train" / "IMG" / "00002.jpg"
  bad.write_bytes(b"\xff\xd8\xff not a jpeg")
  handler = _Records()
  logging.getLogger("jaxpose.data_builders").addHandler(handler)
  try:
    builder = builders.build_dataset("h36m_images", tmp_path / "data", manual_dir=manual)
  finally:
    logging.getLogger("jaxpose.data_builders").removeHandler(handler)
  assert any(str(bad) in m for m in handler.messages)
  assert any("skipped 1 of 3" in m for m in handler.messages)
  train = sorted(_read(builder, "train"), key=lambda e: int(e["image/id"]))
  assert [int(e["image/id"]) for e in train] == [1, 3]
  for ex in train:
    entry = dbs["Train"][int(ex["image/id"]) - 1]
    np.testing.assert_array_equal(ex["keypoints_2d"], entry["joints_3d"][:17, :2])
    np.testing.assert_array_equal(ex["depth"], entry["joints_3d"][:17, 2])
    np.testing.assert_allclose(ex["positions_3d"], entry["joints_3d_relative"][:17] / 1000.0)
    np.testing.assert_array_equal(ex["box"]["center"], [entry["center_x"], entry["center_y"]])
    np.testing.assert_array_equal(ex["box"]["size"], [24.0, 32.0])
    assert not ex["camera"]["has_intrinsics"] and ex["subject_id"] == -1 and ex["action"] == b""
    assert ex["image/filename"] == f"{int(ex['image/id']):05d}.jpg".encode()
  assert len(_read(builder, "validation")) == 2


def test_hm36_layout_reads_cameras_subjects_and_actions(tmp_path):
  manual = tmp_path / "manual"
  fl, c_p = np.array([1145.0, 1144.0]), np.array([512.0, 515.0])
  sets = {"train": ("s_01_act_14_subact_02_ca_03", 200),
          "validmin": ("s_09_act_02_subact_01_ca_01", 10)}
  dbs = {}
  for set_name, (folder, sample) in sets.items():
    db = []
    for frame in (0, 4):
      name = f"{folder}_{frame + 1:06d}.jpg"
      _jpeg(manual / "images" / folder / name)
      cam = RS.uniform(-600, 600, (18, 3)) + [0, 0, 4500]
      db.append({"image": f"/data/hm36/images/{folder}/{name}", "joints_3d_cam": cam,
                 "pelvis": cam[0], "fl": fl, "c_p": c_p,
                 "joints_3d": np.c_[cam[:, :2], cam[:, 2] - cam[0, 2]],
                 "joints_3d_vis": np.ones((18, 3)), "center_x": 16.0, "center_y": 20.0,
                 "width": 500.0, "height": 500.0, "bone_len": 1.0})
    path = (manual / f"HM36_{set_name}_cache"
            / f"HM36_{set_name}_w256xh256_keypoint_db_sample{sample}.pkl")
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(db))
    dbs[set_name] = db
  builder = builders.build_dataset("h36m_images", tmp_path / "data", manual_dir=manual,
                                   config="hm36")
  train = sorted(_read(builder, "train"), key=lambda e: int(e["frame"]))
  assert [int(e["frame"]) for e in train] == [0, 4]
  ex, entry = train[1], dbs["train"][1]
  assert ex["subject"] == b"S1" and ex["action"] == b"Walking 1" and ex["action_name"] == b"Walking"
  assert int(ex["camera_index"]) == 2 and ex["camera"]["has_intrinsics"]
  cam = entry["joints_3d_cam"]
  np.testing.assert_allclose(ex["depth"], (cam[:17, 2] - cam[0, 2]) * fl[0] / cam[0, 2])
  np.testing.assert_allclose(ex["positions_3d"], (cam[:17] - cam[0]) / 1000.0)
  np.testing.assert_allclose(ex["camera"]["root_position"], cam[0] / 1000.0)
  np.testing.assert_array_equal(ex["camera"]["focal_length"], fl)
  val = _read(builder, "validation")
  assert {e["action"] for e in val} == {b"Directions"}
  assert {int(e["subject_id"]) for e in val} == {9}


class _Hostile:
  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_bad_pickles_are_one_error_naming_the_file(tmp_path, capsys):
  manual = tmp_path / "manual"
  write_eccv18(manual)
  cache = (manual / "msra_cache" / "HM36_eccv_challenge_Val_cache"
           / "HM36_eccv_challenge_Val_w288xh384_keypoint_jnt_bbox_db.pkl")
  marker = tmp_path / "pwned"
  cache.write_bytes(pickle.dumps([_Hostile(str(marker))]))
  with pytest.raises(safe_npz.UnsafeFileError, match=f"{cache}.*posix.system|{cache}.*os.system"):
    builders.build_dataset("h36m_images", tmp_path / "d1", manual_dir=manual)
  assert not marker.exists()
  with pytest.raises(SystemExit):
    builders.main(["h36m_images", "--data_dir", str(tmp_path / "d1b"), "--manual_dir", str(manual)])
  line = capsys.readouterr().err.strip().splitlines()[-1]
  assert line.startswith("python -m jaxpose.data.builders: error: ") and str(cache) in line
  cache.write_bytes(pickle.dumps([_challenge_entry(0)])[:-20])
  with pytest.raises(safe_npz.NpzError, match=f"{cache}: corrupt or truncated"):
    builders.build_dataset("h36m_images", tmp_path / "d2", manual_dir=manual)
  entry = _challenge_entry(0)
  del entry["joints_3d"]
  cache.write_bytes(pickle.dumps([_challenge_entry(1), entry]))
  with pytest.raises(h36m_images.H36MImagesFormatError, match=f"{cache}: entry 1: no 'joints_3d'"):
    builders.build_dataset("h36m_images", tmp_path / "d3", manual_dir=manual)
  entry = _challenge_entry(0)
  entry["joints_3d"] = entry["joints_3d"][:, :2]
  entry["width"] = np.float64(np.nan)
  cache.write_bytes(pickle.dumps([entry]))
  with pytest.raises(h36m_images.H36MImagesFormatError, match=r"entry 0: 'joints_3d' has shape"):
    builders.build_dataset("h36m_images", tmp_path / "d4", manual_dir=manual)
  cache.write_bytes(pickle.dumps({"not": "a list"}))
  with pytest.raises(h36m_images.H36MImagesFormatError, match="expected a non-empty list"):
    builders.build_dataset("h36m_images", tmp_path / "d5", manual_dir=manual)


def test_missing_manual_files_listed_once(tmp_path):
  (tmp_path / "manual").mkdir()
  (tmp_path / "manual" / "x").write_text("")
  with pytest.raises(_common.MissingManualFilesError) as e:
    builders.build_dataset("h36m_images", tmp_path / "d", manual_dir=tmp_path / "manual")
  summary = e.value.summary()
  assert "HM36_eccv_challenge_Train_w288xh384" in summary and "ECCV18_Challenge/Val/IMG/" in summary
  with pytest.raises(_common.MissingManualFilesError, match="HM36_train_w.*none"):
    (tmp_path / "manual" / "images").mkdir()
    _jpeg(tmp_path / "manual" / "images" / "a.jpg")
    builders.build_dataset("h36m_images", tmp_path / "d2", manual_dir=tmp_path / "manual",
                           config="hm36")


def test_synthetic_people3d_labels_are_consistent_projections(tmp_path):
  builder = builders.build_dataset("synthetic_people3d", tmp_path, config="tiny")
  config = builder.builder_config
  for split, (num, subjects) in config.splits().items():
    examples = _read(builder, split)
    assert len(examples) == num
    assert {e["subject"].decode() for e in examples} <= set(subjects)
  ex = sorted(_read(builder, "train"), key=lambda e: int(e["image/id"]))[0]
  cam = ex["camera"]
  root = cam["root_position"]
  points = ex["positions_3d"] + root
  pixels = render3d.project(points, cam["focal_length"], cam["center"])
  np.testing.assert_allclose(ex["keypoints_2d"], pixels, rtol=1e-9)
  depth = ex["positions_3d"][:, 2] * cam["focal_length"][0] / root[2]
  np.testing.assert_allclose(ex["depth"], depth, rtol=1e-9, atol=1e-9)
  center, size = render3d.crop_box(root, cam["focal_length"], cam["center"], 2.0)
  np.testing.assert_allclose(ex["box"]["center"], center)
  np.testing.assert_allclose(size[0], 2.0 * cam["focal_length"][0] / root[2])
  assert ex["image"].shape == (96, 96, 3) and ex["action_id"] >= 0
  bones = np.linalg.norm(ex["positions_3d"][1:] - ex["positions_3d"][[0, 1, 2, 0, 4, 5, 0, 7, 8,
                                                                       9, 8, 11, 12, 8, 14, 15]],
                         axis=-1)
  assert np.all((bones > 0.05) & (bones < 0.6))
  # Deterministic: the generator gives the same first example again.
  again = next(synthetic_people3d.generate_examples(config, "train", 1, config.train_subjects))
  np.testing.assert_array_equal(again[1]["keypoints_2d"], ex["keypoints_2d"])
