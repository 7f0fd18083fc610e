"""Reads PyTorch checkpoint files without PyTorch and without running pickled code.

Two on-disk formats exist:

* the zip format (``torch.save`` since torch 1.6): a zip archive holding ``*/data.pkl`` and
  one raw file per storage under ``*/data/<key>``;
* the legacy format (torch < 1.6, and ``_use_new_zipfile_serialization=False``): a stream
  of pickles (magic number, protocol version, system info, the object, the list of storage
  keys) followed by each storage as an int64 element count and its raw bytes. The 2018-2019
  model-zoo files of HRNet, VideoPose3D and integral-human-pose are in this format.

The files are treated as untrusted input:

* The pickles are run by a small interpreter of the pickle opcodes (decoded by
  ``pickletools.genops``), not by ``pickle.Unpickler``. It rebuilds plain containers,
  scalars, strings and tensors; it resolves only the globals needed for those
  (``collections.OrderedDict``, ``torch._utils._rebuild_*``, ``torch.*Storage`` dtype
  markers); any other global becomes an inert ``OpaqueObject`` recording its name and
  arguments. Nothing is imported or called. Duplicate dict keys, references to unset memo
  entries, buffer and extension opcodes are refused; the elements copied by the few allowed
  calls are budgeted against the pickle's size.
* The loaded object is walked once (depth at most ``MAX_DEPTH``, self-references refused)
  and every tensor record is checked before any storage byte is read: integer sizes >= 0,
  strides >= 0 of the same rank, an offset >= 0, at most as many elements as its storage
  holds (no expanded tensors) and every addressed element inside the storage.
* Storages are checked against the real bytes before they are read: a zip entry must hold
  exactly ``numel * itemsize`` bytes, be stored inside the archive, not overlap another
  entry and not inflate more than ``MAX_INFLATION`` times; a legacy record must announce the
  element count of the pickle and lie inside the file. Legacy views must lie inside their
  root storage; a storage used with two dtypes or sizes is refused.

Every failure is one ``CheckpointError`` naming the file and, where known, the key of the
tensor (``state_dict/final_layer.bias``). Tensors come back as numpy arrays
(``ml_dtypes.bfloat16`` for bfloat16), in native byte order.
"""
from __future__ import annotations

import collections
import math
import mmap
import os
import pickletools
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import ml_dtypes
import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

