"""Human3.6M protocols of the image-based 3D methods (host-side numpy, millimetres).

Each original turns its network output into a root-relative 3D pose in its own way, then
measures the mean per-joint position error on Human3.6M's 17 joints:

* integral-human-pose, Human3.6M frames (``dataset/hm36.py evaluate``): joints from the
  patch back to the image, depth ``z_patch / patch_width x`` the box's metric width (its
  2000 mm square) plus the ground-truth root depth, back-projected through the camera
  (``backproject``); MPJPE after subtracting the root; "align": a rigid (rotation +
  translation, no scale) alignment of all 18 joints to the ground truth, then the root
  subtracted again (``align='rigid_root'``);
* integral-human-pose, ECCV'18 challenge (``evalNetChallenge``): the patch-space pose
  relative to its root, scaled to a total bone length of 4502.881 mm over its 18-joint
  tree (``rescale_to_bone_length``), against the challenge's root-relative ground truth;
  "align" without re-rooting (``align='rigid'``);
* pytorch-pose-hg-3d (``utils/eval.py mpjpe`` + ``H36M.convert_eval_format``): the 16
  MPII-order joints (heatmap argmax / 64 and the depth maps' value, relative to the
  pelvis) mapped to Human3.6M's 17 (spine = middle of pelvis and neck, nose = middle of
  neck and head top), scaled to a total bone length of 4000 over its 16 edges
  (``hg3d_to_h36m``); no Procrustes number.

``pose_errors`` computes the per-sample errors, ``summarize`` the per-action and overall
means (each original averages over samples); ``h36m.protocol_table`` and
``h36m.summary_lines`` print them as every 3D result in jaxpose reads
(``Protocol #1 Error (MPJPE): X mm``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from jaxpose.data import joint_maps, transforms
from jaxpose.data import keypoints as kp
from jaxpose.evaluation import h36m

NUM_EVAL_JOINTS = kp.H36M_NUM_JOINTS
ALIGNMENTS = (None, "rigid", "rigid_root", "similarity")
# integral-human-pose evalNetChallenge's target_bone_length (Train + Val mean, mm).
CHALLENGE_BONE_LENGTH = 4502.881
# pytorch-pose-hg-3d H36M.mean_bone_length (mm) and the edges it sums (17 joints + the
# shoulder centre as joint 17).
HG3D_BONE_LENGTH = 4000.0
HG3D_EDGES: tuple[tuple[int, int], ...] = (
    (3, 2), (2, 1), (1, 0), (0, 4), (4, 5), (5, 6), (0, 7), (7, 8), (8, 10),
    (16, 15), (15, 14), (14, 8), (8, 11), (11, 12), (12, 13))


def backproject(pred_patch: np.ndarray, box_center: np.ndarray, box_size: np.ndarray,
                patch_size: Sequence[int], root_position: np.ndarray, camera: np.ndarray
                ) -> np.ndarray:
  """Integral's Human3.6M protocol: patch coordinates -> camera-frame millimetres.

  Args:
    pred_patch: ``[N, J, 3]`` (u, v, z) patch pixels (``joint_location_result``).
    box_center, box_size: ``[N, 2]`` the evaluation boxes, image pixels.
    patch_size: (width, height).
    root_position: ``[N, 3]`` ground-truth root, camera frame, meters.
    camera: ``[N, 4]`` (f_x, f_y, c_x, c_y) pixels.

  Returns:
    ``[N, J, 3]`` float64 camera-frame positions, mm.
  """
  pw, ph = patch_size
  out = np.zeros(pred_patch.shape, np.float64)
  for i, pose in enumerate(np.asarray(pred_patch, np.float64)):
    inv = transforms.patch_transform(box_center[i], box_size[i], (pw, ph), inv=True)
    uv = transforms.affine_transform_points(pose[:, :2], inv)
    root_z = float(root_position[i][2]) * 1000.0
    fx, fy, cx, cy = camera[i]
    z = root_z + pose[:, 2] / pw * box_size[i][0] * root_z / fx
    out[i] = np.stack([(uv[:, 0] - cx) / fx * z, (uv[:, 1] - cy) / fy * z, z], axis=-1)
  return out


def total_bone_length(poses: np.ndarray, parents: Sequence[int]) -> np.ndarray:
  """``[N]`` sum over joints of the distance to the parent (a root is its own parent)."""
  poses = np.asarray(poses, np.float64)
  return np.linalg.norm(poses - poses[:, list(parents)], axis=-1).sum(axis=-1)


def rescale_to_bone_length(pred: np.ndarray, parents: Sequence[int],
                           target: float = CHALLENGE_BONE_LENGTH) -> np.ndarray:
  """``rescale_pose_from_patch_to_camera``: relative to joint 0, scaled so the total bone
  length is ``target``."""
  pred = np.asarray(pred, np.float64)
  rel = pred - pred[:, :1]
  return rel * (target / total_bone_length(rel, parents))[:, None, None]


def hg3d_to_h36m(pred_mpii: np.ndarray, mean_bone_length: float = HG3D_BONE_LENGTH
                 ) -> np.ndarray:
  """``convert_eval_format``: ``[N, 16, 3]`` MPII-order -> ``[N, 17, 3]`` Human3.6M,
  scaled to ``mean_bone_length`` summed over ``HG3D_EDGES``."""
  pose, _ = joint_maps.joint_map("mpii", "h36m").apply(
      np.asarray(pred_mpii, np.float64), np.ones(np.shape(pred_mpii)[:-1]))
  ext = np.concatenate([pose, (pose[:, 14:15] + pose[:, 11:12]) / 2], axis=1)
  a, b = np.array(HG3D_EDGES).T
  total = np.linalg.norm(ext[:, a] - ext[:, b], axis=-1).sum(axis=-1)
  return pose * (mean_bone_length / total)[:, None, None]


def rigid_align(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
  """integral-human-pose's ``rigid_align``: the rotation + translation (no scale) that best
  maps ``pred`` ``[J, 3]`` onto ``target``, with its reflection fix (negate the last row
  of ``V^T``), applied to ``pred``."""
  ca, cb = pred.mean(axis=0), target.mean(axis=0)
  h = (pred - ca).T @ (target - cb)
  u, _, vt = np.linalg.svd(h)
  r = vt.T @ u.T
  if np.linalg.det(r) < 0:
    vt = vt.copy()
    vt[2] = -vt[2]
    r = vt.T @ u.T
  return (r @ pred.T).T + (cb - r @ ca)


def pose_errors(pred: np.ndarray, target: np.ndarray, align: str | None = None
                ) -> dict[str, np.ndarray]:
  """Per-sample errors over the first 17 joints (mm in, mm out).

  Args:
    pred, target: ``[N, J, 3]`` poses, J >= 17, in the same units and joint set; both are
      made relative to joint 0 first.
    align: the second number: None, 'rigid' (rigid alignment of all J joints), 'rigid_root'
      (the same, then relative to joint 0 again) or 'similarity' (VideoPose3D's
      Procrustes with scale, protocol #2).

  Returns:
    ``{"MPJPE": [N]}`` plus ``{"P-MPJPE": [N]}`` with an alignment.
  """
  if align not in ALIGNMENTS:
    raise ValueError(f"unknown alignment {align!r}; valid: {ALIGNMENTS}")
  pred = np.asarray(pred, np.float64)
  target = np.asarray(target, np.float64)
  if pred.shape != target.shape or pred.ndim != 3 or pred.shape[1] < NUM_EVAL_JOINTS:
    raise ValueError(f"pred {pred.shape} and target {target.shape} must both be [N, J>=17, 3]")
  pred = pred - pred[:, :1]
  target = target - target[:, :1]
  j = NUM_EVAL_JOINTS
  per = lambda p: np.linalg.norm(p[:, :j] - target[:, :j], axis=-1).mean(axis=-1)  # noqa: E731
  out = {"MPJPE": per(pred)}
  if align == "similarity":
    out["P-MPJPE"] = np.linalg.norm(h36m.procrustes_align(pred[:, :j], target[:, :j])
                                    - target[:, :j], axis=-1).mean(axis=-1)
  elif align is not None:
    aligned = np.stack([rigid_align(p, t) for p, t in zip(pred, target)])
    if align == "rigid_root":
      aligned = aligned - aligned[:, :1]
    out["P-MPJPE"] = per(aligned)
  return out


def summarize(errors: Mapping[str, np.ndarray], actions: Sequence[str]) -> dict[str, float]:
  """Means over all samples (``"MPJPE"``) and per action (``"MPJPE/Walking"``); samples
  of an unknown action (``""``) count in the overall mean only."""
  actions = np.asarray([a or "" for a in actions])
  out: dict[str, float] = {}
  for name, values in errors.items():
    out[name] = float(np.mean(values))
    for action in sorted(set(actions) - {""}):
      out[f"{name}/{action}"] = float(np.mean(values[actions == action]))
  return out
