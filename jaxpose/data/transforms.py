"""Crop geometry of the top-down 2D pose pipelines (HRNet, SimpleBaseline, MSPN).

A person box is described by a ``center`` (x, y) in image pixels and a ``scale`` = box
size (w, h) / ``pixel_std`` (200). ``get_affine_transform`` maps that box onto an
``output_size`` crop with the semantics of the original ``get_affine_transform``
(``lib/utils/transforms.py`` in deep-high-resolution-net.pytorch; MSPN's copy is the same
with ``output_size`` given as (h, w) and no ``shift``):

* the map is a similarity (rotation + uniform scale ``output_w / (scale[0] * 200)``); only
  the box *width* sets the scale, the crop's aspect ratio comes from ``output_size``;
* ``center`` maps to ``(output_w / 2, output_h / 2)``, with no half-pixel offset;
* the three construction points are float32, so the float64 matrix that OpenCV solves for
  carries their float32 rounding. jaxpose reproduces that bit for bit.

Coordinates are (x, y) pixels throughout; images are ``[H, W]`` or ``[H, W, C]``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from jaxpose.data.keypoints import flip_permutation

PIXEL_STD = 200.0

ArrayLike = np.ndarray | Sequence[float] | float


def _pair(value, what: str, dtype=None) -> np.ndarray:
  """A (2,) array; a numpy array keeps its dtype (it decides the original's arithmetic)."""
  arr = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=dtype)
  if arr.shape != (2,):
    raise ValueError(f"{what} must have shape (2,), got {arr.shape}")
  if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
    raise ValueError(f"{what} must be finite numbers, got {arr!r}")
  return arr


def _scale_pair(scale: ArrayLike) -> np.ndarray:
  """``scale`` as (2,) (w, h); a scalar means a square box, as in the original."""
  if np.ndim(scale) == 0:
    scalar = scale if isinstance(scale, np.generic) else np.asarray(scale)
    scale = np.array([scalar, scalar], dtype=np.asarray(scalar).dtype)
  scale = _pair(scale, "scale")
  if not np.all(scale > 0):
    raise ValueError(f"scale (box size / {PIXEL_STD:g}) must be positive, got {scale}")
  return scale


def _output_size(output_size: Sequence[int]) -> tuple[int, int]:
  size = np.asarray(output_size)
  if size.shape != (2,) or not np.all(np.isfinite(size)):
    raise ValueError(f"output_size must be (width, height), got {output_size!r}")
  width, height = int(size[0]), int(size[1])
  if width <= 0 or height <= 0 or width != size[0] or height != size[1]:
    raise ValueError(f"output_size must be positive integers (width, height), got {output_size!r}")
  return width, height


def _perpendicular_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """``b`` plus ``a - b`` rotated by +90 degrees, in float32 (the original's third point)."""
  d = a - b
  return b + np.array([-d[1], d[0]], dtype=np.float32)


