"""Reads PyTorch checkpoint files without PyTorch and without running pickled code.

Two on-disk formats exist:

* the zip format (``torch.save`` since torch 1.6): a zip archive holding ``*/data.pkl`` and
  one raw file per storage under ``*/data/<key>``;
* the legacy format (torch < 1.6, and ``_use_new_zipfile_serialization=False``): a stream
  of pickles (magic number, protocol version, system info, the object, the list of storage
  keys) followed by each storage as an int64 element count and its raw bytes. The 2018-2019
  model-zoo files of HRNet, VideoPose3D and integral-human-pose are in this format.

The unpickler is restricted: it resolves only the handful of globals needed to rebuild
tensors and plain containers (``collections.OrderedDict``, ``torch._utils._rebuild_*``,
``torch.*Storage`` dtype markers). Any other global becomes an inert ``OpaqueObject``
recording its name and arguments; nothing outside this module is imported or called. Tensors
come back as numpy arrays (``ml_dtypes.bfloat16`` for bfloat16).
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import tarfile
import zipfile
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


class CheckpointError(ValueError):
  """A checkpoint file that cannot be read or converted; the message says why and where."""


_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}

_TORCH_DTYPES = {
    "float32": np.float32, "float": np.float32, "float64": np.float64, "double": np.float64,
    "float16": np.float16, "half": np.float16, "bfloat16": ml_dtypes.bfloat16,
    "int64": np.int64, "long": np.int64, "int32": np.int32, "int": np.int32,
    "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "bool": np.bool_,
}


class OpaqueObject:
  """Stand-in for a pickled object of a class this reader does not rebuild.

  Holds the qualified name, the constructor arguments and the state that the pickle
  carried, so that callers can inspect (but never execute) it.
  """

  def __init__(self, qualname: str, args: tuple = (), kwargs: dict | None = None):
    self.qualname = qualname
    self.args = args
    self.kwargs = kwargs or {}
    self.state: Any = None
    self.items: list = []

  def __setstate__(self, state):
    self.state = state

  def append(self, item):  # APPENDS on a list subclass
    self.items.append(item)

  def extend(self, items):
    self.items.extend(items)

  def __setitem__(self, key, value):  # SETITEMS on a dict subclass
    self.items.append((key, value))

  def __repr__(self):
    return f"<opaque {self.qualname}>"


def _opaque_class(qualname: str) -> type:
  """A class whose calls and ``__new__`` produce ``OpaqueObject``s named ``qualname``."""

  class _Opaque(OpaqueObject):
    def __new__(cls, *args, **kwargs):
      obj = object.__new__(OpaqueObject)
      OpaqueObject.__init__(obj, qualname, args, kwargs)
      return obj

    def __init__(self, *args, **kwargs):  # pragma: no cover - __new__ returns the instance
      pass

  _Opaque.__name__ = _Opaque.__qualname__ = qualname
  return _Opaque


class _Storage:
  """A typed, flat storage; ``data`` is filled once its bytes are read.

  Legacy files may reference a view ``(offset, numel)`` into a ``root`` storage.
  """

  def __init__(self, key: str, dtype: np.dtype, numel: int, root: "_Storage | None" = None,
               view_offset: int = 0):
    self.key = key
    self.dtype = dtype
    self.numel = numel
    self.data: np.ndarray | None = None
    self.root = root
    self.view_offset = view_offset

  def elements(self) -> np.ndarray | None:
    if self.root is None:
      return self.data
    if self.root.data is None:
      return None
    return self.root.data[self.view_offset:self.view_offset + self.numel]


class _StorageType:
  def __init__(self, name: str, dtype: np.dtype):
    self.name = name
    self.dtype = dtype


class _LazyTensor:
  """A tensor whose storage bytes may not be read yet (legacy format)."""

  def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
    self.storage = storage
    self.offset = int(offset)
    self.size = tuple(int(s) for s in size)
    self.stride = tuple(int(s) for s in stride)

  def materialize(self) -> np.ndarray:
    st = self.storage
    base = st.elements()
    if base is None:
      raise CheckpointError(f"storage {st.key!r} was referenced but never written (truncated file?)")
    if not self.size:
      if self.offset >= base.size:
        raise CheckpointError(f"tensor offset {self.offset} outside storage {st.key!r}")
      return np.array(base[self.offset])
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
    if 0 in self.size:
      return np.zeros(self.size, st.dtype)
    if self.offset < 0 or last >= base.size:
      raise CheckpointError(
          f"tensor of size {self.size} at offset {self.offset} exceeds storage {st.key!r} "
          f"of {base.size} elements (truncated or corrupt file)")
    strides = tuple(s * base.itemsize for s in self.stride)
    view = np.lib.stride_tricks.as_strided(base[self.offset:], self.size, strides)
    return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  if not isinstance(storage, _Storage):
    raise CheckpointError("malformed tensor record: storage is not a storage reference")
  return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
  return data


def _rebuild_from_type(func, new_type, args, state):
  del new_type, state
  return func(*args)


def _ordered_dict(*args, **kwargs):
  return collections.OrderedDict(*args, **kwargs)


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("__builtin__", "set"): set,
    ("torch", "Size"): tuple,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Rebuilds tensors as ``_LazyTensor``s; everything unknown becomes an ``OpaqueObject``."""

  def __init__(self, file: BinaryIO, storage_loader):
    super().__init__(file, encoding="latin1")
    self._storage_loader = storage_loader
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module: str, name: str):
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:
      return _StorageType(name, _STORAGE_DTYPES[name])
    if module == "torch" and name in _TORCH_DTYPES:
      return np.dtype(_TORCH_DTYPES[name])
    return _opaque_class(f"{module}.{name}")

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
      raise CheckpointError(f"unsupported persistent id {pid!r:.80}")
    storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
    if isinstance(storage_type, _StorageType):
      dtype = storage_type.dtype
    elif isinstance(storage_type, np.dtype):
      dtype = storage_type
    else:
      raise CheckpointError(f"unsupported storage type {storage_type!r} for storage {key!r}")
    storage = self.storages.get(key)
    if storage is None:
      storage = _Storage(key, dtype, numel)
      self.storages[key] = storage
      self._storage_loader(storage)
    view_metadata = pid[5] if len(pid) > 5 else None
    if view_metadata is not None:  # legacy: a view (key, offset, size) into a root storage
      view_key, offset, view_numel = view_metadata
      return _Storage(str(view_key), dtype, int(view_numel), root=storage, view_offset=int(offset))
    return storage


