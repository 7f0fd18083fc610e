"""Users' files: which inputs are images or videos, reading them, writing results.

* ``expand_inputs``: image files, video files, directories (their images and videos,
  sorted, not recursive) and glob patterns -> ``MediaItem`` list, in the order given.
* ``read_image``: OpenCV BGR ``uint8 [H, W, 3]`` or ``MediaError`` naming the file.
* ``VideoReader``: frames of a video through OpenCV ``VideoCapture`` (FFmpeg backend), with
  a clear error when OpenCV cannot open the container or codec.
* ``VideoWriter``: ``.mp4`` (``mp4v``) or ``.avi`` (``MJPG``) through OpenCV, ``.gif``
  through Pillow; written to a temporary name and renamed when complete.
* ``prefetch``: runs an iterator in a background thread a few items ahead (file decoding
  and cropping overlap the device work of the main thread).
"""
from __future__ import annotations

import dataclasses
import glob
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                  ".gif")


class MediaError(ValueError):
  """An input cannot be read (the message names the file and why)."""


@dataclasses.dataclass(frozen=True)
class MediaItem:
  """One input: ``kind`` 'image' or 'video', its ``path`` and the ``name`` used for
  outputs (file name, made unique when two inputs share it)."""
  kind: str
  path: str
  name: str


def media_kind(path: str) -> str | None:
  """'image', 'video' or None, from the file suffix."""
  suffix = os.path.splitext(path)[1].lower()
  if suffix in IMAGE_SUFFIXES:
    return "image"
  if suffix in VIDEO_SUFFIXES:
    return "video"
  return None


def _unique_names(paths: list[str]) -> list[str]:
  """Base names, disambiguated with the parent folder when two inputs share one."""
  base = [os.path.basename(p) for p in paths]
  out = []
  for p, b in zip(paths, base):
    if base.count(b) > 1:
      parent = os.path.basename(os.path.dirname(os.path.abspath(p)))
      b = f"{parent}_{b}"
    out.append(b)
  seen: dict[str, int] = {}
  for i, name in enumerate(out):
    if name in seen:
      seen[name] += 1
      stem, ext = os.path.splitext(name)
      out[i] = f"{stem}_{seen[name]}{ext}"
    else:
      seen[name] = 0
  return out


def expand_inputs(inputs: Iterable[str]) -> list[MediaItem]:
  """Image and video files named by ``inputs`` (files, directories, glob patterns).

  Raises:
    MediaError: an input matches nothing, a named file is neither image nor video, or no
      input is left.
  """
  paths: list[str] = []
  for spec in inputs:
    spec = os.path.expanduser(spec)
    if os.path.isdir(spec):
      found = sorted(os.path.join(spec, n) for n in os.listdir(spec)
                     if media_kind(n) and os.path.isfile(os.path.join(spec, n)))
      if not found:
        raise MediaError(f"{spec}: directory holds no image or video file "
                         f"({', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})")
      paths.extend(found)
    elif os.path.isfile(spec):
      if media_kind(spec) is None:
        raise MediaError(f"{spec}: not an image or video file (by its suffix; images: "
                         f"{' '.join(IMAGE_SUFFIXES)}; videos: {' '.join(VIDEO_SUFFIXES)})")
      paths.append(spec)
    elif glob.has_magic(spec):
      found = sorted(p for p in glob.glob(spec) if os.path.isfile(p) and media_kind(p))
      if not found:
        raise MediaError(f"{spec}: the pattern matches no image or video file")
      paths.extend(found)
    else:
      raise MediaError(f"{spec}: no such file or directory")
  if not paths:
    raise MediaError("no input files given")
  names = _unique_names(paths)
  return [MediaItem(media_kind(p), p, n) for p, n in zip(paths, names)]


def read_image(path: str) -> np.ndarray:
  """OpenCV BGR ``uint8 [H, W, 3]`` (grey images are expanded, alpha dropped)."""
  data = np.fromfile(path, np.uint8) if os.path.isfile(path) else None
  if data is None:
    raise MediaError(f"{path}: no such image file")
  image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
  if image is None or image.ndim != 3 or min(image.shape[:2]) < 1:
    raise MediaError(f"{path}: cannot decode the image (corrupt or unsupported format)")
  return image


