"""Per-instance samples of the top-down 2D pipeline (pure numpy + OpenCV).

Datasets are stored one example per image (``data_builders``); top-down models train and
evaluate on one *person instance* per sample. This module

* turns decoded image examples into an ``InstanceTable`` (one row per instance) with the
  originals' selection rules and base crop boxes: on COCO-format data HRNet/SimpleBaseline
  keep non-crowd persons with a positive area, a non-empty clipped box and a labelled
  keypoint (box -> centre/scale with the 1.25 padding), MSPN keeps non-crowd persons with
  ``num_keypoints > 0`` (box centre and size, no padding); on MPII both take the
  annotated centre/scale with the originals' adjustments (1-based -> 0-based, centre moved
  down by 15 * scale, HRNet's x1.25); detection boxes come from a results file;
* makes one training or evaluation sample from an instance and its encoded image: crop
  parameters (``jaxpose.data.augment``), the affine warp, and the targets of the method
  (``jaxpose.data.targets``).

Images stay ``uint8`` (``[H, W, 3]`` in the configured channel order) until the jitted step
normalises them on the device.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from jaxpose.data import augment, targets, transforms

METHODS = ("hrnet", "mspn")
TARGETS = ("gaussian", "mspn", "coordinates")


class BadImageError(ValueError):
  """An image in the dataset cannot be decoded; names the image id."""


@dataclasses.dataclass
class InstanceTable:
  """One row per person instance, columns as arrays.

  Attributes:
    example_index: int64 ``[N]`` index of the image example in the split.
    image_id: int64 ``[N]`` COCO image id.
    annotation_id: int64 ``[N]`` (-1 for detection boxes).
    bbox: float64 ``[N, 4]`` box x, y, w, h in pixels.
    area: float64 ``[N]`` annotation area (box area for detections).
    keypoints: float32 ``[N, K, 2]`` ground-truth keypoints (zeros for detections).
    visibility: int32 ``[N, K]`` COCO flags 0/1/2 (zeros for detections).
    score: float32 ``[N]`` box score (1 for ground-truth boxes).
    image_size: int32 ``[N, 2]`` (width, height) of the image.
    center: float32 ``[N, 2]`` the method's base crop centre (x, y), before augmentation.
    scale: float32 ``[N, 2]`` the method's base crop size / 200 (w, h).
  """
  example_index: np.ndarray
  image_id: np.ndarray
  annotation_id: np.ndarray
  bbox: np.ndarray
  area: np.ndarray
  keypoints: np.ndarray
  visibility: np.ndarray
  score: np.ndarray
  image_size: np.ndarray
  center: np.ndarray
  scale: np.ndarray

  def __len__(self) -> int:
    return int(self.example_index.shape[0])

  def row(self, i: int) -> dict[str, np.ndarray]:
    return {f.name: getattr(self, f.name)[i] for f in dataclasses.fields(self)}

  def save(self, path: str) -> None:
    np.savez(path, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

  @classmethod
  def load(cls, path: str) -> "InstanceTable":
    with np.load(path) as z:
      return cls(**{f.name: z[f.name] for f in dataclasses.fields(cls)})

  @classmethod
  def concatenate(cls, rows: Sequence[dict[str, np.ndarray]], num_keypoints: int) -> "InstanceTable":
    if not rows:
      k = num_keypoints
      return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                 np.zeros((0, 4)), np.zeros(0), np.zeros((0, k, 2), np.float32),
                 np.zeros((0, k), np.int32), np.zeros(0, np.float32), np.zeros((0, 2), np.int32),
                 np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32))
    return cls(**{f.name: np.stack([np.asarray(r[f.name]) for r in rows])
                  for f in dataclasses.fields(cls)})


def _clean_box(bbox: np.ndarray, width: int, height: int) -> np.ndarray | None:
  """HRNet's clipped box ``[x1, y1, x2 - x1, y2 - y1]``, or None when it is empty."""
  x, y, w, h = bbox
  x1, y1 = max(0.0, x), max(0.0, y)
  x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
  y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
  if x2 >= x1 and y2 >= y1:
    return np.array([x1, y1, x2 - x1, y2 - y1], np.float64)
  return None


