"""MPII PCKh evaluation (HRNet / MSPN ``MPIIDataset.evaluate`` semantics).

The ground truth is the ``annot/gt_valid.mat`` of HRNet's MPII data (2958 validation
persons), in MATLAB's 1-based pixel coordinates:

* ``dataset_joints`` ``(1, 16)``: the joint names (``rank, rkne, rhip, lhip, lkne, lank,
  pelv, thrx, neck, head, rwri, relb, rsho, lsho, lelb, lwri``: jaxpose's MPII order);
* ``pos_gt_src`` ``(16, 2, N)`` joint positions, ``jnt_missing`` ``(16, N)`` (1 = not
  labelled), ``headboxes_src`` ``(2, 2, N)`` (corner, x/y, person) head rectangles.

:func:`load_mpii_ground_truth` reads it into :class:`MPIIGroundTruth` (person-first
arrays). :func:`evaluate_pckh` then computes, exactly as the originals:

* predictions are 0-based pixels (HRNet subtracts 1 from the ``.mat``-derived joints
  when loading the dataset); 1.0 is added before comparing with the 1-based ground truth;
* ``head size = 0.6 * ||headbox corner 2 - corner 1||`` (``SC_BIAS``);
* a visible joint is correct when ``||pred - gt|| / head size <= 0.5``; PCKh per joint =
  100 x correct / visible;
* the table: ``Head`` and the left/right averages ``0.5 * (PCKh_l + PCKh_r)`` of
  ``Shoulder, Elbow, Wrist, Hip, Knee, Ankle``; ``Mean``: all joints but pelvis and
  thorax, weighted by their visible counts (= correct / visible over those 14 joints);
  ``Mean@0.1``: the same at the threshold ``np.arange(0, 0.51, 0.01)[11]``, which is 0.11,
  not 0.1 — the originals' off-by-one index, kept so that numbers stay comparable with
  their tables.

A joint that is never visible gets PCKh NaN (0/0), as in the originals.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
from typing import Any

import numpy as np
import scipy.io
from numpy.typing import ArrayLike

from jaxpose import fileio
from jaxpose.evaluation.coco import format_name_value_table, print_name_value_table

__all__ = [
    "MPII_EVAL_JOINTS", "PCKH_NAMES", "MPIIGroundTruth", "load_mpii_ground_truth",
    "pckh_scaled_errors", "pckh_per_joint", "evaluate_pckh", "save_mpii_predictions",
    "format_name_value_table", "print_name_value_table",
]

MPII_EVAL_JOINTS: tuple[str, ...] = (
    "rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thrx", "neck", "head",
    "rwri", "relb", "rsho", "lsho", "lelb", "lwri")
"""``dataset_joints`` of ``gt_valid.mat``: the 16 MPII joints in dataset order."""

PCKH_NAMES: tuple[str, ...] = (
    "Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1")
"""Keys of :func:`evaluate_pckh`, in the order of the HRNet README table."""

SC_BIAS = 0.6
"""Head size = ``SC_BIAS`` x head-box diagonal."""

MEAN_AT_01_THRESHOLD: float = float(np.arange(0, 0.5 + 0.01, 0.01)[11])
"""The threshold behind ``Mean@0.1``: the originals index ``pckAll[11]``, i.e. 0.11."""

_NUM_JOINTS = len(MPII_EVAL_JOINTS)
_MEAN_EXCLUDED = (6, 7)  # pelvis and thorax (the originals mask entries 6:8)
_J = {name: i for i, name in enumerate(MPII_EVAL_JOINTS)}


@dataclasses.dataclass(frozen=True)
class MPIIGroundTruth:
  """MPII validation ground truth, person-first.

  Attributes:
    joints: float64 ``[N, 16, 2]`` joint positions (x, y) in 1-based (MATLAB) pixels
      (``pos_gt_src`` transposed); entries of missing joints are not used.
    visible: bool ``[N, 16]``, ``1 - jnt_missing``.
    headboxes: float64 ``[N, 2, 2]`` head rectangle corners ``[[x1, y1], [x2, y2]]``.

  Raises:
    ValueError: on shape mismatches, non-finite positions of visible joints, or a
      non-finite or zero-size head box of a person with a visible joint (the person is
      named).
  """

  joints: np.ndarray
  visible: np.ndarray
  headboxes: np.ndarray

  def __post_init__(self):
    joints = np.asarray(self.joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (_NUM_JOINTS, 2):
      raise ValueError(f"joints must be [N, {_NUM_JOINTS}, 2], got shape {joints.shape}")
    n = joints.shape[0]
    visible = np.asarray(self.visible)
    if visible.shape != (n, _NUM_JOINTS):
      raise ValueError(f"visible must have shape ({n}, {_NUM_JOINTS}), got {visible.shape}")
    if not np.all((visible == 0) | (visible == 1)):
      raise ValueError("visible must hold only 0/1 (booleans)")
    visible = visible.astype(bool)
    headboxes = np.asarray(self.headboxes, dtype=np.float64)
    if headboxes.shape != (n, 2, 2):
      raise ValueError(f"headboxes must have shape ({n}, 2, 2), got {headboxes.shape}")
    bad = np.argwhere(visible & ~np.isfinite(joints).all(axis=-1))
    if bad.size:
      i, j = bad[0]
      raise ValueError(f"ground-truth joint {MPII_EVAL_JOINTS[j]} ({j}) of person {i} is "
                       "visible but not finite")
    used = visible.any(axis=1)
    with np.errstate(invalid="ignore"):
      size = np.linalg.norm(headboxes[:, 1] - headboxes[:, 0], axis=-1)
    bad = np.flatnonzero(used & ~(np.isfinite(size) & (size > 0)))
    if bad.size:
      raise ValueError(f"head box of person {int(bad[0])} is not finite or has zero size: "
                       f"{headboxes[bad[0]].tolist()}")
    object.__setattr__(self, "joints", joints)
    object.__setattr__(self, "visible", visible)
    object.__setattr__(self, "headboxes", headboxes)

  @property
  def num_persons(self) -> int:
    """``N``."""
    return int(self.joints.shape[0])

  @classmethod
  def from_mat_arrays(cls, pos_gt_src: ArrayLike, jnt_missing: ArrayLike,
                      headboxes_src: ArrayLike) -> MPIIGroundTruth:
    """From the ``gt_valid.mat`` layout.

    Args:
      pos_gt_src: ``[16, 2, N]`` joint positions (1-based pixels).
      jnt_missing: ``[16, N]``, 1 where the joint is not labelled.
      headboxes_src: ``[2, 2, N]`` head boxes (corner, x/y, person).
    """
    pos = np.asarray(pos_gt_src)
    missing = np.asarray(jnt_missing)
    boxes = np.asarray(headboxes_src)
    if pos.ndim != 3 or pos.shape[:2] != (_NUM_JOINTS, 2):
      raise ValueError(f"pos_gt_src must be [{_NUM_JOINTS}, 2, N], got shape {pos.shape}")
    n = pos.shape[2]
    if missing.shape != (_NUM_JOINTS, n):
      raise ValueError(f"jnt_missing must be [{_NUM_JOINTS}, {n}], got shape {missing.shape}")
    if boxes.shape != (2, 2, n):
      raise ValueError(f"headboxes_src must be [2, 2, {n}], got shape {boxes.shape}")
    return cls(joints=np.transpose(pos, (2, 0, 1)), visible=1 - np.transpose(missing),
               headboxes=np.transpose(boxes, (2, 0, 1)))


def _joint_names(dataset_joints: Any, source: str) -> tuple[str, ...]:
  """Joint names from ``loadmat``'s ``dataset_joints`` (cell array or char matrix)."""
  arr = np.asarray(dataset_joints)
  if arr.dtype == object:
    return tuple(str(np.asarray(x).ravel()[0]).strip() for x in arr.ravel())
  if arr.dtype.kind == "U":
    return tuple(str(x).strip() for x in arr.ravel())
  raise ValueError(f"{source}: cannot read dataset_joints of dtype {arr.dtype}")


