"""Simulated 2D keypoint detections: ground-truth keypoints with detector-like errors.

``simulate_detections`` turns exact projected keypoints ``[T, K, 2]`` (pixels) into what a
2D detector run frame by frame gives, with per-joint confidence scores:

* a constant per-joint bias (detectors place joints slightly differently from motion
  capture markers, e.g. CPN on Human3.6M);
* temporally correlated jitter (AR(1)), larger at the extremities (wrists, ankles);
* left/right confusions: for a few frames a whole limb pair swaps sides;
* outliers: single-frame jumps of one joint by tens of pixels;
* scores: high for normal detections, lower for swapped limbs and very low for outliers.

Deterministic given the ``numpy.random.Generator``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class DetectorNoise:
  """Error model of a simulated 2D detector (pixels at Human3.6M's 1000 px resolution).

  Attributes:
    bias: standard deviation of the constant per-joint offset.
    jitter: standard deviation of the frame-to-frame noise of a torso joint.
    joint_scale: ``[K]`` multiplier of ``jitter`` per joint (``None``: all 1).
    correlation: AR(1) coefficient of the jitter between consecutive frames.
    swap_rate: probability per frame that a left/right swap starts.
    swap_frames: ``(min, max)`` length of a swap in frames.
    outlier_rate: probability per joint and frame of an outlier.
    outlier_distance: ``(min, max)`` outlier displacement.
  """
  bias: float = 2.0
  jitter: float = 2.5
  joint_scale: tuple[float, ...] | None = None
  correlation: float = 0.7
  swap_rate: float = 0.004
  swap_frames: tuple[int, int] = (2, 8)
  outlier_rate: float = 0.003
  outlier_distance: tuple[float, float] = (20.0, 80.0)


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], rho: float) -> np.ndarray:
  """Unit-variance AR(1) noise along axis 0."""
  white = rng.standard_normal(shape)
  out = np.empty(shape)
  out[0] = white[0]
  scale = np.sqrt(1 - rho * rho)
  for t in range(1, shape[0]):
    out[t] = rho * out[t - 1] + scale * white[t]
  return out


def simulate_detections(rng: np.random.Generator, keypoints: np.ndarray,
                        limb_pairs: Sequence[Sequence[tuple[int, int]]],
                        noise: DetectorNoise = DetectorNoise()) -> tuple[np.ndarray, np.ndarray]:
  """Detector-like keypoints and scores from exact ones.

  Args:
    rng: random generator.
    keypoints: ``[T, K, 2]`` exact pixel coordinates.
    limb_pairs: limbs that may swap sides, each a list of ``(left, right)`` joint pairs
      (e.g. the leg: hips, knees, ankles).
    noise: the error model.

  Returns:
    ``(positions [T, K, 2] float32 pixels, scores [T, K] float32 in [0, 1])``.
  """
  kps = np.asarray(keypoints, np.float64)
  num, joints = kps.shape[:2]
  scale = np.ones(joints) if noise.joint_scale is None else np.asarray(noise.joint_scale)
  jitter = _ar1(rng, (num, joints, 2), noise.correlation) * (noise.jitter * scale)[:, None]
  out = kps + rng.normal(0.0, noise.bias, (1, joints, 2)) + jitter
  deviation = np.linalg.norm(jitter, axis=-1) / (noise.jitter * scale)
  scores = 0.97 - 0.04 * deviation + rng.normal(0.0, 0.02, (num, joints))
  start = 0
  while limb_pairs and start < num:
    start += int(rng.geometric(noise.swap_rate)) if noise.swap_rate > 0 else num
    if start >= num:
      break
    length = int(rng.integers(noise.swap_frames[0], noise.swap_frames[1] + 1))
    limb = limb_pairs[int(rng.integers(len(limb_pairs)))]
    left = [a for a, _ in limb]
    right = [b for _, b in limb]
    frames = slice(start, min(start + length, num))
    out[frames, left + right] = out[frames, right + left]
    scores[frames, left + right] *= rng.uniform(0.5, 0.8)
    start += length
  outliers = rng.random((num, joints)) < noise.outlier_rate
  count = int(outliers.sum())
  angle = rng.uniform(0, 2 * np.pi, count)
  distance = rng.uniform(*noise.outlier_distance, count)
  out[outliers] += np.stack([np.cos(angle), np.sin(angle)], -1) * distance[:, None]
  scores[outliers] = rng.uniform(0.05, 0.4, count)
  return out.astype(np.float32), np.clip(scores, 0.0, 1.0).astype(np.float32)