def base_box(method: str, bbox: np.ndarray, aspect_ratio: float, padding: float = 1.25
             ) -> tuple[np.ndarray, np.ndarray]:
  """The method's crop ``(center, scale)`` of a COCO box before any augmentation."""
  if method == "hrnet":
    return transforms.box_to_center_scale(bbox, aspect_ratio, padding)
  return augment.mspn_box(bbox)


def ground_truth_instances(examples: Iterable[tuple[int, Mapping[str, Any]]], method: str,
                           num_keypoints: int, aspect_ratio: float, padding: float = 1.25,
                           ) -> tuple[InstanceTable, dict[str, int]]:
  """Training / ground-truth-box instances of decoded COCO-format examples.

  Args:
    examples: ``(example_index, example)`` with ``image/id``, ``image/width``,
      ``image/height`` and ``objects`` as written by the builders (images not needed).
    method: 'hrnet' (HRNet/SimpleBaseline rules) or 'mspn'.
    num_keypoints: K.
    aspect_ratio: crop width / height of the model input.
    padding: HRNet's box enlargement.

  Returns:
    The table and counts of what was left out and why (crowd, zero area, empty box, no
    keypoints), so callers can report them.
  """
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; valid: {METHODS}")
  rows, skipped = [], {"crowd": 0, "zero_area": 0, "empty_box": 0, "no_keypoints": 0}
  for index, ex in examples:
    objects = ex["objects"]
    width, height = int(ex["image/width"]), int(ex["image/height"])
    for p in range(len(objects["id"])):
      if bool(objects["iscrowd"][p]):
        skipped["crowd"] += 1
        continue
      vis = np.asarray(objects["keypoint_visibility"][p], np.int32)
      bbox = np.asarray(objects["bbox"][p], np.float64)
      if method == "hrnet":
        if not objects["area"][p] > 0:
          skipped["zero_area"] += 1
          continue
        clean = _clean_box(bbox, width, height)
        if clean is None:
          skipped["empty_box"] += 1
          continue
        if not np.any(vis > 0):
          skipped["no_keypoints"] += 1
          continue
        bbox = clean
      else:  # MSPN: num_keypoints == 0 or fewer than LOAD_MIN_NUM (1) labelled joints
        if int(objects["num_keypoints"][p]) == 0 or not np.any(vis > 0):
          skipped["no_keypoints"] += 1
          continue
        if bbox[2] <= 0 or bbox[3] <= 0:
          skipped["empty_box"] += 1
          continue
      center, scale = base_box(method, bbox, aspect_ratio, padding)
      rows.append({
          "example_index": np.int64(index), "image_id": np.int64(ex["image/id"]),
          "annotation_id": np.int64(objects["id"][p]), "bbox": bbox,
          "area": np.float64(objects["area"][p]),
          "keypoints": np.asarray(objects["keypoints"][p], np.float32).reshape(num_keypoints, 2),
          "visibility": vis.reshape(num_keypoints), "score": np.float32(1.0),
          "image_size": np.array([width, height], np.int32),
          "center": center, "scale": scale,
      })
  return InstanceTable.concatenate(rows, num_keypoints), skipped


