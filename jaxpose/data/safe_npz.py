"""Reads ``.npz``/``.npy`` files, including pickled object arrays, without running pickled code.

``np.load(allow_pickle=True)`` unpickles object arrays with the standard unpickler, which
imports and calls whatever the file names (``os.system`` included). The files
VideoPose3D's preparation scripts write (``data_3d_h36m.npz``, ``data_2d_h36m_*.npz``)
are exactly such object arrays: a 0-d array holding nested dicts and lists of numpy
arrays. This module reads them with a restricted unpickler that rebuilds only

* numpy arrays (``numpy.core.multiarray._reconstruct`` as numpy 1.x writes it,
  ``numpy._core.multiarray._reconstruct`` as numpy 2 does) of plain numeric/bool/object
  dtypes, checking that the shape, dtype and byte count agree with the real buffer;
  (and protocol-5 pickles' ``numpy._core.numeric._frombuffer``);
* numpy scalars (``numpy.core.multiarray.scalar``), e.g. the ``numpy.int64`` joint indices
  of ``keypoints_symmetry``;
* ``numpy.dtype`` objects of those plain dtypes;
* byte strings that protocol-2 pickles spell as ``_codecs.encode(text, 'latin1')`` (and
  ``bytes()`` for an empty one);
* plain containers (dict, list, tuple, set) and scalars, which pickle builds without
  calling anything.

Any other global (``os.system``, ``builtins.eval``, a class) is refused: the file is
reported as :class:`UnsafeFileError` naming the global, and nothing is imported or called.
Plain (non-object) ``.npy`` members are read from their header and raw bytes, with the
byte count checked.

(``jaxpose.convert.torch_pickle`` applies the same idea to PyTorch checkpoints; it turns
unknown globals into inert placeholders because checkpoints legitimately carry arbitrary
classes, while these data files never do.)
"""
from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
from typing import Any

import numpy as np

# The dtypes a data file may hold: numeric, bool, fixed-size strings and object.
# Structured, void and datetime dtypes are not needed by any file this project reads.
_ALLOWED_KINDS = frozenset("biufcUSO")
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC_MODULES = ("numpy.core.numeric", "numpy._core.numeric")
_MAX_HEADER_BYTES = 1 << 16


class NpzError(ValueError):
  """An ``.npz``/``.npy`` file that cannot be read: missing, truncated, malformed."""


class UnsafeFileError(NpzError):
  """A pickle inside the file references a global this reader refuses to call."""


class _NdarrayType:
  """Stands in for ``numpy.ndarray`` as the first argument of ``_reconstruct``."""


_NDARRAY = _NdarrayType()


def _check_dtype(dtype: np.dtype, where: str) -> np.dtype:
  if dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
    raise NpzError(f"{where}: unsupported dtype {dtype!r} (only numeric, bool, string and "
                   "object arrays)")
  return dtype


class _PendingDtype:
  """A ``numpy.dtype(spec, align, copy)`` call; its ``__setstate__`` sets the byte order."""

  def __init__(self, spec: Any, where: str):
    if not isinstance(spec, str):
      raise NpzError(f"{where}: malformed pickled dtype {spec!r:.60}")
    try:
      self.dtype = _check_dtype(np.dtype(spec), where)
    except TypeError:
      raise NpzError(f"{where}: unknown pickled dtype {spec!r:.60}") from None
    self.where = where

  def __setstate__(self, state: Any) -> None:
    if not isinstance(state, tuple) or len(state) < 2 or not isinstance(state[1], str):
      raise NpzError(f"{self.where}: malformed pickled dtype state {state!r:.80}")
    order = state[1]
    if order not in ("<", ">", "|", "="):
      raise NpzError(f"{self.where}: malformed dtype byte order {order!r}")
    if order in ("<", ">"):
      self.dtype = self.dtype.newbyteorder(order)


class _PendingArray:
  """What ``_reconstruct(ndarray, (0,), b'b')`` returns; ``__setstate__`` fills it."""

  def __init__(self, where: str):
    self.where = where
    self.array: np.ndarray | None = None

  def __setstate__(self, state: Any) -> None:
    if not isinstance(state, tuple) or len(state) not in (4, 5):
      raise NpzError(f"{self.where}: malformed pickled array state")
    if len(state) == 5:
      state = state[1:]  # (version, shape, dtype, is_fortran, data)
    shape, dtype, fortran, data = state
    if (not isinstance(shape, tuple)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
      raise NpzError(f"{self.where}: malformed array shape {shape!r:.80}")
    if isinstance(dtype, _PendingDtype):
      dtype = dtype.dtype
    if not isinstance(dtype, np.dtype):
      raise NpzError(f"{self.where}: malformed array dtype {dtype!r:.80}")
    count = math.prod(shape)
    order = "F" if fortran else "C"
    if dtype.kind == "O":
      if not isinstance(data, list) or len(data) != count:
        raise NpzError(
            f"{self.where}: object array of shape {shape} needs {count} items, the pickle "
            f"holds {len(data) if isinstance(data, list) else type(data).__name__}")
      array = np.empty(count, dtype=object)
      for i, item in enumerate(data):
        array[i] = item
      self.array = array.reshape(shape, order=order)
      return
    if isinstance(data, str):  # a Python 2 byte string decoded as latin1
      data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray)):
      raise NpzError(f"{self.where}: array data is {type(data).__name__}, expected bytes")
    need = count * dtype.itemsize
    if len(data) != need:
      raise NpzError(
          f"{self.where}: array of shape {shape} and dtype {dtype} needs {need} bytes, the "
          f"pickle holds {len(data)} (truncated or corrupt)")
    array = np.frombuffer(bytes(data), dtype=dtype).reshape(shape, order=order)
    self.array = array.astype(dtype.newbyteorder("="), copy=True)