MAX_DEPTH = 100  # nesting of containers in a loaded object
MAX_NDIM = 32  # tensor rank
MAX_INFLATION = 100  # uncompressed / compressed size of a deflated zip entry
MIN_INFLATION_BYTES = 1 << 20  # entries up to this size are never refused for inflation
ZIP_LOCAL_HEADER_BYTES = 30


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

  Holds the qualified name, the constructor arguments, the state and the appended or
  set items that the pickle carried, so that callers can inspect (but never execute) it.
  """

  def __init__(self, qualname: str, args: tuple = (), kwargs: dict | None = None):
    self.qualname = qualname
    self.args = args
    self.kwargs = kwargs or {}
    self.state: Any = None
    self.items: list = []

  def __repr__(self):
    return f"<opaque {self.qualname}>"


class _OpaqueGlobal:
  """A global this reader does not resolve; calling it (REDUCE/NEWOBJ) gives an OpaqueObject."""

  def __init__(self, qualname: str):
    self.qualname = qualname


class _StorageType:
  def __init__(self, name: str, dtype: np.dtype):
    self.name = name
    self.dtype = dtype


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

  def base(self) -> "_Storage":
    return self if self.root is None else self.root

  def elements(self) -> np.ndarray | None:
    if self.root is None:
      return self.data
    if self.root.data is None:
      return None
    return self.root.data[self.view_offset:self.view_offset + self.numel]


class _TensorRecord:
  """The unchecked arguments of a ``_rebuild_tensor`` call."""

  def __init__(self, storage: Any, offset: Any, size: Any, stride: Any):
    self.storage = storage
    self.offset = offset
    self.size = size
    self.stride = stride


class _Tensor:
  """A checked tensor record; ``materialize`` once its storage bytes are read."""

  def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...],
               stride: tuple[int, ...], path: str):
    self.storage = storage
    self.offset = offset
    self.size = size
    self.stride = stride
    self.path = path

  def materialize(self) -> np.ndarray:
    base = self.storage.elements()
    if base is None:
      raise CheckpointError(f"tensor {self.path!r}: storage {self.storage.key!r} was "
                            "referenced but never written (truncated file?)")
    if 0 in self.size:
      return np.zeros(self.size, self.storage.dtype)
    strides = tuple(s * base.itemsize for s in self.stride)
    view = np.lib.stride_tricks.as_strided(base[self.offset:], self.size, strides,
                                           writeable=False)
    return np.array(view)


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_tensor(record: _TensorRecord, path: str) -> _Tensor:
  """Validates a tensor record against its storage's element count (no bytes read yet)."""

  def fail(why: str):
    raise CheckpointError(f"tensor {path!r}: {why}")

  storage = record.storage
  if not isinstance(storage, _Storage):
    fail("malformed tensor record (its storage is not a storage reference)")
  for name, dims in (("size", record.size), ("stride", record.stride)):
    if not isinstance(dims, (tuple, list)) or not all(_is_int(d) for d in dims):
      fail(f"{name} {dims!r:.80} is not a sequence of integers")
    if len(dims) > MAX_NDIM:
      fail(f"{len(dims)} dimensions (at most {MAX_NDIM} are supported)")
  size = tuple(int(d) for d in record.size)
  stride = tuple(int(d) for d in record.stride)
  if not _is_int(record.offset):
    fail(f"storage offset {record.offset!r:.40} is not an integer")
  offset = int(record.offset)
  if len(size) != len(stride):
    fail(f"size {size} and stride {stride} differ in rank")
  if any(d < 0 for d in size):
    fail(f"negative size {size}")
  if any(s < 0 for s in stride):
    fail(f"negative stride {stride} (torch never writes one)")
  if offset < 0:
    fail(f"negative storage offset {offset}")
  numel = math.prod(size)
  if offset > storage.numel or (numel and offset >= storage.numel):
    fail(f"storage offset {offset} outside storage {storage.key!r} of {storage.numel} "
         "elements")
  if numel > storage.numel:
    fail(f"size {size} has {numel} elements, more than its storage {storage.key!r} holds "
         f"({storage.numel}; expanded or overlapping tensors are not supported)")
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if numel and last >= storage.numel:
    fail(f"size {size}, stride {stride} at offset {offset} reach element {last}, outside "
         f"storage {storage.key!r} of {storage.numel} elements")
  return _Tensor(storage, offset, size, stride, path)


# ----------------------------------------------------------------------------------------
# The restricted pickle interpreter
# ----------------------------------------------------------------------------------------


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  return _TensorRecord(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
  return data


class _DeferredCall:
  """``func(*args)`` of ``_rebuild_from_type_v2``, run by the interpreter (``func`` is a
  global of the pickle, resolved like any other)."""

  def __init__(self, func: Any, args: Any):
    self.func = func
    self.args = args


def _rebuild_from_type(func, new_type, args, state):
  del new_type, state
  return _DeferredCall(func, args)


def _codecs_encode(text, encoding="utf-8"):
  if not isinstance(text, str) or str(encoding).lower().replace("-", "") not in (
      "latin1", "utf8", "ascii"):
    raise CheckpointError(f"unsupported _codecs.encode({type(text).__name__}, {encoding!r})")
  return text.encode(encoding)


_CALLABLES: dict[tuple[str, str], Callable] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("_codecs", "encode"): _codecs_encode,
}
# Calls that copy their (sized) argument: the copied elements count against the budget.
_CONTAINER_CALLABLES: dict[tuple[str, str], Callable] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("torch", "Size"): tuple,
}


class _Callable:
  def __init__(self, key: tuple[str, str], fn: Callable, copies: bool):
    self.key = key
    self.fn = fn
    self.copies = copies


_MARK = object()


