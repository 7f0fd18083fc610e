"""h36m_images: Human3.6M images with 2D joints, 3D joints and depth, one person per image.

``tfds build data_builders/h36m_images --manual_dir=DIR [--config=hm36]`` or
``jaxpose.data.builders.build_dataset('h36m_images', data_dir, manual_dir=DIR)``.

Two layouts of ``manual_dir`` are read, one per builder config:

* ``eccv18`` (default): the ECCV'18 Human3.6M challenge data as pytorch-pose-hg-3d (its
  readme) and integral-human-pose's ``hm36_challenge`` read it::

      ECCV18_Challenge/Train/IMG/00001.jpg ...      ECCV18_Challenge/Val/IMG/00001.jpg ...
      msra_cache/HM36_eccv_challenge_Train_cache/HM36_eccv_challenge_Train_w288xh384_keypoint_jnt_bbox_db.pkl
      msra_cache/HM36_eccv_challenge_Val_cache/HM36_eccv_challenge_Val_w288xh384_keypoint_jnt_bbox_db.pkl

  Entry ``i`` of a db pickle (``jnt_bbox_db_core`` of integral-human-pose) describes image
  ``IMG/%05d.jpg`` of ``i + 1``: ``joints_3d`` ``[18, 3]`` (the ground-truth pose aligned to
  the image by a 2D similarity: x, y in image pixels, depth relative to the root in the
  same pixel units), ``joints_3d_relative`` ``[18, 3]`` (camera-frame millimetres relative
  to the root), ``center_x``, ``center_y``, ``width``, ``height`` (the joints' box fitted
  to 288x384 and enlarged 1.25x). Subjects, actions, cameras and the camera intrinsics are
  not part of the challenge data: those features are empty (-1, ``""``, no intrinsics).
* ``hm36``: integral-human-pose's own Human3.6M layout (frames cut from the videos;
  ``dataset/hm36.py``)::

      images/s_09_act_02_subact_01_ca_01/s_09_act_02_subact_01_ca_01_000001.jpg ...
      HM36_train_cache/HM36_train_w256xh256_keypoint_db_sample200.pkl
      HM36_validmin_cache/HM36_validmin_w256xh256_keypoint_db_sample10.pkl

  ``gt_db`` entries: ``image`` (its path on the machine that wrote it; the part after
  ``images/`` is used), ``joints_3d`` (image pixels + depth relative to the root, mm),
  ``joints_3d_cam`` (camera-frame mm), ``pelvis`` (mm), ``fl`` and ``c_p`` (focal length
  and principal point, pixels), ``center_x``... (the 2000 mm square around the pelvis,
  projected). The patch size in the file name does not change these values; the one
  file matching ``HM36_<set>_w*xh*_keypoint_db_sample*.pkl`` per split is read (train:
  ``train``, validation: ``validmin``, the sets of the released yaml).

Features (both layouts; ``synthetic_people3d`` writes the same): the image, its size and
id, ``subject``/``subject_id``/``action``/``action_name``/``action_id``/``camera_index``/
``frame`` (empty when unknown), ``box`` (the original's crop box: ``center`` and ``size``
(w, h) in pixels), Human3.6M's 17 joints (``keypoints.H36M_JOINT_NAMES``) as
``keypoints_2d`` ``[17, 2]`` image pixels, ``depth`` ``[17]`` (depth relative to the root in
pixels of the image at the root's distance: ``(Z - Z_root) * f_x / Z_root``, exactly the
challenge's units; the originals divide it by the box width to get the patch's depth
target), ``positions_3d`` ``[17, 3]`` (camera frame, meters, relative to the root) and
``camera`` (``has_intrinsics``, ``focal_length``, ``center`` in pixels, ``root_position``
in meters). The 18th joint of the originals' files (the shoulder centre) is left out; it
is the mean of the shoulders (``joint_maps``).

The pickles are read without executing pickled code (``jaxpose.data.safe_npz``); a
hostile, truncated or malformed file stops the build with one error naming the file (and
the entry). A missing or undecodable image is skipped with a warning naming it, and the
count is logged per split; a split whose images all fail is an error.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_builders import _common
from jaxpose.data import keypoints, mocap_format, safe_npz

NUM_JOINTS = keypoints.H36M_NUM_JOINTS  # stored joints
FILE_JOINTS = 18  # the originals' files add the shoulder centre

_DESCRIPTION = """
Human3.6M frames, one person per image, with Human3.6M's 17 joints in the image (pixels),
their depth relative to the pelvis and their camera-frame 3D positions (meters), and the
crop box of the original projects; read from the ECCV'18 challenge files or from
integral-human-pose's own cache (builder configs eccv18 / hm36).
"""

MANUAL_DOWNLOAD_INSTRUCTIONS = """
Config eccv18 (default): the ECCV'18 Human3.6M challenge images
(http://vision.imar.ro/human3.6m/challenge_open.php) and MSRA's box/joint cache (the
"meta data" link of pytorch-pose-hg-3d's readme, from integral-human-pose), laid out as
  <manual_dir>/ECCV18_Challenge/{Train,Val}/IMG/%05d.jpg
  <manual_dir>/msra_cache/HM36_eccv_challenge_{Train,Val}_cache/
      HM36_eccv_challenge_{Train,Val}_w288xh384_keypoint_jnt_bbox_db.pkl
Config hm36: integral-human-pose's data/hm36 folder (frames extracted from the videos and
the db caches its hm36.py wrote):
  <manual_dir>/images/s_XX_act_XX_subact_XX_ca_XX/*.jpg
  <manual_dir>/HM36_train_cache/HM36_train_w*xh*_keypoint_db_sample*.pkl
  <manual_dir>/HM36_validmin_cache/HM36_validmin_w*xh*_keypoint_db_sample*.pkl
"""

# Human3.6M's action numbers (``act_02`` .. ``act_16`` in integral-human-pose's folders).
HM36_ACTION_NAMES: dict[int, str] = {
    2: "Directions", 3: "Discussion", 4: "Eating", 5: "Greeting", 6: "Phoning", 7: "Posing",
    8: "Purchases", 9: "Sitting", 10: "SittingDown", 11: "Smoking", 12: "Photo",
    13: "Waiting", 14: "Walking", 15: "WalkDog", 16: "WalkTogether"}
_HM36_FOLDER = re.compile(r"s_(\d+)_act_(\d+)_subact_(\d+)_ca_(\d+)")
_HM36_FRAME = re.compile(r"_(\d+)\.jpg$")


class H36MImagesFormatError(ValueError):
  """A db pickle is malformed; the message names the file and the entry."""


def features() -> tfds.features.FeaturesDict:
  """The example structure of ``h36m_images`` and ``synthetic_people3d``."""
  f64 = _common.float64_tensor
  j = NUM_JOINTS
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg",
                                   doc="The image as stored (JPEG bytes)."),
      "image/id": tfds.features.Scalar(np.int64, doc="Image id (unique in the split)."),
      "image/filename": tfds.features.Text(doc="File name relative to the image folder."),
      "image/height": tfds.features.Scalar(np.int32, doc="Image height in pixels."),
      "image/width": tfds.features.Scalar(np.int32, doc="Image width in pixels."),
      "subject": tfds.features.Text(doc="'S9', or '' when unknown."),
      "subject_id": tfds.features.Scalar(np.int32, doc="9, or -1 when unknown."),
      "action": tfds.features.Text(doc="'Walking 1' (with the take), or ''."),
      "action_name": tfds.features.Text(doc="'Walking' (without the take), or ''."),
      "action_id": tfds.features.Scalar(
          np.int32, doc="Index in mocap_format.H36M_ACTIONS, or -1."),
      "camera_index": tfds.features.Scalar(np.int32, doc="Camera 0-3, or -1."),
      "frame": tfds.features.Scalar(np.int32, doc="Frame of the recording, or -1."),
      "box": tfds.features.FeaturesDict({
          "center": f64((2,), "The original's crop box centre (x, y), pixels."),
          "size": f64((2,), "The original's crop box size (w, h), pixels."),
      }),
      "keypoints_2d": f64((j, 2), "Human3.6M's 17 joints in the image (x, y), pixels."),
      "depth": f64((j,), "Depth relative to the root, in image pixels at the root's "
                         "distance ((Z - Z_root) * f_x / Z_root)."),
      "positions_3d": f64((j, 3), "Camera-frame positions relative to the root, meters."),
      "camera": tfds.features.FeaturesDict({
          "has_intrinsics": tfds.features.Scalar(
              np.bool_, doc="Whether focal_length, center and root_position are known."),
          "focal_length": f64((2,), "(f_x, f_y), pixels (0 when unknown)."),
          "center": f64((2,), "Principal point (c_x, c_y), pixels (0 when unknown)."),
          "root_position": f64((3,), "The root joint in the camera frame, meters."),
      }),
  })


@dataclasses.dataclass(frozen=True)
class PersonRecord:
  """One image's person, everything but the pixels (values as ``features`` describes)."""
  image_path: pathlib.Path
  image_id: int
  filename: str
  box_center: np.ndarray
  box_size: np.ndarray
  keypoints_2d: np.ndarray
  depth: np.ndarray
  positions_3d: np.ndarray
  subject_id: int = -1
  action: str = ""
  camera_index: int = -1
  frame: int = -1
  focal_length: np.ndarray | None = None
  camera_center: np.ndarray | None = None
  root_position: np.ndarray | None = None


def example(record: PersonRecord, jpeg: bytes, height: int, width: int) -> dict[str, Any]:
  """The feature dict of a record and its encoded image."""
  known = record.focal_length is not None
  zeros = lambda n: np.zeros(n, np.float64)  # noqa: E731
  return {
      "image": jpeg, "image/id": record.image_id, "image/filename": record.filename,
      "image/height": height, "image/width": width,
      "subject": f"S{record.subject_id}" if record.subject_id >= 0 else "",
      "subject_id": record.subject_id, "action": record.action,
      "action_name": mocap_format.action_name(record.action) if record.action else "",
      "action_id": mocap_format.action_id(record.action) if record.action else -1,
      "camera_index": record.camera_index, "frame": record.frame,
      "box": {"center": np.asarray(record.box_center, np.float64),
              "size": np.asarray(record.box_size, np.float64)},
      "keypoints_2d": np.asarray(record.keypoints_2d, np.float64),
      "depth": np.asarray(record.depth, np.float64),
      "positions_3d": np.asarray(record.positions_3d, np.float64),
      "camera": {"has_intrinsics": known,
                 "focal_length": record.focal_length if known else zeros(2),
                 "center": record.camera_center if known else zeros(2),
                 "root_position": record.root_position if known else zeros(3)},
  }


def make_example(record: PersonRecord) -> tuple[int, dict[str, Any]]:
  """``(image id, example)``; ``OSError`` naming the file for a missing/corrupt image."""
  data, (height, width) = _common.read_jpeg(record.image_path)
  return record.image_id, example(record, data, height, width)


# ----------------------------------------------------------------------------------------
# Reading the db pickles
# ----------------------------------------------------------------------------------------


def read_db(path: pathlib.Path) -> list[Mapping[str, Any]]:
  """The entries of a db pickle, read without running pickled code.

  Raises:
    safe_npz.UnsafeFileError: the pickle calls something other than numpy's constructors.
    safe_npz.NpzError: truncated or corrupt pickle.
    H36MImagesFormatError: not a list of dicts.
  """
  where = str(path)
  db = safe_npz.loads_pickle(path.read_bytes(), where)
  if not isinstance(db, list) or not db:
    got = "an empty list" if isinstance(db, list) else f"a {type(db).__name__}"
    raise H36MImagesFormatError(f"{where}: expected a non-empty list of per-image dicts, "
                                f"got {got}")
  for i, entry in enumerate(db):
    if not isinstance(entry, dict):
      raise H36MImagesFormatError(f"{where}: entry {i} is a {type(entry).__name__}, not a dict")
  return db


def _array(entry: Mapping[str, Any], key: str, shape: tuple[int | None, ...], where: str
           ) -> np.ndarray:
  if key not in entry:
    raise H36MImagesFormatError(f"{where}: no '{key}' (keys: {', '.join(sorted(map(str, entry)))})")
  try:
    value = np.asarray(entry[key], dtype=np.float64)
  except (TypeError, ValueError):
    raise H36MImagesFormatError(f"{where}: '{key}' is not numeric") from None
  if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
    raise H36MImagesFormatError(f"{where}: '{key}' has shape {value.shape}, expected "
                                f"{tuple('*' if s is None else s for s in shape)}")
  if not np.all(np.isfinite(value)):
    raise H36MImagesFormatError(f"{where}: '{key}' holds NaN or infinite values")
  return value


def _box(entry: Mapping[str, Any], where: str) -> tuple[np.ndarray, np.ndarray]:
  values = [_array(entry, k, (), where) for k in ("center_x", "center_y", "width", "height")]
  center, size = np.array(values[:2]), np.array(values[2:])
  if not np.all(size > 0):
    raise H36MImagesFormatError(f"{where}: box width/height must be positive, got {size}")
  return center, size


def eccv18_records(db: Sequence[Mapping[str, Any]], db_path: pathlib.Path,
                   image_dir: pathlib.Path) -> list[PersonRecord]:
  """Records of a challenge ``jnt_bbox_db`` (entry ``i`` <-> ``image_dir/%05d.jpg`` of i+1)."""
  records = []
  for i, entry in enumerate(db):
    where = f"{db_path}: entry {i}"
    joints = _array(entry, "joints_3d", (FILE_JOINTS, 3), where)
    relative = _array(entry, "joints_3d_relative", (FILE_JOINTS, 3), where)
    center, size = _box(entry, where)
    name = f"{i + 1:05d}.jpg"
    records.append(PersonRecord(
        image_path=image_dir / name, image_id=i + 1, filename=name, box_center=center,
        box_size=size, keypoints_2d=joints[:NUM_JOINTS, :2], depth=joints[:NUM_JOINTS, 2],
        positions_3d=(relative[:NUM_JOINTS] - relative[0]) / 1000.0, frame=i))
  return records


def hm36_records(db: Sequence[Mapping[str, Any]], db_path: pathlib.Path,
                 root: pathlib.Path) -> list[PersonRecord]:
  """Records of integral-human-pose's ``hm36`` ``gt_db`` (images under ``root/images``)."""
  records = []
  for i, entry in enumerate(db):
    where = f"{db_path}: entry {i}"
    image = entry.get("image")
    if isinstance(image, bytes):
      image = image.decode("utf-8", "replace")
    if not isinstance(image, str) or "images/" not in image.replace("\\", "/"):
      raise H36MImagesFormatError(f"{where}: 'image' must be a path containing images/, got "
                                  f"{image!r:.80}")
    rel = image.replace("\\", "/").rsplit("images/", 1)[1]
    folder = _HM36_FOLDER.search(rel)
    frame = _HM36_FRAME.search(rel)
    if folder is None or frame is None:
      raise H36MImagesFormatError(f"{where}: image {rel!r} is not named "
                                  "s_XX_act_XX_subact_XX_ca_XX/..._XXXXXX.jpg")
    subject, act, subact, cam = (int(v) for v in folder.groups())
    if act not in HM36_ACTION_NAMES:
      raise H36MImagesFormatError(f"{where}: unknown Human3.6M action number {act} in {rel!r}")
    joints = _array(entry, "joints_3d", (FILE_JOINTS, 3), where)
    cam_mm = _array(entry, "joints_3d_cam", (FILE_JOINTS, 3), where)
    pelvis = _array(entry, "pelvis", (3,), where)
    focal = _array(entry, "fl", (None,), where)[:2]
    c_p = _array(entry, "c_p", (None,), where)[:2]
    if pelvis[2] <= 0 or focal.shape != (2,) or not np.all(focal > 0):
      raise H36MImagesFormatError(f"{where}: needs a positive root depth and focal length, "
                                  f"got pelvis {pelvis}, fl {focal}")
    center, size = _box(entry, where)
    action = HM36_ACTION_NAMES[act] + ("" if subact == 1 else f" {subact - 1}")
    records.append(PersonRecord(
        image_path=root / "images" / rel, image_id=i + 1, filename=rel, box_center=center,
        box_size=size, keypoints_2d=joints[:NUM_JOINTS, :2],
        depth=(cam_mm[:NUM_JOINTS, 2] - pelvis[2]) * focal[0] / pelvis[2],
        positions_3d=(cam_mm[:NUM_JOINTS] - pelvis) / 1000.0, subject_id=subject,
        action=action, camera_index=cam - 1, frame=int(frame.group(1)) - 1,
        focal_length=focal, camera_center=c_p, root_position=pelvis / 1000.0))
  return records


# ----------------------------------------------------------------------------------------
# The builder
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class H36MImagesConfig(tfds.core.BuilderConfig):
  """Which layout of the manual directory is read.

  Attributes:
    layout: 'eccv18' or 'hm36' (module docstring).
    sets: TFDS split -> the original's set name (``Train``/``Val``; ``train``/``validmin``).
  """
  layout: str = "eccv18"
  sets: tuple[tuple[str, str], ...] = (("train", "Train"), ("validation", "Val"))


def _eccv18_files(set_name: str) -> tuple[str, str]:
  cache = (f"msra_cache/HM36_eccv_challenge_{set_name}_cache/"
           f"HM36_eccv_challenge_{set_name}_w288xh384_keypoint_jnt_bbox_db.pkl")
  return cache, f"ECCV18_Challenge/{set_name}/IMG/"


class H36MImages(_common.ArrayRecordByDefault, _common.BeamWhenAsked,
                 tfds.core.GeneratorBasedBuilder):
  """Human3.6M images with 2D/3D joints, from a manual download (two layouts)."""

  name = "h36m_images"  # TFDS would derive "h36_m_images" from the class name
  pkg_dir_path = epath.Path(__file__).parent
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      H36MImagesConfig(name="eccv18", description="ECCV'18 challenge Train/Val + MSRA cache."),
      H36MImagesConfig(name="hm36", layout="hm36",
                       sets=(("train", "train"), ("validation", "validmin")),
                       description="integral-human-pose's hm36 frames and gt_db caches."),
  ]
  DEFAULT_CONFIG_NAME = "eccv18"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION, features=features(),
        homepage="http://vision.imar.ro/human3.6m/")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    if config.layout == "eccv18":
      required = [item for _, s in config.sets for item in zip(
          _eccv18_files(s), ("MSRA db cache of " + s, "challenge image folder of " + s))]
    else:
      required = [("images/", "frames cut from the videos")]
    root = _common.require_manual_files(self.name, dl_manager, required,
                                        MANUAL_DOWNLOAD_INSTRUCTIONS)
    records = {split: self._records(root, set_name) for split, set_name in config.sets}
    return {split: self._generate_examples(recs, split) for split, recs in records.items()}

  def _records(self, root: pathlib.Path, set_name: str) -> list[PersonRecord]:
    """Parses and checks one set's db before anything is written."""
    if self.builder_config.layout == "eccv18":
      cache, images = _eccv18_files(set_name)
      return eccv18_records(read_db(root / cache), root / cache, root / images)
    pattern = f"HM36_{set_name}_cache/HM36_{set_name}_w*xh*_keypoint_db_sample*.pkl"
    found = sorted(root.glob(pattern))
    if len(found) != 1:
      raise _common.MissingManualFilesError(
          f"{self.name}: expected exactly one {root / pattern}, found "
          f"{[str(p) for p in found] or 'none'}", dataset=self.name, manual_dir=root,
          missing=[] if found else [(str(root / pattern), f"gt_db cache of set {set_name}")])
    return hm36_records(read_db(found[0]), found[0], root)

  def _generate_examples(self, records: Sequence[PersonRecord], split: str) -> Any:
    return self.examples(records, make_example, split)
