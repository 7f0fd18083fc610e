"""The checkpoint reader against hostile and odd files, written by hand (no torch).

Every file here is assembled from pickle opcodes and raw zip entries, as an attacker (or
a broken writer) could produce it. Each must give one ``CheckpointError`` line that names
the file and, where there is one, the tensor's key, without reading outside the file's
bytes, allocating memory the file does not hold, recursing or running for long.
"""
from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jaxpose.convert import torch_pickle
from jaxpose.convert.torch_pickle import CheckpointError

REPO_ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------
# A tiny pickle assembler (protocol 2 opcodes)
# ---------------------------------------------------------------------------------------

MARK, TUPLE, REDUCE, BINPERSID, STOP = b"(", b"t", b"R", b"Q", b"."
EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE, SETITEMS, APPEND = b"}", b"]", b")", b"u", b"a"
NONE, NEWFALSE, PROTO2 = b"N", b"\x89", b"\x80\x02"


def p_int(n: int) -> bytes:
  if -2**31 <= n < 2**31:
    return b"J" + struct.pack("<i", n)
  raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
  return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def p_float(x: float) -> bytes:
  return b"G" + struct.pack(">d", x)


def p_str(s: str) -> bytes:
  raw = s.encode()
  return b"X" + struct.pack("<I", len(raw)) + raw


def p_global(module: str, name: str) -> bytes:
  return b"c" + f"{module}\n{name}\n".encode()


def p_tuple(*items: bytes) -> bytes:
  return MARK + b"".join(items) + TUPLE


def p_put(i: int) -> bytes:
  return b"r" + struct.pack("<I", i)  # LONG_BINPUT


def p_get(i: int) -> bytes:
  return b"j" + struct.pack("<I", i)  # LONG_BINGET


def p_storage(key: str, numel: int, storage_type: str = "FloatStorage", view=None) -> bytes:
  fields = [p_str("storage"), p_global("torch", storage_type), p_str(key), p_str("cpu"),
            p_int(numel)]
  if view is not None:  # legacy: (view key, offset, size)
    fields.append(p_tuple(p_str(view[0]), p_int(view[1]), p_int(view[2])))
  return p_tuple(*fields) + BINPERSID


def p_dims(dims) -> bytes:
  return p_tuple(*(p_int(d) if isinstance(d, int) else p_float(d) if isinstance(d, float)
                   else p_str(d) for d in dims))