def mpii_instances(examples: Iterable[tuple[int, Mapping[str, Any]]], method: str,
                   padding: float = 1.25) -> InstanceTable:
  """Instances of decoded ``mpii`` examples (``people``), in example then file order.

  ``annotation_id`` is the person's row in the JSON file (the ``gt_valid.mat`` column) and
  ``image_id`` the example index. Joints become 0-based pixels and the flags COCO-style
  (0 or 2). HRNet's ``mpii.py``: centre ``y += 15 * scale`` (unless ``x == -1``), scale
  x1.25, centre - 1; MSPN's: the same without the x1.25.
  """
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; valid: {METHODS}")
  rows = []
  for index, ex in examples:
    people = ex["people"]
    width, height = int(ex["image/width"]), int(ex["image/height"])
    for p in range(len(people["index"])):
      center = np.array(people["center"][p], np.float64)
      s = float(people["scale"][p])
      scale = np.array([s, s], np.float64)
      if center[0] != -1:
        center[1] += 15 * scale[1]
        if method == "hrnet":
          scale = scale * padding
      center = center - 1
      joints = np.asarray(people["joints"][p], np.float32) - 1
      vis = 2 * np.asarray(people["joints_vis"][p], np.int32)
      size = scale * transforms.PIXEL_STD
      rows.append({
          "example_index": np.int64(index), "image_id": np.int64(index),
          "annotation_id": np.int64(people["index"][p]),
          "bbox": np.array([center[0] - size[0] / 2, center[1] - size[1] / 2, *size]),
          "area": np.float64(size[0] * size[1]), "keypoints": joints, "visibility": vis,
          "score": np.float32(1.0), "image_size": np.array([width, height], np.int32),
          "center": center.astype(np.float32), "scale": scale.astype(np.float32),
      })
  return InstanceTable.concatenate(rows, 16)


def mpii_ground_truth_instances(examples: Iterable[tuple[int, Mapping[str, Any]]], method: str,
                                num_keypoints: int, aspect_ratio: float, padding: float = 1.25,
                                ) -> tuple[InstanceTable, dict[str, int]]:
  """``mpii_instances`` with the signature of ``ground_truth_instances`` (a
  ``PersonInstanceReader``); MPII keeps every annotated person, so nothing is skipped.

  ``aspect_ratio`` is unused: MPII's boxes are its annotated centre and scale.
  """
  del aspect_ratio
  if num_keypoints != 16:
    raise ValueError(f"MPII annotations have 16 joints, the keypoint set has {num_keypoints}")
  return mpii_instances(examples, method, padding), {}


PersonInstanceReader = Callable[
    [Iterable[tuple[int, Mapping[str, Any]]], str, int, float, float],
    tuple[InstanceTable, dict[str, int]]]
"""``(examples, method, num_keypoints, aspect_ratio, padding) -> (table, skipped counts)``:
how a dataset's stored annotations become person instances (``ground_truth_instances``
for COCO-format datasets, ``mpii_ground_truth_instances`` for MPII); named per dataset in
``jaxpose.datasets``."""


def detection_instances(detections: Mapping[int, Any], image_index: Mapping[int, tuple[int, int, int]],
                        num_keypoints: int, method: str, aspect_ratio: float,
                        image_thre: float = 0.0, padding: float = 1.25
                        ) -> tuple[InstanceTable, int]:
  """Instances from person detections (``jaxpose.evaluation.coco.load_person_detections``).

  Args:
    detections: image id -> ``PersonDetections`` (boxes ``[M, 4]`` xywh, scores ``[M]``).
    image_index: image id -> ``(example_index, width, height)`` of the split.
    num_keypoints: K.
    method, aspect_ratio, padding: as ``ground_truth_instances``.
    image_thre: drop boxes scoring at or below this (HRNet ``TEST.IMAGE_THRE``; 0 keeps
      all positive scores).

  Returns:
    The table and the number of detections on images missing from the split.
  """
  rows, missing = [], 0
  for image_id, dets in sorted(detections.items()):
    if image_id not in image_index:
      missing += len(dets.scores)
      continue
    index, width, height = image_index[image_id]
    for box, score in zip(np.asarray(dets.boxes), np.asarray(dets.scores)):
      if score <= image_thre or box[2] <= 0 or box[3] <= 0:
        continue
      center, scale = base_box(method, np.asarray(box, np.float64), aspect_ratio, padding)
      rows.append({
          "example_index": np.int64(index), "image_id": np.int64(image_id),
          "annotation_id": np.int64(-1), "bbox": np.asarray(box, np.float64),
          "area": np.float64(box[2] * box[3]),
          "keypoints": np.zeros((num_keypoints, 2), np.float32),
          "visibility": np.zeros(num_keypoints, np.int32), "score": np.float32(score),
          "image_size": np.array([width, height], np.int32), "center": center, "scale": scale,
      })
  return InstanceTable.concatenate(rows, num_keypoints), missing


