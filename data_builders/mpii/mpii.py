"""MPII Human Pose (single person) as a TFDS dataset, from the HRNet/MSPN JSON annotations.

Build from the user's files::

    tfds build data_builders/mpii --manual_dir=/path/to/mpii

The manual directory is laid out as HRNet's ``data/mpii`` (and MSPN's ``dataset/MPII``)::

    annot/train.json      annot/valid.json     annot/gt_valid.mat (optional)
    images/*.jpg

One example per image, holding every annotated person of that image (``people``), in the
order of the JSON file (``people/index`` is the row in the file, which is also the column
of ``gt_valid.mat`` and the order the PCKh evaluator expects predictions in).

Conventions — the builder stores the files' values UNCHANGED; the input pipeline applies
the original projects' adjustments:

* ``center``, ``joints`` are MATLAB 1-based pixel coordinates. HRNet and MSPN subtract 1
  to get 0-based pixels (and add 1 back to predictions before the PCKh evaluation).
* ``scale`` is the person height / 200 px. HRNet's loader, for ``center[0] != -1``,
  moves the centre down by ``15 * scale`` pixels and multiplies the scale by 1.25 before
  cropping; MSPN's loader applies the same centre shift but not the 1.25.
* ``joints_vis`` is the JSON's 0/1 flag (HRNet uses it as the target weight; MSPN turns it
  into 0/2 COCO-style flags).

When ``annot/gt_valid.mat`` (the official evaluation ground truth; MSPN's name for it,
``annot/valid.mat``, is accepted too) is present, each
validation person also carries what the PCKh evaluator needs from it:
``eval_joints`` (``pos_gt_src``, 1-based), ``eval_joints_missing`` (``jnt_missing``) and
``head_box`` (``headboxes_src``, ``[x1, y1, x2, y2]``), with ``has_eval_gt`` true. It is
read with SciPy, which JAX already depends on.
"""
from __future__ import annotations

import functools
import json
import math
import os
import pathlib
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_builders import _common

NUM_JOINTS = 16
# The joint order of the JSON files and of gt_valid.mat's ``dataset_joints``.
MAT_JOINT_NAMES = ("rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thrx", "neck",
                   "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri")

_DESCRIPTION = """
MPII Human Pose, single-person train/valid split as distributed with HRNet and MSPN
(annot/train.json, annot/valid.json): per person a centre, a scale (height/200), 16 joints
and their visibility; values unchanged (MATLAB 1-based pixels). The official
gt_valid.mat evaluation ground truth is attached to validation people when present.
"""

_CITATION = """
@inproceedings{andriluka14cvpr,
  author = {Mykhaylo Andriluka and Leonid Pishchulin and Peter Gehler and Bernt Schiele},
  title = {2D Human Pose Estimation: New Benchmark and State of the Art Analysis},
  booktitle = {CVPR},
  year = {2014}
}
"""

MANUAL_DOWNLOAD_INSTRUCTIONS = """
Images: download "mpii_human_pose_v1.tar.gz" (images, 12.9 GB) from
http://human-pose.mpi-inf.mpg.de/#download and extract so that the files lie in
<manual_dir>/images/*.jpg.
Annotations: the JSON conversion distributed with HRNet
(github.com/leoxiaobin/deep-high-resolution-net.pytorch, "Data preparation", the
OneDrive/GoogleDrive "mpii/annot" folder) or MSPN (dataset/MPII/gt_json):
  <manual_dir>/annot/train.json
  <manual_dir>/annot/valid.json
  <manual_dir>/annot/gt_valid.mat   (optional: the official PCKh ground truth; MSPN calls
                                     it valid.mat)
"""

SPLIT_FILES = {"train": "annot/train.json", "validation": "annot/valid.json"}
# The official PCKh ground truth: HRNet names it gt_valid.mat, MSPN valid.mat.
GT_VALID = ("annot/gt_valid.mat", "annot/valid.mat")


class MpiiFormatError(ValueError):
  """An MPII annotation file is malformed; the message names the file and the entry."""