def _numpy_scalar(where: str):
  def scalar(dtype: Any, data: Any = None):
    if isinstance(dtype, _PendingDtype):
      dtype = dtype.dtype
    if not isinstance(dtype, np.dtype) or dtype.kind == "O":
      raise NpzError(f"{where}: malformed pickled numpy scalar of dtype {dtype!r:.60}")
    if isinstance(data, str):
      data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
      raise NpzError(f"{where}: numpy scalar of dtype {dtype} needs {dtype.itemsize} bytes")
    return np.frombuffer(bytes(data), dtype=dtype)[0].astype(dtype.newbyteorder("="))
  return scalar


def _codecs_encode(where: str):
  def encode(text: Any, encoding: Any = "utf-8"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1"):
      raise UnsafeFileError(f"{where}: refusing _codecs.encode({text!r:.40}, {encoding!r:.20})")
    return text.encode("latin1")
  return encode


def _empty_bytes(where: str):
  def empty(*args):  # protocol 2 spells b"" as bytes()
    if args:
      raise UnsafeFileError(f"{where}: refusing bytes() with arguments in a pickle")
    return b""
  return empty


class _RestrictedUnpickler(pickle.Unpickler):
  """Rebuilds arrays, dtypes, numpy scalars and byte strings; refuses every other global."""

  def __init__(self, file: io.BytesIO, where: str):
    super().__init__(file, encoding="latin1")
    self._where = where

  def find_class(self, module: str, name: str):
    where = self._where
    if module in _NUMPY_MODULES and name == "_reconstruct":
      return self._reconstruct
    if module in _NUMPY_MODULES and name == "scalar":
      return _numpy_scalar(where)
    if module in _NUMERIC_MODULES and name == "_frombuffer":
      return self._frombuffer
    if module == "numpy" and name == "ndarray":
      return _NDARRAY
    if module == "numpy" and name == "dtype":
      return lambda spec, *unused: _PendingDtype(spec, where)
    if module == "_codecs" and name == "encode":
      return _codecs_encode(where)
    if module in ("builtins", "__builtin__") and name == "bytes":
      return _empty_bytes(where)
    raise UnsafeFileError(
        f"{where}: the pickle references {module}.{name}, which a data file has no reason "
        "to call; refusing to load it (only numpy arrays, scalars and plain containers are "
        "allowed)")

  def persistent_load(self, pid):
    raise UnsafeFileError(f"{self._where}: unsupported persistent id in pickle")

  def _reconstruct(self, subtype: Any, shape: Any = None, dtype_code: Any = None):
    if subtype is not _NDARRAY:
      raise UnsafeFileError(f"{self._where}: _reconstruct of something other than ndarray")
    return _PendingArray(self._where)

  def _frombuffer(self, buffer: Any, dtype: Any, shape: Any, order: Any = "C"):
    """Protocol-5 arrays: ``_frombuffer(bytes, dtype, shape, order)``."""
    pending = _PendingArray(self._where)
    pending.__setstate__((shape, dtype, order == "F", buffer))
    return pending


def _finish(obj: Any, where: str, depth: int = 0) -> Any:
  """Replaces the placeholders by the arrays/dtypes they built (recursively)."""
  if depth > 100:
    raise NpzError(f"{where}: pickled structure nested too deeply")
  if isinstance(obj, _PendingArray):
    if obj.array is None:
      raise NpzError(f"{where}: a pickled array has no data (truncated pickle?)")
    if obj.array.dtype.kind == "O":
      flat = obj.array.reshape(-1, order="A")
      for i in range(flat.size):
        flat[i] = _finish(flat[i], where, depth + 1)
    return obj.array
  if isinstance(obj, _PendingDtype):
    return obj.dtype
  if isinstance(obj, dict):
    return {k: _finish(v, where, depth + 1) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_finish(v, where, depth + 1) for v in obj]
  if isinstance(obj, tuple):
    return tuple(_finish(v, where, depth + 1) for v in obj)
  return obj


def loads_pickle(data: bytes, where: str) -> Any:
  """Unpickles ``data`` with the restricted unpickler.

  Args:
    data: a pickle stream (protocols 0-5).
    where: names the source in error messages (e.g. ``"file.npz:positions_3d"``).

  Returns:
    The object, with numpy arrays, numpy scalars and dtypes rebuilt.

  Raises:
    UnsafeFileError: the pickle references a global other than the allowed numpy ones.
    NpzError: the pickle is truncated or malformed, or an array's bytes do not match its
      shape and dtype.
  """
  unpickler = _RestrictedUnpickler(io.BytesIO(data), where)
  try:
    obj = unpickler.load()
  except NpzError:
    raise
  except Exception as e:  # malformed or truncated stream  # noqa: BLE001
    raise NpzError(f"{where}: corrupt or truncated pickle ({type(e).__name__}: {e})") from None
  return _finish(obj, where)


def _read_npy(data: bytes, where: str) -> np.ndarray:
  """One ``.npy`` member: header checked, raw bytes or a restricted pickle."""
  stream = io.BytesIO(data)
  try:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
      shape, fortran, dtype = np.lib.format.read_array_header_1_0(
          stream, max_header_size=_MAX_HEADER_BYTES)
    elif version in ((2, 0), (3, 0)):
      shape, fortran, dtype = np.lib.format.read_array_header_2_0(
          stream, max_header_size=_MAX_HEADER_BYTES)
    else:
      raise NpzError(f"{where}: unsupported .npy format version {version}")
  except NpzError:
    raise
  except Exception as e:  # bad magic, truncated or malformed header  # noqa: BLE001
    raise NpzError(f"{where}: not a valid .npy array ({e})") from None
  dtype = _check_dtype(dtype, where)
  body = data[stream.tell():]
  if dtype.kind == "O":
    array = loads_pickle(body, where)
    if not isinstance(array, np.ndarray) or array.dtype.kind != "O" or array.shape != shape:
      raise NpzError(f"{where}: the pickle does not hold the object array of shape {shape} "
                     "the header announces")
    return array
  need = math.prod(shape) * dtype.itemsize
  if len(body) != need:
    raise NpzError(f"{where}: array of shape {shape} and dtype {dtype} needs {need} bytes, "
                   f"the file holds {len(body)} (truncated or corrupt)")
  array = np.frombuffer(body, dtype=dtype).reshape(shape, order="F" if fortran else "C")
  return array.astype(dtype.newbyteorder("="), copy=True)


def read_npz(path: str | os.PathLike, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
  """The arrays of an ``.npz`` file, as ``np.load(path, allow_pickle=True)`` gives them.

  Args:
    path: an ``.npz`` file (``np.savez`` / ``np.savez_compressed``).
    keys: the arrays to read (all when ``None``); a missing key is an error.

  Returns:
    ``{name: array}``; a pickled object (e.g. a dict) comes back as a 0-d object array,
    ``array.item()`` gives the object.

  Raises:
    NpzError: missing, truncated or corrupt file, or a missing key (the message names the
      file and the array).
    UnsafeFileError: a pickle inside references a disallowed global.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise NpzError(f"{path}: no such file")
  try:
    archive = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise NpzError(f"{path}: not a readable .npz (zip) file ({e})") from None
  with archive:
    members = {n[:-4] if n.endswith(".npy") else n: n for n in archive.namelist()}
    wanted = tuple(members) if keys is None else keys
    missing = [k for k in wanted if k not in members]
    if missing:
      raise NpzError(f"{path}: no array named {', '.join(map(repr, missing))} "
                     f"(the file holds {', '.join(sorted(members)) or 'nothing'})")
    out = {}
    for key in wanted:
      where = f"{path}:{key}"
      try:
        data = archive.read(members[key])
      except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise NpzError(f"{where}: corrupt or truncated member ({e})") from None
      except Exception as e:  # zlib.error on a damaged deflate stream  # noqa: BLE001
        raise NpzError(f"{where}: corrupt or truncated member ({type(e).__name__}: {e})") from None
      out[key] = _read_npy(data, where)
  return out


def read_object(path: str | os.PathLike, key: str) -> Any:
  """The pickled object stored as the 0-d object array ``key`` of an ``.npz`` file.

  The equivalent of ``np.load(path, allow_pickle=True)[key].item()``, without running
  pickled code.

  Raises:
    NpzError: as :func:`read_npz`, or ``key`` is not a 0-d object array.
  """
  array = read_npz(path, (key,))[key]
  if array.dtype.kind != "O" or array.shape != ():
    raise NpzError(f"{os.fspath(path)}:{key}: expected a pickled object (0-d object array), "
                   f"got an array of shape {array.shape} and dtype {array.dtype}")
  return array.item()