class _Reader:
  """A bounded ``read``/``readline``/``tell`` view of a buffer for ``pickletools.genops``.

  Reads never allocate more than the bytes that remain (a length field of 2**60 in a 1 KB
  file reads the 1 KB, and genops then reports the shortfall).
  """

  def __init__(self, buffer, pos: int = 0):
    self.buffer = buffer
    self.pos = pos
    self.size = len(buffer)

  def read(self, n: int = -1) -> bytes:
    end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
    out = bytes(self.buffer[self.pos:end])
    self.pos = end
    return out

  def readline(self) -> bytes:
    end = self.buffer.find(b"\n", self.pos)
    end = self.size if end < 0 else end + 1
    return self.read(end - self.pos)

  def tell(self) -> int:
    return self.pos


class _Interpreter:
  """Runs one pickle (up to STOP) with the restricted semantics described above."""

  def __init__(self, reader: _Reader, persistent_load: Callable[[Any], Any]):
    self.reader = reader
    self.persistent_load = persistent_load
    self.budget = 8 * (reader.size - reader.pos) + (1 << 16)

  def _spend(self, count: int) -> None:
    self.budget -= count
    if self.budget < 0:
      raise CheckpointError("the pickle builds more container elements than its size "
                            "allows (a pickle bomb?)")

  def _resolve(self, module: str, name: str) -> Any:
    if not isinstance(module, str) or not isinstance(name, str):
      raise CheckpointError("malformed global reference in the pickle")
    key = (module, name)
    if key in _CALLABLES:
      return _Callable(key, _CALLABLES[key], copies=False)
    if key in _CONTAINER_CALLABLES:
      return _Callable(key, _CONTAINER_CALLABLES[key], copies=True)
    if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:
      return _StorageType(name, _STORAGE_DTYPES[name])
    if module == "torch" and name in _TORCH_DTYPES:
      return np.dtype(_TORCH_DTYPES[name])
    return _OpaqueGlobal(f"{module}.{name}")

  def _call(self, func: Any, args: Any, kwargs: dict | None = None) -> Any:
    result = self._call_once(func, args, kwargs)
    while isinstance(result, _DeferredCall):  # iterative: a chain costs no stack
      self._spend(1)
      result = self._call_once(result.func, result.args)
    return result

  def _call_once(self, func: Any, args: Any, kwargs: dict | None = None) -> Any:
    if not isinstance(args, tuple):
      raise CheckpointError("malformed call in the pickle (arguments are not a tuple)")
    if isinstance(func, _OpaqueGlobal):
      return OpaqueObject(func.qualname, args, kwargs)
    if not isinstance(func, _Callable) or kwargs:
      raise CheckpointError(f"the pickle calls {getattr(func, 'name', type(func).__name__)!r}, "
                            "which is not a function")
    if func.copies:
      for arg in args:
        self._spend(len(arg) if hasattr(arg, "__len__") else 1)
      if func.key == ("collections", "OrderedDict") and args:
        return _ordered_dict_from(args[0])
    return func.fn(*args)

  def run(self) -> Any:
    stack: list = []
    marks: list[list] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list:
      nonlocal stack
      items = stack
      stack = marks.pop()
      self._spend(len(items))
      return items

    for op, arg, _ in pickletools.genops(self.reader):
      name = op.name
      if name in ("PROTO", "FRAME"):
        if name == "PROTO" and not 0 <= arg <= 5:
          raise CheckpointError(f"unsupported pickle protocol {arg}")
      elif name == "STOP":
        if len(stack) != 1 or marks:
          raise CheckpointError("malformed pickle (unbalanced stack at STOP)")
        return stack[0]
      elif name == "MARK":
        marks.append(stack)
        stack = []
      elif name == "POP":
        if stack:
          stack.pop()
        else:
          pop_mark()
      elif name == "POP_MARK":
        pop_mark()
      elif name == "DUP":
        stack.append(stack[-1])
      elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
        stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
      elif name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT",
                    "BINFLOAT", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"):
        stack.append(arg)
      elif name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):  # Python 2 str: latin-1
        stack.append(arg if isinstance(arg, str) else bytes(arg).decode("latin-1"))
      elif name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"):
        stack.append(bytes(arg))
      elif name == "EMPTY_TUPLE":
        stack.append(())
      elif name == "TUPLE":
        items = pop_mark()  # rebinds ``stack``: take the items before appending
        stack.append(tuple(items))
      elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        n = int(name[-1])
        if len(stack) < n:
          raise CheckpointError("malformed pickle (stack underflow)")
        items = tuple(stack[-n:])
        del stack[-n:]
        stack.append(items)
      elif name == "EMPTY_LIST":
        stack.append([])
      elif name == "LIST":
        items = pop_mark()
        stack.append(items)
      elif name == "APPEND":
        value = stack.pop()
        _append(stack[-1], [value])
      elif name == "APPENDS":
        items = pop_mark()
        _append(stack[-1], items)
      elif name == "EMPTY_DICT":
        stack.append({})
      elif name == "DICT":
        items = pop_mark()
        stack.append(_set_items({}, items))
      elif name == "SETITEM":
        value = stack.pop()
        key = stack.pop()
        _set_items(stack[-1], [key, value])
      elif name == "SETITEMS":
        items = pop_mark()
        _set_items(stack[-1], items)
      elif name == "EMPTY_SET":
        stack.append(set())
      elif name == "ADDITEMS":
        items = pop_mark()
        if not isinstance(stack[-1], set):
          raise CheckpointError("malformed pickle (ADDITEMS on a non-set)")
        stack[-1].update(items)
      elif name == "FROZENSET":
        items = pop_mark()
        stack.append(frozenset(items))
      elif name == "GLOBAL":
        module, _, attr = str(arg).partition(" ")
        stack.append(self._resolve(module, attr))
      elif name == "STACK_GLOBAL":
        attr = stack.pop()
        module = stack.pop()
        stack.append(self._resolve(module, attr))
      elif name == "REDUCE":
        args = stack.pop()
        func = stack.pop()
        stack.append(self._call(func, args))
      elif name == "NEWOBJ":
        args = stack.pop()
        cls = stack.pop()
        stack.append(self._call(cls, args))
      elif name == "NEWOBJ_EX":
        kwargs = stack.pop()
        args = stack.pop()
        cls = stack.pop()
        if not isinstance(kwargs, dict):
          raise CheckpointError("malformed pickle (NEWOBJ_EX keywords are not a dict)")
        stack.append(self._call(cls, args, kwargs))
      elif name == "INST":
        module, _, attr = str(arg).partition(" ")
        items = pop_mark()
        stack.append(self._call(self._resolve(module, attr), tuple(items)))
      elif name == "OBJ":
        items = pop_mark()
        if not items:
          raise CheckpointError("malformed pickle (OBJ without a class)")
        stack.append(self._call(items[0], tuple(items[1:])))
      elif name == "BUILD":
        state = stack.pop()
        target = stack[-1]
        if isinstance(target, OpaqueObject):
          target.state = state
        # BUILD on a dict is OrderedDict attribute state (a state dict's ``_metadata``).
      elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
        if not _is_int(arg) or arg < 0:
          raise CheckpointError(f"malformed pickle (memo index {arg!r})")
        memo[int(arg)] = stack[-1]
      elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
      elif name in ("GET", "BINGET", "LONG_BINGET"):
        if arg not in memo:
          raise CheckpointError(f"malformed pickle (reference to unset memo entry {arg!r})")
        stack.append(memo[arg])
      elif name in ("PERSID", "BINPERSID"):
        pid = arg if name == "PERSID" else stack.pop()
        stack.append(self.persistent_load(pid))
      else:  # EXT1/2/4, NEXT_BUFFER, READONLY_BUFFER, ...
        raise CheckpointError(f"unsupported pickle opcode {name}")
    raise CheckpointError("pickle exhausted before STOP")  # pragma: no cover (genops raises)


