"""Training targets of the 2D methods (heatmaps channels-last ``[H, W, K]``, coordinates).

* ``gaussian_targets``: HRNet / SimpleBaseline (MSRA) targets, one unnormalised Gaussian
  of peak 1 per joint, pasted at an integer heatmap pixel, plus ``target_weight``.
  (``JointsDataset.generate_target`` of deep-high-resolution-net.pytorch.)
* ``joint_location_label``: integral regression's coordinate targets (normalised
  ``(x, y, depth)`` of patch-pixel joints).
* ``mspn_targets``: MSPN's targets, one per training kernel: a single 1 at the
  (truncated) heatmap pixel of each joint, blurred with ``cv2.GaussianBlur`` and rescaled
  to peak 255 (``JointsDataset.generate_heatmap`` of megvii-research/MSPN, after the
  in-crop visibility rule of its ``__getitem__``).

Joint coordinates are (x, y) in input-crop pixels (after the crop's affine transform).
Heatmaps are channels-last, ``[H, W, K]`` float32, as the models output them per image.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# MSPN's TRAIN.GAUSSIAN_KERNELS (COCO and MPII): coarse-to-fine supervision.
MSPN_TRAIN_KERNELS: tuple[tuple[int, int], ...] = ((15, 15), (11, 11), (9, 9), (7, 7), (5, 5))


def _size_wh(value, what: str) -> tuple[int, int]:
  arr = np.asarray(value)
  if arr.shape != (2,):
    raise ValueError(f"{what} must have two entries, got {value!r}")
  a, b = int(arr[0]), int(arr[1])
  if a <= 0 or b <= 0 or a != arr[0] or b != arr[1]:
    raise ValueError(f"{what} must be positive integers, got {value!r}")
  return a, b


def _joints(joints, num_cols: int, what: str = "joints") -> np.ndarray:
  joints = np.asarray(joints)
  if joints.ndim != 2 or joints.shape[1] < num_cols:
    raise ValueError(f"{what} must be [K, >= {num_cols}] (x, y, ...), got shape {joints.shape}")
  if not np.all(np.isfinite(joints[:, :num_cols])):
    raise ValueError(f"{what} must be finite, got {joints[:, :num_cols]}")
  return joints


def _visibility(vis, num_joints: int, what: str) -> np.ndarray:
  vis = np.asarray(vis)
  if vis.ndim == 1:
    vis = vis[:, None]
  if vis.ndim != 2 or vis.shape[0] != num_joints:
    raise ValueError(f"{what} must be [K={num_joints}, V], got shape {vis.shape}")
  if not np.all(np.isfinite(vis[:, 0])):
    raise ValueError(f"{what} must be finite")
  return vis


def gaussian_patch(sigma: float) -> np.ndarray:
  """The (6 sigma + 1)^2 unnormalised float32 Gaussian of peak 1 that HRNet pastes.

  ``exp(-((x - c)^2 + (y - c)^2) / (2 sigma^2))`` on an integer float32 grid, ``c`` the
  middle index, computed in float32 as the original.

  Args:
    sigma: standard deviation in heatmap pixels.

  Returns:
    float32 ``[S, S]`` with ``S = ceil(6 sigma + 1)``.
  """
  size = 2 * (sigma * 3) + 1
  x = np.arange(0, size, 1, np.float32)
  y = x[:, None]
  c = size // 2
  return np.exp(-((x - c)**2 + (y - c)**2) / (2 * sigma**2))


def gaussian_targets(joints: np.ndarray,
                     joints_vis: np.ndarray,
                     image_size: Sequence[int],
                     heatmap_size: Sequence[int],
                     sigma: float = 2,
                     joints_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """HRNet / SimpleBaseline Gaussian targets and per-joint weights.

  For joint ``k`` at crop pixel (x, y): ``mu = int(x / stride_x + 0.5)`` (``int``
  truncates toward zero, so -0.25 gives 0), likewise ``mu_y``, with ``stride =
  image_size / heatmap_size``. The ``gaussian_patch(sigma)`` is pasted with its middle at
  integer ``mu`` (no sub-pixel offset) and cut at the heatmap border. ``target_weight`` is
  ``joints_vis[:, 0]``, set to 0 when the patch ``[mu - 3 sigma, mu + 3 sigma + 1)`` misses
  the heatmap (``ul >= size`` or ``br < 0``: ``br == 0`` still counts as touching but pastes
  nothing). Joints with weight <= 0.5 get an all-zero map.

  Args:
    joints: ``[K, >=2]`` joint (x, y, ...) in input-crop pixels.
    joints_vis: ``[K, V]`` (or ``[K]``) visibility; column 0 is used.
    image_size: (width, height) of the input crop.
    heatmap_size: (width, height) of the heatmap.
    sigma: Gaussian standard deviation in heatmap pixels (HRNet: 2 at 64x48, 3 at 96x72).
    joints_weight: optional ``[K, 1]`` (or ``[K]``) weights multiplied into
      ``target_weight`` (``LOSS.USE_DIFFERENT_JOINTS_WEIGHT``, e.g.
      ``keypoints.COCO_JOINTS_WEIGHT``); None leaves it unweighted.

  Returns:
    ``target`` float32 ``[H, W, K]`` (channels-last; peak exactly 1) and
    ``target_weight`` float32 ``[K, 1]``.

  Raises:
    ValueError: on wrong shapes, non-finite joints, non-positive sizes or sigma.
  """
  joints = _joints(joints, 2)
  num_joints = joints.shape[0]
  vis = _visibility(joints_vis, num_joints, "joints_vis")
  image_w, image_h = _size_wh(image_size, "image_size")
  heat_w, heat_h = _size_wh(heatmap_size, "heatmap_size")
  sigma = sigma.item() if isinstance(sigma, np.ndarray | np.generic) else sigma
  if not (np.isfinite(sigma) and sigma > 0):
    raise ValueError(f"sigma must be positive, got {sigma}")

  target_weight = np.ones((num_joints, 1), dtype=np.float32)
  target_weight[:, 0] = vis[:, 0]
  stride = np.array([image_w, image_h]) / np.array([heat_w, heat_h])
  tmp_size = sigma * 3
  # float64 like the original's scalar arithmetic; np.trunc is int() toward zero.
  mu = np.trunc(joints[:, :2].astype(np.float64) / stride + 0.5)
  ul = np.trunc(mu - tmp_size).astype(np.int64)
  br = np.trunc(mu + tmp_size + 1).astype(np.int64)
  outside = (ul[:, 0] >= heat_w) | (ul[:, 1] >= heat_h) | (br[:, 0] < 0) | (br[:, 1] < 0)
  target_weight[outside] = 0

  patch = gaussian_patch(sigma)
  size = patch.shape[0]
  # target[y, x, k] = patch[y - ul_y, x - ul_x] inside [ul, br) and the patch.
  gx = np.arange(heat_w)[None, :] - ul[:, :1]  # [K, W]
  gy = np.arange(heat_h)[None, :] - ul[:, 1:]  # [K, H]
  in_x = (gx >= 0) & (gx < size) & (np.arange(heat_w)[None, :] < br[:, :1])
  in_y = (gy >= 0) & (gy < size) & (np.arange(heat_h)[None, :] < br[:, 1:])
  values = patch[np.clip(gy, 0, size - 1)[:, :, None], np.clip(gx, 0, size - 1)[:, None, :]]
  mask = in_y[:, :, None] & in_x[:, None, :] & (target_weight[:, 0] > 0.5)[:, None, None]
  target = np.where(mask, values, np.float32(0)).astype(np.float32)

  if joints_weight is not None:
    weights = np.asarray(joints_weight, dtype=np.float32).reshape(-1, 1)
    if weights.shape[0] != num_joints:
      raise ValueError(f"joints_weight must have K={num_joints} entries, got {weights.shape[0]}")
    target_weight = np.multiply(target_weight, weights)
  return np.ascontiguousarray(target.transpose(1, 2, 0)), target_weight


def mspn_visibility(joints: np.ndarray, joints_vis: np.ndarray,
                    input_shape: Sequence[int]) -> np.ndarray:
  """MSPN's in-crop rule: a joint outside ``[0, W-1] x [0, H-1]`` of the crop becomes 0.

  Args:
    joints: ``[K, >=2]`` joint (x, y) in input-crop pixels.
    joints_vis: ``[K, 1]`` (or ``[K]``) visibility (COCO 0/1/2, MPII 0/2).
    input_shape: (height, width) of the input crop (MSPN's ``INPUT_SHAPE`` order).

  Returns:
    float32 ``[K, 1]`` visibility that the targets and the loss use (``valid``).
  """
  joints = _joints(joints, 2)
  vis = _visibility(joints_vis, joints.shape[0], "joints_vis")[:, :1].astype(np.float32)
  in_h, in_w = _size_wh(input_shape, "input_shape")
  x, y = joints[:, 0], joints[:, 1]
  outside = (x < 0) | (x > in_w - 1) | (y < 0) | (y > in_h - 1)
  return np.where(outside[:, None], np.float32(0), vis)


def _odd_kernel(kernel, what: str = "kernel") -> tuple[int, int]:
  kw, kh = _size_wh((kernel, kernel) if np.ndim(kernel) == 0 else kernel, what)
  if kw % 2 == 0 or kh % 2 == 0:
    raise ValueError(f"{what} sizes must be odd (cv2.GaussianBlur), got {(kw, kh)}")
  return kw, kh


def mspn_heatmaps(joints: np.ndarray,
                  valid: np.ndarray,
                  input_shape: Sequence[int],
                  output_shape: Sequence[int],
                  kernel: int | Sequence[int] = (7, 7)) -> np.ndarray:
  """MSPN target for one blur kernel (``generate_heatmap``).

  For each joint with ``valid >= 1``: a 1 at ``[int(y * out_h / in_h), int(x * out_w /
  in_w)]`` (truncation, no sub-pixel), ``cv2.GaussianBlur(map, kernel, 0)`` (OpenCV's
  fixed tables for sizes 3-9, else a sampled Gaussian with sigma ``0.3 ((k - 1) / 2 - 1) +
  0.8``; border ``BORDER_REFLECT_101``), then scaled so that the maximum is 255
  (``map / (max / 255)`` in float32, so the peak can be 255 minus one ulp).

  Because of the reflected border, a joint within the kernel radius of the edge gets
  mirrored mass and its maximum can move onto the edge pixel (kernel 5, peak at column 1:
  column 0 gets 4 + 4, column 1 gets 6 + 1); zero padding would give different maps.

  Args:
    joints: ``[K, >=2]`` joint (x, y) in input-crop pixels.
    valid: ``[K, 1]`` (or ``[K]``) visibility after ``mspn_visibility``.
    input_shape: (height, width) of the input crop.
    output_shape: (height, width) of the heatmap.
    kernel: odd blur size, an int or (width, height) as ``cv2.GaussianBlur`` takes it.

  Returns:
    float32 ``[out_h, out_w, K]``, peak 255 for valid joints, zeros otherwise.

  Raises:
    ValueError: on wrong shapes, an even kernel, or a valid joint outside the crop.
  """
  joints = _joints(joints, 2)
  num_joints = joints.shape[0]
  valid = _visibility(valid, num_joints, "valid")
  in_h, in_w = _size_wh(input_shape, "input_shape")
  out_h, out_w = _size_wh(output_shape, "output_shape")
  ksize = _odd_kernel(kernel)

  heatmaps = np.zeros((num_joints, out_h, out_w), dtype=np.float32)
  for k in np.flatnonzero(valid[:, 0] >= 1):
    row = int(joints[k, 1] * out_h / in_h)
    col = int(joints[k, 0] * out_w / in_w)
    if not (0 <= row < out_h and 0 <= col < out_w):
      raise ValueError(
          f"joint {k} at {joints[k, :2]} is valid but outside the {in_w}x{in_h} crop; "
          "apply mspn_visibility first")
    heatmaps[k, row, col] = 1
    heatmaps[k] = cv2.GaussianBlur(heatmaps[k], ksize, 0)
    peak = np.amax(heatmaps[k])
    if peak > 1e-8:
      heatmaps[k] /= peak / 255
  return np.ascontiguousarray(heatmaps.transpose(1, 2, 0))


def mspn_targets(joints: np.ndarray,
                 joints_vis: np.ndarray,
                 input_shape: Sequence[int],
                 output_shape: Sequence[int],
                 kernels: Sequence[int | Sequence[int]] = MSPN_TRAIN_KERNELS,
                 ) -> tuple[np.ndarray, np.ndarray]:
  """MSPN's training labels for every kernel, after the in-crop visibility rule.

  Args:
    joints: ``[K, >=2]`` joint (x, y) in input-crop pixels.
    joints_vis: ``[K, 1]`` (or ``[K]``) visibility before the in-crop check.
    input_shape: (height, width) of the input crop.
    output_shape: (height, width) of the heatmaps.
    kernels: blur sizes, coarse to fine (``MSPN_TRAIN_KERNELS``).

  Returns:
    ``labels`` float32 ``[L, out_h, out_w, K]`` (one map per kernel, peak 255) and
    ``valid`` float32 ``[K, 1]``.
  """
  valid = mspn_visibility(joints, joints_vis, input_shape)
  if len(kernels) == 0:
    raise ValueError("kernels must name at least one blur size")
  labels = np.stack(
      [mspn_heatmaps(joints, valid, input_shape, output_shape, k) for k in kernels])
  return labels, valid


def joint_location_label(joints: np.ndarray, patch_width: float,
                         patch_height: float) -> np.ndarray:
  """Normalises patch-pixel joints into integral regression targets (host side, numpy).

  Equivalent of the original ``generate_joint_location_label`` (which also flattened the
  result and the visibility; the visibility weights are unchanged by it and are not
  taken here).

  Args:
    joints: ``[J, 3]`` ``(u, v, depth)`` in patch pixels; depth is root-relative in
      patch-pixel units.
    patch_width: patch width in pixels.
    patch_height: patch height in pixels.

  Returns:
    ``[J, 3]`` ``(u / patch_width - 0.5, v / patch_height - 0.5, depth / patch_width)``,
    the dtype of ``joints`` (float32 for integer input). The input is not modified.
  """
  joints = np.asarray(joints)
  if joints.ndim != 2 or joints.shape[-1] != 3:
    raise ValueError(f"joints must be [J, 3] (u, v, depth), got shape {joints.shape}")
  dtype = joints.dtype if np.issubdtype(joints.dtype, np.floating) else np.float32
  joints = joints.astype(dtype)
  # Python floats keep float32 arithmetic in float32 (NumPy scalars would promote).
  patch_width, patch_height = float(patch_width), float(patch_height)
  return np.stack([
      joints[:, 0] / patch_width - 0.5,
      joints[:, 1] / patch_height - 0.5,
      joints[:, 2] / patch_width,
  ], axis=-1).astype(dtype)


def depth_map_targets(cells: np.ndarray, inside: np.ndarray, values: np.ndarray,
                      output_width: int) -> tuple[np.ndarray, np.ndarray]:
  """pytorch-pose-hg-3d's depth-regression targets (``datasets/h36m.py`` / ``fusion_3d.py``).

  Joint ``j`` at integer output cell ``(x, y)`` reads depth map ``j`` at flat index
  ``y * W * K + x * K + j`` of the channels-last ``[H, W, K]`` maps (the original's
  "transposed" ``reg_ind``); joints outside the output keep index 0 and value 0.

  Args:
    cells: ``[K, 2]`` integer (x, y) output cells.
    inside: ``[K]`` bool, the cell lies in the output.
    values: ``[K]`` the target of each inside joint (depth / crop size for 3D samples,
      1 for 2D samples, whose "target" is the visibility the bone-length loss reads).
    output_width: ``W``.

  Returns:
    ``(reg_ind int32 [K], reg_target float32 [K])``.
  """
  cells = np.asarray(cells, np.int64)
  k = len(cells)
  inside = np.asarray(inside, bool)
  index = (cells[:, 1] * output_width + cells[:, 0]) * k + np.arange(k)
  return (np.where(inside, index, 0).astype(np.int32),
          np.where(inside, np.asarray(values, np.float64), 0.0).astype(np.float32))
