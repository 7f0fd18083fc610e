"""The example layout of the 3D pose datasets (``h36m_poses``, ``synthetic_mocap``).

One example is one (subject, action, camera) sequence of ``T`` frames. Both builders
write, and the sequence pipeline reads, this structure (values as numpy arrays; strings
as ``bytes`` when read back from TFDS):

* ``subject`` (``"S9"``), ``subject_id`` (9), ``action`` (``"Walking 1"``),
  ``action_name`` (``"Walking"``: the action without its take number, the grouping of
  VideoPose3D's per-action tables), ``action_id`` (index in ``H36M_ACTIONS``, -1 for
  other names), ``num_frames`` (``T``);
* ``camera``: ``index`` (0-3), ``id`` (serial number), ``res_w``/``res_h`` (pixels),
  ``intrinsic`` (``[9]`` float32, VideoPose3D's normalised ``(f, c, k, p)``: see
  ``jaxpose.geometry.camera.intrinsic_vector``), the raw pixel form ``focal_length``
  ``[2]``, ``center`` ``[2]``, ``radial_distortion`` ``[3]``, ``tangential_distortion``
  ``[2]``, and the extrinsics ``orientation`` (``[4]`` quaternion ``(w, x, y, z)``,
  camera to world) and ``translation`` (``[3]`` camera position, meters);
* ``positions_3d``: ``[T, 17, 3]`` float32 world positions, meters (Human3.6M's 17
  joints, ``keypoints.H36M_JOINT_NAMES``); ``positions_3d_camera``: the same in the
  camera's frame (``world_to_camera``), meters;
* ``keypoints_2d``: every 2D source of the dataset, concatenated along the joint axis
  (sources may have different joint counts, e.g. 17 Human3.6M joints and 16 MPII ones):
  ``sources`` ``[S]`` names, ``layouts`` ``[S]`` layout names (``""`` if unknown),
  ``num_joints`` ``[S]``, ``flip_permutation`` ``[sum K]`` (per source, the joint each
  joint becomes under a horizontal flip, as a source-local index), ``has_scores`` ``[S]``,
  ``positions`` ``[T, sum K, 2]`` float32 pixels, ``scores`` ``[T, sum K]`` float32
  (1 where a source has no scores). ``source_keypoints(example, name)`` takes one
  source's arrays out.

Human3.6M's conventions live here too: the 15 action names and the renames of the raw
file names, subject ids and the protocol's subject split.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxpose.data import keypoints
from jaxpose.geometry import camera as camera_lib
from jaxpose.geometry import h36m_cameras

# The 15 Human3.6M actions, as VideoPose3D's preparation names them.
H36M_ACTIONS: tuple[str, ...] = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing",
    "Purchases", "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking",
    "WalkTogether")
# Raw Human3.6M file names -> the names VideoPose3D's preparation scripts use.
ACTION_RENAMES: tuple[tuple[str, str], ...] = (("TakingPhoto", "Photo"),
                                               ("WalkingDog", "WalkDog"))

# The standard protocol: train on S1, S5, S6, S7, S8; test on S9, S11.
TRAIN_SUBJECTS: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS: tuple[str, ...] = ("S9", "S11")

_SUBJECT = re.compile(r"^S(\d+)$")
_BUCKET = 256  # frames; camera transforms are jitted once per multiple of this


def canonical_action(action: str) -> str:
  """``"TakingPhoto 1"`` -> ``"Photo 1"``, ``"WalkingDog"`` -> ``"WalkDog"``; others unchanged."""
  for raw, name in ACTION_RENAMES:
    action = action.replace(raw, name)
  return action


def action_name(action: str) -> str:
  """The action without its take number: ``"Walking 1"`` -> ``"Walking"``."""
  return action.split(" ")[0]


def action_id(action: str) -> int:
  """Index of ``action_name(action)`` in ``H36M_ACTIONS``, or -1."""
  name = action_name(action)
  return H36M_ACTIONS.index(name) if name in H36M_ACTIONS else -1


def subject_id(subject: str) -> int:
  """``"S11"`` -> 11.

  Raises:
    ValueError: a name not of the form ``S<number>``.
  """
  match = _SUBJECT.match(subject)
  if match is None:
    raise ValueError(f"subject names must look like 'S<number>', got {subject!r}")
  return int(match.group(1))


def camera_values(subject: str, index: int) -> dict[str, Any]:
  """The ``camera`` feature of Human3.6M camera ``index`` (0-3) of ``subject``.

  Raises:
    ValueError: a subject without published extrinsics (S2-S4) or a bad index.
  """
  cam = h36m_cameras.h36m_camera(subject, index)
  raw = h36m_cameras.H36M_INTRINSICS[index]
  f32 = lambda v: np.asarray(v, dtype=np.float32)  # noqa: E731
  return {
      "index": np.int32(index), "id": cam.camera_id,
      "res_w": np.int32(cam.res_w), "res_h": np.int32(cam.res_h),
      "intrinsic": f32(cam.intrinsic),
      "focal_length": f32(raw.focal_length), "center": f32(raw.center),
      "radial_distortion": f32(raw.radial_distortion),
      "tangential_distortion": f32(raw.tangential_distortion),
      "orientation": f32(cam.orientation), "translation": f32(cam.translation),
  }


def _bucketed(fn, points: np.ndarray, *args) -> np.ndarray:
  """``fn(points, *args)`` with the frame axis padded to a multiple of ``_BUCKET``."""
  num = points.shape[0]
  padded = -(-max(num, 1) // _BUCKET) * _BUCKET
  x = np.pad(np.asarray(points, np.float32), [(0, padded - num)] + [(0, 0)] * (points.ndim - 1),
             mode="edge" if num else "constant")
  return np.asarray(fn(x, *args))[:num]


def to_camera(world: np.ndarray, camera: Mapping[str, Any]) -> np.ndarray:
  """World points ``[T, J, 3]`` (meters) -> the camera's frame, float32 ``[T, J, 3]``."""
  return _bucketed(camera_lib.world_to_camera, world, np.asarray(camera["orientation"]),
                   np.asarray(camera["translation"]))