def _ordered_dict_from(pairs: Any) -> collections.OrderedDict:
  out = collections.OrderedDict()
  if isinstance(pairs, dict):
    pairs = list(pairs.items())
  for pair in pairs:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
      raise CheckpointError("malformed OrderedDict in the pickle")
    _set_items(out, list(pair))
  return out


def _append(target: Any, items: list) -> None:
  if isinstance(target, list):
    target.extend(items)
  elif isinstance(target, OpaqueObject):
    target.items.extend(items)
  else:
    raise CheckpointError(f"malformed pickle (APPEND to a {type(target).__name__})")


def _set_items(target: Any, items: list) -> Any:
  if len(items) % 2:
    raise CheckpointError("malformed pickle (odd number of dict items)")
  for key, value in zip(items[::2], items[1::2]):
    if isinstance(target, OpaqueObject):
      target.items.append((key, value))
      continue
    if not isinstance(target, dict):
      raise CheckpointError(f"malformed pickle (SETITEM on a {type(target).__name__})")
    if key in target:
      raise CheckpointError(f"duplicate key {key!r:.80} in a pickled dict")
    target[key] = value
  return target


class _PersistentStorages:
  """``persistent_load`` for torch storages: one ``_Storage`` per key, views checked."""

  def __init__(self):
    self.storages: dict[str, _Storage] = {}

  def __call__(self, pid: Any) -> _Storage:
    if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
      raise CheckpointError(f"unsupported persistent id {pid!r:.80}")
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if isinstance(storage_type, _StorageType):
      dtype = storage_type.dtype
    elif isinstance(storage_type, np.dtype):
      dtype = storage_type
    else:
      name = getattr(storage_type, "qualname", type(storage_type).__name__)
      raise CheckpointError(f"unsupported storage type {name!r} for storage {key!r:.40}")
    if not isinstance(key, (str, int)) or isinstance(key, bool) or len(str(key)) > 64:
      raise CheckpointError(f"malformed storage key {key!r:.80}")
    key = str(key)
    if not _is_int(numel) or numel < 0:
      raise CheckpointError(f"storage {key!r}: element count {numel!r:.40} is not an "
                            "integer >= 0")
    numel = int(numel)
    storage = self.storages.get(key)
    if storage is None:
      storage = self.storages[key] = _Storage(key, dtype, numel)
    elif storage.dtype != dtype or storage.numel != numel:
      raise CheckpointError(
          f"storage {key!r} is referenced as {storage.numel} x {storage.dtype} and as "
          f"{numel} x {dtype}")
    view = pid[5] if len(pid) > 5 else None
    if view is None:
      return storage
    if (not isinstance(view, tuple) or len(view) != 3 or not _is_int(view[1])
        or not _is_int(view[2])):
      raise CheckpointError(f"storage {key!r}: malformed view record {view!r:.80}")
    view_key, offset, view_numel = str(view[0]), int(view[1]), int(view[2])
    if offset < 0 or view_numel < 0 or offset + view_numel > numel:
      raise CheckpointError(
          f"storage view {view_key!r}: elements [{offset}, {offset + view_numel}) lie outside "
          f"its root storage {key!r} of {numel} elements")
    return _Storage(view_key, dtype, view_numel, root=storage, view_offset=offset)