def get_affine_transform(center: ArrayLike,
                         scale: ArrayLike,
                         rot: float,
                         output_size: Sequence[int],
                         shift: ArrayLike = (0.0, 0.0),
                         inv: bool = False,
                         pixel_std: float = PIXEL_STD) -> np.ndarray:
  """Affine map between a rotated person box and the network's crop.

  Args:
    center: (2,) box center (x, y) in image pixels. A numpy array keeps its dtype (the
      originals pass float32), other sequences become float64.
    scale: (2,) box size (w, h) / 200, or a scalar for a square box. Only ``scale[0]``
      sets the mapping.
    rot: rotation in degrees (counter-clockwise in the image as displayed, i.e. the crop
      shows the image rotated by ``rot``).
    output_size: (width, height) of the crop in pixels.
    shift: (2,) offset of the box center in units of the box size; float32 unless an
      array of another dtype is given (every caller of the original passes zeros).
    inv: if True return the inverse map (crop -> image).
    pixel_std: the unit of ``scale`` in pixels (200; pytorch-pose-hg-3d's copy takes the
      box size in pixels: pass 1).

  Returns:
    float64 ``[2, 3]`` matrix ``T`` with ``[x', y'] = T @ [x, y, 1]``: image -> crop, or
    crop -> image when ``inv``.

  Raises:
    ValueError: on a wrong shape, a non-finite value, a non-positive scale or size.
  """
  center = _pair(center, "center", np.float64)
  scale = _scale_pair(scale)
  if isinstance(shift, np.ndarray):
    shift = _pair(shift, "shift")
  else:
    shift = _pair(shift, "shift", np.float32)
  rot = float(rot)
  if not math.isfinite(rot):
    raise ValueError(f"rot must be a finite angle in degrees, got {rot}")
  dst_w, dst_h = _output_size(output_size)

  box_px = scale * pixel_std  # keeps float32 for float32 scales
  offset = box_px * shift
  half_w = box_px[0] * -0.5
  angle = np.pi * rot / 180
  sin, cos = np.sin(angle), np.cos(angle)
  # Direction from the center to the top edge midpoint, rotated; float64.
  src_dir = np.array([0 * cos - half_w * sin, 0 * sin + half_w * cos], dtype=np.float64)

  src = np.zeros((3, 2), dtype=np.float32)
  dst = np.zeros((3, 2), dtype=np.float32)
  src[0] = center + offset
  src[1] = (center + src_dir) + offset
  src[2] = _perpendicular_point(src[0], src[1])
  dst_center = np.array([dst_w * 0.5, dst_h * 0.5])
  dst[0] = dst_center
  dst[1] = dst_center + np.array([0, dst_w * -0.5], dtype=np.float32)
  dst[2] = _perpendicular_point(dst[0], dst[1])

  if inv:
    return cv2.getAffineTransform(dst, src)
  return cv2.getAffineTransform(src, dst)


def affine_transform_points(points: np.ndarray, trans: np.ndarray) -> np.ndarray:
  """Applies a ``[2, 3]`` affine matrix to points.

  Args:
    points: ``[P, 2]`` (x, y) points (any float dtype; computed in float64).
    trans: ``[2, 3]`` matrix from ``get_affine_transform``.

  Returns:
    float64 ``[P, 2]``: ``trans @ [x, y, 1]`` per point.

  Raises:
    ValueError: on wrong shapes.
  """
  points = np.asarray(points, dtype=np.float64)
  trans = np.asarray(trans, dtype=np.float64)
  if points.ndim != 2 or points.shape[1] != 2:
    raise ValueError(f"points must be [P, 2] (x, y), got shape {points.shape}")
  if trans.shape != (2, 3):
    raise ValueError(f"trans must be a [2, 3] affine matrix, got shape {trans.shape}")
  homogeneous = np.concatenate([points, np.ones((points.shape[0], 1))], axis=1)
  return homogeneous @ trans.T


def warp_to_crop(image: np.ndarray,
                 center: ArrayLike,
                 scale: ArrayLike,
                 rot: float,
                 output_size: Sequence[int]) -> np.ndarray:
  """Cuts the (rotated) person box out of an image, as the originals' data loaders do.

  ``cv2.warpAffine`` with bilinear interpolation and OpenCV's default constant (zero)
  border, through ``get_affine_transform(center, scale, rot, output_size)``.

  Args:
    image: ``[H, W]`` or ``[H, W, C]`` image (uint8 or float).
    center: (2,) box center (x, y) in image pixels.
    scale: (2,) box size (w, h) / 200.
    rot: rotation in degrees.
    output_size: (width, height) of the crop.

  Returns:
    ``[out_h, out_w]`` or ``[out_h, out_w, C]`` crop, same dtype as ``image``.

  Raises:
    ValueError: on an image that is not 2-D or 3-D, is empty, or bad box arguments.
  """
  image = np.asarray(image)
  if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
    raise ValueError(f"image must be a non-empty [H, W] or [H, W, C] array, got {image.shape}")
  trans = get_affine_transform(center, scale, rot, output_size)
  width, height = _output_size(output_size)
  crop = cv2.warpAffine(image, trans, (width, height), flags=cv2.INTER_LINEAR)
  if image.ndim == 3 and crop.ndim == 2:  # OpenCV drops a trailing channel of size 1
    crop = crop[..., None]
  return crop


