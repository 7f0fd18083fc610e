"""MSPN test-time decoding (``get_results`` of megvii-research/MSPN ``exps/*/test.py``).

Per image and joint (heatmaps on the network's scale, targets peak at 255):

1. copy the map into a float64 zero canvas with a 10-pixel border and blur it with
   ``cv2.GaussianBlur(canvas, (k, k), 0)`` (OpenCV's fixed tables for k <= 9, else a
   sampled Gaussian with sigma ``0.3 ((k - 1) / 2 - 1) + 0.8``, e.g. 2.0 for k = 11);
2. take the argmax (x, y) (first in row-major order) and set that canvas pixel to 0;
3. for each shift ratio ``r`` (``TEST.SHIFT_RATIOS``, ``[0.25]``): take the next argmax
   (px, py), set it to 0, and move (x, y) by ``r * d / |d|`` with ``d = (px, py) - (x, y)``
   when ``|d| > 1e-3`` -- a step toward the second maximum of the *blurred* map, not a
   sign rule;
4. subtract the border, clip x to ``[0, W - 1]`` and y to ``[0, H - 1]``;
5. score = raw (unblurred) ``map / 255 + 0.5`` at ``(round(y), round(x))`` (half to even);
6. image pixels: ``x_img = (4 x + 2) / in_w * (scale_w * 200) + center_x - scale_w * 200 / 2``,
   likewise y with ``in_h`` and ``scale_h``: the +2 puts heatmap pixel i at the center of
   its 4x4 input cell. Stride 4 is hard-coded in the original; jaxpose keeps it and
   rejects input/output shapes that are not exactly 4x apart.

All-zero or all-negative maps: the zero border wins, the first argmax is canvas (0, 0),
which clips to (0, 0); the score is then ``map[0, 0] / 255 + 0.5``.

MSPN's flip test averages the output with ``flip_back`` of the mirrored output *without*
HRNet's one-pixel shift (``flip_test_average``).

Heatmaps are channels-last ``[N, H, W, K]``.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import jax
import numpy as np

from jaxpose.codecs import heatmap as heatmap_codec

STRIDE = 4
BORDER = 10
PIXEL_STD = 200


def _input_shape(input_shape: Sequence[int], out_h: int, out_w: int) -> tuple[int, int]:
  shape = np.asarray(input_shape)
  if shape.shape != (2,):
    raise ValueError(f"input_shape must be (height, width), got {input_shape!r}")
  in_h, in_w = int(shape[0]), int(shape[1])
  if (in_h, in_w) != (STRIDE * out_h, STRIDE * out_w):
    raise ValueError(
        f"MSPN decoding hard-codes stride {STRIDE}: input_shape (h, w) = {(in_h, in_w)} must "
        f"be {STRIDE}x the heatmap size {(out_h, out_w)}")
  return in_h, in_w


def _kernel(kernel: int) -> int:
  if np.ndim(kernel) != 0 or int(kernel) != kernel or kernel <= 0 or kernel % 2 == 0:
    raise ValueError(f"kernel must be a positive odd int (cv2.GaussianBlur), got {kernel!r}")
  return int(kernel)


def blurred_canvas(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
  """Bordered, blurred float64 maps: ``[N, K, H + 20, W + 20]``.

  Args:
    heatmaps: ``[N, H, W, K]`` heatmaps.
    kernel: odd blur size.
  """
  n, h, w, k = heatmaps.shape
  ksize = (_kernel(kernel),) * 2
  canvas = np.zeros((n, k, h + 2 * BORDER, w + 2 * BORDER), dtype=np.float64)
  canvas[:, :, BORDER:-BORDER, BORDER:-BORDER] = heatmaps.transpose(0, 3, 1, 2)
  for i in range(n):
    for j in range(k):
      canvas[i, j] = cv2.GaussianBlur(canvas[i, j], ksize, 0)
  return canvas


def _pop_argmax(flat: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
  """Row-major argmax (x, y) of every ``[..., P]`` map; the maximum is then set to 0."""
  idx = np.argmax(flat, axis=-1)
  np.put_along_axis(flat, idx[..., None], 0.0, axis=-1)
  return idx % width, idx // width


def decode(heatmaps: np.ndarray,
           centers: np.ndarray,
           scales: np.ndarray,
           input_shape: Sequence[int],
           kernel: int = 11,
           shifts: Sequence[float] = (0.25,)) -> tuple[np.ndarray, np.ndarray]:
  """MSPN keypoints in image pixels and their scores.

  Args:
    heatmaps: ``[N, H, W, K]`` heatmaps (flip-averaged at test time), targets peak 255.
    centers: ``[N, 2]`` crop centers (x, y) in image pixels.
    scales: ``[N, 2]`` crop sizes (w, h) / 200, float32 as MSPN's test loader returns them
      (the original multiplies by 200 in that dtype).
    input_shape: (height, width) of the network input; must be 4x the heatmap size.
    kernel: odd blur size (``TEST.GAUSSIAN_KERNEL``: COCO 5, MPII 9; the function
      default of the original is 11).
    shifts: ``TEST.SHIFT_RATIOS``; one step toward each successive maximum.

  Returns:
    ``preds`` float64 ``[N, K, 2]`` (x, y) image pixels and ``maxvals`` float64
    ``[N, K, 1]`` scores.

  Raises:
    ValueError: on wrong shapes, non-finite inputs, an even kernel or a stride other
      than 4.
  """
  heatmaps = heatmap_codec.check_heatmaps(heatmaps)
  if not np.all(np.isfinite(heatmaps)):
    raise ValueError("heatmaps must be finite")
  n, h, w, k = heatmaps.shape
  in_h, in_w = _input_shape(input_shape, h, w)
  centers, scales = heatmap_codec.check_boxes(centers, scales, n)
  if not (np.all(np.isfinite(centers)) and np.all(np.isfinite(scales)) and np.all(scales > 0)):
    raise ValueError(f"centers must be finite and scales positive, got {centers}, {scales}")
  shifts = [float(s) for s in shifts]

  canvas = blurred_canvas(heatmaps, kernel)
  flat = canvas.reshape(n, k, -1)
  width = w + 2 * BORDER
  x, y = _pop_argmax(flat, width)
  x, y = x - BORDER, y - BORDER  # int64 until a shift is applied
  for ratio in shifts:
    px, py = _pop_argmax(flat, width)
    dx, dy = px - (BORDER + x), py - (BORDER + y)
    length = (dx**2 + dy**2)**0.5
    moves = length > 1e-3
    safe = np.where(moves, length, 1.0)
    x = np.where(moves, x + ratio * dx / safe, x)
    y = np.where(moves, y + ratio * dy / safe, y)
  x = np.maximum(0, np.minimum(x, w - 1)).astype(np.float64)
  y = np.maximum(0, np.minimum(y, h - 1)).astype(np.float64)

  score_map = heatmaps / 255 + 0.5
  rows = np.rint(y).astype(np.int64)
  cols = np.rint(x).astype(np.int64)
  maxvals = score_map[np.arange(n)[:, None], rows, cols, np.arange(k)[None, :]]

  box = scales * 200  # dtype of scales, like the original's in-place multiply
  kx, ky = x * 4 + 2, y * 4 + 2
  img_x = kx / in_w * box[:, None, 0] + centers[:, None, 0] - box[:, None, 0] * 0.5
  img_y = ky / in_h * box[:, None, 1] + centers[:, None, 1] - box[:, None, 1] * 0.5
  preds = np.stack([img_x, img_y], axis=-1).astype(np.float64)
  return preds, maxvals[..., None].astype(np.float64)


def flip_test_average(output: np.ndarray, output_flipped: np.ndarray,
                      flip_pairs: heatmap_codec.FlipPairs) -> np.ndarray:
  """MSPN flip test: ``(output + flip_back(output_flipped)) * 0.5`` (no pixel shift).

  Args:
    output: ``[N, H, W, K]`` heatmaps of the input.
    output_flipped: ``[N, H, W, K]`` raw heatmaps of the horizontally mirrored input.
    flip_pairs: pairs of joint channels that swap.
  """
  return heatmap_codec.flip_test_average(output, output_flipped, flip_pairs, shift_heatmap=False)


def flip_test_average_jax(output: jax.Array, output_flipped: jax.Array,
                          flip_pairs: heatmap_codec.FlipPairs) -> jax.Array:
  """``flip_test_average`` in jnp for jitted eval steps."""
  return heatmap_codec.flip_test_average_jax(
      output, output_flipped, flip_pairs, shift_heatmap=False)
