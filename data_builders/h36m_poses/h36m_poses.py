"""h36m_poses: Human3.6M 3D poses with 2D keypoints, from VideoPose3D's prepared files.

``tfds build data_builders/h36m_poses --manual_dir=DIR`` or
``jaxpose.data.builders.build_dataset('h36m_poses', data_dir, manual_dir=DIR)``.

``manual_dir`` holds the files users of VideoPose3D already have (its ``DATASETS.md``):

* ``data_3d_h36m.npz``: ``positions_3d[subject][action]``, ``[T, 32, 3]`` world positions
  in meters (``prepare_data_h36m.py``);
* one or more ``data_2d_h36m_<name>.npz``: ``positions_2d[subject][action]``, a list of
  per-camera ``[T, K, 2]`` pixel arrays, and ``metadata`` (``num_joints``,
  ``keypoints_symmetry = [left, right]``, optionally ``layout_name``). ``<name>`` is the 2D
  source (``gt``, ``cpn_ft_h36m_dbb``, ``detectron_ft_h36m``, ``sh_ft_h36m``, your own).

Every 2D file found is a source of the dataset: each example (one subject, action and
camera) holds the keypoints of all of them (``keypoints_2d``, layout in
``jaxpose.data.mocap_format``), and a training config picks one by name
(``keypoints='cpn_ft_h36m_dbb'``). To add a source later, put its file into
``manual_dir``, delete the prepared ``h36m_poses/<config>/<version>`` folder and build
again. Files are read without executing pickled code (``jaxpose.data.safe_npz``).

Preparation follows VideoPose3D (``data/prepare_data_*.py``, ``run.py``):

* the 32 motion-capture joints are reduced to 17 (``keypoints.h36m_reduced_skeleton``);
* raw action names are renamed (``TakingPhoto`` -> ``Photo``, ``WalkingDog`` -> ``WalkDog``);
* S11 ``Directions`` is dropped from every file (one of its videos is corrupt);
* 2D sequences longer than the 3D one are cut to the 3D length at the end.

Bad input: a malformed or hostile file, a 2D file lacking a subject or action of the 3D
file, or joint counts that contradict the metadata, stop the build with an error naming
the file. A missing camera, a 2D sequence shorter than the 3D one, or NaN/infinite values
skip that sequence with a warning naming subject, action and camera (counted per split).
2D recordings without 3D poses are left out with a warning.

Splits (``H36MPosesConfig``): ``train`` = S1, S5, S6, S7, S8 and ``validation`` = S9, S11,
the test subjects of the standard protocol (Human3.6M's own test set has no public
poses). Subjects of the files in neither list are left out.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_builders import _common
from jaxpose.data import keypoints, mocap_format, safe_npz

logger = logging.getLogger("jaxpose.data_builders")

FILE_3D = "data_3d_h36m.npz"
PREFIX_2D = "data_2d_h36m_"
NUM_CAMERAS = 4
# VideoPose3D's preparation drops this recording (a corrupt video of one camera).
class H36MFormatError(ValueError):
  """A manual file that does not hold what VideoPose3D's preparation writes (the message
  names the file and the entry)."""


DROPPED_RECORDINGS: tuple[tuple[str, str], ...] = (("S11", "Directions"),)

_DESCRIPTION = """
Human3.6M motion capture (17 joints, world and camera coordinates in meters) with the
Human3.6M cameras and every 2D keypoint source found in the manual folder, one example
per subject, action and camera, prepared as VideoPose3D prepares them.
"""

MANUAL_DOWNLOAD_INSTRUCTIONS = """
Put VideoPose3D's prepared Human3.6M files into the manual folder
(https://github.com/facebookresearch/VideoPose3D/blob/main/DATASETS.md):
  data_3d_h36m.npz            from data/prepare_data_h36m.py (needs the Human3.6M
                              'D3 Positions' of S1, S5, S6, S7, S8, S9, S11); it also writes
  data_2d_h36m_gt.npz         the ground-truth 2D source
  data_2d_h36m_<name>.npz     any detections, e.g. cpn_ft_h36m_dbb, detectron_ft_h36m,
                              sh_ft_h36m (downloads listed in DATASETS.md)
At least one 2D file is needed.
"""

_B = tfds.features.Encoding.BYTES


def _tensor(shape: tuple[int | None, ...], dtype, doc: str) -> tfds.features.Tensor:
  return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=_B, doc=doc)


def features() -> tfds.features.FeaturesDict:
  """The features of ``h36m_poses`` and ``synthetic_mocap`` (``mocap_format`` layout)."""
  f32, i32, text = np.float32, np.int32, tfds.features.Text
  joints = keypoints.H36M_NUM_JOINTS
  return tfds.features.FeaturesDict({
      "subject": text(doc="Subject name, e.g. 'S9'."),
      "subject_id": tfds.features.Scalar(dtype=i32, doc="9 for 'S9'."),
      "action": text(doc="Action with take number, e.g. 'Walking 1'."),
      "action_name": text(doc="Action without take number, e.g. 'Walking'."),
      "action_id": tfds.features.Scalar(
          dtype=i32, doc="Index in mocap_format.H36M_ACTIONS, -1 if none."),
      "num_frames": tfds.features.Scalar(dtype=i32, doc="Frames T of the sequence (50 fps)."),
      "camera": tfds.features.FeaturesDict({
          "index": tfds.features.Scalar(dtype=i32, doc="Human3.6M camera 0-3."),
          "id": text(doc="Camera serial number."),
          "res_w": tfds.features.Scalar(dtype=i32, doc="Image width, pixels."),
          "res_h": tfds.features.Scalar(dtype=i32, doc="Image height, pixels."),
          "intrinsic": tfds.features.Tensor(shape=(9,), dtype=f32,
                                            doc="Normalised (fx, fy, cx, cy, k1, k2, k3, p1, p2)."),
          "focal_length": tfds.features.Tensor(shape=(2,), dtype=f32, doc="Pixels."),
          "center": tfds.features.Tensor(shape=(2,), dtype=f32, doc="Principal point, pixels."),
          "radial_distortion": tfds.features.Tensor(shape=(3,), dtype=f32, doc="k1, k2, k3."),
          "tangential_distortion": tfds.features.Tensor(shape=(2,), dtype=f32, doc="p1, p2."),
          "orientation": tfds.features.Tensor(shape=(4,), dtype=f32,
                                              doc="Quaternion (w, x, y, z), camera to world."),
          "translation": tfds.features.Tensor(shape=(3,), dtype=f32,
                                              doc="Camera position in the world, meters."),
      }),
      "positions_3d": _tensor((None, joints, 3), f32, "[T, 17, 3] world positions, meters."),
      "positions_3d_camera": _tensor((None, joints, 3), f32,
                                     "[T, 17, 3] positions in the camera frame, meters."),
      "keypoints_2d": tfds.features.FeaturesDict({
          "sources": tfds.features.Tensor(shape=(None,), dtype=np.object_, doc="[S] names."),
          "layouts": tfds.features.Tensor(shape=(None,), dtype=np.object_,
                                          doc="[S] keypoint layout names ('' if unknown)."),
          "num_joints": tfds.features.Tensor(shape=(None,), dtype=i32, doc="[S] joints K_s."),
          "flip_permutation": tfds.features.Tensor(
              shape=(None,), dtype=i32, doc="[sum K] per source, the joint each joint becomes "
              "under a horizontal flip (source-local index)."),
          "has_scores": tfds.features.Tensor(shape=(None,), dtype=np.bool_, doc="[S]."),
          "positions": _tensor((None, None, 2), f32, "[T, sum K, 2] pixels, sources "
                               "concatenated along the joints."),
          "scores": _tensor((None, None), f32, "[T, sum K] confidences (1 if a source has none)."),
      }),
  })


@dataclasses.dataclass(kw_only=True)
class H36MPosesConfig(tfds.core.BuilderConfig):
  """Which subjects go into which split.

  Attributes:
    train_subjects: subjects of the ``train`` split.
    validation_subjects: subjects of the ``validation`` split (the protocol's test set).
  """
  train_subjects: tuple[str, ...] = mocap_format.TRAIN_SUBJECTS
  validation_subjects: tuple[str, ...] = mocap_format.TEST_SUBJECTS

  def splits(self) -> dict[str, tuple[str, ...]]:
    return {"train": tuple(self.train_subjects), "validation": tuple(self.validation_subjects)}


# ----------------------------------------------------------------------------------------
# Reading VideoPose3D's files
# ----------------------------------------------------------------------------------------


def _canonical_actions(path: pathlib.Path, what: str, subject: str,
                       actions: Mapping[Any, Any]) -> dict[str, Any]:
  """Renames raw action names and drops the recordings the preparation drops."""
  out: dict[str, Any] = {}
  for raw, value in actions.items():
    if not isinstance(raw, str):
      raise H36MFormatError(f"{path}: {what}[{subject!r}] has a non-string action key {raw!r:.40}")
    action = mocap_format.canonical_action(raw)
    if (subject, action) in DROPPED_RECORDINGS:
      logger.info("%s: dropping %s %r as VideoPose3D's preparation does (corrupt video)",
                  path.name, subject, action)
      continue
    if action in out:
      raise H36MFormatError(f"{path}: {what}[{subject!r}] holds both {action!r} and a raw name "
                       f"that renames to it ({raw!r})")
    out[action] = value
  return out


def _subject_dict(path: pathlib.Path, what: str, data: Any) -> dict[str, dict[str, Any]]:
  if not isinstance(data, dict):
    raise H36MFormatError(f"{path}: {what} must be a dict of subjects, got {type(data).__name__}")
  out = {}
  for subject, actions in data.items():
    if not isinstance(subject, str) or not isinstance(actions, dict):
      raise H36MFormatError(f"{path}: {what} must map subject names to dicts of actions "
                       f"(entry {subject!r:.40})")
    out[subject] = _canonical_actions(path, what, subject, actions)
  return out


def read_positions_3d(path: pathlib.Path) -> dict[str, dict[str, np.ndarray]]:
  """``data_3d_h36m.npz`` -> ``{subject: {action: [T, 17, 3] float32 meters}}``.

  Raises:
    ValueError: a malformed, truncated or hostile file, or an array that is not
      ``[T, 32, 3]`` floats (naming the file, subject and action).
  """
  data = _subject_dict(path, "positions_3d", safe_npz.read_object(path, "positions_3d"))
  kept, _ = keypoints.h36m_reduced_skeleton()
  out: dict[str, dict[str, np.ndarray]] = {}
  for subject, actions in data.items():
    out[subject] = {}
    for action, array in actions.items():
      if (not isinstance(array, np.ndarray) or array.dtype.kind != "f" or array.ndim != 3
          or array.shape[1:] != (len(keypoints.H36M32_PARENTS), 3)):
        raise H36MFormatError(
            f"{path}: positions_3d[{subject!r}][{action!r}] must be a float [T, 32, 3] array, "
            f"got {_describe(array)}")
      out[subject][action] = np.ascontiguousarray(array[:, kept], dtype=np.float32)
  return out


def _describe(value: Any) -> str:
  if isinstance(value, np.ndarray):
    return f"shape {value.shape} dtype {value.dtype}"
  return type(value).__name__


def _metadata(path: pathlib.Path) -> tuple[int, mocap_format.Source2D]:
  meta = safe_npz.read_object(path, "metadata")
  if not isinstance(meta, dict) or "num_joints" not in meta or "keypoints_symmetry" not in meta:
    raise H36MFormatError(f"{path}: metadata must be a dict with 'num_joints' and "
                     f"'keypoints_symmetry', got {meta!r:.120}")
  num = meta["num_joints"]
  if isinstance(num, (bool, np.bool_)) or not isinstance(num, (int, np.integer)) or num <= 0:
    raise H36MFormatError(f"{path}: metadata num_joints must be a positive integer, got {num!r}")
  symmetry = meta["keypoints_symmetry"]
  if not isinstance(symmetry, (list, tuple)) or len(symmetry) != 2:
    raise H36MFormatError(f"{path}: metadata keypoints_symmetry must be [left, right], got "
                     f"{symmetry!r:.80}")
  layout = meta.get("layout_name", "")
  if not isinstance(layout, str):
    raise H36MFormatError(f"{path}: metadata layout_name must be a string, got {layout!r:.40}")
  perm = mocap_format.flip_permutation_from_symmetry(int(num), symmetry[0], symmetry[1],
                                                     f"{path}: metadata")
  name = path.name[len(PREFIX_2D):-len(".npz")]
  return int(num), mocap_format.Source2D(name, layout, perm, has_scores=False)


def read_keypoints_2d(path: pathlib.Path) -> tuple[mocap_format.Source2D,
                                                   dict[str, dict[str, list[np.ndarray | None]]]]:
  """``data_2d_h36m_<name>.npz`` -> its source and ``{subject: {action: [per camera]}}``.

  Camera entries are ``[T, K, 2]`` pixel arrays (``[T, K, 3]`` with a score channel) or
  ``None`` where the file has no such camera.

  Raises:
    ValueError: a malformed, truncated or hostile file; metadata without joint count or
      symmetry; arrays that are not ``[T, num_joints, 2 or 3]`` floats; more than four
      cameras; score channels in some arrays only.
  """
  num_joints, source = _metadata(path)
  data = _subject_dict(path, "positions_2d", safe_npz.read_object(path, "positions_2d"))
  channels: set[int] = set()
  out: dict[str, dict[str, list[np.ndarray | None]]] = {}
  for subject, actions in data.items():
    out[subject] = {}
    for action, cams in actions.items():
      where = f"{path}: positions_2d[{subject!r}][{action!r}]"
      if not isinstance(cams, (list, tuple)) or len(cams) > NUM_CAMERAS:
        raise H36MFormatError(f"{where} must be a list of at most {NUM_CAMERAS} cameras, got "
                         f"{_describe(cams) if not isinstance(cams, (list, tuple)) else len(cams)}")
      out[subject][action] = []
      for index, array in enumerate(cams):
        if array is not None and (
            not isinstance(array, np.ndarray) or array.dtype.kind != "f" or array.ndim != 3
            or array.shape[1] != num_joints or array.shape[2] not in (2, 3)):
          raise H36MFormatError(f"{where}[{index}] must be a float [T, {num_joints}, 2] array "
                           f"(num_joints from the metadata), got {_describe(array)}")
        if array is not None:
          channels.add(array.shape[2])
        out[subject][action].append(array)
  if len(channels) > 1:
    raise H36MFormatError(f"{path}: some keypoint arrays have a score channel and some do not")
  return dataclasses.replace(source, has_scores=channels == {3}), out


# ----------------------------------------------------------------------------------------
# Matching 2D to 3D
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Inputs:
  """Everything read from the manual folder."""
  positions_3d: dict[str, dict[str, np.ndarray]]
  sources: list[mocap_format.Source2D]
  keypoints_2d: list[dict[str, dict[str, list[np.ndarray | None]]]]
  files_2d: list[pathlib.Path]


def check_coverage(inputs: _Inputs, subjects: Sequence[str]) -> None:
  """Every 3D recording of ``subjects`` must be in every 2D file (as ``run.py`` asserts).

  2D recordings without 3D poses are reported with a warning and left out.

  Raises:
    ValueError: naming the 2D file and the missing subjects/actions.
  """
  for path, kps in zip(inputs.files_2d, inputs.keypoints_2d):
    missing = []
    for subject in subjects:
      for action in inputs.positions_3d.get(subject, {}):
        if subject not in kps:
          missing.append(f"{subject} (the whole subject)")
          break
        if action not in kps[subject]:
          missing.append(f"{subject} {action!r}")
    if missing:
      shown = ", ".join(missing[:10]) + (
          f" and {len(missing) - 10} more" if len(missing) > 10 else "")
      raise H36MFormatError(f"{path}: {len(missing)} recording(s) of {FILE_3D} have no 2D keypoints "
                       f"here: {shown}")
    extra = [f"{s} {a!r}" for s in kps for a in kps[s]
             if s in subjects and a not in inputs.positions_3d.get(s, {})]
    if extra:
      logger.warning("%s: %d 2D recording(s) have no 3D poses in %s and are left out: %s",
                     path, len(extra), FILE_3D, ", ".join(extra[:10]))


def _sequence_2d(path: pathlib.Path, kps: dict[str, dict[str, list[np.ndarray | None]]],
                 subject: str, action: str, camera: int, num_frames: int
                 ) -> tuple[np.ndarray | None, str]:
  """The camera's 2D sequence cut to ``num_frames``, or ``(None, why it is skipped)``."""
  cams = kps[subject][action]
  array = cams[camera] if camera < len(cams) else None
  where = f"{path.name}: {subject} {action!r} camera {camera}"
  if array is None:
    return None, f"{where}: the camera is missing"
  if array.shape[0] < num_frames:
    return None, (f"{where}: {array.shape[0]} frames of 2D keypoints for {num_frames} frames "
                  "of 3D poses")
  array = array[:num_frames]  # some videos have a few more frames than the motion capture
  if not np.isfinite(array).all():
    return None, f"{where}: NaN or infinite keypoints"
  return array, ""


def _examples(inputs: _Inputs, subjects: Sequence[str], log: _common.SkipLog
              ) -> Iterator[tuple[str, dict[str, Any]]]:
  trimmed = 0
  for subject in subjects:
    for action in sorted(inputs.positions_3d.get(subject, {})):
      world = inputs.positions_3d[subject][action]
      for camera in range(NUM_CAMERAS):
        log.total += 1
        if not np.isfinite(world).all():
          log.skip(f"{FILE_3D}: {subject} {action!r} camera {camera}: NaN or infinite 3D poses")
          continue
        data, reason = [], ""
        for path, kps in zip(inputs.files_2d, inputs.keypoints_2d):
          array, reason = _sequence_2d(path, kps, subject, action, camera, world.shape[0])
          if array is None:
            break
          trimmed += int(kps[subject][action][camera].shape[0] > world.shape[0])
          data.append((array[..., :2], array[..., 2] if array.shape[-1] == 3 else None))
        if reason:
          log.skip(reason)
          continue
        yield f"{subject}/{action}/{camera}", sequence_example(
            subject, action, camera, world, inputs.sources, data)
  if trimmed:
    logger.info("%s[%s]: %d 2D sequences were longer than the 3D poses and were cut at the "
                "end (as VideoPose3D's run.py does)", log.dataset, log.split, trimmed)
  log.summary()


def sequence_example(subject: str, action: str, camera: int, world: np.ndarray,
                     sources: Sequence[mocap_format.Source2D],
                     data: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> dict[str, Any]:
  """One example of the ``features()`` structure.

  Args:
    subject, action, camera: the sequence (Human3.6M camera index 0-3).
    world: ``[T, 17, 3]`` world positions, meters.
    sources: the dataset's 2D sources.
    data: per source ``(positions [T, K, 2] pixels, scores [T, K] or None)``.
  """
  cam = mocap_format.camera_values(subject, camera)
  return {
      "subject": subject, "subject_id": np.int32(mocap_format.subject_id(subject)),
      "action": action, "action_name": mocap_format.action_name(action),
      "action_id": np.int32(mocap_format.action_id(action)),
      "num_frames": np.int32(world.shape[0]),
      "camera": cam,
      "positions_3d": np.asarray(world, np.float32),
      "positions_3d_camera": mocap_format.to_camera(world, cam),
      "keypoints_2d": mocap_format.pack_keypoints_2d(sources, data),
  }


class H36MPoses(_common.ArrayRecordByDefault, tfds.core.GeneratorBasedBuilder):
  """Human3.6M poses and 2D keypoints from VideoPose3D's ``.npz`` files (manual download)."""

  name = "h36m_poses"  # TFDS would derive "h36_m_poses" from the class name
  pkg_dir_path = epath.Path(__file__).parent
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [H36MPosesConfig(
      name="default", description="train: S1 S5 S6 S7 S8; validation: S9 S11.")]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(description=_DESCRIPTION, features=features())

  def _read_inputs(self, dl_manager: tfds.download.DownloadManager) -> _Inputs:
    root = _common.require_manual_files(
        self.name, dl_manager, [(FILE_3D, "Human3.6M 3D poses")], MANUAL_DOWNLOAD_INSTRUCTIONS)
    files_2d = sorted(root.glob(f"{PREFIX_2D}*.npz"))
    if not files_2d:
      raise _common.MissingManualFilesError(
          f"{self.name}: no 2D keypoint file ({PREFIX_2D}<name>.npz) in the manual directory "
          f"{root}\n\n{MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}")
    read = [read_keypoints_2d(path) for path in files_2d]
    return _Inputs(read_positions_3d(root / FILE_3D), [s for s, _ in read],
                   [k for _, k in read], files_2d)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    inputs = self._read_inputs(dl_manager)
    splits = self.builder_config.splits()
    for split, subjects in splits.items():
      present = [s for s in subjects if s in inputs.positions_3d]
      absent = sorted(set(subjects) - set(present))
      if absent:
        logger.warning("%s: subjects %s of the %s split are not in %s", self.name,
                       ", ".join(absent), split, FILE_3D)
      if not present:
        raise H36MFormatError(f"{self.name}: none of the {split} subjects ({', '.join(subjects)}) "
                         f"is in {FILE_3D} (it has {', '.join(inputs.positions_3d)})")
      check_coverage(inputs, present)
    unused = sorted(set(inputs.positions_3d) - {s for v in splits.values() for s in v})
    if unused:
      logger.info("%s: subjects %s are in no split and left out", self.name, ", ".join(unused))
    logger.info("%s: 2D sources %s", self.name, ", ".join(s.name for s in inputs.sources))
    return {split: self._generate_examples(inputs, subjects, split)
            for split, subjects in splits.items()}

  def _generate_examples(self, inputs: _Inputs, subjects: Sequence[str], split: str
                         ) -> Iterator[tuple[str, dict[str, Any]]]:
    return _examples(inputs, subjects, _common.SkipLog(self.name, split, "sequences"))