class VideoReader:
  """Frames of one video (OpenCV BGR ``uint8 [H, W, 3]``), read front to back.

  Raises:
    MediaError: OpenCV cannot open the file or decode its first frame (names the
      container and the four-character codec code when OpenCV reports one).
  """

  def __init__(self, path: str):
    self.path = path
    if not os.path.isfile(path):
      raise MediaError(f"{path}: no such video file")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
      cap.release()
      raise MediaError(f"{path}: OpenCV cannot open this video (unsupported container or "
                       "codec; re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)")
    ok, frame = cap.read()
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
    codec = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ")
    cap.release()
    if not ok or frame is None:
      raise MediaError(f"{path}: OpenCV opens the file but cannot decode a frame (codec "
                       f"{codec or 'unknown'}; re-encode it, e.g. ffmpeg -i IN -c:v libx264 "
                       "OUT.mp4)")
    self.height, self.width = frame.shape[:2]
    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS)
    self.frame_count_hint = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else 25.0
    self.codec = codec

  def __iter__(self) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(self.path)
    try:
      while True:
        ok, frame = cap.read()
        if not ok or frame is None:
          return
        yield frame
    finally:
      cap.release()


class VideoWriter:
  """Writes BGR frames to ``path`` (.mp4, .avi or .gif), renamed into place on ``close``.

  Raises:
    MediaError: OpenCV has no encoder for the container.
  """

  def __init__(self, path: str, fps: float):
    self.path = path
    self.fps = float(fps)
    stem, ext = os.path.splitext(path)
    self.ext = ext.lower()
    self._tmp = f"{stem}.partial{ext}"
    self._writer = None
    self._gif: list[Any] = []
    self.frames = 0

  def write(self, frame: np.ndarray) -> None:
    frame = np.ascontiguousarray(frame)
    if self.ext == ".gif":
      from PIL import Image  # a dependency of matplotlib
      self._gif.append(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
      self.frames += 1
      return
    if self._writer is None:
      fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.ext == ".avi" else "mp4v"))
      os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
      self._writer = cv2.VideoWriter(self._tmp, fourcc, self.fps,
                                     (frame.shape[1], frame.shape[0]))
      if not self._writer.isOpened():
        raise MediaError(f"{self.path}: OpenCV has no encoder for {self.ext} files here")
      self._size = (frame.shape[1], frame.shape[0])
    if (frame.shape[1], frame.shape[0]) != self._size:
      frame = cv2.resize(frame, self._size)
    self._writer.write(frame)
    self.frames += 1

  def close(self) -> None:
    """Finishes the file (nothing is written for zero frames)."""
    if self.ext == ".gif":
      if self._gif:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._gif[0].save(self._tmp, save_all=True, append_images=self._gif[1:],
                          duration=max(1, int(round(1000 / self.fps))), loop=0)
        os.replace(self._tmp, self.path)
      self._gif = []
      return
    if self._writer is not None:
      self._writer.release()
      self._writer = None
      os.replace(self._tmp, self.path)


def write_image(path: str, image: np.ndarray) -> None:
  """Encodes a BGR image by the suffix of ``path`` and writes it atomically."""
  from jaxpose import fileio
  ok, data = cv2.imencode(os.path.splitext(path)[1] or ".jpg", image)
  if not ok:
    raise MediaError(f"{path}: OpenCV cannot encode this image format")
  fileio.atomic_write(path, lambda f: f.write(data.tobytes()), binary=True)


_DONE = object()


def prefetch(items: Iterable[Any], depth: int = 4) -> Iterator[Any]:
  """``items`` produced in a background thread, at most ``depth`` ahead; an exception in
  the producer is re-raised in the consumer at the item where it happened."""
  q: queue.Queue = queue.Queue(maxsize=max(1, depth))
  stop = threading.Event()

  def put(entry) -> bool:
    while not stop.is_set():
      try:
        q.put(entry, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for item in items:
        if not put(("item", item)):
          return
      put(("done", _DONE))
    except BaseException as e:  # handed to the consumer
      put(("error", e))

  thread = threading.Thread(target=produce, daemon=True)
  thread.start()
  try:
    while True:
      kind, value = q.get()
      if kind == "done":
        return
      if kind == "error":
        raise value
      yield value
  finally:
    stop.set()
    thread.join(timeout=5)
