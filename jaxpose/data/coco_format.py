"""Reading, validating and writing COCO person-keypoint annotation files.

The COCO keypoint format (``person_keypoints_{train,val}2017.json``) holds three lists:

* ``images``: ``{id, file_name, height, width, ...}``;
* ``annotations``: one person each, ``{id, image_id, category_id, bbox, area, iscrowd,
  keypoints, num_keypoints, segmentation}``. ``bbox`` is ``[x, y, width, height]`` in
  pixels (the tight box of the segmentation), ``area`` the segmentation's pixel area,
  ``keypoints`` ``K`` flat ``(x, y, v)`` triplets with ``v`` 0 = not labelled (then
  ``x = y = 0``), 1 = labelled but not visible, 2 = labelled and visible;
* ``categories``: the person category with its keypoint names and 1-based skeleton.

This module turns such a file into one :class:`ImageRecord` per image (images without
annotations included, crowd annotations and annotations without keypoints kept), raising
:class:`CocoFormatError` (a ``ValueError``) that names the file and the offending image or
annotation id when something is malformed. It also rebuilds a COCO ground-truth dict from
decoded dataset examples (:func:`ground_truth_from_examples`) so that pycocotools can
evaluate on data read back from TFDS.

Plain Python/numpy: no TensorFlow, usable in data-loader workers.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxpose import fileio
from jaxpose.data.keypoints import COCO_KEYPOINT_NAMES, COCO_SKELETON

PERSON_CATEGORY_ID = 1
"""``category_id`` of the person category in COCO (and in every file written here)."""


class CocoFormatError(ValueError):
  """A COCO annotation file is malformed; the message names the file and the entry."""


def person_category(
    keypoint_names: Sequence[str] = COCO_KEYPOINT_NAMES,
    skeleton: Sequence[Sequence[int]] = COCO_SKELETON,
) -> dict[str, Any]:
  """The COCO person category entry.

  Args:
    keypoint_names: the ``K`` keypoint names, in order.
    skeleton: limbs as pairs of 0-based keypoint indices.

  Returns:
    ``{'supercategory', 'id', 'name', 'keypoints', 'skeleton'}`` with the skeleton
    1-based as in the COCO files.
  """
  return {
      "supercategory": "person",
      "id": PERSON_CATEGORY_ID,
      "name": "person",
      "keypoints": list(keypoint_names),
      "skeleton": [[int(a) + 1, int(b) + 1] for a, b in skeleton],
  }


@dataclasses.dataclass(frozen=True)
class PersonAnnotation:
  """One COCO person annotation.

  Attributes:
    id: annotation id.
    bbox: float64 ``[4]``: ``x, y, width, height`` in pixels.
    keypoints: float64 ``[K, 2]``: ``x, y`` in pixels (0 where not labelled).
    visibility: int32 ``[K]``: 0 not labelled, 1 labelled but occluded, 2 visible.
    num_keypoints: the file's ``num_keypoints`` (number of labelled keypoints).
    area: segmentation area in square pixels.
    iscrowd: whether the annotation marks a crowd region.
  """

  id: int
  bbox: np.ndarray
  keypoints: np.ndarray
  visibility: np.ndarray
  num_keypoints: int
  area: float
  iscrowd: bool


@dataclasses.dataclass(frozen=True)
class ImageRecord:
  """An image of a COCO file with all its person annotations.

  Attributes:
    id: image id.
    file_name: file name relative to the split's image folder.
    height: image height in pixels.
    width: image width in pixels.
    persons: the image's annotations in file order (may be empty).
  """

  id: int
  file_name: str
  height: int
  width: int
  persons: tuple[PersonAnnotation, ...]


def load_person_keypoints(
    path: str | os.PathLike, num_keypoints: int = len(COCO_KEYPOINT_NAMES)
) -> list[ImageRecord]:
  """Reads and validates a COCO person-keypoints annotation file.

  Args:
    path: the JSON file (e.g. ``annotations/person_keypoints_val2017.json``).
    num_keypoints: ``K``, the number of keypoints each annotation must carry.

  Returns:
    One record per entry of ``images``, in file order.

  Raises:
    CocoFormatError: the file is not JSON or an entry is malformed (the message names
      the file and the image or annotation id).
  """
  source = os.fspath(path)
  data = fileio.read_json(source, error=CocoFormatError)
  return parse_person_keypoints(data, source=source, num_keypoints=num_keypoints)


def parse_person_keypoints(
    data: Mapping[str, Any], source: str = "<memory>",
    num_keypoints: int = len(COCO_KEYPOINT_NAMES)
) -> list[ImageRecord]:
  """Validates a decoded COCO person-keypoints dict and groups annotations per image.

  Args:
    data: the decoded JSON (``images``, ``annotations``, ``categories``).
    source: where ``data`` came from, used in error messages.
    num_keypoints: ``K``, the number of keypoints each annotation must carry.

  Returns:
    One record per entry of ``images``, in file order.

  Raises:
    CocoFormatError: a required list or field is missing or has a wrong value.
  """
  if not isinstance(data, Mapping):
    raise CocoFormatError(f"{source}: top level must be a JSON object, got {type(data).__name__}")
  for key in ("images", "annotations", "categories"):
    if not isinstance(data.get(key), list):
      raise CocoFormatError(f"{source}: missing the list {key!r}")
  person_id = _person_category_id(data["categories"], source, num_keypoints)

  images: dict[int, dict[str, Any]] = {}
  for index, image in enumerate(data["images"]):
    image_id, file_name, height, width = _check_image(image, index, source)
    if image_id in images:
      raise CocoFormatError(f"{source}: image id {image_id} appears twice in 'images'")
    images[image_id] = {"file_name": file_name, "height": height, "width": width,
                        "persons": []}

  seen_ids: set[int] = set()
  for index, ann in enumerate(data["annotations"]):
    person, image_id = _check_annotation(ann, index, source, num_keypoints, person_id)
    if person.id in seen_ids:
      raise CocoFormatError(f"{source}: annotation id {person.id} appears twice")
    seen_ids.add(person.id)
    if image_id not in images:
      raise CocoFormatError(
          f"{source}: annotation id {person.id} refers to image id {image_id}, "
          "which is not in 'images'")
    images[image_id]["persons"].append(person)

  return [
      ImageRecord(id=image_id, file_name=v["file_name"], height=v["height"],
                  width=v["width"], persons=tuple(v["persons"]))
      for image_id, v in images.items()
  ]


def _person_category_id(categories: list[Any], source: str, num_keypoints: int) -> int:
  for cat in categories:
    if isinstance(cat, Mapping) and cat.get("name") == "person":
      names = cat.get("keypoints")
      if names is not None and len(names) != num_keypoints:
        raise CocoFormatError(
            f"{source}: the person category lists {len(names)} keypoint names, "
            f"expected {num_keypoints}")
      return _as_int(cat.get("id"), f"{source}: person category 'id'")
  raise CocoFormatError(f"{source}: 'categories' has no entry named 'person'")


def _as_int(value: Any, where: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or (
      isinstance(value, float) and not value.is_integer()):
    raise CocoFormatError(f"{where} must be an integer, got {value!r}")
  return int(value)


def _as_float(value: Any, where: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise CocoFormatError(f"{where} must be a finite number, got {value!r}")
  return float(value)


def _check_image(image: Any, index: int, source: str) -> tuple[int, str, int, int]:
  if not isinstance(image, Mapping):
    raise CocoFormatError(f"{source}: images[{index}] is not an object")
  if "id" not in image:
    raise CocoFormatError(f"{source}: images[{index}] has no 'id'")
  image_id = _as_int(image["id"], f"{source}: images[{index}] 'id'")
  where = f"{source}: image id {image_id}"
  for key in ("file_name", "height", "width"):
    if key not in image:
      raise CocoFormatError(f"{where}: missing field {key!r}")
  file_name = image["file_name"]
  if not isinstance(file_name, str) or not file_name:
    raise CocoFormatError(f"{where}: 'file_name' must be a non-empty string, got {file_name!r}")
  height = _as_int(image["height"], f"{where}: 'height'")
  width = _as_int(image["width"], f"{where}: 'width'")
  if height <= 0 or width <= 0:
    raise CocoFormatError(f"{where}: image size {width}x{height} must be positive")
  return image_id, file_name, height, width


def _check_annotation(ann: Any, index: int, source: str, num_keypoints: int,
                      person_id: int) -> tuple[PersonAnnotation, int]:
  if not isinstance(ann, Mapping):
    raise CocoFormatError(f"{source}: annotations[{index}] is not an object")
  if "id" not in ann:
    raise CocoFormatError(f"{source}: annotations[{index}] has no 'id'")
  ann_id = _as_int(ann["id"], f"{source}: annotations[{index}] 'id'")
  where = f"{source}: annotation id {ann_id}"
  iscrowd = _as_int(ann.get("iscrowd", 0), f"{where}: 'iscrowd'")
  if iscrowd not in (0, 1):
    raise CocoFormatError(f"{where}: 'iscrowd' must be 0 or 1, got {iscrowd}")
  required = ["image_id", "category_id", "bbox", "area"]
  if not iscrowd:  # Crowd regions may come without keypoints: they label none.
    required += ["keypoints", "num_keypoints"]
  for key in required:
    if key not in ann:
      raise CocoFormatError(f"{where}: missing field {key!r}")
  image_id = _as_int(ann["image_id"], f"{where}: 'image_id'")
  category_id = _as_int(ann["category_id"], f"{where}: 'category_id'")
  if category_id != person_id:
    raise CocoFormatError(
        f"{where}: category_id {category_id} is not the person category ({person_id})")

  bbox = ann["bbox"]
  if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
    raise CocoFormatError(f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}")
  box = np.array([_as_float(b, f"{where}: 'bbox'") for b in bbox], np.float64)
  if box[2] < 0 or box[3] < 0:
    raise CocoFormatError(f"{where}: 'bbox' has a negative size {bbox!r}")
  area = _as_float(ann["area"], f"{where}: 'area'")
  if area < 0:
    raise CocoFormatError(f"{where}: 'area' is negative ({area})")

  flat = ann.get("keypoints", [0] * (3 * num_keypoints))
  if not isinstance(flat, (list, tuple)) or len(flat) != 3 * num_keypoints:
    got = len(flat) if isinstance(flat, (list, tuple)) else repr(flat)
    raise CocoFormatError(
        f"{where}: 'keypoints' must hold {3 * num_keypoints} numbers "
        f"({num_keypoints} x (x, y, v)), got {got}")
  values = np.array([_as_float(v, f"{where}: 'keypoints'") for v in flat], np.float64)
  values = values.reshape(num_keypoints, 3)
  vis = values[:, 2]
  if not np.all(np.isin(vis, (0.0, 1.0, 2.0))):
    raise CocoFormatError(
        f"{where}: keypoint visibility flags must be 0, 1 or 2, got {vis.tolist()}")
  count = _as_int(ann.get("num_keypoints", 0), f"{where}: 'num_keypoints'")
  if not 0 <= count <= num_keypoints:
    raise CocoFormatError(f"{where}: 'num_keypoints' {count} is outside [0, {num_keypoints}]")

  person = PersonAnnotation(
      id=ann_id, bbox=box, keypoints=values[:, :2].copy(),
      visibility=vis.astype(np.int32), num_keypoints=count, area=area,
      iscrowd=bool(iscrowd))
  return person, image_id


def ground_truth_from_examples(
    examples: Iterable[Mapping[str, Any]],
    keypoint_names: Sequence[str] = COCO_KEYPOINT_NAMES,
    skeleton: Sequence[Sequence[int]] = COCO_SKELETON,
) -> dict[str, Any]:
  """Rebuilds a COCO ground-truth dict from decoded ``coco_keypoints`` examples.

  Everything pycocotools' keypoint evaluation reads is restored (ids, image sizes, boxes,
  areas, crowd flags, keypoints, ``num_keypoints``); segmentations are not stored in the
  dataset and are left out.

  Args:
    examples: decoded examples (numpy) with ``image/id``, ``image/height``,
      ``image/width``, ``image/filename`` and ``objects`` (``id``, ``bbox`` ``[N, 4]``,
      ``area``, ``iscrowd``, ``num_keypoints``, ``keypoints`` ``[N, K, 2]``,
      ``keypoint_visibility`` ``[N, K]``). The image itself is not needed.
    keypoint_names: the ``K`` keypoint names of the category entry.
    skeleton: 0-based limbs of the category entry.

  Returns:
    ``{'images', 'annotations', 'categories'}``, loadable by ``pycocotools.coco.COCO``
    (assign it to ``coco.dataset`` and call ``coco.createIndex()``).
  """
  images, annotations = [], []
  for ex in examples:
    image_id = int(ex["image/id"])
    file_name = ex["image/filename"]
    if isinstance(file_name, bytes):
      file_name = file_name.decode("utf-8")
    images.append({"id": image_id, "file_name": str(file_name),
                   "height": int(ex["image/height"]), "width": int(ex["image/width"])})
    obj = ex["objects"]
    for i in range(len(obj["id"])):
      kpts = np.concatenate(
          [np.asarray(obj["keypoints"][i], np.float64),
           np.asarray(obj["keypoint_visibility"][i], np.float64)[:, None]], axis=1)
      annotations.append({
          "id": int(obj["id"][i]),
          "image_id": image_id,
          "category_id": PERSON_CATEGORY_ID,
          "bbox": [float(v) for v in obj["bbox"][i]],
          "area": float(obj["area"][i]),
          "iscrowd": int(bool(obj["iscrowd"][i])),
          "num_keypoints": int(obj["num_keypoints"][i]),
          "keypoints": [float(v) for v in kpts.reshape(-1)],
      })
  return {"images": images, "annotations": annotations,
          "categories": [person_category(keypoint_names, skeleton)]}