# ----------------------------------------------------------------------------------------
# Walking the loaded object: checks, then materialisation
# ----------------------------------------------------------------------------------------


def _path(parent: str, key: Any) -> str:
  return f"{parent}/{key}" if parent else str(key)


def _rebuild(obj: Any, on_tensor: Callable[[Any, str], Any]) -> Any:
  """A copy of ``obj`` with every tensor record replaced by ``on_tensor(record, path)``.

  Shared sub-objects are visited once; self-references and nesting deeper than
  ``MAX_DEPTH`` raise ``CheckpointError``.
  """
  done: dict[int, Any] = {}
  active: set[int] = set()

  def visit(node: Any, path: str, depth: int) -> Any:
    if isinstance(node, (_TensorRecord, _Tensor)):
      return on_tensor(node, path)
    if isinstance(node, _Storage):  # a bare storage: its elements as a 1-D tensor
      return on_tensor(_TensorRecord(node, 0, (node.numel,), (1,)), path)
    if isinstance(node, (_StorageType, _Callable)):
      return getattr(node, "name", None) or ".".join(node.key)
    if isinstance(node, _OpaqueGlobal):
      return OpaqueObject(node.qualname)
    if not isinstance(node, (dict, list, tuple, set, frozenset, OpaqueObject)):
      return node
    ident = id(node)
    if ident in done:
      return done[ident]
    if ident in active:
      raise CheckpointError(f"self-referencing container at {path or 'the top level'!r}")
    if depth >= MAX_DEPTH:
      raise CheckpointError(f"containers nested deeper than {MAX_DEPTH} levels at {path!r:.200}")
    active.add(ident)
    if isinstance(node, dict):
      out = type(node)() if isinstance(node, collections.OrderedDict) else {}
      for key, value in node.items():
        out[key] = visit(value, _path(path, key), depth + 1)
    elif isinstance(node, OpaqueObject):
      out = node
      out.args = visit(node.args, path, depth + 1)
      out.kwargs = visit(node.kwargs, path, depth + 1)
      out.state = visit(node.state, path, depth + 1)
      out.items = visit(node.items, path, depth + 1)
    elif isinstance(node, (set, frozenset)):
      out = node  # elements are hashable scalars or strings: nothing to rebuild
    else:
      items = [visit(v, _path(path, i), depth + 1) for i, v in enumerate(node)]
      out = items if isinstance(node, list) else tuple(items)
    active.discard(ident)
    done[ident] = out
    return out

  return visit(obj, "", 0)


