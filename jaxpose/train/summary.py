"""TensorBoard event files and skeleton drawings.

Scalars (loss, learning rate, images/s, eval metrics) and a few validation crops with the
predicted skeleton are written with ``tf.summary`` (TensorFlow is installed for building
TFDS datasets anyway); only process 0 writes.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import jax
import numpy as np

# Colours (BGR-agnostic, applied to the image as stored) for left / right / centre limbs.
_LEFT, _RIGHT, _CENTRE = (255, 128, 0), (0, 128, 255), (0, 255, 0)


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                  skeleton: Sequence[Sequence[int]], flip_pairs: Sequence[Sequence[int]] = (),
                  threshold: float = 0.2, radius: int = 2) -> np.ndarray:
  """A copy of ``image`` (uint8 ``[H, W, 3]``) with the keypoints and limbs drawn.

  Args:
    image: the picture to draw on.
    keypoints: ``[K, 2]`` (x, y) in the image's pixels.
    scores: ``[K]`` confidences; keypoints scoring below ``threshold`` are not drawn.
    skeleton: limbs as 0-based keypoint index pairs.
    flip_pairs: left/right pairs, used only to colour left (first) and right (second)
      joints differently.
  """
  out = np.ascontiguousarray(image.copy())
  left = {p[0] for p in flip_pairs}
  right = {p[1] for p in flip_pairs}

  def colour(*joints):
    if all(j in left for j in joints):
      return _LEFT
    if all(j in right for j in joints):
      return _RIGHT
    return _CENTRE

  pts = [tuple(int(round(v)) for v in p) for p in np.asarray(keypoints)[:, :2]]
  for a, b in skeleton:
    if scores[a] >= threshold and scores[b] >= threshold:
      cv2.line(out, pts[a], pts[b], colour(a, b), 1, cv2.LINE_AA)
  for j, p in enumerate(pts):
    if scores[j] >= threshold:
      cv2.circle(out, p, radius, colour(j), -1, cv2.LINE_AA)
  return out


class SummaryWriter:
  """``tf.summary`` event files under ``logdir`` (no-op on processes other than 0)."""

  def __init__(self, logdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._writer = None
    if self.enabled:
      import tensorflow as tf  # imported only where event files are written
      tf.config.set_visible_devices([], "GPU")  # keep TF off accelerators that JAX owns
      self._tf = tf
      self._writer = tf.summary.create_file_writer(logdir)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    if not self._writer:
      return
    with self._writer.as_default(step=int(step)):
      for name, value in values.items():
        self._tf.summary.scalar(name, float(value))

  def images(self, step: int, name: str, images: np.ndarray, max_outputs: int = 8) -> None:
    """``images``: uint8 ``[N, H, W, 3]`` in RGB order."""
    if not self._writer or len(images) == 0:
      return
    with self._writer.as_default(step=int(step)):
      self._tf.summary.image(name, np.asarray(images, np.uint8), max_outputs=max_outputs)

  def text(self, step: int, name: str, text: str) -> None:
    """A text entry (warnings; TensorBoard's Text tab)."""
    if not self._writer:
      return
    with self._writer.as_default(step=int(step)):
      self._tf.summary.text(name, text)

  def flush(self) -> None:
    if self._writer:
      self._writer.flush()

  def close(self) -> None:
    if self._writer:
      self._writer.close()
