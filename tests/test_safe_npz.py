"""Reading npz files with pickled object arrays without running pickled code."""
from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest

from jaxpose.data import safe_npz
from tests import npz_files


def _payload():
  return {
      "S1": {"Walking": [np.arange(12, dtype=np.float32).reshape(2, 3, 2),
                         np.asfortranarray(np.arange(6, dtype=">f8").reshape(2, 3)), None]},
      "metadata": {"num_joints": 17, "keypoints_symmetry": [[np.int64(4), np.int64(5)], [1, 2]],
                   "layout_name": "h36m", "flag": np.bool_(True), "name": b"raw\xffbytes"},
      "nested": np.array([np.zeros(2, np.int32), np.ones(3, np.uint8)], dtype=object),
      "empty": np.zeros((0, 17, 2), np.float32),
  }


def _assert_same(a, b):
  if isinstance(a, dict):
    assert isinstance(b, dict) and list(a) == list(b)
    for k in a:
      _assert_same(a[k], b[k])
  elif isinstance(a, (list, tuple)):
    assert type(a) is type(b) and len(a) == len(b)
    for x, y in zip(a, b):
      _assert_same(x, y)
  elif isinstance(a, np.ndarray):
    assert isinstance(b, np.ndarray) and a.shape == b.shape
    assert a.dtype.newbyteorder("=") == b.dtype
    if a.dtype.kind == "O":
      for x, y in zip(a.reshape(-1), b.reshape(-1)):
        _assert_same(x, y)
    else:
      np.testing.assert_array_equal(a, b)
  else:
    assert type(a) is type(b) and a == b, (a, b)


@pytest.mark.parametrize("flavour", npz_files.FLAVOURS)
def test_every_pickle_flavour_reads_back_like_np_load(tmp_path, flavour):
  path = npz_files.save(tmp_path / "a.npz", flavour, data=_payload(), other={"a": [1.5, "x"]})
  got = safe_npz.read_npz(path)
  assert set(got) == {"data", "other"}
  _assert_same(_payload(), safe_npz.read_object(path, "data"))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 reading numpy.core pickles
    reference = np.load(path, allow_pickle=True)
    _assert_same(reference["data"].item(), got["data"].item())
  assert got["other"].item() == {"a": [1.5, "x"]}
  if flavour != "numpy2":
    raw = path.read_bytes()
    assert b"numpy._core" not in raw  # really the old module names


def test_protocol_2_spells_bytes_with_codecs_encode():
  data = npz_files.old_numpy_pickle({"a": np.arange(3, dtype=np.int16)}, protocol=2)
  assert b"_codecs\nencode" in data and b"numpy.core.multiarray\n_reconstruct" in data
  np.testing.assert_array_equal(safe_npz.loads_pickle(data, "x").item()["a"], [0, 1, 2])


def test_protocol_5_arrays_and_plain_members(tmp_path):
  obj = npz_files.object_array({"a": np.arange(4.0)})
  got = safe_npz.loads_pickle(pickle.dumps(obj, protocol=5), "p5").item()
  np.testing.assert_array_equal(got["a"], np.arange(4.0))
  np.savez(tmp_path / "plain.npz", x=np.arange(6, dtype=np.int64).reshape(2, 3),
           f=np.asfortranarray(np.ones((2, 3), np.float32)))
  out = safe_npz.read_npz(tmp_path / "plain.npz")
  np.testing.assert_array_equal(out["x"], np.arange(6).reshape(2, 3))
  assert out["f"].shape == (2, 3)


class _RunsCommand:
  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return (os.system, (self.command,))


class _Array:
  """Pickles as numpy's array reconstruction with a chosen (possibly lying) state."""

  def __init__(self, state):
    self.state = state

  def __reduce__(self):
    from numpy._core import multiarray
    return (multiarray._reconstruct, (np.ndarray, (0,), b"b"), self.state)


def test_hostile_pickle_is_refused_without_running_it(tmp_path):
  marker = tmp_path / "pwned"
  evil = {"S1": {"Walking": [_RunsCommand(f"touch {marker}")]}}
  path = npz_files.save_pickled(tmp_path / "data_2d_h36m_evil.npz",
                                positions_2d=pickle.dumps(npz_files.object_array(evil), protocol=3))
  with pytest.raises(safe_npz.UnsafeFileError, match=r"data_2d_h36m_evil\.npz:positions_2d.*"
                                                     r"(posix|os)\.system"):
    safe_npz.read_npz(path)
  assert not marker.exists()
  for module, name in (("builtins", "eval"), ("numpy", "load"), ("subprocess", "Popen")):
    stream = f"c{module}\n{name}\n(S'1'\ntR.".encode()
    with pytest.raises(safe_npz.UnsafeFileError, match=f"{module}.{name}"):
      safe_npz.loads_pickle(stream, "x")


def test_arrays_whose_bytes_do_not_match_their_shape_are_errors():
  f4 = np.dtype("<f4")
  short = _Array((1, (2, 3), f4, False, b"\x00" * 20))  # needs 24 bytes
  with pytest.raises(safe_npz.NpzError, match=r"f\.npz:k: .*needs 24 bytes.*holds 20"):
    safe_npz.loads_pickle(pickle.dumps(short, protocol=3), "f.npz:k")
  items = _Array((1, (3,), np.dtype(object), False, [1, 2]))
  with pytest.raises(safe_npz.NpzError, match="needs 3 items"):
    safe_npz.loads_pickle(pickle.dumps(items, protocol=3), "x")
  negative = _Array((1, (-1,), f4, False, b""))
  with pytest.raises(safe_npz.NpzError, match="malformed array shape"):
    safe_npz.loads_pickle(pickle.dumps(negative, protocol=3), "x")
  records = _Array((1, (1,), np.dtype([("a", "<f4")]), False, b"\x00" * 4))
  with pytest.raises(safe_npz.NpzError, match="unsupported dtype"):
    safe_npz.loads_pickle(pickle.dumps(records, protocol=3), "x")


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
  path = npz_files.save(tmp_path / "d.npz", "numpy1", data=_payload())
  raw = path.read_bytes()
  cut = tmp_path / "cut.npz"
  cut.write_bytes(raw[: len(raw) // 2])
  with pytest.raises(safe_npz.NpzError, match=r"cut\.npz"):
    safe_npz.read_npz(cut)
  # an intact zip whose pickle stream stops half-way
  data = npz_files.old_numpy_pickle(_payload(), 3)
  half = npz_files.save_pickled(tmp_path / "half.npz", data=data[: len(data) // 2])
  with pytest.raises(safe_npz.NpzError, match=r"half\.npz:data: corrupt or truncated pickle"):
    safe_npz.read_npz(half)
  np.save(tmp_path / "x.npy", np.arange(10.0))
  npy = (tmp_path / "x.npy").read_bytes()
  with pytest.raises(safe_npz.NpzError, match=r"needs 80 bytes, the file holds 40"):
    safe_npz._read_npy(npy[:-40], "x.npy")
  with pytest.raises(safe_npz.NpzError, match=r"no such file"):
    safe_npz.read_npz(tmp_path / "missing.npz")
  with pytest.raises(safe_npz.NpzError, match=r"no array named 'positions_3d'.*data"):
    safe_npz.read_npz(path, ("positions_3d",))
  with pytest.raises(safe_npz.NpzError, match="expected a pickled object"):
    np.savez(tmp_path / "p.npz", x=np.arange(3))
    safe_npz.read_object(tmp_path / "p.npz", "x")