def decode_image(data: bytes | np.ndarray, color: str, image_id: int | None = None) -> np.ndarray:
  """JPEG bytes -> ``uint8 [H, W, 3]`` in ``color`` order ('rgb' or 'bgr')."""
  buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data)
  image = cv2.imdecode(buf.reshape(-1), cv2.IMREAD_COLOR) if buf.ndim <= 1 else buf
  if image is None or image.ndim != 3:
    raise BadImageError(f"image id {image_id}: cannot decode the stored image")
  if color == "rgb" and buf.ndim <= 1:
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
  elif color not in ("rgb", "bgr"):
    raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")
  return image


@dataclasses.dataclass(frozen=True)
class SampleSpec:
  """Everything a worker needs to turn an instance into a sample.

  Attributes:
    method: 'hrnet' (HRNet/SimpleBaseline) or 'mspn'.
    input_size: (height, width) of the crop.
    heatmap_size: (height, width) of the targets.
    color: channel order of the crop, 'rgb' or 'bgr'.
    flip_pairs, upper_body_ids: dataset joint structure.
    sigma: Gaussian sigma (HRNet targets).
    joints_weight: optional ``[K]`` per-joint loss weights (HRNet
      ``USE_DIFFERENT_JOINTS_WEIGHT``).
    mspn_kernels: the MSPN target kernels, coarse to fine.
    hrnet_aug / mspn_aug: training augmentation of the method (MSPN's also holds its
      evaluation margins).
    padding: box enlargement of ``box_to_center_scale`` (HRNet 1.25).
    target: what to regress: 'gaussian' (HRNet/SimpleBaseline heatmaps), 'mspn'
      (coarse-to-fine peaks) or 'coordinates' (integral regression labels); None takes
      the method's own ('gaussian' for 'hrnet', 'mspn' for 'mspn').
  """
  method: str
  input_size: tuple[int, int]
  heatmap_size: tuple[int, int]
  color: str
  flip_pairs: tuple[tuple[int, int], ...]
  upper_body_ids: tuple[int, ...]
  sigma: float = 2.0
  joints_weight: tuple[float, ...] | None = None
  mspn_kernels: tuple[tuple[int, int], ...] = ((15, 15), (11, 11), (9, 9), (7, 7), (5, 5))
  hrnet_aug: augment.HRNetAugment = augment.HRNetAugment()
  mspn_aug: augment.MSPNAugment = augment.MSPNAugment()
  padding: float = 1.25
  target: str | None = None

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f"unknown method {self.method!r}; valid: {METHODS}")
    if self.target_kind not in TARGETS:
      raise ValueError(f"unknown target {self.target!r}; valid: {TARGETS}")

  @property
  def target_kind(self) -> str:
    return self.target or ("gaussian" if self.method == "hrnet" else "mspn")

  @property
  def aspect_ratio(self) -> float:
    return self.input_size[1] / self.input_size[0]