def _check_all(obj: Any) -> tuple[Any, dict[str, str]]:
  """``(obj with checked _Tensors, {root storage key: first tensor path})``."""
  users: dict[str, str] = {}

  def check(record, path):
    tensor = record if isinstance(record, _Tensor) else _check_tensor(record, path)
    users.setdefault(tensor.storage.base().key, path)
    return tensor

  return _rebuild(obj, check), users


def _materialize(obj: Any) -> Any:
  return _rebuild(obj, lambda tensor, path: tensor.materialize())


def _to_array(buffer, offset: int, storage: _Storage, big_endian: bool) -> np.ndarray:
  """The storage's elements from ``buffer[offset:]`` (length already checked), native order."""
  dtype = storage.dtype
  if dtype == np.bool_:
    raw = np.frombuffer(buffer, np.uint8, storage.numel, offset)
    return raw != 0
  if big_endian and dtype.itemsize > 1:
    return np.frombuffer(buffer, dtype.newbyteorder(">"), storage.numel, offset).astype(dtype)
  return np.frombuffer(buffer, dtype, storage.numel, offset)


def _described(storage: _Storage, users: dict[str, str]) -> str:
  user = users.get(storage.key)
  return f"storage {storage.key!r}" + (f" of tensor {user!r}" if user else "")


# ----------------------------------------------------------------------------------------
# Zip format
# ----------------------------------------------------------------------------------------


def _check_zip_entries(archive: zipfile.ZipFile, file_size: int) -> None:
  infos = archive.infolist()
  names = [i.filename for i in infos]
  if len(set(names)) != len(names):
    dup = sorted({n for n in names if names.count(n) > 1})
    raise CheckpointError(f"zip archive holds duplicate entries {dup[:5]}")
  ordered = sorted(infos, key=lambda i: i.header_offset)
  for info, following in zip(ordered, ordered[1:] + [None]):
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
    name_bytes = len(info.orig_filename.encode(encoding, errors="replace"))
    end = info.header_offset + ZIP_LOCAL_HEADER_BYTES + name_bytes + info.compress_size
    limit = file_size if following is None else following.header_offset
    if end > limit:
      what = "the end of the file" if following is None else f"entry {following.filename!r}"
      raise CheckpointError(f"zip entry {info.filename!r} overlaps {what} (corrupt or "
                            "truncated archive)")


