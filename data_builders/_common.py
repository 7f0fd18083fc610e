"""Helpers shared by the jaxpose TFDS builders: manual files, image reading, skip logs,
and the choice between a plain Python loop and an Apache Beam pipeline."""
from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Callable, Hashable, Iterator, Sequence
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
  """Files a builder needs are not in its manual directory (the message lists them all).

  Attributes:
    dataset: the builder name.
    manual_dir: the manual directory that was searched.
    missing: ``(path, what it is)`` of every missing file or folder (folders end in
      ``/``).
  """

  def __init__(self, message: str, dataset: str = "", manual_dir: pathlib.Path | None = None,
               missing: Sequence[tuple[str, str]] = ()):
    super().__init__(message)
    self.dataset, self.manual_dir, self.missing = dataset, manual_dir, list(missing)

  def summary(self) -> str:
    """One line: the dataset, the manual directory and every missing path."""
    if not self.missing:
      return str(self).splitlines()[0]
    listed = ", ".join(f"{path} ({what})" for path, what in self.missing)
    return f"{self.dataset}: missing from the manual directory {self.manual_dir}: {listed}"


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
      missing.append((path, what, "/" if rel.endswith("/") else ""))
  if missing:
    listed = "\n".join(f"  - {path}{slash}  ({what})" for path, what, slash in missing)
    raise MissingManualFilesError(
        f"{dataset}: {len(missing)} required path(s) missing from the manual directory "
        f"{where}:\n" + listed + "\n\n" + instructions.strip() + "\n"
        "Pass the folder as manual_dir (build_dataset(..., manual_dir=...) or "
        "`tfds build --manual_dir=...`).",
        dataset=dataset, manual_dir=where,
        missing=[(f"{path}{slash}", what) for path, what, slash in missing])
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


class NoExamplesError(RuntimeError):
  """A split would be empty (every image failed, or the annotations list none); the
  build stops instead of writing it. The message is one line naming the split."""


def no_examples_message(dataset: str, split: str, total: int, first_reason: str | None) -> str:
  """The one-line :class:`NoExamplesError` message."""
  if total == 0:
    return f"{dataset}[{split}]: the annotations list no images; refusing to write an empty split"
  return (f"{dataset}[{split}]: all {total} images failed (first: {first_reason}); "
          "refusing to write an empty split")


class SkipLog:
  """Counts skipped examples and logs one warning per skip plus a summary.

  ``what`` names what was counted in the summary (``"skipped 2 of 9 <what>"``).
  """

  def __init__(self, dataset: str, split: str, what: str = "images with unreadable files"):
    self.dataset, self.split, self.what = dataset, split, what
    self.skipped: list[str] = []
    self.total = 0
    self.written = 0

  def skip(self, reason: str) -> None:
    self.skipped.append(reason)
    logger.warning("%s[%s]: skipping an example: %s", self.dataset, self.split, reason)

  def summary(self) -> None:
    if self.skipped:
      logger.warning("%s[%s]: skipped %d of %d %s", self.dataset, self.split,
                     len(self.skipped), self.total, self.what)

  def finish(self) -> None:
    """Logs the summary; raises :class:`NoExamplesError` if no example was produced."""
    self.summary()
    if self.written == 0:
      raise NoExamplesError(no_examples_message(
          self.dataset, self.split, self.total, self.skipped[0] if self.skipped else None))


# ``make_example(item) -> (key, example)``; raises ``OSError`` for an unreadable image
# (the example is skipped with a warning). Must be picklable for Beam: a module-level
# function or a ``functools.partial`` of one.
MakeExample = Callable[[Any], tuple[Hashable, dict[str, Any]]]


def generate_examples(items: Sequence[Any], make_example: MakeExample, dataset: str,
                      split: str) -> Iterator[tuple[Hashable, dict[str, Any]]]:
  """``make_example`` over ``items`` in a Python loop, skipping unreadable images.

  Raises:
    NoExamplesError: at the end, when every item was skipped (or there were none).
  """
  log = SkipLog(dataset, split)
  for item in items:
    log.total += 1
    try:
      key, example = make_example(item)
    except OSError as e:
      log.skip(str(e))
      continue
    log.written += 1
    yield key, example
  log.finish()


def _beam_example(item: Any, make_example: MakeExample, dataset: str,
                  split: str) -> Iterator[tuple[Hashable, dict[str, Any]]]:
  """The example of one item, or nothing (a warning and a metric) for an unreadable image."""
  beam = tfds.core.lazy_imports.apache_beam
  try:
    yield make_example(item)
  except OSError as e:
    logger.warning("%s[%s]: skipping an example: %s", dataset, split, e)
    beam.metrics.Metrics.counter(f"{dataset}[{split}]", "skipped_images").inc()


def beam_examples(items: Sequence[Any], make_example: MakeExample, dataset: str,
                  split: str) -> Any:
  """The same examples as :func:`generate_examples`, as an Apache Beam ``PTransform``.

  Each item is a pipeline element, so the images are read by the Beam workers; skipped
  images are logged and counted in the ``skipped_images`` metric. An empty split fails
  the pipeline in TFDS's own check ("The total number of generated examples is 0 for
  split ...").
  """
  beam = tfds.core.lazy_imports.apache_beam
  items = list(items)

  def expand(root):
    return (root
            | "Items" >> beam.Create(items)
            | "Examples" >> beam.FlatMap(_beam_example, make_example, dataset, split))

  return beam.ptransform_fn(expand)()


class BeamWhenAsked:
  """Builder mixin: examples come from an Apache Beam pipeline when the build is given a
  Beam runner or pipeline options (``tfds build --beam_pipeline_options=...``, or
  ``DownloadConfig(beam_runner=..., beam_options=...)``), from a Python loop otherwise.

  Goes before ``tfds.core.GeneratorBasedBuilder``; ``_generate_examples`` returns
  ``self.examples(items, make_example, split)``.
  """

  _use_beam = False

  def download_and_prepare(self, *, download_config: Any = None, **kwargs: Any) -> None:
    self._use_beam = download_config is not None and (
        download_config.beam_runner is not None or download_config.beam_options is not None)
    return super().download_and_prepare(download_config=download_config, **kwargs)

  def examples(self, items: Sequence[Any], make_example: MakeExample, split: str) -> Any:
    """:func:`beam_examples` under Beam, else :func:`generate_examples`."""
    make = beam_examples if self._use_beam else generate_examples
    return make(items, make_example, self.name, split)