def eval_box(spec: SampleSpec, center: np.ndarray, scale: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
  """The method's evaluation crop from an instance's base box (MSPN adds its test margins)."""
  if spec.method == "hrnet":
    return np.asarray(center, np.float32), np.asarray(scale, np.float32)
  return augment.mspn_test_crop(center, scale, spec.mspn_aug, spec.aspect_ratio)


def _warp(image: np.ndarray, center, scale, rotation: float, spec: SampleSpec):
  h, w = spec.input_size
  trans = transforms.get_affine_transform(center, scale, rotation, (w, h))
  crop = cv2.warpAffine(image, trans, (w, h), flags=cv2.INTER_LINEAR)
  return crop, trans


def train_sample(spec: SampleSpec, instance: Mapping[str, np.ndarray], image: np.ndarray,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
  """One augmented training sample.

  Returns:
    ``image`` uint8 ``[h, w, 3]`` and the targets of ``spec.target_kind``:
    'gaussian': ``target`` float32 ``[hh, hw, K]``, ``target_weight`` float32 ``[K]``;
    'mspn': ``labels`` float32 ``[L, hh, hw, K]``, ``valid`` float32 ``[K]``;
    'coordinates': ``joints`` float32 ``[K, 3]`` integral-regression labels
    ``(x / w - 0.5, y / h - 0.5, 0)`` and ``joints_vis`` float32 ``[K, 3]`` (0 for
    unlabelled joints and for joints the crop cuts off).
  """
  width = image.shape[1]
  joints = np.asarray(instance["keypoints"], np.float32)
  vis_flags = np.asarray(instance["visibility"], np.float32)
  center, scale = instance["center"], instance["scale"]
  if spec.method == "hrnet":
    crop = augment.hrnet_crop(rng, center, scale, joints, np.minimum(vis_flags, 1.0), width,
                              aug=spec.hrnet_aug, aspect_ratio=spec.aspect_ratio,
                              flip_pairs=spec.flip_pairs, upper_body_ids=spec.upper_body_ids)
  else:
    crop = augment.mspn_crop(rng, center, scale, joints, vis_flags, width,
                             aug=spec.mspn_aug, aspect_ratio=spec.aspect_ratio,
                             flip_pairs=spec.flip_pairs, upper_body_ids=spec.upper_body_ids)
  source = image[:, ::-1] if crop.flipped else image
  pixels, trans = _warp(source, crop.center, crop.scale, crop.rotation, spec)
  joints_crop = crop.joints.copy()
  labelled = crop.joints_vis > 0
  if labelled.any():
    joints_crop[labelled] = transforms.affine_transform_points(
        crop.joints[labelled].astype(np.float64), trans).astype(np.float32)
  h, w = spec.input_size
  hh, hw = spec.heatmap_size
  if spec.target_kind == "coordinates":
    inside = ((joints_crop[:, 0] >= 0) & (joints_crop[:, 0] <= w - 1)
              & (joints_crop[:, 1] >= 0) & (joints_crop[:, 1] <= h - 1))
    vis = ((crop.joints_vis > 0) & inside).astype(np.float32)
    xyz = np.concatenate([joints_crop, np.zeros((len(joints_crop), 1), np.float32)], axis=1)
    return {"image": pixels,
            "joints": targets.joint_location_label(xyz, w, h).astype(np.float32),
            "joints_vis": np.repeat(vis[:, None], 3, axis=1)}
  if spec.target_kind == "gaussian":
    weights = None if spec.joints_weight is None else np.asarray(spec.joints_weight, np.float32)[:, None]
    target, target_weight = targets.gaussian_targets(
        joints_crop, np.repeat(crop.joints_vis[:, None], 3, axis=1), (w, h), (hw, hh),
        sigma=spec.sigma, joints_weight=weights)
    return {"image": pixels, "target": target, "target_weight": target_weight[:, 0]}
  labels, valid = targets.mspn_targets(joints_crop, crop.joints_vis[:, None], (h, w), (hh, hw),
                                       kernels=spec.mspn_kernels)
  return {"image": pixels, "labels": labels, "valid": valid[:, 0]}


def eval_sample(spec: SampleSpec, instance: Mapping[str, np.ndarray], image: np.ndarray
                ) -> dict[str, np.ndarray]:
  """One evaluation sample: the un-augmented crop and what decoding needs.

  Returns:
    ``image`` uint8 ``[h, w, 3]``, ``center``/``scale`` float32 ``[2]`` (the crop's, for
    back-projection), ``score`` float32, ``image_id`` int64, ``area`` float64.
  """
  center, scale = eval_box(spec, instance["center"], instance["scale"])
  pixels, _ = _warp(image, center, scale, 0.0, spec)
  return {"image": pixels, "center": center.astype(np.float32),
          "scale": scale.astype(np.float32), "score": np.float32(instance["score"]),
          "image_id": np.int64(instance["image_id"]), "area": np.float64(instance["area"]),
          "annotation_id": np.int64(instance["annotation_id"])}
