"""Top-down 2D pose on whole images: person boxes in, keypoints in image pixels out.

``PosePredictor`` is a thin host-side wrapper around the model's task (the same objects
evaluation uses, so preprocessing and decoding exist once):

* crops: ``jaxpose.data.topdown.base_box`` (the method's box -> centre/scale, HRNet's 1.25
  padding to the crop's aspect ratio) and ``topdown.eval_sample`` (MSPN's test margins,
  the affine warp), on the image in the model's colour order;
* the jitted ``task.predict`` (normalisation, forward, flip test) of the folded model
  (``load_model``), called on batches whose size is a power of two up to ``batch_size``
  (few shapes, few compiles), run as micro-batches on CPUs
  (``jaxpose.models.inference.micro_batched``);
* ``task.decode`` (HRNet's ``get_final_preds``, MSPN's decoding) back to image pixels.
"""
from __future__ import annotations

import dataclasses

import cv2
import jax
import numpy as np
from flax import nnx

from jaxpose import compile_options
from jaxpose.data import topdown
from jaxpose.inference.loading import LoadedModel
from jaxpose.models import inference


@dataclasses.dataclass
class Poses:
  """The people of one image.

  Attributes:
    keypoints: float32 ``[P, K, 2]`` (x, y) image pixels.
    scores: float32 ``[P, K]`` keypoint confidences (the heatmap maxima).
    boxes: float32 ``[P, 4]`` person boxes (x, y, w, h) in pixels.
    box_scores: float32 ``[P]`` detector (or file) scores of the boxes.
    heatmaps: float32 ``[P, hh, hw, K]`` test heatmaps, when asked for.
    centers, scales: float32 ``[P, 2]`` the crops (for drawing heatmaps back).
  """
  keypoints: np.ndarray
  scores: np.ndarray
  boxes: np.ndarray
  box_scores: np.ndarray
  centers: np.ndarray
  scales: np.ndarray
  heatmaps: np.ndarray | None = None

  def __len__(self) -> int:
    return int(self.keypoints.shape[0])

  @classmethod
  def empty(cls, num_keypoints: int) -> "Poses":
    z = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    return cls(z(0, num_keypoints, 2), z(0, num_keypoints), z(0, 4), z(0), z(0, 2), z(0, 2))


@dataclasses.dataclass
class Crops:
  """Model inputs cut from one image: ``images`` uint8 ``[P, h, w, 3]`` (model colour
  order), ``centers``/``scales`` float32 ``[P, 2]``, ``boxes`` ``[P, 4]``, ``box_scores``
  ``[P]``."""
  images: np.ndarray
  centers: np.ndarray
  scales: np.ndarray
  boxes: np.ndarray
  box_scores: np.ndarray

  def __len__(self) -> int:
    return int(self.images.shape[0])


def valid_boxes(boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Drops boxes with a non-positive or non-finite size or position."""
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  scores = np.asarray(scores, np.float32).reshape(-1)
  keep = np.all(np.isfinite(boxes), axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
  return boxes[keep], scores[keep]


class PosePredictor:
  """2D poses of the people in an image, given their boxes (see the module docstring).

  Args:
    loaded: a 2D model from ``jaxpose.inference.load_model``.
    batch_size: most crops per device call.
  """

  def __init__(self, loaded: LoadedModel, batch_size: int = 32):
    if loaded.task is None:
      raise ValueError(f"{loaded.source}: a {loaded.model_config.name} model is not a 2D "
                       "pose model")
    self.loaded = loaded
    self.task = loaded.task
    self.spec: topdown.SampleSpec = loaded.task.spec
    self.keypoint_set = loaded.keypoint_set
    self.batch_size = int(batch_size)
    graphdef, state = nnx.split(loaded.model)
    task = self.task
    self._state = state
    # Micro-batches sized to the CPU caches (measured faster), the whole batch elsewhere.
    self._forward = compile_options.jit(lambda st, x: inference.micro_batched(
        lambda xb: task.predict(nnx.merge(graphdef, st), xb), "auto")(x))

  @property
  def color(self) -> str:
    """Channel order the model takes ('rgb' or 'bgr')."""
    return self.spec.color

  def to_model_colors(self, image_bgr: np.ndarray) -> np.ndarray:
    """An OpenCV (BGR) image in the model's channel order."""
    return image_bgr if self.color == "bgr" else cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)

  def crops(self, image: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray | None = None
            ) -> Crops:
    """Crops of ``boxes`` (x, y, w, h) from ``image`` (uint8 ``[H, W, 3]`` already in
    the model's colour order); empty or non-finite boxes are left out."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.ones(len(boxes), np.float32) if box_scores is None else box_scores
    boxes, scores = valid_boxes(boxes, scores)
    h, w = self.spec.input_size
    images = np.zeros((len(boxes), h, w, 3), np.uint8)
    centers = np.zeros((len(boxes), 2), np.float32)
    scales = np.zeros((len(boxes), 2), np.float32)
    for i, box in enumerate(boxes):
      center, scale = topdown.base_box(self.spec.method, box.astype(np.float64),
                                       self.spec.aspect_ratio, self.spec.padding)
      sample = topdown.eval_sample(self.spec, {
          "center": center, "scale": scale, "score": scores[i], "image_id": 0,
          "area": float(box[2] * box[3]), "annotation_id": -1}, image)
      images[i], centers[i], scales[i] = sample["image"], sample["center"], sample["scale"]
    return Crops(images, centers, scales, boxes, scores)

  def _bucket(self, n: int) -> int:
    size = 1
    while size < n and size < self.batch_size:
      size *= 2
    return min(size, self.batch_size)

  def heatmaps(self, images: np.ndarray) -> np.ndarray:
    """Test heatmaps (flip test as the config says) ``[N, hh, hw, K]`` of uint8 crops
    ``[N, h, w, 3]``, in device calls of at most ``batch_size``."""
    out = []
    for start in range(0, len(images), self.batch_size):
      part = images[start:start + self.batch_size]
      size = self._bucket(len(part))
      padded = np.zeros((size, *part.shape[1:]), np.uint8)
      padded[:len(part)] = part
      out.append(np.asarray(self._forward(self._state, padded))[:len(part)])
    if not out:
      hh, hw = self.spec.heatmap_size
      return np.zeros((0, hh, hw, self.keypoint_set.num_keypoints), np.float32)
    return np.concatenate(out)

  def decode(self, crops: Crops, heatmaps: np.ndarray, keep_heatmaps: bool = False) -> Poses:
    """Keypoints in image pixels of ``crops`` from their ``heatmaps``."""
    if len(crops) == 0:
      return Poses.empty(self.keypoint_set.num_keypoints)
    keypoints, scores = self.task.decode(heatmaps, crops.centers, crops.scales)
    return Poses(np.asarray(keypoints, np.float32), np.asarray(scores, np.float32),
                 crops.boxes, crops.box_scores, crops.centers, crops.scales,
                 np.asarray(heatmaps, np.float32) if keep_heatmaps else None)

  def __call__(self, image_bgr: np.ndarray, boxes: np.ndarray,
               box_scores: np.ndarray | None = None, keep_heatmaps: bool = False) -> Poses:
    """Poses of the people in ``boxes`` of one OpenCV (BGR) image."""
    crops = self.crops(self.to_model_colors(image_bgr), boxes, box_scores)
    return self.decode(crops, self.heatmaps(crops.images), keep_heatmaps)