def _read_zip_entry(archive: zipfile.ZipFile, name: str, expected: int | None, what: str
                    ) -> bytes:
  """The bytes of entry ``name``, after checking its declared sizes (``expected``: exact)."""
  try:
    info = archive.getinfo(name)
  except KeyError:
    raise CheckpointError(f"{what}: zip entry {name} is missing (truncated archive)") from None
  if expected is not None and info.file_size != expected:
    raise CheckpointError(
        f"{what}: zip entry {name} holds {info.file_size} bytes, the pickle describes "
        f"{expected} (wrong element count or dtype)")
  if info.compress_type == zipfile.ZIP_STORED:
    if info.compress_size != info.file_size:
      raise CheckpointError(f"{what}: stored zip entry {name} declares {info.file_size} bytes "
                            f"but occupies {info.compress_size}")
  elif info.file_size > max(MIN_INFLATION_BYTES, MAX_INFLATION * info.compress_size):
    raise CheckpointError(
        f"{what}: zip entry {name} inflates {info.compress_size} bytes to {info.file_size} "
        f"(more than {MAX_INFLATION}x: a zip bomb?)")
  with archive.open(info) as f:
    data = f.read(info.file_size + 1)
  if len(data) != info.file_size:
    raise CheckpointError(f"{what}: zip entry {name} holds {len(data)} bytes, its header "
                          f"declares {info.file_size}")
  return data


def _load_zip(path: str) -> Any:
  try:
    archive = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
    raise CheckpointError(f"corrupt or truncated zip archive ({e})") from None
  with archive:
    _check_zip_entries(archive, os.path.getsize(path))
    names = archive.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if not pkl:
      raise CheckpointError("zip archive without data.pkl: not a PyTorch checkpoint")
    if len(pkl) > 1:
      raise CheckpointError(f"zip archive holds several pickles {pkl[:4]}")
    root = pkl[0].split("/")[0]
    big_endian = False
    if f"{root}/byteorder" in names:
      order = _read_zip_entry(archive, f"{root}/byteorder", None, "byteorder").strip()
      if order not in (b"little", b"big"):
        raise CheckpointError(f"unknown byte order {order[:20]!r}")
      big_endian = order == b"big"
    data = _read_zip_entry(archive, pkl[0], None, "pickle")
    storages = _PersistentStorages()
    obj = _run_pickle(_Reader(data), storages, pkl[0])
    checked, users = _check_all(obj)
    for key in sorted(users):
      storage = storages.storages[key]
      what = _described(storage, users)
      raw = _read_zip_entry(archive, f"{root}/data/{key}",
                            storage.numel * storage.dtype.itemsize, what)
      storage.data = _to_array(raw, 0, storage, big_endian)
    return _materialize(checked)


def _run_pickle(reader: _Reader, persistent_load: Callable, what: str) -> Any:
  try:
    return _Interpreter(reader, persistent_load).run()
  except CheckpointError:
    raise
  except (ValueError, TypeError, IndexError, KeyError, AttributeError, EOFError,
          OverflowError, UnicodeDecodeError, struct.error) as e:
    raise CheckpointError(f"corrupt or truncated pickle in {what} ({type(e).__name__}: "
                          f"{str(e)[:200]})") from None


# ----------------------------------------------------------------------------------------
# Legacy format
# ----------------------------------------------------------------------------------------


def _no_storages(pid):
  raise CheckpointError(f"unexpected persistent id {pid!r:.60} in a legacy header")


