"""JSON reads with a clear error, and atomic writes (temporary file, fsync, rename).

A crash or interruption mid-write leaves either the old file or none, never a truncated
one (results JSON, predictions, configs, metrics). Orbax checkpoints have their own
atomic protocol (``jaxpose.checkpoint``).
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from collections.abc import Callable
from typing import IO, Any


def read_json(path: str | os.PathLike, error: type[Exception] = ValueError) -> Any:
  """The parsed JSON file; ``error("PATH: not a valid JSON file (...)")`` if it is not."""
  source = os.fspath(path)
  with open(source, encoding="utf-8") as f:
    try:
      return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise error(f"{source}: not a valid JSON file ({e})") from e


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], *,
                 binary: bool = False) -> pathlib.Path:
  """Calls ``write(file)`` on a temporary file and renames it to ``path``.

  The destination folder is created if needed; on any error the temporary file is
  removed and the error re-raised.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def write_json(path: str | os.PathLike, obj: Any, **dump_kwargs) -> pathlib.Path:
  """``json.dump(obj)`` to ``path`` atomically (``dump_kwargs`` go to ``json.dump``)."""
  return atomic_write(path, lambda f: json.dump(obj, f, **dump_kwargs))
