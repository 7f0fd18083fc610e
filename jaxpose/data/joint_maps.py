"""Joint correspondences between keypoint sets, as the original 3D projects map them.

Both image-based 3D originals train on MPII (2D, 16 joints) together with Human3.6M (3D)
and evaluate on Human3.6M's 17 joints, so every sample is moved into the method's joint
set first:

* integral regression (JimmySuen/integral-human-pose ``dataset/hm36.py``) works in
  ``H36M18`` (Human3.6M + the shoulder centre): ``s_mpii_2_hm36_jt`` brings MPII in (no
  spine, no nose; MPII's thorax becomes the shoulder centre), ``s_coco_2_hm36_jt`` COCO,
  and its Human3.6M parser appends the shoulder centre as the mean of the shoulders;
  ``s_hm36_2_mpii_jt`` gives MPII-order predictions for PCKh;
* pytorch-pose-hg-3d (``datasets/h36m.py``) works in MPII's 16 joints: ``h36m_to_mpii``
  takes Human3.6M's spine as MPII's thorax and its head as the head top; its evaluation
  maps back with ``mpii_to_h36m``, putting the spine at the middle of pelvis and neck and
  the nose at the middle of neck and head top.

``JOINT_MAPS`` is the one table of these maps, keyed by ``(source set, target set)``
names (``KeypointSet.name``); ``joint_map(source, target)`` looks one up and lists the
valid pairs for an unknown one. ``JointMap.apply`` moves joints and visibilities.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from jaxpose.data import keypoints as kp


@dataclasses.dataclass(frozen=True)
class JointMap:
  """How the joints of one keypoint set become another's.

  Attributes:
    source: name of the source ``KeypointSet``.
    target: the target ``KeypointSet``.
    index: per target joint, the source joint it copies, or -1 when the source has none
      (coordinates 0, visibility 0), unless ``means`` defines it.
    means: target joint -> two source joints it is the mean of (visible when both are).
  """
  source: str
  target: kp.KeypointSet
  index: tuple[int, ...]
  means: Mapping[int, tuple[int, int]] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if len(self.index) != self.target.num_keypoints:
      raise ValueError(f"joint map {self.source}->{self.target.name}: {len(self.index)} "
                       f"entries for {self.target.num_keypoints} target joints")

  def apply(self, joints: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source joints -> target joints.

    Args:
      joints: ``[..., K_source, D]`` joint values (any D: image x, y, depth, ...).
      vis: ``[..., K_source]`` or ``[..., K_source, V]`` visibilities.

    Returns:
      ``(joints [..., K_target, D], vis [..., K_target(, V)])``, the input dtypes; joints
      the source lacks are 0 with visibility 0.
    """
    joints, vis = np.asarray(joints), np.asarray(vis)
    need = max([*self.index, *(j for pair in self.means.values() for j in pair)]) + 1
    if joints.ndim < 2 or joints.shape[-2] < need:
      raise ValueError(f"joint map {self.source}->{self.target.name} needs [..., K>={need}, D] "
                       f"joints, got shape {joints.shape}")
    per_joint_vis = vis.ndim == joints.ndim - 1
    v = vis[..., None] if per_joint_vis else vis
    if v.shape[:-1] != joints.shape[:-1]:
      raise ValueError(f"visibility of shape {vis.shape} does not match joints {joints.shape}")
    idx = np.asarray(self.index)
    take = np.maximum(idx, 0)
    present = idx >= 0
    out = np.where(present[:, None], joints[..., take, :], 0).astype(joints.dtype)
    out_v = np.where(present[:, None], v[..., take, :], 0).astype(v.dtype)
    for target, (a, b) in self.means.items():
      out[..., target, :] = (joints[..., a, :] + joints[..., b, :]) * 0.5
      out_v[..., target, :] = np.minimum(v[..., a, :], v[..., b, :])
    return out, (out_v[..., 0] if per_joint_vis else out_v)


def _identity(keypoint_set: kp.KeypointSet) -> JointMap:
  return JointMap(keypoint_set.name, keypoint_set, tuple(range(keypoint_set.num_keypoints)))


JOINT_MAPS: dict[tuple[str, str], JointMap] = {
    # integral-human-pose: s_mpii_2_hm36_jt, s_coco_2_hm36_jt, the thorax of parsing_hm36_gt_file,
    # s_hm36_2_mpii_jt.
    ("mpii", "h36m18"): JointMap(
        "mpii", kp.H36M18, (6, 2, 1, 0, 3, 4, 5, -1, 8, -1, 9, 13, 14, 15, 12, 11, 10, 7)),
    ("coco", "h36m18"): JointMap(
        "coco", kp.H36M18, (-1, 12, 14, 16, 11, 13, 15, -1, -1, 0, -1, 5, 7, 9, 6, 8, 10, -1)),
    ("h36m", "h36m18"): JointMap("h36m", kp.H36M18, tuple(range(17)) + (-1,),
                                 means={17: (11, 14)}),
    ("h36m18", "mpii"): JointMap(
        "h36m18", kp.MPII, (3, 2, 1, 4, 5, 6, 0, 17, 8, 10, 16, 15, 14, 11, 12, 13)),
    # pytorch-pose-hg-3d: H36M.h36m_to_mpii, and mpii_to_h36m with convert_eval_format's
    # spine and nose.
    ("h36m", "mpii"): JointMap(
        "h36m", kp.MPII, (3, 2, 1, 4, 5, 6, 0, 7, 8, 10, 16, 15, 14, 11, 12, 13)),
    ("mpii", "h36m"): JointMap(
        "mpii", kp.H36M, (6, 2, 1, 0, 3, 4, 5, -1, 8, -1, 9, 13, 14, 15, 12, 11, 10),
        means={7: (6, 8), 9: (8, 9)}),
    ("mpii", "mpii"): _identity(kp.MPII),
    ("h36m", "h36m"): _identity(kp.H36M),
    ("h36m18", "h36m18"): _identity(kp.H36M18),
}


def joint_map(source: str, target: str) -> JointMap:
  """The map from keypoint set ``source`` to ``target``; ``ValueError`` listing the pairs."""
  try:
    return JOINT_MAPS[(source, target)]
  except KeyError:
    pairs = ", ".join(f"{a}->{b}" for a, b in sorted(JOINT_MAPS))
    raise ValueError(f"no joint map from {source!r} to {target!r}; known: {pairs}") from None
