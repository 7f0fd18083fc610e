"""Keypoint layouts of the COCO, MPII and Human3.6M datasets.

Indices are 0-based joint indices in the order the datasets (and the original HRNet,
SimpleBaseline and MSPN code) store them. "Left" and "right" are the person's own sides.

* ``*_FLIP_PAIRS``: pairs of joints that swap under a horizontal image flip.
* ``*_SKELETON``: limbs as pairs of joint indices, for drawing and sanity checks.
* ``*_UPPER_BODY_IDS`` / ``*_LOWER_BODY_IDS``: the split used by the half-body
  augmentation of HRNet and MSPN.
* ``H36M_*``: Human3.6M's 17-joint skeleton as VideoPose3D uses it (its 32 motion-capture
  joints reduced by ``Skeleton.remove_joints``), with parents, left/right joints and the
  32 -> 17 reduction (``h36m_reduced_skeleton``).
* ``COCO_JOINTS_WEIGHT``: HRNet's per-joint loss weights (``LOSS.USE_DIFFERENT_JOINTS_WEIGHT``),
  float32 ``[17, 1]``.
* ``H36M18_*``: integral regression's 18 joints (Human3.6M's 17 + a thorax at the middle of
  the shoulders, ``s_36_jt_num`` of JimmySuen/integral-human-pose) with its parents.
* ``KeypointSet``: one layout bundled (names, flip pairs, body halves, skeleton, joint
  weights); ``COCO`` and ``MPII`` are the two 2D ones, ``H36M`` and ``H36M18`` the 3D
  ones. ``jaxpose.datasets`` says which dataset uses which.
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

# ----------------------------------------------------------------------------------------
# Human3.6M (17 of the 32 motion-capture joints, VideoPose3D order)
# ----------------------------------------------------------------------------------------

# Human3.6M's own names for these joints are Hip, RHip, RKnee, RFoot, LHip, LKnee, LFoot,
# Spine, Thorax, Neck/Nose, Head, LShoulder, LElbow, LWrist, RShoulder, RElbow, RWrist;
# "foot" is the ankle joint and "neck" sits at the base of the nose.
H36M_JOINT_NAMES: tuple[str, ...] = (
    "pelvis",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "spine",
    "thorax",
    "neck",
    "head",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
)
H36M_NUM_JOINTS = len(H36M_JOINT_NAMES)
H36M_ROOT = 0

# Parent of each joint (-1 for the pelvis); both shoulders hang from the thorax.
H36M_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
H36M_JOINTS_LEFT: tuple[int, ...] = (4, 5, 6, 11, 12, 13)
H36M_JOINTS_RIGHT: tuple[int, ...] = (1, 2, 3, 14, 15, 16)
H36M_FLIP_PAIRS: tuple[tuple[int, int], ...] = tuple(zip(H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT))
# One bone per non-root joint: (joint, parent).
H36M_SKELETON: tuple[tuple[int, int], ...] = tuple(
    (j, p) for j, p in enumerate(H36M_PARENTS) if p >= 0)

# The 32-joint motion-capture skeleton of the Human3.6M files (``data_3d_h36m.npz``) and
# the 15 joints VideoPose3D removes from it (duplicates, toes, hand and finger sites).
H36M32_PARENTS: tuple[int, ...] = (
    -1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 12, 16, 17, 18, 19, 20, 19, 22, 12,
    24, 25, 26, 27, 28, 27, 30)
H36M32_JOINTS_LEFT: tuple[int, ...] = (6, 7, 8, 9, 10, 16, 17, 18, 19, 20, 21, 22, 23)
H36M32_JOINTS_RIGHT: tuple[int, ...] = (1, 2, 3, 4, 5, 24, 25, 26, 27, 28, 29, 30, 31)
H36M32_REMOVED: tuple[int, ...] = (4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31)
# After the removal the shoulders would hang from the spine (through the removed thorax
# duplicate); VideoPose3D re-attaches them to the thorax.
H36M_REWIRED_PARENTS: dict[int, int] = {11: 8, 14: 8}


# Integral regression's 18 joints: Human3.6M's 17 plus joint 17, the middle of the two
# shoulders, which it calls the thorax (its joint 8, Human3.6M's "Thorax", it calls the
# neck). Its parents (``s_36_parent_ids``) hang the neck, the nose and both shoulders from
# joint 17 and joint 17 from the pelvis; the pelvis is its own parent.
H36M18_JOINT_NAMES: tuple[str, ...] = H36M_JOINT_NAMES + ("shoulder_center",)
H36M18_NUM_JOINTS = len(H36M18_JOINT_NAMES)
H36M18_PARENT_IDS: tuple[int, ...] = (0, 0, 1, 2, 0, 4, 5, 0, 17, 17, 8, 17, 11, 12, 17, 14,
                                      15, 0)
H36M18_SKELETON: tuple[tuple[int, int], ...] = tuple(
    (j, p) for j, p in enumerate(H36M18_PARENT_IDS) if j != p)


def reduce_skeleton(parents: Sequence[int], removed: Sequence[int],
                    joints_left: Sequence[int] = (), joints_right: Sequence[int] = ()
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Removes joints from a kinematic tree, re-attaching children to the nearest kept
  ancestor (the semantics of VideoPose3D's ``Skeleton.remove_joints``).

  Args:
    parents: ``[J]`` parent index per joint, ``-1`` for the root.
    removed: joints to remove (the root may not be removed).
    joints_left, joints_right: left/right joint lists to re-index (removed ones dropped).

  Returns:
    ``(kept, parents, left, right)``: int64 arrays of the kept original joint indices (in
    order), the new parents (new indices), and the re-indexed left and right joints.

  Raises:
    ValueError: a parent index out of range, a cycle, or a removed root.
  """
  parents = [int(p) for p in parents]
  num = len(parents)
  drop = {int(j) for j in removed}
  if any(not -1 <= p < num for p in parents):
    raise ValueError(f"parents must lie in [-1, {num}), got {parents}")
  kept = [j for j in range(num) if j not in drop]
  new_index = {j: i for i, j in enumerate(kept)}
  new_parents = []
  for j in kept:
    p, steps = parents[j], 0
    while p in drop:
      p, steps = parents[p], steps + 1
      if steps > num:
        raise ValueError("the parents contain a cycle")
    if p == -1 and parents[j] != -1:
      raise ValueError(f"joint {j} would lose its ancestors: the root may not be removed")
    new_parents.append(-1 if p == -1 else new_index[p])
  reindex = lambda joints: np.array([new_index[j] for j in joints if j in new_index],  # noqa: E731
                                    dtype=np.int64)
  return (np.array(kept, dtype=np.int64), np.array(new_parents, dtype=np.int64),
          reindex(joints_left), reindex(joints_right))


