"""Keypoint layouts of the COCO and MPII datasets.

Indices are 0-based joint indices in the order the datasets (and the original HRNet,
SimpleBaseline and MSPN code) store them. "Left" and "right" are the person's own sides.

* ``*_FLIP_PAIRS``: pairs of joints that swap under a horizontal image flip.
* ``*_SKELETON``: limbs as pairs of joint indices, for drawing and sanity checks.
* ``*_UPPER_BODY_IDS`` / ``*_LOWER_BODY_IDS``: the split used by the half-body
  augmentation of HRNet and MSPN.
* ``COCO_JOINTS_WEIGHT``: HRNet's per-joint loss weights (``LOSS.USE_DIFFERENT_JOINTS_WEIGHT``),
  float32 ``[17, 1]``.
* ``KeypointSet``: one layout bundled (names, flip pairs, body halves, skeleton, joint
  weights); ``COCO`` and ``MPII`` are the two 2D ones. ``jaxpose.datasets`` says which
  dataset uses which.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

# ----------------------------------------------------------------------------------------
# COCO (17 keypoints)
# ----------------------------------------------------------------------------------------

COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
COCO_NUM_KEYPOINTS = len(COCO_KEYPOINT_NAMES)

COCO_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

# The 19 limbs of the COCO person category (``categories[0]['skeleton']`` of the
# annotation files, converted from 1-based to 0-based indices).
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))

COCO_UPPER_BODY_IDS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
COCO_LOWER_BODY_IDS: tuple[int, ...] = (11, 12, 13, 14, 15, 16)

# Elbows and knees weigh 1.2, wrists and ankles 1.5, everything else 1.
COCO_JOINTS_WEIGHT: np.ndarray = np.array(
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5],
    dtype=np.float32).reshape(COCO_NUM_KEYPOINTS, 1)
COCO_JOINTS_WEIGHT.setflags(write=False)

# ----------------------------------------------------------------------------------------
# MPII (16 joints)
# ----------------------------------------------------------------------------------------

MPII_JOINT_NAMES: tuple[str, ...] = (
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "pelvis",
    "thorax",
    "upper_neck",
    "head_top",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
)
MPII_NUM_JOINTS = len(MPII_JOINT_NAMES)

MPII_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))

# Parent of each joint in the kinematic tree rooted at the pelvis (the pelvis is its own
# parent).
MPII_PARENT_IDS: tuple[int, ...] = (1, 2, 6, 6, 3, 4, 6, 6, 7, 8, 11, 12, 7, 7, 13, 14)

# One limb per non-root joint: (joint, parent).
MPII_SKELETON: tuple[tuple[int, int], ...] = tuple(
    (j, p) for j, p in enumerate(MPII_PARENT_IDS) if j != p)

MPII_UPPER_BODY_IDS: tuple[int, ...] = (7, 8, 9, 10, 11, 12, 13, 14, 15)
MPII_LOWER_BODY_IDS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)


def flip_permutation(num_joints: int, flip_pairs: Sequence[Sequence[int]]) -> np.ndarray:
  """Joint permutation of a horizontal flip.

  Args:
    num_joints: number of joints ``K``.
    flip_pairs: pairs ``(a, b)`` of joint indices that swap.

  Returns:
    int64 ``[K]`` array ``perm`` with ``flipped[..., k] = original[..., perm[k]]``; joints
    in no pair map to themselves. Applying it twice is the identity.

  Raises:
    ValueError: if a pair is not two distinct indices in ``[0, K)`` or a joint appears
      in more than one pair.
  """
  if num_joints <= 0:
    raise ValueError(f"num_joints must be positive, got {num_joints}")
  perm = np.arange(num_joints, dtype=np.int64)
  seen: set[int] = set()
  for pair in flip_pairs:
    if len(pair) != 2:
      raise ValueError(f"flip pair {tuple(pair)} must have exactly two joint indices")
    a, b = int(pair[0]), int(pair[1])
    if not (0 <= a < num_joints and 0 <= b < num_joints):
      raise ValueError(f"flip pair {(a, b)} is outside [0, {num_joints}) joints")
    if a == b or a in seen or b in seen:
      raise ValueError(
          f"flip pair {(a, b)} repeats a joint; each joint may appear in one pair only")
    seen.update((a, b))
    perm[a], perm[b] = b, a
  return perm


@dataclasses.dataclass(frozen=True)
class KeypointSet:
  """A keypoint layout: everything the pipeline, the flip test and the summaries need.

  Attributes:
    name: short name of the layout ('coco', 'mpii', ...).
    names: joint names in stored order; ``len(names)`` is ``K``.
    flip_pairs: 0-based ``(left, right)`` pairs that swap under a horizontal flip.
    upper_body_ids / lower_body_ids: the half-body augmentation's split.
    skeleton: limbs as 0-based joint index pairs (drawing).
    joints_weight: optional ``K`` per-joint loss weights (HRNet's
      ``USE_DIFFERENT_JOINTS_WEIGHT``); None when the layout has none.
  """
  name: str
  names: tuple[str, ...]
  flip_pairs: tuple[tuple[int, int], ...]
  upper_body_ids: tuple[int, ...]
  lower_body_ids: tuple[int, ...]
  skeleton: tuple[tuple[int, int], ...]
  joints_weight: tuple[float, ...] | None = None

  def __post_init__(self):
    flip_permutation(len(self.names), self.flip_pairs)  # validates the pairs
    k = len(self.names)
    for what, ids in (("upper_body_ids", self.upper_body_ids),
                      ("lower_body_ids", self.lower_body_ids),
                      ("skeleton", [j for limb in self.skeleton for j in limb])):
      if any(not 0 <= int(j) < k for j in ids):
        raise ValueError(f"keypoint set {self.name!r}: {what} outside [0, {k})")
    if self.joints_weight is not None and len(self.joints_weight) != k:
      raise ValueError(f"keypoint set {self.name!r}: {len(self.joints_weight)} joint "
                       f"weights for {k} joints")

  @property
  def num_keypoints(self) -> int:
    return len(self.names)


COCO = KeypointSet(
    name="coco", names=COCO_KEYPOINT_NAMES, flip_pairs=COCO_FLIP_PAIRS,
    upper_body_ids=COCO_UPPER_BODY_IDS, lower_body_ids=COCO_LOWER_BODY_IDS,
    skeleton=COCO_SKELETON, joints_weight=tuple(float(w) for w in COCO_JOINTS_WEIGHT[:, 0]))
MPII = KeypointSet(
    name="mpii", names=MPII_JOINT_NAMES, flip_pairs=MPII_FLIP_PAIRS,
    upper_body_ids=MPII_UPPER_BODY_IDS, lower_body_ids=MPII_LOWER_BODY_IDS,
    skeleton=MPII_SKELETON)