def p_tensor(storage: bytes, offset, size, stride) -> bytes:
  """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``."""
  hooks = p_global("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
  offset_op = p_int(offset) if isinstance(offset, int) else p_float(offset)
  return (p_global("torch._utils", "_rebuild_tensor_v2")
          + p_tuple(storage, offset_op, p_dims(size), p_dims(stride), NEWFALSE, hooks) + REDUCE)


def p_dict(items: list[tuple[str, bytes]], ordered: bool = True) -> bytes:
  head = p_global("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE if ordered else EMPTY_DICT
  return head + MARK + b"".join(p_str(k) + v for k, v in items) + SETITEMS


def pickle_of(body: bytes) -> bytes:
  return PROTO2 + body + STOP


def state_dict_pickle(tensors: dict[str, dict], wrap: str | None = None) -> bytes:
  """A state dict of tensor records; each spec: key, numel, size, stride, offset, ..."""
  items = []
  for name, spec in tensors.items():
    storage = p_storage(spec.get("key", name), spec["numel"], spec.get("type", "FloatStorage"),
                        spec.get("view"))
    items.append((name, p_tensor(storage, spec.get("offset", 0), spec["size"], spec["stride"])))
  body = p_dict(items)
  if wrap:
    body = EMPTY_DICT + MARK + p_str(wrap) + body + p_str("epoch") + p_int(3) + SETITEMS
  return pickle_of(body)


def write_zip(path: Path, pkl: bytes, storages: dict[str, bytes], *,
              byteorder: str | None = None, compression=zipfile.ZIP_STORED) -> Path:
  with zipfile.ZipFile(path, "w", compression=compression) as z:
    z.writestr("archive/data.pkl", pkl)
    if byteorder:
      z.writestr("archive/byteorder", byteorder)
    for key, raw in storages.items():
      z.writestr(f"archive/data/{key}", raw)
    z.writestr("archive/version", "3\n")
  return path


def write_legacy(path: Path, pkl: bytes, storages: list[tuple[str, int, bytes]], *,
                 little_endian: bool = True, trailer: bytes = b"") -> Path:
  """Legacy stream: magic, protocol, sys info, object, keys, then (int64 numel, bytes)."""
  order = "<" if little_endian else ">"
  out = [pickle.dumps(torch_pickle.LEGACY_MAGIC_NUMBER, protocol=2),
         pickle.dumps(torch_pickle.LEGACY_PROTOCOL_VERSION, protocol=2),
         pickle.dumps({"protocol_version": 1001, "little_endian": little_endian,
                       "type_sizes": {"short": 2, "int": 4, "long": 8}}, protocol=2),
         pkl, pickle.dumps([k for k, _, _ in storages], protocol=2)]
  for _, numel, raw in storages:
    out.append(struct.pack(order + "q", numel) + raw)
  path.write_bytes(b"".join(out) + trailer)
  return path


_STORAGE_TYPES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}


def write_state_dict_zip(path: Path, arrays: dict[str, np.ndarray],
                         overrides: dict[str, dict] | None = None) -> Path:
  """A zip checkpoint of ``arrays`` (float32/int64), one storage each; ``overrides`` edit
  a tensor's record (``size``, ``stride``, ``offset``, ``numel``)."""
  specs, storages = {}, {}
  for i, (name, array) in enumerate(arrays.items()):
    array = np.ascontiguousarray(array)
    strides = tuple(s // array.itemsize for s in array.strides)
    specs[name] = {"key": str(i), "numel": array.size, "size": array.shape, "stride": strides,
                   "type": _STORAGE_TYPES[array.dtype], **(overrides or {}).get(name, {})}
    storages[str(i)] = array.tobytes()
  return write_zip(path, state_dict_pickle(specs), storages)


def floats(n: int, start: float = 0.0) -> bytes:
  return np.arange(start, start + n, dtype=np.float32).tobytes()


def assert_refused(path: Path, *fragments: str) -> str:
  with pytest.raises(CheckpointError) as info:
    torch_pickle.load(path)
  message = str(info.value)
  assert "\n" not in message, message
  assert message.startswith(f"{path}: "), message
  for fragment in fragments:
    assert fragment in message, (fragment, message)
  return message


# ---------------------------------------------------------------------------------------
# The assembler itself writes readable checkpoints
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["zip", "legacy", "zip-big-endian", "legacy-big-endian"])
def test_hand_written_checkpoints_load(tmp_path, fmt):
  big = fmt.endswith("big-endian")
  spec = {"w": {"numel": 6, "size": (2, 3), "stride": (3, 1)},
          "col": {"key": "w", "numel": 6, "size": (2,), "stride": (3,), "offset": 1},
          "ids": {"numel": 2, "size": (2,), "stride": (1,), "type": "LongStorage"}}
  pkl = state_dict_pickle(spec, wrap="state_dict")
  w = np.arange(6, dtype=np.float32)
  ids = np.array([7, -1], np.int64)
  if big:
    w, ids = w.astype(">f4"), ids.astype(">i8")
  if fmt.startswith("zip"):
    path = write_zip(tmp_path / "ok.pth", pkl, {"w": w.tobytes(), "ids": ids.tobytes()},
                     byteorder="big" if big else "little")
  else:
    path = write_legacy(tmp_path / "ok.pth", pkl, [("w", 6, w.tobytes()), ("ids", 2,
                                                                             ids.tobytes())],
                        little_endian=not big)
  loaded = torch_pickle.load(path)
  assert loaded["epoch"] == 3
  sd = loaded["state_dict"]
  np.testing.assert_array_equal(sd["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
  np.testing.assert_array_equal(sd["col"], [1.0, 4.0])
  np.testing.assert_array_equal(sd["ids"], [7, -1])
  assert sd["w"].dtype == np.float32 and sd["w"].dtype.isnative and sd["ids"].dtype == np.int64


# ---------------------------------------------------------------------------------------
# Tensor records: sizes, strides, offsets, element counts
# ---------------------------------------------------------------------------------------


def test_negative_stride_far_outside_the_storage_is_refused_not_a_crash(tmp_path):
  """Size (1000,), stride (-100000,): the old reader segfaulted. Run in a child process so
  that a crash fails this test instead of killing the session."""
  pkl = state_dict_pickle({"weight": {"numel": 1000, "size": (1000,), "stride": (-100000,)}})
  path = write_zip(tmp_path / "segv.pth", pkl, {"weight": floats(1000)})
  code = ("import sys\nfrom jaxpose.convert import torch_pickle\n"
          f"try:\n  torch_pickle.load({str(path)!r})\n"
          "except torch_pickle.CheckpointError as e:\n  print(e)\n  sys.exit(3)\n")
  env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=300)
  assert result.returncode == 3, (result.returncode, result.stderr[-2000:])
  assert str(path) in result.stdout and "'weight'" in result.stdout
  assert "negative stride" in result.stdout


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_negative_stride_inside_the_storage_is_refused(tmp_path, fmt):
  """Stride -1 on an HRNet ``final_layer.bias``: the old reader returned heap bytes."""
  pkl = state_dict_pickle({"final_layer.bias": {"numel": 17, "size": (17,), "stride": (-1,)}})
  if fmt == "zip":
    path = write_zip(tmp_path / "heap.pth", pkl, {"final_layer.bias": floats(17)})
  else:
    path = write_legacy(tmp_path / "heap.pth", pkl, [("final_layer.bias", 17, floats(17))])
  assert_refused(path, "'final_layer.bias'", "negative stride (-1,)")


@pytest.mark.parametrize("size,stride,offset,fragment", [
    ((-5,), (1,), 0, "negative size (-5,)"),
    ((2**40,), (0,), 0, "more than its storage"),  # zero stride: old reader MemoryError
    ((4, 4), (0, 0), 0, "more than its storage"),
    ((3, 3), (1, 1), 0, "more than its storage"),  # overlapping: 9 elements of 5
    ((4,), (1,), 7, "outside storage"),
    ((2,), (1,), -1, "negative storage offset"),
    ((2,), (1,), 10, "outside storage"),
    ((2.5,), (1,), 0, "not a sequence of integers"),  # old reader: int(2.5) = 2, silently
    (("3",), (1,), 0, "not a sequence of integers"),
    ((2,), (1.0,), 0, "not a sequence of integers"),
    ((2, 2), (1,), 0, "differ in rank"),
    ((2,), (1,), 1.5, "not an integer"),
    ((1,) * 40, (1,) * 40, 0, "dimensions"),
])
def test_bad_tensor_records_are_refused_with_their_key(tmp_path, size, stride, offset,
                                                       fragment):
  numel = 10 if size != (3, 3) else 5
  pkl = state_dict_pickle({"layer.weight": {"numel": numel, "size": size, "stride": stride,
                                            "offset": offset}}, wrap="state_dict")
  path = write_zip(tmp_path / "bad.pth", pkl, {"layer.weight": floats(numel)})
  assert_refused(path, "'state_dict/layer.weight'", fragment)


def test_empty_tensors_need_no_bytes_but_a_valid_offset(tmp_path):
  pkl = state_dict_pickle({"empty": {"numel": 0, "size": (0, 5), "stride": (5, 1)},
                           "end": {"key": "x", "numel": 3, "size": (0,), "stride": (1,),
                                   "offset": 3}})
  path = write_zip(tmp_path / "empty.pth", pkl, {"empty": b"", "x": floats(3)})
  loaded = torch_pickle.load(path)
  assert loaded["empty"].shape == (0, 5) and loaded["end"].shape == (0,)


# ---------------------------------------------------------------------------------------
# Storages against the real bytes
# ---------------------------------------------------------------------------------------


def test_legacy_storage_claiming_2_to_the_40_elements(tmp_path):
  """The old reader tried to allocate it (MemoryError / OverflowError)."""
  numel = 2**40
  pkl = state_dict_pickle({"w": {"numel": numel, "size": (4,), "stride": (1,)}})
  path = write_legacy(tmp_path / "huge.pth", pkl, [("w", numel, floats(4))])
  assert_refused(path, "'w'", "needs 4398046511104 bytes", "truncated")


@pytest.mark.parametrize("entry_bytes,fragment", [
    (floats(20), "holds 80 bytes, the pickle describes 40"),  # dtype / byte-count mismatch
    (floats(5), "holds 20 bytes, the pickle describes 40"),
], ids=["long", "short"])
def test_zip_storage_byte_count_must_match(tmp_path, entry_bytes, fragment):
  pkl = state_dict_pickle({"w": {"numel": 10, "size": (10,), "stride": (1,)}})
  path = write_zip(tmp_path / "count.pth", pkl, {"w": entry_bytes})
  assert_refused(path, "of tensor 'w'", fragment)


def test_legacy_element_count_must_match_the_pickle(tmp_path):
  pkl = state_dict_pickle({"w": {"numel": 10, "size": (10,), "stride": (1,)}})
  path = write_legacy(tmp_path / "count.pth", pkl, [("w", 20, floats(20))])
  assert_refused(path, "of tensor 'w'", "20 elements on disk, the pickle describes 10")


def test_legacy_trailing_bytes_are_refused(tmp_path):
  pkl = state_dict_pickle({"w": {"numel": 2, "size": (2,), "stride": (1,)}})
  path = write_legacy(tmp_path / "tail.pth", pkl, [("w", 2, floats(2))], trailer=b"junk")
  assert_refused(path, "4 unexpected bytes after the last storage")


def test_legacy_view_outside_its_root_storage(tmp_path):
  pkl = state_dict_pickle({"w": {"key": "root", "numel": 100, "size": (20,), "stride": (1,),
                                 "view": ("v", 90, 20)}})
  path = write_legacy(tmp_path / "view.pth", pkl, [("root", 100, floats(100))])
  assert_refused(path, "storage view 'v'", "outside its root storage 'root' of 100")


def test_legacy_view_inside_its_root_storage(tmp_path):
  pkl = state_dict_pickle({"w": {"key": "root", "numel": 100, "size": (2, 4), "stride": (5, 1),
                                 "offset": 1, "view": ("v", 90, 10)}})
  path = write_legacy(tmp_path / "view.pth", pkl, [("root", 100, floats(100))])
  np.testing.assert_array_equal(torch_pickle.load(path)["w"], [[91, 92, 93, 94], [96, 97, 98, 99]])


def test_storage_used_with_two_dtypes(tmp_path):
  pkl = state_dict_pickle({"a": {"key": "s", "numel": 4, "size": (4,), "stride": (1,)},
                           "b": {"key": "s", "numel": 2, "size": (2,), "stride": (1,),
                                 "type": "LongStorage"}})
  path = write_zip(tmp_path / "two.pth", pkl, {"s": floats(4)})
  assert_refused(path, "storage 's' is referenced as 4 x float32 and as 2 x int64")


def test_unsupported_storage_type(tmp_path):
  pkl = state_dict_pickle({"q": {"numel": 4, "size": (4,), "stride": (1,),
                                 "type": "QInt8Storage"}})
  path = write_zip(tmp_path / "q.pth", pkl, {"q": bytes(4)})
  assert_refused(path, "unsupported storage type 'torch.QInt8Storage'")


@pytest.mark.parametrize("target", ["storage", "pickle"])
def test_zip_bomb_is_refused_before_inflating(tmp_path, target):
  """A ~64 KB file whose entry inflates to 64 MiB: refused from the declared sizes."""
  inflated = 64 << 20
  numel = inflated // 4 if target == "storage" else 10
  if target == "storage":
    pkl = state_dict_pickle({"w": {"numel": numel, "size": (10,), "stride": (1,)}})
  else:  # a pickle padded with a 64 MiB bytes object
    pkl = PROTO2 + b"\x8e" + struct.pack("<Q", inflated) + bytes(inflated) + b"0" + \
        state_dict_pickle({"w": {"numel": 10, "size": (10,), "stride": (1,)}})[2:]
  path = tmp_path / "bomb.pth"
  with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
    z.writestr("archive/data.pkl", pkl)
    with z.open("archive/data/w", "w", force_zip64=True) as f:
      chunk = bytes(1 << 20)
      for _ in range(numel * 4 >> 20):
        f.write(chunk)
      f.write(bytes(numel * 4 % (1 << 20)))
  del pkl
  assert path.stat().st_size < 1 << 20
  tracemalloc.start()
  try:
    message = assert_refused(path, "inflates", "zip bomb")
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while refusing: {message}"


def test_duplicate_zip_entries_are_refused(tmp_path):
  pkl = state_dict_pickle({"w": {"numel": 2, "size": (2,), "stride": (1,)}})
  path = write_zip(tmp_path / "dup.pth", pkl, {"w": floats(2)})
  with pytest.warns(UserWarning, match="Duplicate name"):
    with zipfile.ZipFile(path, "a") as z:
      z.writestr("archive/data/w", floats(2, 5.0))
  assert_refused(path, "duplicate entries ['archive/data/w']")


# ---------------------------------------------------------------------------------------
# The pickle stream
# ---------------------------------------------------------------------------------------


def _zip_with_body(tmp_path: Path, body: bytes, storages: dict | None = None) -> Path:
  return write_zip(tmp_path / "odd.pth", pickle_of(body), storages or {})


def test_self_referencing_list(tmp_path):
  """The old reader recursed until RecursionError."""
  loop = EMPTY_LIST + p_put(0) + p_get(0) + APPEND
  body = EMPTY_DICT + MARK + p_str("state_dict") + loop + SETITEMS
  assert_refused(_zip_with_body(tmp_path, body), "self-referencing container at 'state_dict/0'")


def test_deep_nesting(tmp_path):
  depth = 100_000
  body = EMPTY_LIST * depth + APPEND * (depth - 1)
  assert_refused(_zip_with_body(tmp_path, body), "nested deeper than 100 levels")


def test_shared_references_are_walked_once(tmp_path):
  """A list holding the same list twice, 60 levels deep (2**60 paths): visited once each."""
  body = EMPTY_LIST + p_put(0) + b"0"  # POP
  for level in range(1, 61):
    body += MARK + p_get(level - 1) + p_get(level - 1) + b"l" + p_put(level) + b"0"  # LIST
  body += p_get(60)
  loaded = torch_pickle.load(_zip_with_body(tmp_path, body))
  node = loaded
  for _ in range(60):
    assert len(node) == 2 and node[0] is node[1]
    node = node[0]


def test_chained_rebuild_calls_run_without_recursion(tmp_path):
  """5000 nested ``_rebuild_from_type_v2(_rebuild_from_type_v2, ...)`` calls: no stack."""
  rebuild = p_global("torch._tensor", "_rebuild_from_type_v2")
  args = p_tuple(p_global("torch", "Size"), NONE, p_tuple(p_tuple(p_int(7))), NONE)
  for _ in range(5000):
    args = p_tuple(rebuild, NONE, args, NONE)
  assert torch_pickle.load(_zip_with_body(tmp_path, rebuild + args + REDUCE)) == (7,)


def test_huge_memo_index_allocates_nothing(tmp_path):
  """LONG_BINPUT 2**32 - 16: the C unpickler sized its memo to that index (MemoryError)."""
  body = EMPTY_DICT + p_put(2**32 - 16) + MARK + p_str("a") + p_int(1) + SETITEMS
  assert torch_pickle.load(_zip_with_body(tmp_path, body)) == {"a": 1}


def test_reference_to_an_unset_memo_entry(tmp_path):
  assert_refused(_zip_with_body(tmp_path, p_get(7)), "unset memo entry 7")


def test_duplicate_dict_keys(tmp_path):
  """The same key twice: the old reader kept the last tensor silently."""
  w = p_tensor(p_storage("0", 2), 0, (2,), (1,))
  body = p_dict([("final_layer.weight", w), ("final_layer.weight", w)])
  path = _zip_with_body(tmp_path, body, {"0": floats(2)})
  assert_refused(path, "duplicate key 'final_layer.weight'")


@pytest.mark.parametrize("body,fragment", [
    (p_global("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + b"\x82\x01",
     "unsupported pickle opcode EXT1"),
    (b"\x97", "unsupported pickle opcode NEXT_BUFFER"),
    (p_int(1) + p_int(2), "unbalanced stack"),
    (b"\x8d" + struct.pack("<Q", 2**62), "corrupt or truncated pickle"),  # BINUNICODE8
    (p_global("builtins", "eval") + p_tuple(p_str("1")) + REDUCE + p_global("os", "system")
     + b"\x93", "malformed global reference"),  # STACK_GLOBAL of non-strings
    (p_global("torch", "FloatStorage") + p_tuple(p_int(3)) + REDUCE,
     "which is not a function"),
])
def test_malformed_pickles(tmp_path, body, fragment):
  assert_refused(_zip_with_body(tmp_path, body), fragment)


def test_set_bomb_is_budgeted(tmp_path):
  """Copying one 20k-element list into sets again and again exceeds the element budget."""
  items = b"".join(p_int(i) for i in range(20_000))
  body = EMPTY_LIST + p_put(0) + MARK + items + b"e"  # APPENDS
  for _ in range(200):
    body += p_global("builtins", "frozenset") + p_tuple(p_get(0)) + REDUCE + b"0"  # POP
  assert_refused(_zip_with_body(tmp_path, body), "pickle bomb")


def test_unknown_globals_stay_opaque_and_are_never_called(tmp_path):
  marker = tmp_path / "pwned"
  body = (EMPTY_DICT + MARK + p_str("evil")
          + p_global("os", "system") + p_tuple(p_str(f"touch {marker}")) + REDUCE
          + p_str("args") + p_global("argparse", "Namespace") + EMPTY_TUPLE + b"\x81"  # NEWOBJ
          + EMPTY_DICT + MARK + p_str("causal") + b"\x88" + SETITEMS + b"b"  # BUILD
          + SETITEMS)
  loaded = torch_pickle.load(_zip_with_body(tmp_path, body))
  assert not marker.exists()
  assert loaded["evil"].qualname == "os.system" and loaded["evil"].args == (f"touch {marker}",)
  assert loaded["args"].qualname == "argparse.Namespace"
  assert loaded["args"].state == {"causal": True}
