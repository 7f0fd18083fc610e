"""Writing ``.npz`` files as numpy 2 and as old numpy (1.x, Python 3 and Python 2) did.

VideoPose3D's released ``data_*.npz`` files hold pickled object arrays written by numpy
1.x (``numpy.core.multiarray._reconstruct``; byte strings as ``_codecs.encode(text,
'latin1')`` in protocol-2 pickles). The installed numpy 2 pickles with
``numpy._core.multiarray``; the old flavours are made from those pickles by renaming the
module in the (newline-delimited, protocol 2/3) ``GLOBAL`` opcodes.
"""
from __future__ import annotations

import io
import pathlib
import pickle
import zipfile
from typing import Any

import numpy as np

FLAVOURS = ("numpy2", "numpy1", "numpy1_py2")


def object_array(obj: Any) -> np.ndarray:
  array = np.empty((), dtype=object)
  array[()] = obj
  return array


def old_numpy_pickle(obj: Any, protocol: int) -> bytes:
  """``obj`` (in a 0-d object array) pickled the way numpy 1.x does, at ``protocol`` 2 or 3."""
  data = pickle.dumps(object_array(obj), protocol=protocol)
  assert b"\nnumpy._core.multiarray\n" not in data  # GLOBAL opcodes are "c<module>\n<name>\n"
  data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
  assert b"numpy._core" not in data
  return data


def npy_bytes(pickled: bytes) -> bytes:
  """An ``.npy`` member holding a pickled 0-d object array."""
  out = io.BytesIO()
  np.lib.format.write_array_header_1_0(out, {"descr": "|O", "fortran_order": False, "shape": ()})
  return out.getvalue() + pickled


def save(path: pathlib.Path, flavour: str, **objects: Any) -> pathlib.Path:
  """Writes ``objects`` (dicts, lists, ...) as pickled arrays of an ``.npz`` file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  if flavour == "numpy2":
    np.savez_compressed(path, **objects)
    return path
  protocol = {"numpy1": 3, "numpy1_py2": 2}[flavour]
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
    for key, obj in objects.items():
      archive.writestr(f"{key}.npy", npy_bytes(old_numpy_pickle(obj, protocol)))
  return path


def save_pickled(path: pathlib.Path, **pickles: bytes) -> pathlib.Path:
  """An ``.npz`` whose members hold the given raw pickle streams."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
    for key, pickled in pickles.items():
      archive.writestr(f"{key}.npy", npy_bytes(pickled))
  return path
