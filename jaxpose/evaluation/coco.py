"""COCO keypoint evaluation (AP/AR through pycocotools) with HRNet's post-processing.

What HRNet / SimpleBaseline (``lib/dataset/coco.py`` ``evaluate``, ``lib/core/function.py``
``validate``) do with the per-crop predictions of a COCO split, ground-truth or detector
boxes alike:

1. Each instance carries its keypoints in image pixels, their per-keypoint scores (the
   heatmap maxima), the box score (1 for ground-truth boxes, the detector's score
   otherwise) and an area, the padded crop box ``prod(scale * 200)`` (:func:`crop_areas`).
2. Rescoring (:func:`rescore`): ``score = box_score * mean(keypoint scores > in_vis_thre)``,
   0 when no keypoint score exceeds ``in_vis_thre`` (0.2 in the released configs).
3. Per image, OKS-NMS (:func:`jaxpose.evaluation.nms.oks_nms`, threshold ``oks_thre`` 0.9) or
   its soft variant (``TEST.SOFT_NMS``).
4. The survivors are written as a COCO results file (``image_id``, ``category_id``,
   ``keypoints`` as ``K`` flat ``(x, y, score)`` triplets, ``score``, optional ``center`` and
   ``scale``), loaded back with ``COCO.loadRes`` and evaluated by ``COCOeval(...,
   'keypoints')``; the ten summary numbers come back in an ``OrderedDict`` under the
   original's names (including its ``'Ap .5'`` spelling), ready for
   :func:`print_name_value_table`.

MSPN's ``test.py`` differs only in steps 2-3: its score is ``box_score * mean(all keypoint
scores)`` and it applies no NMS; ``rescore(..., in_vis_thre=None)`` and ``oks_thre=None``
reproduce it.

Person detections in the COCO results format (``COCO_val2017_detections_AP_H_56_person.json``)
are read by :func:`load_person_detections`.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import math
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Union

import numpy as np
from numpy.typing import ArrayLike
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from jaxpose import fileio
from jaxpose.data.transforms import box_to_center_scale
from jaxpose.evaluation import nms

logger = logging.getLogger(__name__)

PERSON_CATEGORY_ID = 1
"""COCO ``category_id`` of persons."""

COCO_STATS_NAMES: tuple[str, ...] = (
    "AP", "Ap .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")
"""Names of ``COCOeval.stats[0:10]`` as HRNet reports them (``'Ap .5'`` sic)."""

CocoGroundTruth = Union[str, os.PathLike, Mapping[str, Any], COCO]
"""An annotation file path, an in-memory COCO dict, or a pycocotools ``COCO`` object."""


# ----------------------------------------------------------------------------------------
# Predictions
# ----------------------------------------------------------------------------------------


def _nonfinite_rows(arr: np.ndarray) -> np.ndarray:
  """Indices of the rows (first axis) of ``arr`` holding NaN or inf."""
  if arr.shape[0] == 0:
    return np.zeros(0, np.int64)
  return np.flatnonzero(~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1))


@dataclasses.dataclass(frozen=True)
class KeypointPredictions:
  """The per-instance predictions of a COCO split (one row per person crop).

  Attributes:
    image_ids: int64 ``[N]`` COCO image id of each instance.
    keypoints: float ``[N, K, 2]`` keypoints (x, y) in image pixels (the dtype is kept:
      float32 from the decoders).
    keypoint_scores: float ``[N, K]`` per-keypoint scores (heatmap maxima); ``[N, K, 1]``
      as the decoders return it is accepted and squeezed.
    box_scores: float64 ``[N]`` person box score (1 for ground-truth boxes).
    areas: float64 ``[N]`` instance area in square pixels used by OKS-NMS (HRNet:
      :func:`crop_areas` of the crop scales).
    centers: optional float ``[N, 2]`` crop centers in pixels, copied into the results.
    scales: optional float ``[N, 2]`` crop scales (box size / 200), copied into the results.

  Raises:
    ValueError: on a shape mismatch (the arrays and expected shapes are named), a
      non-integer image id, NaN/inf anywhere (the instance index and image id are named),
      or a negative area.
  """

  image_ids: np.ndarray
  keypoints: np.ndarray
  keypoint_scores: np.ndarray
  box_scores: np.ndarray
  areas: np.ndarray
  centers: np.ndarray | None = None
  scales: np.ndarray | None = None

  def __post_init__(self):
    kpts = np.asarray(self.keypoints)
    if kpts.ndim != 3 or kpts.shape[-1] != 2:
      raise ValueError(f"keypoints must be [N, K, 2] (x, y), got shape {kpts.shape}")
    if not np.issubdtype(kpts.dtype, np.floating):
      kpts = kpts.astype(np.float64)
    n, k = kpts.shape[:2]
    ids = np.asarray(self.image_ids)
    if ids.shape != (n,):
      raise ValueError(f"image_ids must have shape ({n},) like keypoints, got {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
      if not (np.issubdtype(ids.dtype, np.floating) and np.all(np.isfinite(ids))
              and np.all(ids == np.round(ids))):
        raise ValueError(f"image_ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    scores = np.asarray(self.keypoint_scores)
    if scores.ndim == 3 and scores.shape[-1] == 1:
      scores = scores[..., 0]
    if scores.shape != (n, k):
      raise ValueError(
          f"keypoint_scores must have shape ({n}, {k}) like keypoints, got {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
      scores = scores.astype(np.float64)
    box_scores = np.asarray(self.box_scores, dtype=np.float64)
    if box_scores.shape != (n,):
      raise ValueError(f"box_scores must have shape ({n},), got {box_scores.shape}")
    areas = np.asarray(self.areas, dtype=np.float64)
    if areas.shape != (n,):
      raise ValueError(f"areas must have shape ({n},), got {areas.shape}")
    fields = {"image_ids": ids, "keypoints": kpts, "keypoint_scores": scores,
              "box_scores": box_scores, "areas": areas}
    for name in ("centers", "scales"):
      value = getattr(self, name)
      if value is not None:
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.floating):
          value = value.astype(np.float64)
        if value.shape != (n, 2):
          raise ValueError(f"{name} must have shape ({n}, 2), got {value.shape}")
        fields[name] = value
    for name, value in fields.items():
      bad = _nonfinite_rows(value)
      if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name} of instance {i} (image_id {int(ids[i])}) contain NaN or inf"
            f" ({bad.size} instance(s) affected)")
    if np.any(areas < 0):
      i = int(np.flatnonzero(areas < 0)[0])
      raise ValueError(f"areas must be non-negative: instance {i} (image_id {int(ids[i])}) "
                       f"has area {areas[i]}")
    for name, value in fields.items():
      object.__setattr__(self, name, value)

  @property
  def num_instances(self) -> int:
    """``N``."""
    return int(self.keypoints.shape[0])

  @property
  def num_keypoints(self) -> int:
    """``K``."""
    return int(self.keypoints.shape[1])

  @classmethod
  def concatenate(cls, parts: Sequence[KeypointPredictions]) -> KeypointPredictions:
    """Joins per-batch predictions in order (``centers`` / ``scales`` only if all have them)."""
    if not parts:
      raise ValueError("concatenate needs at least one KeypointPredictions")

    def cat(name):
      values = [getattr(p, name) for p in parts]
      if any(v is None for v in values):
        return None
      return np.concatenate(values, axis=0)

    return cls(**{f.name: cat(f.name) for f in dataclasses.fields(cls)})


def crop_areas(scales: ArrayLike, pixel_std: float = 200.0) -> np.ndarray:
  """HRNet's instance area ``np.prod(scale * 200, 1)``: the padded crop box in pixels².

  Args:
    scales: ``[N, 2]`` crop scales (box width, height / ``pixel_std``), as
      :func:`jaxpose.data.transforms.box_to_center_scale` returns them.
    pixel_std: the scale unit in pixels.

  Returns:
    float64 ``[N]`` areas (computed in the scales' dtype, as the original does).
  """
  s = np.asarray(scales)
  if s.ndim != 2 or s.shape[1] != 2:
    raise ValueError(f"scales must be [N, 2], got shape {s.shape}")
  if not np.issubdtype(s.dtype, np.floating):
    s = s.astype(np.float64)
  return np.prod(s * pixel_std, axis=1).astype(np.float64)


def rescore(keypoint_scores: ArrayLike, box_scores: ArrayLike,
            in_vis_thre: float | None = 0.2) -> np.ndarray:
  """Instance scores: box score x mean keypoint score (HRNet ``evaluate``).

  HRNet averages the keypoint scores strictly above ``in_vis_thre`` (score 0 when there are
  none); the comparison and the running sum are float64, in keypoint order, as the
  original's Python loop computed them. With ``in_vis_thre=None`` all keypoint scores are
  averaged (MSPN ``test.py``).

  Args:
    keypoint_scores: ``[N, K]`` per-keypoint scores.
    box_scores: ``[N]`` box scores.
    in_vis_thre: the keypoint-score threshold, or None for the plain mean.

  Returns:
    float64 ``[N]`` rescored instance scores.
  """
  s = np.asarray(keypoint_scores, dtype=np.float64)
  b = np.asarray(box_scores, dtype=np.float64)
  if s.ndim != 2 or b.shape != s.shape[:1]:
    raise ValueError(
        f"rescore: expected keypoint_scores [N, K] and box_scores [N], got {s.shape} and "
        f"{b.shape}")
  if in_vis_thre is None:
    return s.mean(axis=1) * b
  valid = s > in_vis_thre
  total = np.zeros(s.shape[0], np.float64)
  for k in range(s.shape[1]):  # sequential sum, bit-equal to the original loop
    total = total + np.where(valid[:, k], s[:, k], 0.0)
  count = valid.sum(axis=1)
  kpt_score = np.where(count > 0, total / np.maximum(count, 1), 0.0)
  return kpt_score * b


def _group_by_image(image_ids: np.ndarray) -> dict[int, np.ndarray]:
  """Instance indices per image id, images in order of first appearance."""
  groups: dict[int, list[int]] = {}
  for i, image_id in enumerate(image_ids.tolist()):
    groups.setdefault(image_id, []).append(i)
  return {k: np.asarray(v, dtype=np.int64) for k, v in groups.items()}


def select_instances(predictions: KeypointPredictions,
                     scores: np.ndarray,
                     oks_thre: float | None = 0.9,
                     soft_nms: bool = False,
                     sigmas: ArrayLike | None = None) -> np.ndarray:
  """Per-image OKS-NMS over all instances (HRNet ``evaluate``).

  Args:
    predictions: the instances.
    scores: float64 ``[N]`` rescored instance scores.
    oks_thre: OKS-NMS threshold; None keeps everything (MSPN).
    soft_nms: use :func:`jaxpose.evaluation.nms.soft_oks_nms` instead of ``oks_nms``.
    sigmas: ``[K]`` OKS sigmas (COCO's when None).

  Returns:
    int64 indices of the kept instances, grouped by image (images in order of first
    appearance), in NMS order (decreasing score) within an image.
  """
  scores = np.asarray(scores, dtype=np.float64)
  if scores.shape != (predictions.num_instances,):
    raise ValueError(
        f"scores must have shape ({predictions.num_instances},), got {scores.shape}")
  kept = []
  for idx in _group_by_image(predictions.image_ids).values():
    if oks_thre is None:
      kept.append(idx)
      continue
    suppress = nms.soft_oks_nms if soft_nms else nms.oks_nms
    keep = suppress(predictions.keypoints[idx], scores[idx], predictions.areas[idx],
                    oks_thre, sigmas=sigmas)
    kept.append(idx[keep])
  return np.concatenate(kept) if kept else np.zeros(0, np.int64)


def coco_keypoint_results(predictions: KeypointPredictions,
                          in_vis_thre: float | None = 0.2,
                          oks_thre: float | None = 0.9,
                          soft_nms: bool = False,
                          sigmas: ArrayLike | None = None,
                          category_id: int = PERSON_CATEGORY_ID) -> list[dict[str, Any]]:
  """Rescoring + per-image OKS-NMS, as COCO keypoint results (HRNet ``evaluate``).

  Args:
    predictions: the instances of the split.
    in_vis_thre: see :func:`rescore`.
    oks_thre: see :func:`select_instances`.
    soft_nms: see :func:`select_instances`.
    sigmas: ``[K]`` OKS sigmas for the NMS (COCO's when None).
    category_id: the results' ``category_id``.

  Returns:
    One dict per kept instance: ``image_id`` (int), ``category_id``, ``keypoints`` (``3K``
    floats ``x1, y1, s1, ...``, pixels and keypoint scores), ``score`` (the rescored
    instance score) and, when the predictions have them, ``center`` and ``scale``.
  """
  scores = rescore(predictions.keypoint_scores, predictions.box_scores, in_vis_thre)
  kept = select_instances(predictions, scores, oks_thre, soft_nms, sigmas)
  flat = np.concatenate(
      [predictions.keypoints.astype(np.float64),
       predictions.keypoint_scores.astype(np.float64)[..., None]], axis=-1)
  flat = flat.reshape(predictions.num_instances, -1)
  results = []
  for i in kept.tolist():
    result = {"image_id": int(predictions.image_ids[i]), "category_id": int(category_id),
              "keypoints": flat[i].tolist(), "score": float(scores[i])}
    if predictions.centers is not None:
      result["center"] = predictions.centers[i].astype(np.float64).tolist()
    if predictions.scales is not None:
      result["scale"] = predictions.scales[i].astype(np.float64).tolist()
    results.append(result)
  return results


def write_results_json(results: Sequence[Mapping[str, Any]],
                       path: str | os.PathLike) -> pathlib.Path:
  """Writes COCO results atomically (temporary file in the same folder, then rename).

  Args:
    results: JSON-serialisable result dicts.
    path: the destination file; its folder is created if needed.

  Returns:
    The path written.
  """
  return fileio.write_json(path, list(results), allow_nan=False)


def results_path(work_dir: str | os.PathLike, image_set: str = "val2017") -> pathlib.Path:
  """Where :func:`evaluate_coco` writes: ``work_dir/results/keypoints_{image_set}_results.json``."""
  return pathlib.Path(work_dir) / "results" / f"keypoints_{image_set}_results.json"


# ----------------------------------------------------------------------------------------
# Ground truth and pycocotools
# ----------------------------------------------------------------------------------------

_ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox", "area", "iscrowd", "keypoints",
                    "num_keypoints")


def _check_ground_truth(dataset: Any, source: str) -> None:
  """Checks that ``dataset`` holds what pycocotools' keypoint evaluation reads."""
  if not isinstance(dataset, Mapping):
    raise ValueError(f"{source}: a COCO ground truth must be a dict, got {type(dataset)}")
  for key in ("images", "annotations", "categories"):
    if not isinstance(dataset.get(key), list):
      raise ValueError(f"{source}: missing or non-list '{key}'")
  image_ids = set()
  for i, image in enumerate(dataset["images"]):
    if not isinstance(image, Mapping) or "id" not in image:
      raise ValueError(f"{source}: images[{i}] has no 'id'")
    image_ids.add(image["id"])
  if not any(isinstance(c, Mapping) and c.get("id") == PERSON_CATEGORY_ID
             for c in dataset["categories"]):
    raise ValueError(f"{source}: no category with id {PERSON_CATEGORY_ID} (person)")
  for i, ann in enumerate(dataset["annotations"]):
    if not isinstance(ann, Mapping):
      raise ValueError(f"{source}: annotations[{i}] is not a dict")
    where = f"{source}: annotation {ann.get('id', f'#{i}')}"
    missing = [k for k in _ANNOTATION_KEYS if k not in ann]
    if missing:
      raise ValueError(f"{where} lacks {missing} (needed by the keypoint evaluation)")
    if ann["image_id"] not in image_ids:
      raise ValueError(f"{where} refers to image_id {ann['image_id']} not in 'images'")
    if len(ann["bbox"]) != 4:
      raise ValueError(f"{where}: bbox must have 4 values, got {ann['bbox']!r}")
    if len(ann["keypoints"]) % 3:
      raise ValueError(f"{where}: keypoints must be flat (x, y, v) triplets")


def load_coco_ground_truth(coco_gt: CocoGroundTruth) -> COCO:
  """A pycocotools ``COCO`` object from a file, an in-memory dict or a ``COCO`` object.

  A dict is deep-copied (pycocotools' evaluation adds keys to the ground-truth
  annotations) and indexed without touching the disk.

  Args:
    coco_gt: path of a COCO annotation file, a COCO-format dict (``images``,
      ``annotations``, ``categories``), or a ``COCO`` object (returned as is).

  Returns:
    The indexed ``COCO`` object.

  Raises:
    ValueError: the file is not JSON, or an entry lacks what the keypoint evaluation
      reads (the message names the annotation).
  """
  if isinstance(coco_gt, COCO):
    _check_ground_truth(coco_gt.dataset, "COCO object")
    return coco_gt
  if isinstance(coco_gt, (str, os.PathLike)):
    source = os.fspath(coco_gt)
    dataset = fileio.read_json(source)
  elif isinstance(coco_gt, Mapping):
    source, dataset = "ground-truth dict", copy.deepcopy(dict(coco_gt))
  else:
    raise ValueError(
        f"coco_gt must be a path, a COCO-format dict or a COCO object, got {type(coco_gt)}")
  _check_ground_truth(dataset, source)
  coco = COCO()
  coco.dataset = dataset
  coco.createIndex()
  return coco


def _gt_num_keypoints(coco: COCO) -> int | None:
  """``K`` of the ground-truth annotations (None without annotations)."""
  for ann in coco.dataset["annotations"]:
    return len(ann["keypoints"]) // 3
  return None


def check_against_ground_truth(predictions: KeypointPredictions, coco: COCO) -> None:
  """Raises ValueError if predictions name images the ground truth lacks, or ``K`` differs."""
  if predictions.num_instances == 0:
    raise ValueError("no predictions to evaluate")
  unknown = sorted(set(predictions.image_ids.tolist()) - set(coco.getImgIds()))
  if unknown:
    raise ValueError(
        f"{len(unknown)} predicted image_id(s) are not in the ground truth, e.g. {unknown[:5]}")
  k = _gt_num_keypoints(coco)
  if k is not None and k != predictions.num_keypoints:
    raise ValueError(
        f"predictions have {predictions.num_keypoints} keypoints, the ground truth {k}")


def coco_keypoint_stats(coco_gt: CocoGroundTruth,
                        results_file: str | os.PathLike,
                        sigmas: ArrayLike | None = None) -> collections.OrderedDict[str, float]:
  """``COCOeval(gt, gt.loadRes(results_file), 'keypoints')`` (HRNet ``_do_python_keypoint_eval``).

  Prints pycocotools' summary as the original does.

  Args:
    coco_gt: the ground truth (see :func:`load_coco_ground_truth`).
    results_file: a non-empty COCO keypoint results JSON file.
    sigmas: ``[K]`` OKS sigmas replacing pycocotools' COCO ones (for ``K != 17``).

  Returns:
    ``OrderedDict`` of :data:`COCO_STATS_NAMES` to ``COCOeval.stats[:10]`` (floats in
    [0, 1]; -1 where the ground truth has no instance in the category/area range).
  """
  coco = load_coco_ground_truth(coco_gt)
  coco_dt = coco.loadRes(os.fspath(results_file))
  coco_eval = COCOeval(coco, coco_dt, "keypoints")
  coco_eval.params.useSegm = None
  k = _gt_num_keypoints(coco)
  if sigmas is not None or k is not None:  # COCO's sigmas need K = 17
    k = np.shape(sigmas)[0] if k is None else k
    coco_eval.params.kpt_oks_sigmas = nms.check_sigmas(sigmas, k)
  coco_eval.evaluate()
  coco_eval.accumulate()
  coco_eval.summarize()
  return collections.OrderedDict(
      (name, float(coco_eval.stats[i])) for i, name in enumerate(COCO_STATS_NAMES))


def evaluate_coco(predictions: KeypointPredictions,
                  coco_gt: CocoGroundTruth,
                  work_dir: str | os.PathLike,
                  *,
                  image_set: str = "val2017",
                  in_vis_thre: float | None = 0.2,
                  oks_thre: float | None = 0.9,
                  soft_nms: bool = False,
                  sigmas: ArrayLike | None = None) -> collections.OrderedDict[str, float]:
  """COCO keypoint AP/AR of a split's predictions (HRNet ``COCODataset.evaluate``).

  Rescoring, per-image OKS-NMS, results JSON at :func:`results_path` (written
  atomically), pycocotools evaluation. Defaults are the released HRNet/SimpleBaseline
  settings (``IN_VIS_THRE`` 0.2, ``OKS_THRE`` 0.9, no soft NMS); MSPN's evaluation is
  ``in_vis_thre=None, oks_thre=None``.

  Args:
    predictions: all instances of the split (ground-truth or detection boxes).
    coco_gt: annotation file path, in-memory COCO dict or ``COCO`` object.
    work_dir: output folder; the results go to ``work_dir/results/``.
    image_set: split name used in the results file name.
    in_vis_thre: see :func:`rescore`.
    oks_thre: see :func:`select_instances`.
    soft_nms: see :func:`select_instances`.
    sigmas: ``[K]`` OKS sigmas for both NMS and evaluation (COCO's when None).

  Returns:
    ``OrderedDict`` ``{'AP', 'Ap .5', 'AP .75', 'AP (M)', 'AP (L)', 'AR', 'AR .5',
    'AR .75', 'AR (M)', 'AR (L)'}`` of floats.

  Raises:
    ValueError: no predictions, image ids missing from the ground truth, a keypoint
      count differing from the ground truth's, or a malformed ground truth.
  """
  coco = load_coco_ground_truth(coco_gt)
  check_against_ground_truth(predictions, coco)
  sigmas = nms.check_sigmas(sigmas, predictions.num_keypoints)
  results = coco_keypoint_results(predictions, in_vis_thre, oks_thre, soft_nms, sigmas)
  path = write_results_json(results, results_path(work_dir, image_set))
  logger.info("wrote %d COCO keypoint results to %s", len(results), path)
  return coco_keypoint_stats(coco, path, sigmas)


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------


def format_name_value_table(name_value: Mapping[str, float], model_name: str) -> str:
  """The markdown table of HRNet's ``_print_name_value`` (three lines).

  ``| Arch | AP | Ap .5 | ... |``, a ``|---|...`` rule and ``| model | 0.744 | ... |``
  with three decimals; a model name longer than 15 characters is cut to its first 8
  plus ``...``.
  """
  names, values = list(name_value.keys()), list(name_value.values())
  if len(model_name) > 15:
    model_name = model_name[:8] + "..."
  header = "| Arch " + " ".join(f"| {name}" for name in names) + " |"
  rule = "|---" * (len(names) + 1) + "|"
  row = "| " + model_name + " " + " ".join(f"| {float(v):.3f}" for v in values) + " |"
  return "\n".join([header, rule, row])


def print_name_value_table(name_value: Mapping[str, float], model_name: str,
                           print_fn: Callable[[str], Any] = print) -> str:
  """Prints :func:`format_name_value_table` line by line and returns the table text.

  Args:
    name_value: metric names to values (from :func:`evaluate_coco` or
      :func:`jaxpose.evaluation.mpii.evaluate_pckh`).
    model_name: the ``Arch`` column entry.
    print_fn: called once per line (e.g. ``logging.info`` or absl's ``logging.info``).
  """
  table = format_name_value_table(name_value, model_name)
  for line in table.splitlines():
    print_fn(line)
  return table


# ----------------------------------------------------------------------------------------
# Person detections
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PersonDetections:
  """The person boxes of one image, in file order.

  Attributes:
    boxes: float64 ``[M, 4]`` ``x, y, width, height`` in pixels.
    scores: float64 ``[M]`` detector scores.
  """

  boxes: np.ndarray
  scores: np.ndarray

  def centers_scales(self, aspect_ratio: float, padding: float = 1.25,
                     pixel_std: float = 200.0) -> tuple[np.ndarray, np.ndarray]:
    """Crop centers and scales of the boxes (:func:`jaxpose.data.transforms.box_to_center_scale`).

    Returns:
      float32 ``[M, 2]`` centers (pixels) and float32 ``[M, 2]`` scales (size / pixel_std).
    """
    pairs = [box_to_center_scale(b, aspect_ratio, padding, pixel_std) for b in self.boxes]
    centers = np.stack([c for c, _ in pairs]) if pairs else np.zeros((0, 2), np.float32)
    scales = np.stack([s for _, s in pairs]) if pairs else np.zeros((0, 2), np.float32)
    return centers, scales


def _number(value: Any, where: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ValueError(f"{where}: expected a number, got {value!r}")
  value = float(value)
  if not math.isfinite(value):
    raise ValueError(f"{where}: not finite ({value})")
  return value


def load_person_detections(
    detections: str | os.PathLike | Sequence[Mapping[str, Any]],
    image_thre: float = 0.0,
    category_id: int = PERSON_CATEGORY_ID,
    image_ids: Iterable[int] | None = None,
) -> dict[int, PersonDetections]:
  """Person boxes from a COCO-results detection file.

  HRNet's ``_load_coco_person_detection_results``: keeps the entries with
  ``category_id == category_id`` and ``score >= image_thre`` (``TEST.IMAGE_THRE``, 0.0 in
  the released configs).

  Args:
    detections: path of a JSON list of ``{image_id, category_id, bbox: [x, y, w, h],
      score}`` (e.g. ``COCO_val2017_detections_AP_H_56_person.json``), or that list.
    image_thre: minimum detector score.
    category_id: the category to keep (1 = person).
    image_ids: if given, only detections of these images are kept (MSPN drops boxes of
      images outside the ground truth; HRNet does not filter).

  Returns:
    ``{image_id: PersonDetections}``, images in order of first appearance, boxes in file
    order. Images without kept boxes are absent.

  Raises:
    ValueError: the file is not a non-empty JSON list, or an entry lacks a key or holds a
      non-finite / malformed value (the entry index and image id are named).
  """
  source = "detections"
  if isinstance(detections, (str, os.PathLike)):
    source = os.fspath(detections)
    detections = fileio.read_json(source)
  if not isinstance(detections, Sequence) or isinstance(detections, (str, bytes)):
    raise ValueError(f"{source}: expected a list of detections, got {type(detections)}")
  if not detections:
    raise ValueError(f"{source}: holds no detections")
  wanted = None if image_ids is None else {int(i) for i in image_ids}
  boxes: dict[int, list[list[float]]] = {}
  scores: dict[int, list[float]] = {}
  for i, det in enumerate(detections):
    if not isinstance(det, Mapping):
      raise ValueError(f"{source}: entry {i} is not a dict")
    missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in det]
    if missing:
      raise ValueError(f"{source}: entry {i} lacks {missing}")
    where = f"{source}: entry {i} (image_id {det['image_id']})"
    if det["category_id"] != category_id:
      continue
    image_id = int(_number(det["image_id"], where + " image_id"))
    score = _number(det["score"], where + " score")
    bbox = det["bbox"]
    if not isinstance(bbox, Sequence) or len(bbox) != 4:
      raise ValueError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
    bbox = [_number(v, where + " bbox") for v in bbox]
    if score < image_thre or (wanted is not None and image_id not in wanted):
      continue
    boxes.setdefault(image_id, []).append(bbox)
    scores.setdefault(image_id, []).append(score)
  logger.info("%s: kept %d boxes with score >= %s", source,
              sum(len(v) for v in scores.values()), image_thre)
  return {k: PersonDetections(np.asarray(boxes[k], np.float64).reshape(-1, 4),
                              np.asarray(scores[k], np.float64)) for k in boxes}
