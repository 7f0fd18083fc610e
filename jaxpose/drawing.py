"""Pictures of poses: 2D skeletons on images, heatmap overlays, 3D skeletons.

Colours follow the keypoint set's own structure (``KeypointSet.flip_pairs``), so COCO,
MPII and Human3.6M skeletons are coloured alike without a table per dataset: the
person's left limbs in orange, right limbs in blue, centre limbs (head, torso, spine) in
green (RGB). Functions take the image's channel order (``bgr=True`` for OpenCV images).

Used by the training summaries (``jaxpose.train.summary``: validation crops) and by
``jaxpose predict`` (``--draw``, ``--heatmaps``, the 2D + 3D side-by-side of ``--lift``).
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

LEFT, RIGHT, CENTRE = (255, 128, 0), (0, 128, 255), (0, 200, 0)  # RGB
BOX = (255, 255, 0)


def _side_colour(joints: Sequence[int], left: set[int], right: set[int]) -> tuple[int, int, int]:
  if all(j in left for j in joints):
    return LEFT
  if all(j in right for j in joints):
    return RIGHT
  return CENTRE


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                  skeleton: Sequence[Sequence[int]], flip_pairs: Sequence[Sequence[int]] = (),
                  threshold: float = 0.2, radius: int = 2, thickness: int = 1,
                  bgr: bool = False) -> np.ndarray:
  """A copy of ``image`` (uint8 ``[H, W, 3]``) with the keypoints and limbs drawn.

  Args:
    image: the picture to draw on (RGB, or BGR with ``bgr=True``).
    keypoints: ``[K, 2]`` (x, y) in the image's pixels.
    scores: ``[K]`` confidences; keypoints scoring below ``threshold`` are not drawn.
    skeleton: limbs as 0-based keypoint index pairs.
    flip_pairs: left/right pairs: left (first) and right (second) joints are coloured
      differently.
    radius, thickness: joint disc radius and limb width in pixels.
  """
  out = np.ascontiguousarray(image.copy())
  left = {p[0] for p in flip_pairs}
  right = {p[1] for p in flip_pairs}
  order = (lambda c: c[::-1]) if bgr else (lambda c: c)  # noqa: E731
  pts = [tuple(int(round(v)) for v in p) for p in np.nan_to_num(np.asarray(keypoints))[:, :2]]
  for a, b in skeleton:
    if scores[a] >= threshold and scores[b] >= threshold:
      cv2.line(out, pts[a], pts[b], order(_side_colour((a, b), left, right)), thickness,
               cv2.LINE_AA)
  for j, p in enumerate(pts):
    if scores[j] >= threshold:
      cv2.circle(out, p, radius, order(_side_colour((j,), left, right)), -1, cv2.LINE_AA)
  return out


def draw_people(image_bgr: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                skeleton: Sequence[Sequence[int]], flip_pairs: Sequence[Sequence[int]],
                boxes: np.ndarray | None = None, threshold: float = 0.2,
                labels: Sequence[str] | None = None) -> np.ndarray:
  """Every person's skeleton (and box) on a BGR image; line widths grow with its size.

  Args:
    keypoints: ``[P, K, 2]`` pixels; scores ``[P, K]``; boxes ``[P, 4]`` (x, y, w, h).
    labels: optional text per person (e.g. its track id), drawn at the box corner.
  """
  size = max(image_bgr.shape[:2])
  thickness = max(1, int(round(size / 320)))
  radius = max(2, int(round(size / 200)))
  out = np.ascontiguousarray(image_bgr.copy())
  for p in range(len(keypoints)):
    if boxes is not None:
      x, y, w, h = (int(round(v)) for v in boxes[p])
      cv2.rectangle(out, (x, y), (x + w, y + h), BOX[::-1], thickness, cv2.LINE_AA)
      if labels is not None:
        cv2.putText(out, str(labels[p]), (x + 2, y + 12 * thickness), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thickness, BOX[::-1], thickness, cv2.LINE_AA)
    out = draw_skeleton(out, keypoints[p], scores[p], skeleton, flip_pairs, threshold, radius,
                        thickness, bgr=True)
  return out


def heatmap_overlay(image_bgr: np.ndarray, heatmaps: np.ndarray, center: np.ndarray,
                    scale: np.ndarray, input_size: tuple[int, int], alpha: float = 0.5
                    ) -> np.ndarray:
  """One person's heatmaps (maximum over joints) warped back onto the image, JET colours.

  Args:
    heatmaps: ``[hh, hw, K]`` the person's test heatmaps.
    center, scale: the crop they were computed on (``[2]``, HRNet's centre/scale).
    input_size: (h, w) of the model's crop.
  """
  from jaxpose.data import transforms
  h, w = input_size
  peak = np.max(heatmaps, axis=-1).astype(np.float32)
  peak = np.clip(peak / max(float(peak.max()), 1e-6), 0, 1)
  crop = cv2.resize(peak, (w, h), interpolation=cv2.INTER_LINEAR)
  inverse = transforms.get_affine_transform(center, scale, 0, (w, h), inv=True)
  size = (image_bgr.shape[1], image_bgr.shape[0])
  warped = cv2.warpAffine(crop, inverse, size, flags=cv2.INTER_LINEAR)
  inside = cv2.warpAffine(np.ones((h, w), np.float32), inverse, size, flags=cv2.INTER_NEAREST)
  colours = cv2.applyColorMap((warped * 255).astype(np.uint8), cv2.COLORMAP_JET)
  weight = (alpha * inside)[..., None]
  return (image_bgr * (1 - weight) + colours * weight).astype(np.uint8)


class Skeleton3DRenderer:
  """3D skeletons drawn with matplotlib's 3D axes at a fixed view (as VideoPose3D's
  ``render_animation``): the pose is centred on its root, right limbs red, others black.

  Args:
    parents: ``[J]`` parent joint per joint (-1 for the root).
    joints_right: joints drawn red.
    size_px: side of the square picture in pixels.
    elev, azim: the view (VideoPose3D: elevation 15, the camera's azimuth, 70 for its
      in-the-wild setting).
    radius: half-width of the shown cube (in the poses' units).
    title: axes title.
  """

  def __init__(self, parents: Sequence[int], joints_right: Sequence[int], size_px: int = 360,
               elev: float = 15.0, azim: float = 70.0, radius: float = 0.85,
               title: str = "3D"):
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    self.parents = [int(p) for p in parents]
    self.radius = float(radius)
    dpi = 100
    self.figure = Figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
    self.canvas = FigureCanvasAgg(self.figure)
    self.ax = self.figure.add_subplot(1, 1, 1, projection="3d")
    self.ax.view_init(elev=elev, azim=azim)
    self.ax.set_title(title)
    for setter in (self.ax.set_xticklabels, self.ax.set_yticklabels, self.ax.set_zticklabels):
      setter([])
    right = set(int(j) for j in joints_right)
    self.lines = []
    for j, p in enumerate(self.parents):
      if p < 0:
        continue
      (line,) = self.ax.plot([0, 0], [0, 0], [0, 0], c="red" if j in right else "black")
      self.lines.append((j, p, line))

  def render(self, pose: np.ndarray) -> np.ndarray:
    """BGR ``uint8 [size, size, 3]`` of one pose ``[J, 3]`` (x right, y forward, z up)."""
    pose = np.asarray(pose, np.float64)
    root = pose[0]
    r = self.radius
    self.ax.set_xlim3d([root[0] - r, root[0] + r])
    self.ax.set_ylim3d([root[1] - r, root[1] + r])
    self.ax.set_zlim3d([root[2] - r, root[2] + r])
    for j, p, line in self.lines:
      line.set_data_3d([pose[j, 0], pose[p, 0]], [pose[j, 1], pose[p, 1]],
                       [pose[j, 2], pose[p, 2]])
    self.canvas.draw()
    rgba = np.asarray(self.canvas.buffer_rgba())
    return cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR)


def side_by_side(left_bgr: np.ndarray, right_bgr: np.ndarray) -> np.ndarray:
  """Two pictures next to each other, the right one scaled to the left one's height."""
  h = left_bgr.shape[0]
  scale = h / right_bgr.shape[0]
  right = cv2.resize(right_bgr, (max(1, int(round(right_bgr.shape[1] * scale))), h))
  return np.concatenate([left_bgr, right], axis=1)