def _materialize(obj: Any) -> Any:
  """Replaces every ``_LazyTensor`` in containers with a numpy array."""
  if isinstance(obj, _LazyTensor):
    return obj.materialize()
  if isinstance(obj, collections.OrderedDict):
    return collections.OrderedDict((k, _materialize(v)) for k, v in obj.items())
  if isinstance(obj, dict):
    return {k: _materialize(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_materialize(v) for v in obj]
  if isinstance(obj, tuple):
    return tuple(_materialize(v) for v in obj)
  if isinstance(obj, OpaqueObject):
    obj.args = _materialize(obj.args)
    obj.state = _materialize(obj.state)
    return obj
  return obj


def _bytes_to_array(raw: bytes, storage: _Storage, where: str, big_endian: bool) -> np.ndarray:
  need = storage.numel * storage.dtype.itemsize
  if len(raw) < need:
    raise CheckpointError(
        f"{where}: storage {storage.key!r} needs {need} bytes but only {len(raw)} are present "
        "(truncated file)")
  dtype = storage.dtype.newbyteorder(">") if big_endian and storage.dtype.itemsize > 1 else storage.dtype
  return np.frombuffer(raw[:need], dtype=dtype).astype(storage.dtype, copy=False)


def _load_zip(path: str) -> Any:
  try:
    archive = zipfile.ZipFile(path)
    names = archive.namelist()
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise CheckpointError(f"{path}: corrupt or truncated zip archive ({e})") from None
  pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
  if not pkl:
    raise CheckpointError(f"{path}: zip archive without data.pkl: not a PyTorch checkpoint")
  root = pkl[0].split("/")[0]
  big_endian = False
  if f"{root}/byteorder" in names:
    big_endian = archive.read(f"{root}/byteorder").strip() == b"big"

  def load_storage(storage: _Storage):
    name = f"{root}/data/{storage.key}"
    try:
      raw = archive.read(name)
    except KeyError:
      raise CheckpointError(f"{path}: storage file {name} is missing (truncated archive)") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
      raise CheckpointError(f"{path}: cannot read {name}: {e} (corrupt or truncated)") from None
    storage.data = _bytes_to_array(raw, storage, path, big_endian)

  try:
    data = archive.read(pkl[0])
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise CheckpointError(f"{path}: cannot read {pkl[0]}: {e} (corrupt or truncated)") from None
  unpickler = _RestrictedUnpickler(io.BytesIO(data), load_storage)
  try:
    obj = unpickler.load()
  except CheckpointError:
    raise
  except Exception as e:  # malformed pickle stream
    raise CheckpointError(f"{path}: corrupt pickle in {pkl[0]} ({type(e).__name__}: {e})") from None
  return _materialize(obj)


def _load_legacy(path: str, f: BinaryIO) -> Any:
  def plain_load():
    return _RestrictedUnpickler(f, lambda s: None).load()

  try:
    magic = plain_load()
  except Exception:
    magic = None
  if magic != LEGACY_MAGIC_NUMBER:
    f.seek(0)
    if tarfile.is_tarfile(path):
      raise CheckpointError(
          f"{path}: tar-format checkpoint (torch < 0.4) is not supported; re-save it with a "
          "newer torch")
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a "
                          "legacy torch.save stream)")
  try:
    protocol = plain_load()
    sys_info = plain_load()
  except Exception as e:
    raise CheckpointError(f"{path}: truncated legacy checkpoint header ({e})") from None
  if protocol != LEGACY_PROTOCOL_VERSION:
    raise CheckpointError(f"{path}: unsupported legacy protocol version {protocol!r}")
  little_endian = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True

  unpickler = _RestrictedUnpickler(f, lambda s: None)
  try:
    obj = unpickler.load()
    keys = _RestrictedUnpickler(f, lambda s: None).load()
  except CheckpointError:
    raise
  except Exception as e:
    raise CheckpointError(
        f"{path}: corrupt or truncated legacy checkpoint ({type(e).__name__}: {e})") from None
  if not isinstance(keys, list):
    raise CheckpointError(f"{path}: malformed legacy checkpoint (storage key list missing)")
  for key in keys:
    storage = unpickler.storages.get(str(key))
    header = f.read(8)
    if len(header) < 8:
      raise CheckpointError(f"{path}: truncated legacy checkpoint at storage {key!r}")
    numel = struct.unpack("<q" if little_endian else ">q", header)[0]
    if storage is None:
      raise CheckpointError(f"{path}: storage {key!r} listed but never referenced")
    if numel != storage.numel:
      raise CheckpointError(
          f"{path}: storage {key!r} has {numel} elements on disk, {storage.numel} expected")
    raw = f.read(numel * storage.dtype.itemsize)
    storage.data = _bytes_to_array(raw, storage, path, not little_endian)
  return _materialize(obj)


def load(path: str | os.PathLike) -> Any:
  """Loads a ``torch.save`` file (zip or legacy format) with tensors as numpy arrays.

  Args:
    path: a ``.pth``/``.pt``/``.bin``/``.tar`` file written by ``torch.save``.

  Returns:
    The saved object: dicts/lists/tuples/scalars as Python objects, tensors (and
    ``nn.Parameter``s) as numpy arrays, anything else as ``OpaqueObject``.

  Raises:
    CheckpointError: the file is missing, truncated, corrupt or not a torch checkpoint.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: no such file")
  if os.path.isdir(path):
    raise CheckpointError(f"{path}: is a directory, expected a PyTorch checkpoint file")
  if os.path.getsize(path) == 0:
    raise CheckpointError(f"{path}: empty file")
  if zipfile.is_zipfile(path):
    return _load_zip(path)
  with open(path, "rb") as f:
    head = f.read(4)
    f.seek(0)
    if head[:4] == b"PK\x03\x04":
      return _load_zip(path)  # zip whose end record is cut off: reports it as truncated
    return _load_legacy(path, f)
