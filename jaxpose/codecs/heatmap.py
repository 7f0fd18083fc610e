"""HRNet / SimpleBaseline heatmap decoding and flip testing.

Decoding follows ``get_final_preds`` of deep-high-resolution-net.pytorch
(``lib/core/inference.py``, ``TEST.POST_PROCESS``) exactly:

1. ``get_max_preds``: argmax over each flattened ``H * W`` map (first occurrence wins),
   ``x = idx % W``, ``y = idx // W`` as float32; maps whose maximum is <= 0 give (0, 0)
   (still mapped back to the image below).
2. Quarter-pixel refinement, only strictly inside the map (``1 < x < W - 1`` and
   ``1 < y < H - 1``; x == 1 or y == 1 is *not* refined): ``x += 0.25 * sign(hm[y, x+1] -
   hm[y, x-1])``, likewise y (sign(0) = 0).
3. Back-projection through ``get_affine_transform(center, scale, 0, (W, H), inv=True)``:
   ``x_img = x * s + center_x - s * W / 2`` with ``s = scale[0] * 200 / W`` for both axes
   (only the box width sets the scale; no half-pixel offset). Results are float32.

Flip testing follows ``validate`` in ``lib/core/function.py``: the heatmaps of the
mirrored image are mirrored back (``flip_back``: reverse W, swap left/right channels),
shifted one pixel towards +x (``TEST.SHIFT_HEATMAP``; column 0 keeps its own value) and
averaged with the heatmaps of the original image. MSPN uses the same average without the
shift.

Layouts are channels-last: heatmaps ``[N, H, W, K]``. The numpy functions are exact
reproductions for data-side evaluation; ``flip_back_jax`` / ``flip_test_average_jax`` run
inside a jitted eval step and equal the numpy ones.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxpose.data.keypoints import flip_permutation
from jaxpose.data.transforms import affine_transform_points, get_affine_transform

FlipPairs = Sequence[Sequence[int]]


def check_heatmaps(heatmaps, what: str = "heatmaps") -> np.ndarray:
  """Validates ``[N, H, W, K]`` float heatmaps without NaN; returns them as an array."""
  heatmaps = np.asarray(heatmaps)
  if heatmaps.ndim != 4:
    raise ValueError(f"{what} must be [N, H, W, K] (channels-last), got shape {heatmaps.shape}")
  if not np.issubdtype(heatmaps.dtype, np.floating):
    raise ValueError(f"{what} must be floating point, got {heatmaps.dtype}")
  if min(heatmaps.shape) == 0:
    raise ValueError(f"{what} must not be empty, got shape {heatmaps.shape}")
  if np.isnan(heatmaps).any():
    raise ValueError(f"{what} contain NaN; argmax decoding would be meaningless")
  return heatmaps


def get_max_preds(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Integer argmax location and value of every heatmap.

  Args:
    heatmaps: ``[N, H, W, K]`` float heatmaps.

  Returns:
    ``preds`` float32 ``[N, K, 2]`` (x, y) heatmap pixels, (0, 0) where the maximum is
    <= 0, and ``maxvals`` ``[N, K, 1]`` (dtype of ``heatmaps``).

  Raises:
    ValueError: if ``heatmaps`` is not a non-empty 4-D float array or contains NaN.
  """
  heatmaps = check_heatmaps(heatmaps)
  n, h, w, k = heatmaps.shape
  flat = heatmaps.transpose(0, 3, 1, 2).reshape(n, k, h * w)
  idx = np.argmax(flat, axis=2)
  maxvals = np.take_along_axis(flat, idx[..., None], axis=2)
  idx = idx.astype(np.float32)
  preds = np.stack([idx % w, np.floor(idx / w)], axis=-1)
  preds *= (maxvals > 0.0).astype(np.float32)
  return preds, maxvals


