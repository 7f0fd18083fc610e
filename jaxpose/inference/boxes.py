"""Where the person boxes of top-down inference come from.

In the order of preference of ``jaxpose predict --boxes``:

1. ``FileBoxes``: a JSON file of boxes. Either a COCO detection-results list (what HRNet
   and MSPN use for their published numbers: ``{"image_id", "category_id", "bbox": [x, y,
   w, h], "score"}``; non-person categories are dropped) whose entries name their image by
   ``image_id`` or by ``file_name`` (plus ``frame`` for a video, as ``jaxpose predict``
   writes them), or a dict from an input's file name to its boxes: ``{"a.jpg": [[x, y, w,
   h, score], ...]}`` for an image, ``{"clip.mp4": [[[x, y, w, h, score], ...], ...]}``
   (one list per frame) or ``{"clip.mp4": {"12": [[...]]}}`` for a video; the score is
   optional (1).
2. ``whole_image_boxes``: the whole image or frame is one person (the originals' demos).
3. A ``Detector``: any callable ``BGR image [H, W, 3] -> (boxes [M, 4] xywh, scores
   [M])``. ``HOGPersonDetector`` ships with OpenCV and needs no download; it finds
   upright, mostly unoccluded people (see README for its measured precision and recall).
   Plug in a better one by passing it to ``jaxpose.inference.run`` (or boxes).

Image ids: a COCO file names images by id. ``image_ids`` numbers the image inputs: by
their file stem when every stem is a distinct integer (COCO's ``000000397133.jpg`` is
397133), else 1, 2, ... in input order.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from jaxpose import fileio
from jaxpose.inference.media import MediaItem, media_kind

PERSON_CATEGORY_ID = 1

Detector = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``BGR uint8 [H, W, 3] -> (boxes float32 [M, 4] (x, y, w, h) pixels, scores float32 [M])``."""

Boxes = tuple[np.ndarray, np.ndarray]


class DetectorUnavailableError(RuntimeError):
  """The detector cannot run with the installed libraries (one line: why, what instead)."""


class BoxFileError(ValueError):
  """A malformed box file (names the file and the entry)."""


def no_boxes() -> Boxes:
  return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)


def whole_image_boxes(image: np.ndarray) -> Boxes:
  """The whole image as one person box ``[0, 0, W, H]`` with score 1."""
  h, w = image.shape[:2]
  return np.array([[0, 0, w, h]], np.float32), np.ones(1, np.float32)