def load_mpii_ground_truth(path: str | os.PathLike) -> MPIIGroundTruth:
  """Reads HRNet's ``annot/gt_valid.mat`` with ``scipy.io.loadmat``.

  Args:
    path: the ``.mat`` file (``dataset_joints``, ``jnt_missing``, ``pos_gt_src``,
      ``headboxes_src``).

  Returns:
    The ground truth, person-first.

  Raises:
    ValueError: a variable is missing, the joint names are not :data:`MPII_EVAL_JOINTS`
      in that order, or the arrays are inconsistent.
  """
  source = os.fspath(path)
  mat = scipy.io.loadmat(source)
  missing = [k for k in ("dataset_joints", "jnt_missing", "pos_gt_src", "headboxes_src")
             if k not in mat]
  if missing:
    raise ValueError(f"{source}: lacks {missing}")
  names = _joint_names(mat["dataset_joints"], source)
  if names != MPII_EVAL_JOINTS:
    raise ValueError(f"{source}: dataset_joints must be {MPII_EVAL_JOINTS}, got {names}")
  try:
    return MPIIGroundTruth.from_mat_arrays(mat["pos_gt_src"], mat["jnt_missing"],
                                           mat["headboxes_src"])
  except ValueError as e:
    raise ValueError(f"{source}: {e}") from e


def _check_preds(preds: ArrayLike, num_persons: int) -> np.ndarray:
  """``[N, 16, 2]`` predictions (a trailing score column is dropped), finite, float."""
  p = np.asarray(preds)
  if p.ndim != 3 or p.shape[1] != _NUM_JOINTS or p.shape[2] not in (2, 3):
    raise ValueError(f"preds must be [N, {_NUM_JOINTS}, 2] (or 3 with scores), got shape "
                     f"{p.shape}")
  if p.shape[0] != num_persons:
    raise ValueError(f"preds hold {p.shape[0]} persons, the ground truth {num_persons}")
  p = p[..., :2]
  if not np.issubdtype(p.dtype, np.floating):
    p = p.astype(np.float64)
  bad = np.argwhere(~np.isfinite(p).all(axis=-1))
  if bad.size:
    i, j = bad[0]
    raise ValueError(f"preds of person {i}, joint {MPII_EVAL_JOINTS[j]} ({j}) are not "
                     f"finite: {p[i, j].tolist()} ({len(bad)} joint(s) affected)")
  return p


