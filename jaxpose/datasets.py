"""The dataset table: what jaxpose knows about each TFDS dataset it can train or evaluate on.

``DATASETS`` maps a TFDS builder name (the keys of ``jaxpose.data.builders.BUILDERS``, and
``config.data.dataset``) to a ``Dataset``:

* ``keypoints``: its ``jaxpose.data.keypoints.KeypointSet`` (joint names, flip pairs,
  half-body split, skeleton, joint weights);
* ``person_instances``: how its stored annotations become top-down person instances
  (``topdown.ground_truth_instances`` for COCO-format data, MPII's own rules for
  ``mpii``), or None for datasets without per-person image annotations;
* ``evaluator``: how predictions on one of its splits are scored (COCO keypoint AP,
  MPII PCKh, the Human3.6M protocols of the lifters, Human3.6M MPJPE of image-based 3D
  models), with the default metric and whether higher is better;
* ``people``: how its examples become the people of the image-based 3D methods
  (``jaxpose.data.image3d``: 2D joints with or without depth, crop box, 3D pose), or None.

Tasks, configs and the pipeline read these facts from here; nothing compares dataset
names. ``dataset(name)`` looks an entry up and lists the valid names for an unknown one.

Adding a dataset (e.g. ``h36m_poses``): add its builder to ``BUILDERS``, its
``KeypointSet`` to ``jaxpose.data.keypoints`` (if new), an evaluator here if none fits
(a class with ``default_metric``, ``mode`` and ``__call__(ref, predictions, *,
keypoints, options, workdir)``; ``mode='min'`` for errors such as MPJPE), and one entry
to ``DATASETS``. ``tests/test_train.py`` checks that the builders and this table agree.

Layering: this module sits above ``jaxpose.data`` and ``jaxpose.evaluation`` (it names
readers of the one and metrics of the other) and below ``jaxpose.train``; the pipeline
takes the reader from its caller, so ``jaxpose.data`` never imports this module.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from jaxpose import fileio
from jaxpose.data import coco_format, image3d, joint_maps, mocap_format, pipeline, topdown
from jaxpose.data import keypoints as kp
from jaxpose.evaluation import coco as coco_eval
from jaxpose.evaluation import h36m as h36m_eval
from jaxpose.evaluation import h36m_image
from jaxpose.evaluation import mpii as mpii_eval

Predictions = Mapping[str, np.ndarray]


class Evaluator(Protocol):
  """Scores the predictions of a whole split (called on one process, with every
  process's predictions gathered).

  Attributes:
    default_metric: the metric that picks the best checkpoint unless the config names
      another (``config.eval.metric``).
    mode: 'max' when higher values of the metrics are better (AP, PCKh), 'min' for errors
      (MPJPE).
  """
  default_metric: str
  mode: str

  def __call__(self, ref: pipeline.DatasetRef, predictions: Predictions, *,
               keypoints: kp.KeypointSet, options: Mapping[str, Any], workdir: str
               ) -> dict[str, float]:
    """Metrics (name -> value) of ``predictions`` on split ``ref``.

    Args:
      ref: the evaluated split.
      predictions: columns of equal length ``N`` (one row per evaluated instance); which
        columns are needed is the evaluator's documented contract.
      keypoints: the keypoint set the predictions are in.
      options: evaluation settings (``config.eval``).
      workdir: where result files may be written.
    """
    ...


@dataclasses.dataclass(frozen=True)
class CocoKeypointAP:
  """COCO keypoint AP/AR of person instances (pycocotools, HRNet's rescoring and OKS-NMS).

  Prediction columns: ``image_id`` int64 ``[N]``, ``keypoints`` float ``[N, K, 2]``
  (image pixels), ``keypoint_scores`` float ``[N, K]``, ``box_score`` float ``[N]``,
  ``center`` / ``scale`` float ``[N, 2]`` (the crop's; ``scale`` gives the area used by
  OKS-NMS). Options: ``in_vis_thre``, ``oks_thre`` (None: MSPN's mean-score rescoring
  without NMS), ``soft_nms``. The ground truth is rebuilt from the split's examples; the
  results file goes to ``workdir/results``.
  """
  default_metric: str = "AP"
  mode: str = "max"

  def __call__(self, ref: pipeline.DatasetRef, predictions: Predictions, *,
               keypoints: kp.KeypointSet, options: Mapping[str, Any], workdir: str
               ) -> dict[str, float]:
    source = pipeline.open_source(ref)
    gt = coco_format.ground_truth_from_examples(
        (source[i] for i in range(len(source))), keypoints.names, keypoints.skeleton)
    scored = coco_eval.KeypointPredictions(
        image_ids=predictions["image_id"], keypoints=predictions["keypoints"],
        keypoint_scores=predictions["keypoint_scores"], box_scores=predictions["box_score"],
        areas=coco_eval.crop_areas(predictions["scale"]), centers=predictions["center"],
        scales=predictions["scale"])
    return dict(coco_eval.evaluate_coco(
        scored, gt, workdir, image_set=ref.split, in_vis_thre=options["in_vis_thre"],
        oks_thre=options["oks_thre"], soft_nms=options["soft_nms"]))


@dataclasses.dataclass(frozen=True)
class MPIIPCKh:
  """MPII PCKh (``gt_valid.mat``, attached to the examples by the ``mpii`` builder).

  Prediction columns: ``keypoints`` float ``[N, 16, 2]`` (0-based image pixels) and
  ``annotation_id`` int64 ``[N]`` (the person's column in ``gt_valid.mat``); every
  validation person must be predicted once.
  """
  default_metric: str = "Mean"
  mode: str = "max"

  def __call__(self, ref: pipeline.DatasetRef, predictions: Predictions, *,
               keypoints: kp.KeypointSet, options: Mapping[str, Any], workdir: str
               ) -> dict[str, float]:
    del keypoints, options, workdir
    source = pipeline.open_source(ref)
    joints, missing, heads, order = [], [], [], []
    for i in range(len(source)):
      people = source[i]["people"]
      if not np.all(people["has_eval_gt"]):
        raise ValueError(f"{ref}: PCKh needs gt_valid.mat in the manual_dir when "
                         "building mpii (annot/gt_valid.mat)")
      joints.append(people["eval_joints"])
      missing.append(people["eval_joints_missing"])
      heads.append(people["head_box"])
      order.append(people["index"])
    order = np.argsort(np.concatenate(order))
    gt = mpii_eval.MPIIGroundTruth(
        joints=np.concatenate(joints)[order], visible=~np.concatenate(missing)[order],
        headboxes=np.concatenate(heads).reshape(-1, 2, 2)[order])
    preds = predictions["keypoints"][np.argsort(predictions["annotation_id"])]
    return dict(mpii_eval.evaluate_pckh(preds, gt))


@dataclasses.dataclass(frozen=True)
class H36MProtocols:
  """Human3.6M protocols #1-#3 and MPJVE per action (VideoPose3D ``run.py``'s evaluation).

  Prediction columns (one row per evaluated frame, any order): ``sequence`` int ``[N]``
  (one id per whole sequence: a subject, action and camera), ``frame`` int ``[N]`` (its
  index in the sequence; every sequence's frames must be ``0 .. T-1`` once each),
  ``action_id`` int ``[N]`` (index in ``mocap_format.H36M_ACTIONS``), ``predicted`` and
  ``target`` float ``[N, J, 3]`` (root-relative, meters) and optionally
  ``baseline_error`` float ``[N]`` (per-frame MPJPE of the mean-pose baseline, meters).
  Options: ``flip_test`` (recorded with the results). Metrics in millimeters
  (``h36m.protocol_metrics``), also written to ``workdir/results/h36m_protocols.json``.
  """
  default_metric: str = "MPJPE"
  mode: str = "min"

  def __call__(self, ref: pipeline.DatasetRef, predictions: Predictions, *,
               keypoints: kp.KeypointSet, options: Mapping[str, Any], workdir: str
               ) -> dict[str, float]:
    del keypoints
    order = np.lexsort((predictions["frame"], predictions["sequence"]))
    columns = {k: np.asarray(v)[order] for k, v in predictions.items()}
    seq, frame = columns["sequence"], columns["frame"]
    starts = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]])
    ends = np.r_[starts[1:], len(seq)]
    sequences = []
    for lo, hi in zip(starts, ends):
      if not np.array_equal(frame[lo:hi], np.arange(hi - lo)):
        raise ValueError(f"{ref}: sequence {seq[lo]} has frames missing or repeated among "
                         f"its {hi - lo} predictions")
      action = int(columns["action_id"][lo])
      if not 0 <= action < len(mocap_format.H36M_ACTIONS):
        raise ValueError(f"{ref}: sequence {seq[lo]} has action id {action}, not one of the "
                         f"15 Human3.6M actions {mocap_format.H36M_ACTIONS}")
      errors = h36m_eval.sequence_errors(mocap_format.H36M_ACTIONS[action],
                                         columns["predicted"][lo:hi], columns["target"][lo:hi])
      if "baseline_error" in columns:
        errors = dataclasses.replace(
            errors, baseline=float(np.mean(columns["baseline_error"][lo:hi])))
      sequences.append(errors)
    metrics = h36m_eval.protocol_metrics(sequences)
    actions = h36m_eval.protocol_actions(metrics)
    names = [n for n, _, _ in h36m_eval.PROTOCOLS] + (
        [h36m_eval.BASELINE_METRIC] if h36m_eval.BASELINE_METRIC in metrics else [])
    fileio.write_json(os.path.join(workdir, "results", "h36m_protocols.json"), {
        "split": str(ref), "flip_test": bool(options.get("flip_test", False)),
        "units": "mm", "average": {n: metrics[n] for n in names},
        "per_action": {a: {n: metrics[f"{n}/{a}"] for n in names} for a in actions},
        "frames": int(metrics["frames"]), "sequences": int(metrics["sequences"])}, indent=1)
    return metrics


@dataclasses.dataclass(frozen=True)
class H36MImageErrors:
  """Human3.6M errors of image-based 3D predictions (``jaxpose.evaluation.h36m_image``).

  Prediction columns: ``example_index`` int64 ``[N]`` (the evaluated examples of the
  split) and ``pose_3d`` float ``[N, J, 3]`` root-relative millimetres in ``keypoints``'
  joint set (Human3.6M's 17, or integral regression's 18), already converted by the
  method's protocol. The ground truth (``positions_3d``, made 18 joints when needed) and
  the actions are read from the split. Options: ``align`` (None, 'rigid', 'rigid_root'
  or 'similarity': the method's second number). Metrics: ``MPJPE``, ``P-MPJPE`` and
  both per action (``MPJPE/Walking``), in mm.
  """
  default_metric: str = "MPJPE"
  mode: str = "min"

  def __call__(self, ref: pipeline.DatasetRef, predictions: Predictions, *,
               keypoints: kp.KeypointSet, options: Mapping[str, Any], workdir: str
               ) -> dict[str, float]:
    del workdir
    source = pipeline.open_source(ref)
    index = np.asarray(predictions["example_index"])
    examples = [source[int(i)] for i in index]
    gt = np.stack([np.asarray(ex["positions_3d"], np.float64) * 1000.0 for ex in examples])
    gt, _ = joint_maps.joint_map("h36m", keypoints.name).apply(gt, np.ones(gt.shape[:-1]))
    actions = [ex["action_name"].decode() if isinstance(ex["action_name"], bytes)
               else str(ex["action_name"]) for ex in examples]
    errors = h36m_image.pose_errors(predictions["pose_3d"], gt, options.get("align"))
    return h36m_image.summarize(errors, actions)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One entry of ``DATASETS`` (see the module docstring)."""
  name: str
  keypoints: kp.KeypointSet
  person_instances: topdown.PersonInstanceReader | None
  evaluator: Evaluator | None
  people: image3d.PeopleReader | None = None


DATASETS: dict[str, Dataset] = {
    "coco_keypoints": Dataset("coco_keypoints", kp.COCO, topdown.ground_truth_instances,
                              CocoKeypointAP(), image3d.coco_people),
    "mpii": Dataset("mpii", kp.MPII, topdown.mpii_ground_truth_instances, MPIIPCKh(),
                    image3d.mpii_people),
    "synthetic_people": Dataset("synthetic_people", kp.COCO, topdown.ground_truth_instances,
                                CocoKeypointAP(), image3d.coco_people),
    # Images with 2D joints, depth and camera-frame 3D poses (image-based 3D methods).
    "h36m_images": Dataset("h36m_images", kp.H36M, None, H36MImageErrors(),
                           image3d.h36m_image_people),
    "synthetic_people3d": Dataset("synthetic_people3d", kp.H36M, None, H36MImageErrors(),
                                  image3d.h36m_image_people),
    # 3D pose sequences (no per-person image annotations).
    "h36m_poses": Dataset("h36m_poses", kp.H36M, None, H36MProtocols()),
    "synthetic_mocap": Dataset("synthetic_mocap", kp.H36M, None, H36MProtocols()),
}


def dataset(name: str) -> Dataset:
  """The table entry of ``name``; ``ValueError`` listing the valid names otherwise."""
  try:
    return DATASETS[name]
  except KeyError:
    raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(sorted(DATASETS))}"
                     ) from None