def image_ids(items: Sequence[MediaItem]) -> dict[str, int]:
  """``name -> image id`` of the image inputs (see the module docstring)."""
  names = [it.name for it in items if it.kind == "image"]
  stems = [os.path.splitext(n)[0] for n in names]
  if stems and all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
    return {n: int(s) for n, s in zip(names, stems)}
  return {n: i + 1 for i, n in enumerate(names)}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU matrix ``[M, N]`` of boxes ``a`` ``[M, 4]`` and ``b`` ``[N, 4]`` (x, y, w, h)."""
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  x0 = np.maximum(a[:, None, 0], b[None, :, 0])
  y0 = np.maximum(a[:, None, 1], b[None, :, 1])
  x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
  y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
  inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
  union = (a[:, None, 2] * a[:, None, 3]) + (b[None, :, 2] * b[None, :, 3]) - inter
  return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
  """Indices of the boxes kept by greedy non-maximum suppression, best first."""
  order = np.argsort(-np.asarray(scores), kind="stable")
  iou = box_iou(boxes, boxes)
  keep: list[int] = []
  for i in order:
    if all(iou[i, j] <= iou_threshold for j in keep):
      keep.append(int(i))
  return np.asarray(keep, np.int64)


# ----------------------------------------------------------------------------------------
# Box files
# ----------------------------------------------------------------------------------------


def _box_rows(value: Any, where: str) -> Boxes:
  """``[[x, y, w, h(, score)], ...]`` -> (boxes, scores), every value checked."""
  if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
    raise BoxFileError(f"{where}: expected a list of [x, y, w, h(, score)] boxes")
  boxes, scores = [], []
  for i, row in enumerate(value):
    if (not isinstance(row, Sequence) or isinstance(row, (str, bytes))
        or len(row) not in (4, 5)):
      raise BoxFileError(f"{where}: box {i} must be [x, y, w, h] or [x, y, w, h, score], "
                         f"got {row!r}")
    try:
      numbers = [float(v) for v in row]
    except (TypeError, ValueError):
      raise BoxFileError(f"{where}: box {i} holds a non-number: {row!r}") from None
    if not np.all(np.isfinite(numbers)):
      raise BoxFileError(f"{where}: box {i} holds NaN or inf: {row!r}")
    boxes.append(numbers[:4])
    scores.append(numbers[4] if len(numbers) == 5 else 1.0)
  if not boxes:
    return no_boxes()
  return np.asarray(boxes, np.float32), np.asarray(scores, np.float32)


@dataclasses.dataclass
class FileBoxes:
  """Boxes read from a JSON file (see the module docstring).

  Attributes:
    path: the file.
    by_id: image id -> boxes (COCO results entries with ``image_id``).
    by_name: (file name, frame or None) -> boxes.
  """
  path: str
  by_id: dict[int, Boxes]
  by_name: dict[tuple[str, int | None], Boxes]
  names: set[str]

  @classmethod
  def load(cls, path: str) -> "FileBoxes":
    data = fileio.read_json(path, BoxFileError)
    if isinstance(data, Mapping):
      return cls._from_dict(path, data)
    if isinstance(data, list):
      return cls._from_results(path, data)
    raise BoxFileError(f"{path}: expected a COCO results list or a dict of file name -> "
                       f"boxes, got {type(data).__name__}")

  @classmethod
  def _from_results(cls, path: str, entries: list) -> "FileBoxes":
    rows_id: dict[int, list] = {}
    rows_name: dict[tuple[str, int | None], list] = {}
    for i, e in enumerate(entries):
      where = f"{path}: entry {i}"
      if not isinstance(e, Mapping) or "bbox" not in e:
        raise BoxFileError(f"{where}: expected a dict with 'bbox'")
      if int(e.get("category_id", PERSON_CATEGORY_ID)) != PERSON_CATEGORY_ID:
        continue
      row = list(e["bbox"]) + [e.get("score", 1.0)]
      if "file_name" in e:
        frame = e.get("frame")
        key = (os.path.basename(str(e["file_name"])), None if frame is None else int(frame))
        rows_name.setdefault(key, []).append(row)
      elif "image_id" in e:
        rows_id.setdefault(int(e["image_id"]), []).append(row)
      else:
        raise BoxFileError(f"{where}: names no image ('image_id' or 'file_name')")
    by_id = {k: _box_rows(v, f"{path}: image_id {k}") for k, v in rows_id.items()}
    by_name = {k: _box_rows(v, f"{path}: {k[0]}") for k, v in rows_name.items()}
    return cls(path, by_id, by_name, {k[0] for k in by_name})

  @classmethod
  def _from_dict(cls, path: str, data: Mapping) -> "FileBoxes":
    by_name: dict[tuple[str, int | None], Boxes] = {}
    for name, value in data.items():
      base = os.path.basename(str(name))
      where = f"{path}: {name}"
      if isinstance(value, Mapping):  # a video: {frame: boxes}
        for frame, rows in value.items():
          if not str(frame).lstrip("-").isdigit():
            raise BoxFileError(f"{where}: frame keys must be integers, got {frame!r}")
          by_name[(base, int(frame))] = _box_rows(rows, f"{where} frame {frame}")
      elif media_kind(base) == "video":  # a video: one list of boxes per frame
        if not isinstance(value, list):
          raise BoxFileError(f"{where}: a video's boxes are a list with one list per frame "
                             "or a dict frame -> boxes")
        for frame, rows in enumerate(value):
          by_name[(base, frame)] = _box_rows(rows, f"{where} frame {frame}")
      else:
        by_name[(base, None)] = _box_rows(value, where)
    return cls(path, {}, by_name, {k[0] for k in by_name})

  def covers(self, item: MediaItem, image_id: int | None) -> bool:
    """Whether the file has an entry for this input at all."""
    base = os.path.basename(item.path)
    return base in self.names or item.name in self.names or (
        image_id is not None and image_id in self.by_id)

  def boxes(self, item: MediaItem, image_id: int | None = None, frame: int | None = None
            ) -> Boxes:
    """Boxes of an image (``frame`` None) or of one video frame; none if not listed."""
    for name in (item.name, os.path.basename(item.path)):
      if (name, frame) in self.by_name:
        return self.by_name[(name, frame)]
    if frame is None and image_id is not None and image_id in self.by_id:
      return self.by_id[image_id]
    return no_boxes()


# ----------------------------------------------------------------------------------------
# A detector that ships with OpenCV
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class HOGPersonDetector:
  """OpenCV's HOG + linear SVM people detector (Dalal & Triggs; no download).

  It was trained on upright pedestrians in 64x128 windows: it misses people smaller than
  about ``128 / upscale`` pixels, sitting, lying, strongly foreshortened or heavily
  occluded people, and its boxes carry a margin around the body (``shrink`` trims it).

  Attributes:
    upscale: images are enlarged by this factor first, so smaller people fit the window.
    hit_threshold: SVM score threshold (higher: fewer, surer boxes).
    win_stride: window step in pixels.
    scale: pyramid step.
    shrink: (width, height) factors applied to each box about its centre.
    nms_iou: overlapping boxes above this IoU are merged (greedy NMS).
  """
  upscale: float = 2.0
  hit_threshold: float = 0.0
  win_stride: int = 8
  scale: float = 1.05
  shrink: tuple[float, float] = (1.0, 1.0)
  nms_iou: float = 0.4

  def __post_init__(self):
    if not hasattr(cv2, "HOGDescriptor"):
      raise DetectorUnavailableError(
          f"OpenCV {cv2.__version__} has no HOG people detector (OpenCV 5 moved it out of "
          "the main package; opencv-python-headless<5 has it): pass --boxes FILE.json or "
          "--boxes whole, or plug in a detector (jaxpose.inference.boxes.Detector)")
    self._hog = cv2.HOGDescriptor()
    self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

  def __call__(self, image: np.ndarray) -> Boxes:
    h, w = image.shape[:2]
    big = cv2.resize(image, (int(round(w * self.upscale)), int(round(h * self.upscale))),
                     interpolation=cv2.INTER_LINEAR) if self.upscale != 1 else image
    rects, weights = self._hog.detectMultiScale(
        big, hitThreshold=self.hit_threshold, winStride=(self.win_stride, self.win_stride),
        padding=(8, 8), scale=self.scale)
    if len(rects) == 0:
      return no_boxes()
    boxes = np.asarray(rects, np.float32).reshape(-1, 4) / self.upscale
    scores = np.asarray(weights, np.float32).reshape(-1)
    sw, sh = self.shrink
    cx, cy = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    boxes = np.stack([cx - boxes[:, 2] * sw / 2, cy - boxes[:, 3] * sh / 2,
                      boxes[:, 2] * sw, boxes[:, 3] * sh], axis=1)
    keep = nms(boxes, scores, self.nms_iou)
    boxes, scores = boxes[keep], scores[keep]
    x0 = np.clip(boxes[:, 0], 0, w)
    y0 = np.clip(boxes[:, 1], 0, h)
    x1 = np.clip(boxes[:, 0] + boxes[:, 2], 0, w)
    y1 = np.clip(boxes[:, 1] + boxes[:, 3], 0, h)
    out = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.float32)
    ok = (out[:, 2] > 1) & (out[:, 3] > 1)
    # SVM margins -> a (0, 1) confidence for the COCO score field.
    return out[ok], (1.0 / (1.0 + np.exp(-scores[ok]))).astype(np.float32)