def pckh_scaled_errors(preds: ArrayLike, gt: MPIIGroundTruth, sc_bias: float = SC_BIAS,
                       pred_offset: float = 1.0) -> np.ndarray:
  """Joint errors in head sizes, zero for invisible joints.

  Args:
    preds: ``[N, 16, 2]`` predicted joints (x, y) in 0-based pixels (``[N, 16, 3]`` with
      scores is accepted).
    gt: the ground truth.
    sc_bias: head size = ``sc_bias`` x head-box diagonal.
    pred_offset: added to the predictions (1.0: 0-based to the ground truth's 1-based
      pixels; in the predictions' dtype, as the original).

  Returns:
    float64 ``[N, 16]`` ``||pred + offset - gt|| / head size`` where visible, else 0.
  """
  p = _check_preds(preds, gt.num_persons) + pred_offset
  err = np.linalg.norm(p - gt.joints, axis=-1)
  head = np.linalg.norm(gt.headboxes[:, 1] - gt.headboxes[:, 0], axis=-1) * sc_bias
  with np.errstate(invalid="ignore", divide="ignore"):
    scaled = (err / head[:, None]) * gt.visible
  return np.where(gt.visible, scaled, 0.0)


def pckh_per_joint(scaled_errors: np.ndarray, visible: np.ndarray,
                   threshold: float) -> np.ndarray:
  """PCKh of each joint in percent: ``100 * #(visible and error <= threshold) / #visible``.

  Args:
    scaled_errors: ``[N, 16]`` from :func:`pckh_scaled_errors`.
    visible: bool ``[N, 16]``.
    threshold: in head sizes.

  Returns:
    float64 ``[16]`` (NaN for a joint never visible).
  """
  correct = ((scaled_errors <= threshold) & visible).sum(axis=0)
  count = visible.sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return 100.0 * correct / count


def _weighted_mean(pckh: np.ndarray, count: np.ndarray) -> float:
  """Mean over all joints but pelvis and thorax, weighted by visible counts."""
  keep = np.ones(_NUM_JOINTS, bool)
  keep[list(_MEAN_EXCLUDED)] = False
  total = np.where(keep, count, 0).sum().astype(np.float64)
  ratio = np.where(keep, count / total, 0.0)
  return float(np.sum(np.where(keep, pckh * ratio, 0.0)))


def evaluate_pckh(preds: ArrayLike, gt: MPIIGroundTruth, threshold: float = 0.5,
                  sc_bias: float = SC_BIAS,
                  pred_offset: float = 1.0) -> collections.OrderedDict[str, float]:
  """PCKh table of MPII predictions (HRNet ``MPIIDataset.evaluate``).

  Args:
    preds: ``[N, 16, 2]`` predicted joints (x, y) in 0-based image pixels, in the
      ground truth's person order (``[N, 16, 3]`` with scores is accepted).
    gt: the ground truth (:func:`load_mpii_ground_truth`).
    threshold: PCKh threshold in head sizes (0.5).
    sc_bias: head size factor (0.6).
    pred_offset: added to the predictions before comparison (1.0).

  Returns:
    ``OrderedDict`` of :data:`PCKH_NAMES` to percentages.

  Raises:
    ValueError: predictions with NaN/inf (person and joint named) or of the wrong shape.
  """
  scaled = pckh_scaled_errors(preds, gt, sc_bias, pred_offset)
  count = gt.visible.sum(axis=0)
  pckh = pckh_per_joint(scaled, gt.visible, threshold)
  pck_01 = pckh_per_joint(scaled, gt.visible, MEAN_AT_01_THRESHOLD)

  def pair(name):
    return float(0.5 * (pckh[_J["l" + name]] + pckh[_J["r" + name]]))

  return collections.OrderedDict([
      ("Head", float(pckh[_J["head"]])),
      ("Shoulder", pair("sho")),
      ("Elbow", pair("elb")),
      ("Wrist", pair("wri")),
      ("Hip", pair("hip")),
      ("Knee", pair("kne")),
      ("Ankle", pair("ank")),
      ("Mean", _weighted_mean(pckh, count)),
      ("Mean@0.1", _weighted_mean(pck_01, count)),
  ])


def save_mpii_predictions(preds: ArrayLike, path: str | os.PathLike,
                          pred_offset: float = 1.0) -> pathlib.Path:
  """Writes ``pred.mat`` (``{'preds': preds + 1}``, 1-based) as HRNet does, atomically.

  Args:
    preds: ``[N, 16, 2]`` predicted joints in 0-based pixels (a score column is dropped).
    path: destination ``.mat`` file; its folder is created if needed.
    pred_offset: added before saving (1.0).

  Returns:
    The path written.
  """
  p = np.asarray(preds)
  p = _check_preds(p, p.shape[0] if p.ndim == 3 else -1) + pred_offset
  return fileio.atomic_write(path, lambda f: scipy.io.savemat(f, {"preds": p}), binary=True)