def features() -> tfds.features.FeaturesDict:
  """The example structure: one image and all its annotated people."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg",
                                   doc="The image as stored (JPEG bytes)."),
      "image/filename": tfds.features.Text(doc="File name in images/."),
      "image/height": tfds.features.Scalar(np.int32, doc="Image height in pixels."),
      "image/width": tfds.features.Scalar(np.int32, doc="Image width in pixels."),
      # Per-person fields with a leading person axis N, so random-access reads return
      # stacked numpy arrays of a fixed rank.
      "people": tfds.features.FeaturesDict({
          "index": tfds.features.Tensor(
              shape=(None,), dtype=np.int64,
              doc="Rows [N] of the people in the JSON file (= gt_valid.mat columns)."),
          "center": _common.float64_tensor(
              (None, 2), "Person centres [N, 2]: x, y in MATLAB 1-based pixels."),
          "scale": _common.float64_tensor((None,), "Person heights / 200 px [N]."),
          "joints": _common.float64_tensor(
              (None, NUM_JOINTS, 2),
              "Joints [N, 16, 2]: x, y in MATLAB 1-based pixels, as in the JSON."),
          "joints_vis": tfds.features.Tensor(
              shape=(None, NUM_JOINTS), dtype=np.int32,
              doc="The JSON's 0/1 joint flags [N, 16]."),
          "has_eval_gt": tfds.features.Tensor(
              shape=(None,), dtype=np.bool_,
              doc="Whether eval_* and head_box hold gt_valid.mat data [N]."),
          "eval_joints": _common.float64_tensor(
              (None, NUM_JOINTS, 2),
              "gt_valid.mat pos_gt_src [N, 16, 2]: x, y, 1-based px (0 if absent)."),
          "eval_joints_missing": tfds.features.Tensor(
              shape=(None, NUM_JOINTS), dtype=np.bool_,
              doc="gt_valid.mat jnt_missing [N, 16]."),
          "head_box": _common.float64_tensor(
              (None, 4), "gt_valid.mat headboxes_src [N, 4]: x1, y1, x2, y2 (0 if absent)."),
      }),
  })


def _number(value: Any, where: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise MpiiFormatError(f"{where} must be a finite number, got {value!r}")
  return float(value)


def parse_annotations(path: pathlib.Path) -> list[dict[str, Any]]:
  """Reads and validates ``train.json`` / ``valid.json``.

  Returns:
    One dict per person (file order): ``image`` (str), ``center`` float64 ``[2]``,
    ``scale`` float, ``joints`` float64 ``[16, 2]``, ``joints_vis`` int32 ``[16]``.

  Raises:
    MpiiFormatError: naming the file and the entry index (and image) when malformed.
  """
  try:
    data = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise MpiiFormatError(f"{path}: not a valid JSON file ({e})") from e
  if not isinstance(data, list):
    raise MpiiFormatError(f"{path}: expected a JSON list of people, got {type(data).__name__}")
  people = []
  for i, entry in enumerate(data):
    where = f"{path}: entry {i}"
    if not isinstance(entry, dict):
      raise MpiiFormatError(f"{where} is not an object")
    for key in ("image", "center", "scale", "joints", "joints_vis"):
      if key not in entry:
        raise MpiiFormatError(f"{where}: missing field {key!r}")
    image = entry["image"]
    if not isinstance(image, str) or not image:
      raise MpiiFormatError(f"{where}: 'image' must be a file name, got {image!r}")
    where = f"{where} (image {image})"
    center = entry["center"]
    if not isinstance(center, list) or len(center) != 2:
      raise MpiiFormatError(f"{where}: 'center' must be [x, y], got {center!r}")
    joints = entry["joints"]
    if (not isinstance(joints, list) or len(joints) != NUM_JOINTS
        or any(not isinstance(j, list) or len(j) != 2 for j in joints)):
      raise MpiiFormatError(f"{where}: 'joints' must be {NUM_JOINTS} [x, y] pairs")
    vis = entry["joints_vis"]
    if not isinstance(vis, list) or len(vis) != NUM_JOINTS:
      raise MpiiFormatError(f"{where}: 'joints_vis' must hold {NUM_JOINTS} flags")
    vis = [_number(v, f"{where}: 'joints_vis'") for v in vis]
    if any(v not in (0.0, 1.0) for v in vis):
      raise MpiiFormatError(f"{where}: 'joints_vis' flags must be 0 or 1, got {vis}")
    scale = _number(entry["scale"], f"{where}: 'scale'")
    if scale <= 0:
      raise MpiiFormatError(f"{where}: 'scale' must be positive, got {scale}")
    people.append({
        "image": image,
        "center": np.array([_number(c, f"{where}: 'center'") for c in center], np.float64),
        "scale": scale,
        "joints": np.array([[_number(c, f"{where}: 'joints'") for c in j] for j in joints],
                           np.float64),
        "joints_vis": np.array(vis, np.int32),
    })
  return people


def load_gt_valid(path: pathlib.Path, num_people: int) -> dict[str, np.ndarray]:
  """Reads the official ``gt_valid.mat``.

  Args:
    path: the ``.mat`` file.
    num_people: the number of people of ``valid.json`` (its columns must match).

  Returns:
    ``joints`` float64 ``[N, 16, 2]`` (``pos_gt_src``), ``missing`` bool ``[N, 16]``
    (``jnt_missing``), ``head_box`` float64 ``[N, 4]`` (``headboxes_src`` as x1, y1, x2,
    y2).

  Raises:
    MpiiFormatError: a variable is missing, has another shape, or the joint order differs.
  """
  from scipy.io import loadmat  # SciPy comes with JAX; only needed here.

  try:
    mat = loadmat(os.fspath(path))
  except Exception as e:  # scipy raises several types for broken files.
    raise MpiiFormatError(f"{path}: cannot be read as a MATLAB file ({e})") from e
  shapes = {"pos_gt_src": (NUM_JOINTS, 2, num_people),
            "jnt_missing": (NUM_JOINTS, num_people),
            "headboxes_src": (2, 2, num_people)}
  for key, shape in shapes.items():
    if key not in mat:
      raise MpiiFormatError(f"{path}: missing variable {key!r}")
    if mat[key].shape != shape:
      raise MpiiFormatError(
          f"{path}: {key!r} has shape {mat[key].shape}, expected {shape} "
          f"({num_people} people in valid.json)")
  if "dataset_joints" in mat:
    names = tuple(str(np.asarray(n).reshape(-1)[0]) for n in np.asarray(
        mat["dataset_joints"]).reshape(-1))
    if names != MAT_JOINT_NAMES:
      raise MpiiFormatError(
          f"{path}: dataset_joints is {names}, expected the MPII order {MAT_JOINT_NAMES}")
  boxes = np.asarray(mat["headboxes_src"], np.float64)  # [corner, xy, N]
  return {
      "joints": np.transpose(np.asarray(mat["pos_gt_src"], np.float64), (2, 0, 1)),
      "missing": np.asarray(mat["jnt_missing"]).T.astype(bool),
      "head_box": np.transpose(boxes, (2, 0, 1)).reshape(num_people, 4),
  }


def group_by_image(people: list[dict[str, Any]]) -> list[tuple[str, list[int]]]:
  """``(image name, row indices of its people)`` per image, in file order."""
  by_image: dict[str, list[int]] = {}
  for i, person in enumerate(people):
    by_image.setdefault(person["image"], []).append(i)
  return list(by_image.items())


def make_example(
    item: tuple[str, list[int]], people: list[dict[str, Any]], image_dir: pathlib.Path,
    gt: dict[str, np.ndarray] | None,
) -> tuple[str, dict[str, Any]]:
  """``(image name, example)`` of one image and its people.

  Args:
    item: ``(image name, rows)`` from :func:`group_by_image`.
    people: :func:`parse_annotations` of the split's JSON file.
    image_dir: the ``images/`` folder.
    gt: :func:`load_gt_valid` for these people, or ``None``.

  Raises:
    OSError: the image is missing or undecodable (the builder skips it).
  """
  name, rows = item
  data, (height, width) = _common.read_jpeg(image_dir / name)
  n = len(rows)
  idx = np.array(rows, np.int64)
  return name, {
      "image": data,
      "image/filename": name,
      "image/height": height,
      "image/width": width,
      "people": {
          "index": idx,
          "center": np.stack([people[i]["center"] for i in rows]),
          "scale": np.array([people[i]["scale"] for i in rows], np.float64),
          "joints": np.stack([people[i]["joints"] for i in rows]),
          "joints_vis": np.stack([people[i]["joints_vis"] for i in rows]),
          "has_eval_gt": np.full(n, gt is not None),
          "eval_joints": (gt["joints"][idx] if gt is not None
                          else np.zeros((n, NUM_JOINTS, 2), np.float64)),
          "eval_joints_missing": (gt["missing"][idx] if gt is not None
                                  else np.zeros((n, NUM_JOINTS), np.bool_)),
          "head_box": (gt["head_box"][idx] if gt is not None
                       else np.zeros((n, 4), np.float64)),
      },
  }


class Mpii(_common.ArrayRecordByDefault, _common.BeamWhenAsked,
           tfds.core.GeneratorBasedBuilder):
  """MPII Human Pose single-person (HRNet/MSPN JSON), one example per image."""

  # Metadata folder: this file's folder, however the package was imported.
  pkg_dir_path = epath.Path(__file__).parent
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=features(),
        homepage="http://human-pose.mpi-inf.mpg.de/",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    required = [(path, "MPII annotation (HRNet JSON format)")
                for path in SPLIT_FILES.values()]
    required.append(("images/", "MPII image folder"))
    root = _common.require_manual_files(self.name, dl_manager, required,
                                        MANUAL_DOWNLOAD_INSTRUCTIONS)
    train = parse_annotations(root / SPLIT_FILES["train"])
    valid = parse_annotations(root / SPLIT_FILES["validation"])
    gt = None
    for name in GT_VALID:
      if (root / name).is_file():
        gt = load_gt_valid(root / name, len(valid))
        break
    return {
        "train": self._generate_examples(train, root / "images", None, "train"),
        "validation": self._generate_examples(valid, root / "images", gt, "validation"),
    }

  def _generate_examples(self, people: list[dict[str, Any]], image_dir: pathlib.Path,
                         gt: dict[str, np.ndarray] | None,
                         split: str) -> Any:
    """Examples per image (people grouped in file order); unreadable images are skipped
    with a warning, a split where every image fails raises ``NoExamplesError``."""
    make = functools.partial(make_example, people=people, image_dir=image_dir, gt=gt)
    return self.examples(group_by_image(people), make, split)
