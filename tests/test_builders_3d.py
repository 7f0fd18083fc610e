"""The 3D pose builders: ``h36m_poses`` on dummy files in VideoPose3D's formats, and the
embedded ``synthetic_mocap``.

The dummy ``data_3d_h36m.npz`` / ``data_2d_h36m_<name>.npz`` files carry every quirk of the
real ones: raw action names (``TakingPhoto``, ``WalkingDog``), S11 ``Directions`` with a
camera missing, 2D sequences a few frames longer than the 3D ones, metadata with and
without ``layout_name``, ``numpy.int64`` symmetry lists, 2D sources with different joint
counts, and files pickled by numpy 2 and (hand-made) by numpy 1.x under Python 3 and 2.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import zlib

import numpy as np
import pytest

from data_builders import _common
from data_builders.h36m_poses import h36m_poses
from data_builders.synthetic_mocap import synthetic_mocap
from jaxpose.data import builders, keypoints, mocap, mocap_format, safe_npz
from jaxpose.geometry import camera as camera_lib
from jaxpose.geometry.h36m_cameras import h36m_camera
from tests import npz_files

H36M = {"left": [4, 5, 6, 11, 12, 13], "right": [1, 2, 3, 14, 15, 16]}
MPII = {"left": [3, 4, 5, 13, 14, 15], "right": [0, 1, 2, 10, 11, 12]}

# (subject, raw action, 3D frames)
RECORDINGS = [("S1", "Walking", 12), ("S1", "TakingPhoto 1", 10), ("S1", "WalkingDog", 9),
              ("S9", "Walking 1", 8), ("S9", "Sitting", 11),
              ("S11", "Directions", 7), ("S11", "Directions 1", 7), ("S11", "Eating", 6),
              ("S2", "Walking", 5)]  # S2: in no split


def _world(subject, action, frames):
  rng = np.random.default_rng(zlib.crc32(f"{subject}/{action}".encode()))
  return (rng.normal(0, 0.3, (frames, 32, 3)) + [0, 0, 1]).astype(np.float32)


def _kps(subject, action, camera, frames, joints, source):
  rng = np.random.default_rng([len(source), camera, frames, joints])
  return rng.uniform(0, 1000, (frames, joints, 2)).astype(np.float32)


def _write_manual(root, *, edit_3d=None, edit_gt=None, edit_cpn=None):
  """The dummy manual folder; ``edit_*`` may change a file's dict before it is written."""
  positions_3d = {}
  for subject, action, frames in RECORDINGS:
    positions_3d.setdefault(subject, {})[action] = _world(subject, action, frames)
  (edit_3d or (lambda d: None))(positions_3d)
  npz_files.save(root / "data_3d_h36m.npz", "numpy1", positions_3d=positions_3d)

  gt = {}
  for subject, action, frames in RECORDINGS:
    extra = 2 if action == "Walking" else 0  # videos a little longer than the mocap
    cams = 3 if (subject, action) == ("S11", "Directions") else 4
    gt.setdefault(subject, {})[action] = [
        _kps(subject, action, c, frames + extra, 17, "gt") for c in range(cams)]
  gt["S9"]["Greeting"] = [_kps("S9", "Greeting", c, 5, 17, "gt") for c in range(4)]  # no 3D
  (edit_gt or (lambda d: None))(gt)
  npz_files.save(root / "data_2d_h36m_gt.npz", "numpy2", positions_2d=gt, metadata={
      "num_joints": 17, "keypoints_symmetry": [[np.int64(j) for j in H36M["left"]],
                                               [np.int64(j) for j in H36M["right"]]]})

  cpn = {}
  for subject, action, frames in RECORDINGS:
    if (subject, action) == ("S11", "Directions"):
      continue  # some detection files lack the dropped recording altogether
    cpn.setdefault(subject, {})[action] = [
        _kps(subject, action, c, frames, 17, "cpn") for c in range(4)]
  cpn["S1"]["Walking"][3] = None  # a missing camera
  cpn["S9"]["Walking 1"][1] = cpn["S9"]["Walking 1"][1][:5]  # shorter than the 3D poses
  cpn["S9"]["Sitting"][2][4, 7, 0] = np.nan
  (edit_cpn or (lambda d: None))(cpn)
  npz_files.save(root / "data_2d_h36m_cpn_ft_h36m_dbb.npz", "numpy1", positions_2d=cpn,
                 metadata={"layout_name": "h36m", "num_joints": 17,
                           "keypoints_symmetry": [H36M["left"], H36M["right"]]})

  sh = {}
  for subject, action, frames in RECORDINGS:
    sh.setdefault(subject, {})[action] = [_kps(subject, action, c, frames + 1, 16, "sh")
                                          for c in range(4)]
  npz_files.save(root / "data_2d_h36m_sh_ft_h36m.npz", "numpy1_py2", positions_2d=sh,
                 metadata={"num_joints": 16, "keypoints_symmetry": [MPII["left"], MPII["right"]]})
  return positions_3d, {"gt": gt, "cpn_ft_h36m_dbb": cpn, "sh_ft_h36m": sh}