def check_boxes(center, scale, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Validates ``[N, 2]`` crop centers and scales; returns them as arrays (dtypes kept)."""
  center, scale = np.asarray(center), np.asarray(scale)
  if center.shape != (n, 2) or scale.shape != (n, 2):
    raise ValueError(
        f"center and scale must be [N={n}, 2], got {center.shape} and {scale.shape}")
  return center, scale


def get_final_preds(heatmaps: np.ndarray,
                    center: np.ndarray,
                    scale: np.ndarray,
                    post_process: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Keypoints in image pixels from heatmaps (HRNet / SimpleBaseline test decoding).

  Args:
    heatmaps: ``[N, H, W, K]`` float heatmaps (after any flip averaging).
    center: ``[N, 2]`` crop centers (x, y) in image pixels.
    scale: ``[N, 2]`` crop sizes (w, h) / 200.
    post_process: the quarter-pixel refinement (``TEST.POST_PROCESS``, on in every
      released config).

  Returns:
    ``preds`` float32 ``[N, K, 2]`` (x, y) image pixels and ``maxvals`` ``[N, K, 1]``.

  Raises:
    ValueError: on wrong shapes, NaN heatmaps or non-positive scales.
  """
  heatmaps = check_heatmaps(heatmaps)
  n, h, w, k = heatmaps.shape
  center, scale = check_boxes(center, scale, n)
  coords, maxvals = get_max_preds(heatmaps)

  if post_process and h > 2 and w > 2:  # smaller maps have no strictly inner pixel
    px = np.floor(coords[..., 0] + 0.5).astype(np.int64)  # [N, K]
    py = np.floor(coords[..., 1] + 0.5).astype(np.int64)
    inside = (1 < px) & (px < w - 1) & (1 < py) & (py < h - 1)
    x, y = np.clip(px, 1, w - 2), np.clip(py, 1, h - 2)
    batch, joint = np.arange(n)[:, None], np.arange(k)[None, :]
    dx = heatmaps[batch, y, x + 1, joint] - heatmaps[batch, y, x - 1, joint]
    dy = heatmaps[batch, y + 1, x, joint] - heatmaps[batch, y - 1, x, joint]
    step = np.sign(np.stack([dx, dy], axis=-1)) * 0.25
    coords += np.where(inside[..., None], step, 0).astype(coords.dtype)

  preds = coords.copy()
  for i in range(n):
    trans = get_affine_transform(center[i], scale[i], 0, (w, h), inv=True)
    preds[i] = affine_transform_points(coords[i], trans)
  return preds, maxvals


def flip_back(heatmaps: np.ndarray, flip_pairs: FlipPairs) -> np.ndarray:
  """Mirrors heatmaps of a horizontally flipped image back (reverse W, swap pairs).

  Args:
    heatmaps: ``[N, H, W, K]`` heatmaps of the mirrored input.
    flip_pairs: pairs of joint channels that swap (e.g. ``keypoints.COCO_FLIP_PAIRS``).

  Returns:
    ``[N, H, W, K]`` new array, aligned with the un-mirrored input (up to the one-pixel
    shift, see ``flip_test_average``).

  Raises:
    ValueError: on a non 4-D input or bad flip pairs.
  """
  heatmaps = np.asarray(heatmaps)
  if heatmaps.ndim != 4:
    raise ValueError(f"heatmaps must be [N, H, W, K] (channels-last), got shape {heatmaps.shape}")
  perm = flip_permutation(heatmaps.shape[-1], flip_pairs)
  return heatmaps[:, :, ::-1, perm]


def _check_pair(output, output_flipped) -> None:
  if output.ndim != 4 or output.shape != output_flipped.shape:
    raise ValueError(
        "output and output_flipped must both be [N, H, W, K] of the same shape, got "
        f"{output.shape} and {output_flipped.shape}")


def flip_test_average(output: np.ndarray,
                      output_flipped: np.ndarray,
                      flip_pairs: FlipPairs,
                      shift_heatmap: bool = True) -> np.ndarray:
  """Flip-test combination: ``(output + shift(flip_back(output_flipped))) * 0.5``.

  Args:
    output: ``[N, H, W, K]`` heatmaps of the input.
    output_flipped: ``[N, H, W, K]`` raw heatmaps of the horizontally mirrored input.
    flip_pairs: pairs of joint channels that swap.
    shift_heatmap: shift the flipped-back maps one pixel towards +x (HRNet's
      ``TEST.SHIFT_HEATMAP``); column 0 keeps its own value (it is duplicated, not
      zeroed). MSPN passes False.

  Returns:
    ``[N, H, W, K]`` averaged heatmaps, dtype of the inputs' sum.

  Raises:
    ValueError: on mismatched or non 4-D shapes, or bad flip pairs.
  """
  output, output_flipped = np.asarray(output), np.asarray(output_flipped)
  _check_pair(output, output_flipped)
  back = flip_back(output_flipped, flip_pairs).copy()
  if shift_heatmap:
    back[:, :, 1:] = back[:, :, :-1].copy()
  return (output + back) * 0.5


def flip_back_jax(heatmaps: jax.Array, flip_pairs: FlipPairs) -> jax.Array:
  """``flip_back`` in jnp for jitted eval steps.

  Args:
    heatmaps: ``[N, H, W, K]`` heatmaps of the mirrored input (any float dtype).
    flip_pairs: pairs of joint channels that swap; a static Python sequence (it is turned
      into a constant permutation at trace time).

  Returns:
    ``[N, H, W, K]``, equal to ``flip_back`` of the same values.
  """
  if heatmaps.ndim != 4:
    raise ValueError(f"heatmaps must be [N, H, W, K] (channels-last), got shape {heatmaps.shape}")
  perm = flip_permutation(heatmaps.shape[-1], flip_pairs)
  return jnp.take(heatmaps[:, :, ::-1], jnp.asarray(perm), axis=3)


def flip_test_average_jax(output: jax.Array,
                          output_flipped: jax.Array,
                          flip_pairs: FlipPairs,
                          shift_heatmap: bool = True) -> jax.Array:
  """``flip_test_average`` in jnp for jitted eval steps.

  Args:
    output: ``[N, H, W, K]`` heatmaps of the input.
    output_flipped: ``[N, H, W, K]`` raw heatmaps of the mirrored input.
    flip_pairs: static pairs of joint channels that swap.
    shift_heatmap: static flag, see ``flip_test_average``.

  Returns:
    ``[N, H, W, K]`` averaged heatmaps, equal to ``flip_test_average`` of the same values.
  """
  _check_pair(output, output_flipped)
  back = flip_back_jax(output_flipped, flip_pairs)
  if shift_heatmap:
    back = jnp.concatenate([back[:, :, :1], back[:, :, :-1]], axis=2)
  return (output + back) * 0.5


def get_final_preds_jax(heatmaps: jax.Array, center: jax.Array, scale: jax.Array,
                        post_process: bool = True) -> tuple[jax.Array, jax.Array]:
  """``get_final_preds`` in jnp (traceable: exported inference graphs decode on device).

  Args:
    heatmaps: ``[N, H, W, K]`` heatmaps.
    center: ``[N, 2]`` crop centres (x, y) in image pixels.
    scale: ``[N, 2]`` crop sizes / 200.
    post_process: static flag, the quarter-pixel refinement.

  Returns:
    ``preds`` float32 ``[N, K, 2]`` image pixels and ``maxvals`` ``[N, K, 1]``, equal to
    ``get_final_preds`` of the same values (up to float32 rounding of the back-projection).
  """
  if heatmaps.ndim != 4:
    raise ValueError(f"heatmaps must be [N, H, W, K] (channels-last), got shape {heatmaps.shape}")
  n, h, w, k = heatmaps.shape
  hm = heatmaps.astype(jnp.float32)
  flat = jnp.transpose(hm, (0, 3, 1, 2)).reshape(n, k, h * w)
  idx = jnp.argmax(flat, axis=2)
  maxvals = jnp.take_along_axis(flat, idx[..., None], axis=2)
  positive = (maxvals[..., 0] > 0).astype(jnp.float32)
  x = (idx % w).astype(jnp.float32) * positive
  y = (idx // w).astype(jnp.float32) * positive
  if post_process and h > 2 and w > 2:
    px = jnp.floor(x + 0.5).astype(jnp.int32)
    py = jnp.floor(y + 0.5).astype(jnp.int32)
    inside = (1 < px) & (px < w - 1) & (1 < py) & (py < h - 1)
    cx, cy = jnp.clip(px, 1, w - 2), jnp.clip(py, 1, h - 2)
    b, j = jnp.arange(n)[:, None], jnp.arange(k)[None, :]
    dx = hm[b, cy, cx + 1, j] - hm[b, cy, cx - 1, j]
    dy = hm[b, cy + 1, cx, j] - hm[b, cy - 1, cx, j]
    x = x + jnp.where(inside, jnp.sign(dx) * 0.25, 0.0)
    y = y + jnp.where(inside, jnp.sign(dy) * 0.25, 0.0)
  center = jnp.asarray(center, jnp.float32)
  s = jnp.asarray(scale, jnp.float32)[:, :1] * 200.0 / w  # [N, 1]: the box width sets both
  img_x = x * s + center[:, :1] - s * w / 2
  img_y = y * s + center[:, 1:] - s * h / 2
  return jnp.stack([img_x, img_y], axis=-1), maxvals
