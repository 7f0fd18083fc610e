"""Helpers shared by the jaxpose TFDS builders: manual files, image reading, skip logs."""
from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import tensorflow_datasets as tfds

logger = logging.getLogger("jaxpose.data_builders")

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
JPEG_SOS = b"\xff\xda"


def float64_tensor(shape: tuple[int | None, ...], doc: str) -> tfds.features.Tensor:
  """A float64 feature stored losslessly.

  ``tf.train.Example`` keeps floats as float32; raw-bytes encoding keeps the files' values
  exact (e.g. COCO boxes, synthetic keypoints with two decimals).
  """
  return tfds.features.Tensor(shape=shape, dtype=np.float64,
                              encoding=tfds.features.Encoding.BYTES, doc=doc)


class ArrayRecordByDefault:
  """Builder mixin: write ``array_record`` files (what grain reads) unless the caller
  asks for another ``file_format``. Goes before ``tfds.core.GeneratorBasedBuilder``."""

  def __init__(self, *, file_format: str | None = None, **kwargs: Any):
    super().__init__(file_format=file_format or "array_record", **kwargs)


class MissingManualFilesError(FileNotFoundError):
  """Files a builder needs are not in its manual directory (the message lists them all)."""


def manual_root(dl_manager: Any) -> pathlib.Path | None:
  """The manual directory of a TFDS download manager, or ``None`` if unset/empty.

  TFDS raises its own ``AssertionError`` when the folder is missing or empty; the
  builders turn that into :class:`MissingManualFilesError` listing every file instead.
  """
  try:
    return pathlib.Path(os.fspath(dl_manager.manual_dir))
  except AssertionError:
    return None


def require_manual_files(
    dataset: str,
    dl_manager: Any,
    required: Sequence[tuple[str, str]],
    instructions: str,
) -> pathlib.Path:
  """Checks that every required path exists under the manual directory.

  Args:
    dataset: the builder name, for the message.
    dl_manager: the TFDS download manager (its ``manual_dir``).
    required: ``(relative path, what it is)`` pairs; a path ending in ``/`` must be a
      non-empty folder, any other a file.
    instructions: the builder's download instructions, appended to the message.

  Returns:
    The manual directory.

  Raises:
    MissingManualFilesError: one error listing every missing path and where it goes.
  """
  root = manual_root(dl_manager)
  where = root if root is not None else pathlib.Path(
      os.fspath(getattr(dl_manager, "_manual_dir", None) or "<manual_dir>"))
  missing = []
  for rel, what in required:
    path = where / rel.rstrip("/")
    if rel.endswith("/"):
      ok = root is not None and path.is_dir() and any(path.iterdir())
    else:
      ok = root is not None and path.is_file()
    if not ok:
      missing.append(f"  - {path}{'/' if rel.endswith('/') else ''}  ({what})")
  if missing:
    raise MissingManualFilesError(
        f"{dataset}: {len(missing)} required path(s) missing from the manual directory "
        f"{where}:\n" + "\n".join(missing) + "\n\n" + instructions.strip() + "\n"
        "Pass the folder as manual_dir (build_dataset(..., manual_dir=...) or "
        "`tfds build --manual_dir=...`).")
  return root  # type: ignore[return-value]


def read_jpeg(path: pathlib.Path) -> tuple[bytes, tuple[int, int]]:
  """Reads an image file as JPEG bytes and checks that it decodes.

  Args:
    path: the image file.

  Returns:
    ``(jpeg_bytes, (height, width))``. JPEG files are passed through unchanged; other
    formats OpenCV reads are re-encoded as JPEG (quality 95).

  Raises:
    OSError: the file is missing, unreadable, truncated or not a decodable image
      (the message says which).
  """
  if not path.is_file():
    raise OSError(f"missing image file {path}")
  data = path.read_bytes()
  if not data:
    raise OSError(f"empty image file {path}")
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if image is None or image.size == 0:
    raise OSError(f"corrupt image file {path}: OpenCV cannot decode it")
  if data.startswith(JPEG_MAGIC):
    # The scan data of the last start-of-scan segment must end with an end-of-image
    # marker; a cut-off file decodes (grey filled) but has none after it.
    if data.find(JPEG_END, max(data.rfind(JPEG_SOS), 0)) < 0:
      raise OSError(f"truncated image file {path}: no JPEG end-of-image marker")
    return data, image.shape[:2]
  ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
  if not ok:
    raise OSError(f"image file {path} could not be re-encoded as JPEG")
  return encoded.tobytes(), image.shape[:2]


class SkipLog:
  """Counts skipped examples and logs one warning per skip plus a summary.

  ``what`` names what was counted in the summary (``"skipped 2 of 9 <what>"``).
  """

  def __init__(self, dataset: str, split: str, what: str = "images with unreadable files"):
    self.dataset, self.split, self.what = dataset, split, what
    self.skipped: list[str] = []
    self.total = 0

  def skip(self, reason: str) -> None:
    self.skipped.append(reason)
    logger.warning("%s[%s]: skipping an example: %s", self.dataset, self.split, reason)

  def summary(self) -> None:
    if self.skipped:
      logger.warning("%s[%s]: skipped %d of %d %s", self.dataset, self.split,
                     len(self.skipped), self.total, self.what)