def project_pixels(points_camera: np.ndarray, camera: Mapping[str, Any]) -> np.ndarray:
  """Camera-frame points ``[T, J, 3]`` -> pixels ``[T, J, 2]`` float32 with the Human3.6M
  distortion model (as VideoPose3D's ``data_2d_h36m_gt.npz`` is made)."""
  normalised = _bucketed(camera_lib.project_to_2d, points_camera,
                         np.asarray(camera["intrinsic"], np.float32))
  return camera_lib.image_coordinates(normalised, int(camera["res_w"]),
                                      int(camera["res_h"])).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Source2D:
  """A 2D keypoint source of a dataset (one ``data_2d_h36m_<name>.npz``).

  Attributes:
    name: the source's name (``"cpn_ft_h36m_dbb"``, ``"gt"``, ...).
    layout: the keypoint layout name from the file's metadata (``""`` if absent).
    flip_permutation: ``[K]`` int32, joint ``k`` becomes joint ``flip_permutation[k]``
      under a horizontal flip (built from the file's ``keypoints_symmetry``).
    has_scores: whether the source has per-joint confidence scores.
  """
  name: str
  layout: str
  flip_permutation: np.ndarray
  has_scores: bool

  @property
  def num_joints(self) -> int:
    return int(self.flip_permutation.shape[0])


def pack_keypoints_2d(sources: Sequence[Source2D],
                      data: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> dict[str, Any]:
  """The ``keypoints_2d`` feature of one sequence.

  Args:
    sources: the dataset's 2D sources, in a fixed order.
    data: per source, ``(positions [T, K, 2] pixels, scores [T, K] or None)``.

  Returns:
    The feature dict (see the module docstring).
  """
  positions = [np.asarray(p, np.float32) for p, _ in data]
  scores = [np.ones(p.shape[:2], np.float32) if s is None else np.asarray(s, np.float32)
            for p, s in zip(positions, (s for _, s in data))]
  return {
      "sources": np.array([s.name for s in sources], dtype=object),
      "layouts": np.array([s.layout for s in sources], dtype=object),
      "num_joints": np.array([s.num_joints for s in sources], dtype=np.int32),
      "flip_permutation": np.concatenate([s.flip_permutation for s in sources]).astype(np.int32),
      "has_scores": np.array([s.has_scores for s in sources], dtype=bool),
      "positions": np.concatenate(positions, axis=1),
      "scores": np.concatenate(scores, axis=1),
  }


def _text(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def source_names(keypoints_2d: Mapping[str, Any]) -> list[str]:
  """The source names of a ``keypoints_2d`` feature (as read back)."""
  return [_text(s) for s in keypoints_2d["sources"]]


def source_keypoints(keypoints_2d: Mapping[str, Any], name: str
                     ) -> tuple[np.ndarray, np.ndarray | None, Source2D]:
  """One source's arrays out of a ``keypoints_2d`` feature.

  Args:
    keypoints_2d: the example's ``keypoints_2d`` dict.
    name: the source.

  Returns:
    ``(positions [T, K, 2] float32 pixels, scores [T, K] float32 or None, Source2D)``.

  Raises:
    KeyError: ``name`` is not one of the sources (the message lists them).
  """
  names = source_names(keypoints_2d)
  if name not in names:
    raise KeyError(f"no 2D source {name!r}; the dataset has {', '.join(names)}")
  i = names.index(name)
  counts = np.asarray(keypoints_2d["num_joints"], np.int64)
  lo = int(counts[:i].sum())
  hi = lo + int(counts[i])
  source = Source2D(name=name, layout=_text(keypoints_2d["layouts"][i]),
                    flip_permutation=np.asarray(keypoints_2d["flip_permutation"][lo:hi], np.int64),
                    has_scores=bool(keypoints_2d["has_scores"][i]))
  positions = np.asarray(keypoints_2d["positions"][:, lo:hi], np.float32)
  scores = np.asarray(keypoints_2d["scores"][:, lo:hi], np.float32) if source.has_scores else None
  return positions, scores, source


def flip_permutation_from_symmetry(num_joints: int, left: Sequence[int], right: Sequence[int],
                                   where: str) -> np.ndarray:
  """The flip permutation of ``keypoints_symmetry = [left, right]`` lists.

  Raises:
    ValueError: lists of different lengths, indices out of range, or a joint listed
      twice (naming ``where``).
  """
  try:
    left_i = [int(j) for j in left]
    right_i = [int(j) for j in right]
  except (TypeError, ValueError):
    raise ValueError(f"{where}: keypoints_symmetry must be two lists of joint indices, got "
                     f"{left!r:.60} and {right!r:.60}") from None
  if len(left_i) != len(right_i):
    raise ValueError(f"{where}: keypoints_symmetry lists have different lengths "
                     f"({len(left_i)} left, {len(right_i)} right)")
  try:
    return keypoints.flip_permutation(num_joints, list(zip(left_i, right_i))).astype(np.int32)
  except ValueError as e:
    raise ValueError(f"{where}: keypoints_symmetry {left_i} / {right_i}: {e}") from None