def box_to_center_scale(box_xywh: Sequence[float],
                        aspect_ratio: float,
                        padding: float = 1.25,
                        pixel_std: float = PIXEL_STD) -> tuple[np.ndarray, np.ndarray]:
  """Person box (x, y, w, h) -> (center, scale) as HRNet's ``_box2cs`` / ``_xywh2cs``.

  The box is widened or heightened (about its center) to ``aspect_ratio`` = crop width /
  crop height, then divided by ``pixel_std`` and multiplied by ``padding``. The original
  skips the padding when ``center[0] == -1`` (a sentinel of its detection files); that
  quirk is kept. Arithmetic is float64 (COCO boxes are JSON floats), results float32.

  Args:
    box_xywh: (x, y, w, h) top-left corner and size in image pixels (extra entries, e.g. a
      detection score, are ignored).
    aspect_ratio: crop width / crop height, e.g. 192 / 256.
    padding: enlargement of the box (HRNet 1.25).
    pixel_std: the scale unit in pixels (200).

  Returns:
    ``center`` float32 (2,) (x, y) and ``scale`` float32 (2,) (w, h) / pixel_std.

  Raises:
    ValueError: on fewer than 4 values, non-finite values, a negative size, an empty box,
      or a non-positive ``aspect_ratio`` / ``pixel_std``.
  """
  if len(box_xywh) < 4:
    raise ValueError(f"box_xywh must be (x, y, w, h), got {box_xywh!r}")
  x, y, w, h = (float(v) for v in box_xywh[:4])
  aspect_ratio, pixel_std = float(aspect_ratio), float(pixel_std)
  if not all(math.isfinite(v) for v in (x, y, w, h, aspect_ratio, pixel_std, padding)):
    raise ValueError(f"box {box_xywh!r}, aspect_ratio and pixel_std must be finite")
  if w < 0 or h < 0 or (w == 0 and h == 0):
    raise ValueError(f"box size must be non-negative and not empty, got w={w}, h={h}")
  if aspect_ratio <= 0 or pixel_std <= 0:
    raise ValueError(
        f"aspect_ratio and pixel_std must be positive, got {aspect_ratio}, {pixel_std}")

  center = np.zeros(2, dtype=np.float32)
  center[0] = x + w * 0.5
  center[1] = y + h * 0.5
  if w > aspect_ratio * h:
    h = w * 1.0 / aspect_ratio
  elif w < aspect_ratio * h:
    w = h * aspect_ratio
  scale = np.array([w * 1.0 / pixel_std, h * 1.0 / pixel_std], dtype=np.float32)
  if center[0] != -1:
    scale = scale * padding
  return center, scale.astype(np.float32)