def _load_legacy(path: str, buffer) -> Any:
  reader = _Reader(buffer)
  try:
    magic = _Interpreter(reader, _no_storages).run()
  except Exception:  # anything unreadable here is simply not a legacy checkpoint
    magic = None
  if magic != LEGACY_MAGIC_NUMBER:
    if tarfile.is_tarfile(path):
      raise CheckpointError("tar-format checkpoint (torch < 0.4) is not supported; re-save it "
                            "with a newer torch")
    raise CheckpointError("not a PyTorch checkpoint (neither a zip archive nor a legacy "
                          "torch.save stream)")
  try:
    protocol = _Interpreter(reader, _no_storages).run()
    sys_info = _Interpreter(reader, _no_storages).run()
  except Exception as e:
    raise CheckpointError(f"truncated legacy checkpoint header ({str(e)[:200]})") from None
  if protocol != LEGACY_PROTOCOL_VERSION:
    raise CheckpointError(f"unsupported legacy protocol version {protocol!r:.40}")
  little_endian = True
  if isinstance(sys_info, dict) and "little_endian" in sys_info:
    little_endian = sys_info["little_endian"]
    if not isinstance(little_endian, bool):
      raise CheckpointError(f"malformed legacy header (little_endian={little_endian!r:.40})")
  storages = _PersistentStorages()
  obj = _run_pickle(reader, storages, "the legacy checkpoint")
  keys = _run_pickle(reader, _no_storages, "the legacy storage key list")
  if not isinstance(keys, list) or not all(isinstance(k, (str, int)) for k in keys):
    raise CheckpointError("malformed legacy checkpoint (storage key list missing)")
  keys = [str(k) for k in keys]
  if len(set(keys)) != len(keys):
    raise CheckpointError("malformed legacy checkpoint (a storage is listed twice)")
  checked, users = _check_all(obj)
  pos = reader.pos
  for key in keys:
    storage = storages.storages.get(key)
    if storage is None:
      raise CheckpointError(f"storage {key!r} listed but never referenced")
    what = _described(storage, users)
    if pos + 8 > len(buffer):
      raise CheckpointError(f"{what}: truncated legacy checkpoint (record header missing)")
    numel = struct.unpack("<q" if little_endian else ">q", buffer[pos:pos + 8])[0]
    if numel != storage.numel:
      raise CheckpointError(f"{what}: {numel} elements on disk, the pickle describes "
                            f"{storage.numel}")
    need = numel * storage.dtype.itemsize
    if pos + 8 + need > len(buffer):
      raise CheckpointError(f"{what} needs {need} bytes but only {len(buffer) - pos - 8} are "
                            "left (truncated file)")
    storage.data = _to_array(buffer, pos + 8, storage, not little_endian)
    pos += 8 + need
  if pos != len(buffer):
    raise CheckpointError(f"{len(buffer) - pos} unexpected bytes after the last storage "
                          "(corrupt file)")
  return _materialize(checked)


def _open_buffer(path: str) -> Iterator:
  """A read-only memory map of the file (its bytes if the file cannot be mapped)."""
  with open(path, "rb") as f:
    try:
      return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
      return f.read()


def load(path: str | os.PathLike) -> Any:
  """Loads a ``torch.save`` file (zip or legacy format) with tensors as numpy arrays.

  Args:
    path: a ``.pth``/``.pt``/``.bin``/``.tar`` file written by ``torch.save``.

  Returns:
    The saved object: dicts/lists/tuples/scalars as Python objects, tensors (and
    ``nn.Parameter``s) as numpy arrays, anything else as ``OpaqueObject``.

  Raises:
    CheckpointError: the file is missing, truncated, corrupt, hostile or not a torch
      checkpoint; one line naming the file and, where known, the tensor's key.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: no such file")
  if os.path.isdir(path):
    raise CheckpointError(f"{path}: is a directory, expected a PyTorch checkpoint file")
  if os.path.getsize(path) == 0:
    raise CheckpointError(f"{path}: empty file")
  try:
    with open(path, "rb") as f:
      head = f.read(4)
    if zipfile.is_zipfile(path) or head == b"PK\x03\x04":
      return _load_zip(path)  # a zip whose end record is cut off is reported as truncated
    buffer = _open_buffer(path)
    try:
      return _load_legacy(path, buffer)
    finally:
      if isinstance(buffer, mmap.mmap):
        try:
          buffer.close()
        except BufferError:  # an array still views it: the map closes when that goes
          pass
  except CheckpointError as e:
    raise CheckpointError(f"{path}: {e}") from None
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
    raise CheckpointError(f"{path}: corrupt or truncated file ({type(e).__name__}: "
                          f"{str(e)[:200]})") from None