class _Records(logging.Handler):
  def __init__(self):
    super().__init__(logging.INFO)
    self.messages: list[str] = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def h36m_build(tmp_path_factory):
  manual = tmp_path_factory.mktemp("h36m_manual")
  truth = _write_manual(manual)
  handler = _Records()
  logger = logging.getLogger("jaxpose.data_builders")
  logger.addHandler(handler)
  level = logger.level
  logger.setLevel(logging.INFO)
  try:
    builder = builders.build_dataset("h36m_poses", tmp_path_factory.mktemp("h36m_data"),
                                     manual_dir=manual)
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
  return builder, truth, handler.messages


def _read_all(builder, split):
  source = builder.as_data_source(split)
  return {(ex["subject"].decode(), ex["action"].decode(), int(ex["camera"]["index"])): ex
          for ex in (source[i] for i in range(len(source)))}


def test_h36m_examples_follow_videopose3d_preparation(h36m_build):
  builder, (positions_3d, sources), _ = h36m_build
  train, valid = _read_all(builder, "train"), _read_all(builder, "validation")
  # S1 Walking cam 3 (missing in cpn), S9 Walking 1 cam 1 (short), S9 Sitting cam 2 (NaN)
  # are skipped; S11 Directions is dropped; S2 is in no split.
  assert sorted(train) == sorted(
      [("S1", "Walking", c) for c in (0, 1, 2)] + [("S1", "Photo 1", c) for c in range(4)]
      + [("S1", "WalkDog", c) for c in range(4)])
  assert sorted(valid) == sorted(
      [("S9", "Walking 1", c) for c in (0, 2, 3)] + [("S9", "Sitting", c) for c in (0, 1, 3)]
      + [("S11", "Directions 1", c) for c in range(4)] + [("S11", "Eating", c) for c in range(4)])
  raw_names = {"Photo 1": "TakingPhoto 1", "WalkDog": "WalkingDog"}
  kept, _ = keypoints.h36m_reduced_skeleton()
  for (subject, action, cam), ex in {**train, **valid}.items():
    raw = raw_names.get(action, action)
    world = positions_3d[subject][raw][:, kept]
    frames = len(world)
    assert int(ex["num_frames"]) == frames
    np.testing.assert_array_equal(ex["positions_3d"], world)
    camera = h36m_camera(subject, cam)
    expected_cam = np.asarray(camera_lib.world_to_camera(world, camera.orientation,
                                                         camera.translation))
    np.testing.assert_allclose(ex["positions_3d_camera"], expected_cam, atol=1e-6)
    assert ex["action_name"].decode() == action.split(" ")[0]
    assert int(ex["action_id"]) == mocap_format.H36M_ACTIONS.index(action.split(" ")[0])
    assert int(ex["subject_id"]) == int(subject[1:])
    np.testing.assert_array_equal(ex["camera"]["intrinsic"], camera.intrinsic)
    np.testing.assert_array_equal(ex["camera"]["orientation"], camera.orientation)
    np.testing.assert_array_equal(ex["camera"]["translation"], camera.translation)
    assert ex["camera"]["id"].decode() == camera.camera_id
    kp2d = ex["keypoints_2d"]
    assert mocap_format.source_names(kp2d) == ["cpn_ft_h36m_dbb", "gt", "sh_ft_h36m"]
    for name, data in sources.items():
      xy, scores, src = mocap_format.source_keypoints(kp2d, name)
      np.testing.assert_array_equal(xy, data[subject][raw][cam][:frames])  # cut at the end
      assert scores is None and not src.has_scores
    _, _, sh = mocap_format.source_keypoints(kp2d, "sh_ft_h36m")
    _, _, gt = mocap_format.source_keypoints(kp2d, "gt")
    _, _, cpn = mocap_format.source_keypoints(kp2d, "cpn_ft_h36m_dbb")
    assert (sh.num_joints, sh.layout, gt.layout, cpn.layout) == (16, "", "", "h36m")
    np.testing.assert_array_equal(sh.flip_permutation[MPII["left"]], MPII["right"])
    np.testing.assert_array_equal(gt.flip_permutation,
                                  keypoints.flip_permutation(17, keypoints.H36M_FLIP_PAIRS))