def h36m_reduced_skeleton() -> tuple[np.ndarray, np.ndarray]:
  """The 32 -> 17 reduction of Human3.6M as VideoPose3D's ``Human36mDataset`` does it.

  Returns:
    ``(kept, parents)``: int64 ``[17]`` indices into the 32 motion-capture joints (take
    ``positions[:, kept]``) and the 17 parents, shoulders re-attached to the thorax
    (equal to ``H36M_PARENTS``).
  """
  kept, parents, _, _ = reduce_skeleton(H36M32_PARENTS, H36M32_REMOVED)
  for joint, parent in H36M_REWIRED_PARENTS.items():
    parents[joint] = parent
  return kept, parents


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
H36M = KeypointSet(
    name="h36m", names=H36M_JOINT_NAMES, flip_pairs=H36M_FLIP_PAIRS,
    upper_body_ids=tuple(range(7, 17)), lower_body_ids=tuple(range(0, 7)),
    skeleton=H36M_SKELETON)
H36M18 = KeypointSet(
    name="h36m18", names=H36M18_JOINT_NAMES, flip_pairs=H36M_FLIP_PAIRS,
    upper_body_ids=tuple(range(7, 18)), lower_body_ids=tuple(range(0, 7)),
    skeleton=H36M18_SKELETON)
