"""TensorBoard event files (skeleton drawings: ``jaxpose.drawing``).

Scalars (loss, learning rate, images/s, eval metrics) and a few validation crops with the
predicted skeleton are written with ``tf.summary`` (TensorFlow is installed for building
TFDS datasets anyway); only process 0 writes.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np


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