def test_h36m_skips_and_quirks_are_reported(h36m_build):
  _, _, messages = h36m_build
  text = "\n".join(messages)
  expected = [
      r"data_2d_h36m_cpn_ft_h36m_dbb\.npz: S1 'Walking' camera 3: the camera is missing",
      r"data_2d_h36m_cpn_ft_h36m_dbb\.npz: S9 'Walking 1' camera 1: 5 frames of 2D keypoints "
      r"for 8 frames",
      r"data_2d_h36m_cpn_ft_h36m_dbb\.npz: S9 'Sitting' camera 2: NaN or infinite keypoints",
      r"h36m_poses\[train\]: skipped 1 of 12 sequences",
      r"h36m_poses\[validation\]: skipped 2 of 16 sequences",
      r"data_2d_h36m_gt\.npz: 1 2D recording\(s\) have no 3D poses .* S9 'Greeting'",
      r"dropping S11 'Directions'",
      r"subjects S5, S6, S7, S8 of the train split are not in",
      r"subjects S2 are in no split",
      r"h36m_poses\[train\]: \d+ 2D sequences were longer than the 3D poses and were cut",
  ]
  for pattern in expected:
    assert re.search(pattern, text), (pattern, text)


def _build_with(tmp_path, **edits):
  manual = tmp_path / "manual"
  _write_manual(manual, **edits)
  return builders.build_dataset("h36m_poses", tmp_path / "data", manual_dir=manual)


def test_h36m_bad_files_are_errors_naming_the_file(tmp_path):
  def cut_joints(d):
    d["S9"]["Sitting"] = d["S9"]["Sitting"][:, :17]

  with pytest.raises(ValueError, match=r"data_3d_h36m\.npz: positions_3d\['S9'\]\['Sitting'\] "
                     r"must be a float \[T, 32, 3\] array, got shape \(11, 17, 3\)"):
    _build_with(tmp_path / "a", edit_3d=cut_joints)

  def drop_action(d):
    del d["S11"]["Eating"]

  with pytest.raises(ValueError, match=r"data_2d_h36m_cpn_ft_h36m_dbb\.npz: 1 recording\(s\) of "
                     r"data_3d_h36m\.npz have no 2D keypoints here: S11 'Eating'"):
    _build_with(tmp_path / "b", edit_cpn=drop_action)

  def drop_subject(d):
    del d["S9"]

  with pytest.raises(ValueError, match=r"data_2d_h36m_gt\.npz: .*S9 \(the whole subject\)"):
    _build_with(tmp_path / "c", edit_gt=drop_subject)

  def wrong_joints(d):
    d["S1"]["Walking"][0] = d["S1"]["Walking"][0][:, :16]

  with pytest.raises(ValueError, match=r"data_2d_h36m_gt\.npz: positions_2d\['S1'\]\['Walking'\]"
                                       r"\[0\] must be a float \[T, 17, 2\] array"):
    _build_with(tmp_path / "d", edit_gt=wrong_joints)

  def both_names(d):
    d["S1"]["Photo 1"] = d["S1"]["TakingPhoto 1"]

  with pytest.raises(ValueError, match=r"holds both 'Photo 1' and a raw name"):
    _build_with(tmp_path / "e", edit_3d=both_names)