def fliplr_joints(joints: np.ndarray,
                  joints_vis: np.ndarray,
                  width: int,
                  flip_pairs: Sequence[Sequence[int]],
                  multiply_by_visibility: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Keypoints of a horizontally flipped image (``image[:, ::-1]``).

  ``x -> width - 1 - x`` (pixel centers are integers) and the left/right joints of
  ``flip_pairs`` swap, together with their visibilities. The inputs are not modified.

  HRNet's ``fliplr_joints`` returns ``joints * joints_vis`` (its visibilities are 0/1, so
  invisible joints become 0); MSPN's ``flip_joints`` returns the joints unchanged (its
  visibilities are 0/1/2): pass ``multiply_by_visibility=False`` for that.

  Args:
    joints: ``[K, D]`` (D >= 2) joints, columns (x, y, ...) in image pixels.
    joints_vis: ``[K, V]`` visibilities (V = D, or 1).
    width: image width in pixels.
    flip_pairs: pairs of joint indices that swap.
    multiply_by_visibility: see above.

  Returns:
    ``(joints, joints_vis)`` of the flipped image, same shapes.

  Raises:
    ValueError: on mismatched shapes or bad flip pairs.
  """
  joints = np.array(joints, copy=True)
  joints_vis = np.array(joints_vis, copy=True)
  if joints.ndim != 2 or joints.shape[1] < 2:
    raise ValueError(f"joints must be [K, D>=2], got shape {joints.shape}")
  if joints_vis.ndim != 2 or joints_vis.shape[0] != joints.shape[0]:
    raise ValueError(
        f"joints_vis must be [K, V] with K={joints.shape[0]}, got shape {joints_vis.shape}")
  perm = flip_permutation(joints.shape[0], flip_pairs)
  joints[:, 0] = width - joints[:, 0] - 1
  joints, joints_vis = joints[perm], joints_vis[perm]
  if multiply_by_visibility:
    joints = joints * joints_vis
  return joints, joints_vis


def patch_transform(center: ArrayLike, box_size: ArrayLike, patch_size: Sequence[int],
                    scale: float = 1.0, rot: float = 0.0, inv: bool = False) -> np.ndarray:
  """Integral regression's box -> patch affine map (``gen_trans_from_patch_cv`` of
  integral-human-pose ``common/utility/image_processing_cv.py``).

  Unlike ``get_affine_transform``, the box's width and height map separately onto the
  patch's (the box is fitted to the patch's aspect ratio beforehand, so the map is a
  similarity in practice): ``center`` goes to the patch centre, ``center + R (0, h s / 2)``
  to the middle of the bottom edge and ``center + R (w s / 2, 0)`` to the middle of the
  right edge, ``R`` the rotation by ``rot`` degrees. The construction points are float32
  as in the original.

  Args:
    center: (2,) box centre (x, y), image pixels.
    box_size: (2,) box (width, height), image pixels.
    patch_size: (width, height) of the patch.
    scale: multiplies the box (augmentation).
    rot: degrees.
    inv: return the patch -> image map.

  Returns:
    float64 ``[2, 3]``.
  """
  center = _pair(center, "center", np.float64)
  box_size = _pair(box_size, "box_size", np.float64)
  if not np.all(box_size > 0) or not (math.isfinite(scale) and scale > 0):
    raise ValueError(f"box_size and scale must be positive, got {box_size}, {scale}")
  dst_w, dst_h = _output_size(patch_size)
  src_w, src_h = float(box_size[0]) * scale, float(box_size[1]) * scale
  angle = np.pi * float(rot) / 180
  sin, cos = np.sin(angle), np.cos(angle)

  def rotate(x: float, y: float) -> np.ndarray:
    x, y = np.float32(x), np.float32(y)
    return np.array([x * cos - y * sin, x * sin + y * cos], np.float32)

  src_center = np.asarray(center, np.float32)
  src = np.stack([src_center, src_center + rotate(0.0, src_h * 0.5),
                  src_center + rotate(src_w * 0.5, 0.0)]).astype(np.float32)
  dst_center = np.array([dst_w * 0.5, dst_h * 0.5], np.float32)
  dst = np.stack([dst_center, dst_center + np.array([0, dst_h * 0.5], np.float32),
                  dst_center + np.array([dst_w * 0.5, 0], np.float32)]).astype(np.float32)
  return cv2.getAffineTransform(dst, src) if inv else cv2.getAffineTransform(src, dst)


def joint_box(joints: np.ndarray, visible: np.ndarray, aspect_ratio: float,
              padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
  """The box of the visible joints fitted to ``aspect_ratio`` (w / h) and enlarged by
  ``padding`` (integral-human-pose ``calc_kpt_bound_pad``, the box of its challenge db).

  Returns:
    ``(center (x, y), size (w, h))`` float64, pixels.

  Raises:
    ValueError: fewer than two distinct visible joints (an empty box).
  """
  pts = np.asarray(joints, np.float64)[np.asarray(visible) > 0, :2]
  if len(pts) == 0:
    raise ValueError("joint_box: no visible joint")
  (left, top), (right, bottom) = pts.min(axis=0), pts.max(axis=0)
  w, h = right - left, bottom - top
  if w <= 0 or h <= 0:
    raise ValueError(f"joint_box: the visible joints span an empty box ({w} x {h})")
  if w > aspect_ratio * h:
    h = w / aspect_ratio
  elif w < aspect_ratio * h:
    w = h * aspect_ratio
  return np.array([(left + right) * 0.5, (top + bottom) * 0.5]), np.array([w, h]) * padding