def test_h36m_hostile_and_truncated_files(tmp_path):
  manual = tmp_path / "manual"
  _write_manual(manual)
  marker = tmp_path / "pwned"

  class RunsCommand:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))

  hostile = npz_files.object_array({"S1": {"Walking": [RunsCommand()]}})
  metadata = npz_files.object_array({"num_joints": 17, "keypoints_symmetry": [[1], [4]]})
  npz_files.save_pickled(manual / "data_2d_h36m_evil.npz",
                         metadata=pickle.dumps(metadata, protocol=3),
                         positions_2d=pickle.dumps(hostile, protocol=3))
  with pytest.raises(safe_npz.UnsafeFileError, match=r"data_2d_h36m_evil\.npz"):
    builders.build_dataset("h36m_poses", tmp_path / "data", manual_dir=manual)
  assert not marker.exists()
  (manual / "data_2d_h36m_evil.npz").unlink()
  raw = (manual / "data_3d_h36m.npz").read_bytes()
  (manual / "data_3d_h36m.npz").write_bytes(raw[: len(raw) // 3])
  with pytest.raises(safe_npz.NpzError, match=r"data_3d_h36m\.npz"):
    builders.build_dataset("h36m_poses", tmp_path / "data", manual_dir=manual)


def test_h36m_missing_manual_files(tmp_path):
  (tmp_path / "manual").mkdir()
  npz_files.save(tmp_path / "manual/data_2d_h36m_gt.npz", "numpy2", positions_2d={}, metadata={})
  with pytest.raises(_common.MissingManualFilesError, match=r"data_3d_h36m\.npz"):
    builders.build_dataset("h36m_poses", tmp_path / "data", manual_dir=tmp_path / "manual")
  (tmp_path / "manual/data_2d_h36m_gt.npz").unlink()
  npz_files.save(tmp_path / "manual/data_3d_h36m.npz", "numpy2", positions_3d={})
  with pytest.raises(_common.MissingManualFilesError, match=r"no 2D keypoint file"):
    builders.build_dataset("h36m_poses", tmp_path / "data", manual_dir=tmp_path / "manual")


# ----------------------------------------------------------------------------------------
# synthetic_mocap
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mocap_build(tmp_path_factory):
  return builders.build_dataset("synthetic_mocap", tmp_path_factory.mktemp("mocap"), config="tiny")


def test_synthetic_mocap_has_the_h36m_structure(mocap_build):
  builder = mocap_build
  config = builder.builder_config
  assert builder.info.features.get_serialized_info() == \
      h36m_poses.features().get_serialized_info()
  for split, subjects in config.splits().items():
    examples = _read_all(builder, split)
    assert sorted(examples) == sorted(
        (s, a, c) for s in subjects for a in config.actions for c in range(4))
    for (subject, action, cam), ex in examples.items():
      frames = int(ex["num_frames"])
      assert config.num_frames[0] <= frames <= config.num_frames[1]
      # deterministic: regenerating the recording gives the stored poses
      np.testing.assert_array_equal(ex["positions_3d"],
                                    synthetic_mocap.recording(config, subject, action, 0))
      camera = h36m_camera(subject, cam)
      cam_pts = np.asarray(camera_lib.world_to_camera(ex["positions_3d"], camera.orientation,
                                                      camera.translation))
      np.testing.assert_allclose(ex["positions_3d_camera"], cam_pts, atol=1e-6)
      gt, gt_scores, src = mocap_format.source_keypoints(ex["keypoints_2d"], "gt")
      assert gt_scores is None and src.layout == "h36m"
      projected = camera_lib.image_coordinates(
          np.asarray(camera_lib.project_to_2d(cam_pts, camera.intrinsic)), camera.res_w,
          camera.res_h)
      np.testing.assert_allclose(gt, projected, atol=1e-3)  # pixels
      assert (gt > 0).all() and (gt < 1000).all()  # the whole body is in view
      det, scores, det_src = mocap_format.source_keypoints(ex["keypoints_2d"], "detected")
      assert det_src.has_scores and scores.shape == (frames, 17)
      assert ((scores >= 0) & (scores <= 1)).all()
      error = np.linalg.norm(det - gt, axis=-1)
      assert 1.0 < np.median(error) < 8.0  # pixels: noisy, but close


def test_detector_noise_swaps_limbs_and_makes_outliers():
  rng = np.random.default_rng(0)
  gt = np.cumsum(rng.normal(0, 1, (3000, 17, 2)), axis=0) + 500
  gt[:, keypoints.H36M_JOINTS_LEFT] -= 40  # left joints left of the right ones
  det, scores = synthetic_mocap.detector_noise.simulate_detections(
      np.random.default_rng(1), gt, synthetic_mocap._LIMBS,
      synthetic_mocap.detector_noise.DetectorNoise(joint_scale=synthetic_mocap._JOINT_SCALE))
  error = np.linalg.norm(det - gt, axis=-1)
  swapped = error[:, keypoints.H36M_JOINTS_LEFT] > 30
  assert 0.005 < swapped.mean() < 0.1
  left_scores = scores[:, keypoints.H36M_JOINTS_LEFT]
  assert left_scores[swapped].mean() < left_scores[~swapped].mean() - 0.15
  torso = ~np.isin(np.arange(17), keypoints.H36M_JOINTS_LEFT + keypoints.H36M_JOINTS_RIGHT)
  outliers = (error > 15) & torso
  assert outliers.any() and scores[outliers].max() <= 0.4


def test_mocap_bodies_are_rigid_grounded_and_move():
  rng = np.random.default_rng(3)
  body = mocap.sample_body(rng)
  assert 1.5 < body.height < 2.0
  for kind in mocap.MOTIONS:
    poses = mocap.generate_motion(kind, body, 150, np.random.default_rng(7)).astype(np.float64)
    assert poses.shape == (150, 17, 3) and np.isfinite(poses).all()
    bones = np.linalg.norm(poses[:, 1:] - poses[:, list(keypoints.H36M_PARENTS[1:])], axis=-1)
    np.testing.assert_allclose(bones, np.broadcast_to(body.bone_lengths[1:], bones.shape),
                               rtol=1e-5)
    lowest = poses[:, [3, 6], 2].min(axis=1)
    np.testing.assert_allclose(lowest, body.ankle_height, atol=1e-5)
    assert (np.linalg.norm(poses[:, 0, :2], axis=-1) < mocap.CAPTURE_RADIUS + 0.7).all()
    motion = np.abs(np.diff(poses, axis=0)).max()
    assert 1e-4 < motion < 0.14  # moving, at most 7 m/s (a swinging foot)
  walk = mocap.generate_motion("Walking", body, 250, np.random.default_rng(1))
  speed = np.linalg.norm(np.diff(walk[:, 0, :2], axis=0), axis=-1).mean() * mocap.FPS
  assert 0.8 < speed < 1.8  # meters per second
  sit = mocap.generate_motion("Sitting", body, 50, np.random.default_rng(1))
  assert (sit[:, 0, 2] < 0.7).all()  # the pelvis at chair height


def test_mocap_joint_limits_and_errors():
  body = mocap.sample_body(np.random.default_rng(0))
  angles = np.zeros((2, mocap.NUM_DOFS))
  angles[:, mocap.DOF_NAMES.index("l_knee")] = [-50.0, 200.0]  # beyond both limits
  clipped = angles.copy()
  clipped[:, mocap.DOF_NAMES.index("l_knee")] = [0.0, 140.0]
  args = (np.zeros(2), np.zeros((2, 2)))
  np.testing.assert_array_equal(mocap.forward_kinematics(body, angles, *args),
                                mocap.forward_kinematics(body, clipped, *args))
  with pytest.raises(ValueError, match="unknown motion 'Jumping'; valid: Directions"):
    mocap.generate_motion("Jumping", body, 10, np.random.default_rng(0))


def test_h36m_skeleton_reduction_matches_videopose3d():
  # VideoPose3D's Human36mDataset: remove_joints([4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24,
  # 28, 29, 30, 31]) on the 32-joint skeleton, then parents[11] = parents[14] = 8 (values
  # read off the original run in a scratch copy).
  kept, parents = keypoints.h36m_reduced_skeleton()
  assert kept.tolist() == [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27]
  assert parents.tolist() == [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15]
  assert tuple(parents.tolist()) == keypoints.H36M_PARENTS
  _, raw_parents, left, right = keypoints.reduce_skeleton(
      keypoints.H36M32_PARENTS, keypoints.H36M32_REMOVED, keypoints.H36M32_JOINTS_LEFT,
      keypoints.H36M32_JOINTS_RIGHT)
  assert raw_parents[[11, 14]].tolist() == [7, 7]  # before re-attaching the shoulders
  assert tuple(left.tolist()) == keypoints.H36M_JOINTS_LEFT
  assert tuple(right.tolist()) == keypoints.H36M_JOINTS_RIGHT
  with pytest.raises(ValueError, match="root may not be removed"):
    keypoints.reduce_skeleton([-1, 0, 1], [0])


def test_h36m_command_line_errors_are_one_line(tmp_path, capsys):
  """A hostile 2D file and a 2D file for recordings the 3D file lacks end the builder's
  command line with one stderr line naming the file, exit status 1."""
  manual = tmp_path / "manual"
  _write_manual(manual)

  class RunsCommand:
    def __reduce__(self):
      return (os.system, ("true",))

  hostile = npz_files.object_array({"S1": {"Walking": [RunsCommand()]}})
  metadata = npz_files.object_array({"num_joints": 17, "keypoints_symmetry": [[1], [4]]})
  npz_files.save_pickled(manual / "data_2d_h36m_evil.npz",
                         metadata=pickle.dumps(metadata, protocol=3),
                         positions_2d=pickle.dumps(hostile, protocol=3))
  with pytest.raises(SystemExit) as exit_info:
    builders.main(["h36m_poses", "--data_dir", str(tmp_path / "d1"), "--manual_dir", str(manual)])
  assert exit_info.value.code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "Traceback" not in err[0], err
  assert "data_2d_h36m_evil.npz" in err[0]
  (manual / "data_2d_h36m_evil.npz").unlink()

  def lacks_a_recording(d):  # the 3D file has S1 Walking, this 2D file does not
    del d["S1"]["Walking"]

  manual2 = tmp_path / "manual2"
  _write_manual(manual2, edit_gt=lacks_a_recording)
  with pytest.raises(SystemExit) as exit_info:
    builders.main(["h36m_poses", "--data_dir", str(tmp_path / "d2"),
                   "--manual_dir", str(manual2)])
  assert exit_info.value.code == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "data_2d_h36m_gt.npz" in err[0], err
