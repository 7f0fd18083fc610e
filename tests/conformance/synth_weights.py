"""The deterministic weights that the reference model fixtures were recorded with.

A model fixture (``tests/reference/models/NAME.json``) lists every tensor of the
original's state dict as ``[name, shape, dtype]``; the stored outputs were computed by
the original code loaded with weights that are a pure function of each tensor's name,
shape and role (``tests/reference/README*.md``). The rules:

* a random stream per tensor: ``numpy.random.RandomState(zlib.crc32(name.encode()))``
  (numpy's legacy generator, frozen across versions), drawn in float64 and cast to
  float32 at the end;
* integer tensors (BatchNorm ``num_batches_tracked``): zeros of that dtype;
* BatchNorm tensors (any ``PREFIX.LEAF`` where the manifest also holds
  ``PREFIX.running_mean``): ``running_mean = 0.1 * N(0, 1)``,
  ``running_var = 0.5 + U[0, 1)``, ``weight = bn_gamma * (0.5 + U[0, 1))`` with
  ``bn_gamma`` from the manifest's ``synth.bn_gamma`` (default 1.0); a BatchNorm
  ``bias`` follows the generic 1-D rule;
* other tensors of rank >= 2: ``N(0, 1) / sqrt(fan_in)`` with ``fan_in`` the product of
  all dimensions but the first;
* other 1-D (and scalar) tensors: ``0.1 * N(0, 1)``.

The checkpoint file is written the way the original project stored it, from the
manifest's ``checkpoint`` entry: every key gets ``prefix`` (``""`` or ``"module."``);
with a ``wrap`` key the state dict goes under it in a dict that also holds the
``extra`` entries (``{"epoch": 80, "model_pos": {...}}``), without one the file is the
bare state dict. Written with ``torch.save`` (zip format, or the pre-1.6 legacy format).

``tests/reference/synth_digests.json`` holds the sha256 of every fixture's generated state
dict (and of one tensor per rule), so ``tests/test_synth_weights.py`` proves on any
machine that this generator gives the bytes the fixtures were recorded with. After adding
a model fixture whose weights come from the same rules, record it with::

    python -m tests.conformance.synth_weights tests/reference
"""
from __future__ import annotations

import argparse
import hashlib
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxpose import fileio

DIGEST_FILE = "synth_digests.json"
BN_STAT = "running_mean"

# Roles of a tensor; ``digest`` records the first tensor of each.
ROLES = ("int", "bn_mean", "bn_var", "bn_weight", "matrix", "vector")


def load_manifest(path: str | Path) -> dict[str, Any]:
  """The parsed model fixture ``NAME.json`` (``ValueError`` naming the file if invalid)."""
  return fileio.read_json(path)


def _bn_modules(names: Iterable[str]) -> set[str]:
  """Module prefixes that own a BatchNorm ``running_mean`` buffer."""
  suffix = "." + BN_STAT
  return {name[: -len(suffix)] for name in names if name.endswith(suffix)}


def tensor_role(name: str, shape: Sequence[int], dtype: str, bn_modules: set[str]) -> str:
  """Which rule makes tensor ``name`` (one of :data:`ROLES`)."""
  if np.dtype(dtype).kind in "iu":
    return "int"
  module, _, leaf = name.rpartition(".")
  if module in bn_modules:
    by_leaf = {"running_mean": "bn_mean", "running_var": "bn_var", "weight": "bn_weight"}
    if leaf in by_leaf:
      return by_leaf[leaf]
  return "matrix" if len(shape) >= 2 else "vector"


def make_tensor(name: str, shape: Sequence[int], dtype: str, role: str,
                bn_gamma: float = 1.0) -> np.ndarray:
  """The value of one tensor.

  Args:
    name: the tensor's key in the original state dict (seeds its stream).
    shape: its shape.
    dtype: its numpy dtype name (``'float32'``, ``'int64'``).
    role: from :func:`tensor_role`.
    bn_gamma: scale of BatchNorm weights.

  Returns:
    ``shape`` array: float32, or zeros of ``dtype`` for ``'int'``.
  """
  shape = tuple(int(s) for s in shape)
  if role == "int":
    return np.zeros(shape, dtype=np.dtype(dtype))
  stream = np.random.RandomState(zlib.crc32(name.encode()))
  if role == "bn_mean":
    values = 0.1 * stream.standard_normal(shape)
  elif role == "bn_var":
    values = 0.5 + stream.random_sample(shape)
  elif role == "bn_weight":
    values = bn_gamma * (0.5 + stream.random_sample(shape))
  elif role == "matrix":
    values = stream.standard_normal(shape) / np.sqrt(int(np.prod(shape[1:])))
  elif role == "vector":
    values = 0.1 * stream.standard_normal(shape)
  else:
    raise ValueError(f"unknown tensor role {role!r}; valid roles: {', '.join(ROLES)}")
  return values.astype(np.float32)


def roles(manifest: Mapping[str, Any]) -> dict[str, str]:
  """``{tensor name: role}`` for every tensor of the manifest, in its order."""
  tensors = manifest["tensors"]
  bn = _bn_modules(name for name, _, _ in tensors)
  return {name: tensor_role(name, shape, dtype, bn) for name, shape, dtype in tensors}


def state_dict(manifest: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The original model's state dict: ``{name: array}`` in the manifest's order."""
  gamma = float(manifest.get("synth", {}).get("bn_gamma", 1.0))
  role_of = roles(manifest)
  return {name: make_tensor(name, shape, dtype, role_of[name], gamma)
          for name, shape, dtype in manifest["tensors"]}


def checkpoint_object(manifest: Mapping[str, Any]) -> Any:
  """What the original project passed to ``torch.save`` (torch tensors; needs torch)."""
  import torch  # test-only dependency

  layout = manifest.get("checkpoint") or {}
  prefix = layout.get("prefix") or ""
  tensors = {prefix + name: torch.from_numpy(value)
             for name, value in state_dict(manifest).items()}
  wrap = layout.get("wrap")
  if not wrap:
    return tensors
  return {**dict(layout.get("extra") or {}), wrap: tensors}


def write_checkpoint(manifest: Mapping[str, Any], path: str | Path, *,
                     legacy: bool = False) -> Path:
  """Writes the fixture's checkpoint file as the original project stored it.

  Args:
    manifest: the parsed model fixture.
    path: the file to write.
    legacy: the pre-1.6 ``torch.save`` format instead of the zip format.

  Returns:
    ``path``.
  """
  import torch  # test-only dependency

  path = Path(path)
  torch.save(checkpoint_object(manifest), path, _use_new_zipfile_serialization=not legacy)
  return path


def _sha256(array: np.ndarray) -> str:
  """sha256 of an array's dtype, shape and little-endian C-order bytes."""
  array = np.ascontiguousarray(array)
  h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
  h.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
  return h.hexdigest()


def digest(manifest: Mapping[str, Any],
           state: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
  """A record of a generated state dict.

  Args:
    manifest: the parsed model fixture (gives the roles).
    state: the state dict to record (default :func:`state_dict` of the manifest).

  Returns:
    ``{"num_tensors", "all": sha256 over every name and tensor in order,
    "first_of_role": {role: [name, sha256]}}``.
  """
  state = state_dict(manifest) if state is None else state
  h = hashlib.sha256()
  for name, value in state.items():
    h.update(name.encode() + b"\0" + _sha256(value).encode())
  first: dict[str, list[str]] = {}
  for name, role in roles(manifest).items():
    if role not in first and name in state:
      first[role] = [name, _sha256(state[name])]
  return {"num_tensors": len(state), "all": h.hexdigest(), "first_of_role": first}


def record_digests(folder: Path) -> Path:
  """Adds the digest of every model fixture of ``folder`` that has none yet."""
  path = folder / DIGEST_FILE
  stored = fileio.read_json(path) if path.exists() else {"fixtures": {}}
  for manifest_path in sorted((folder / "models").glob("*.json")):
    if manifest_path.stem not in stored["fixtures"]:
      stored["fixtures"][manifest_path.stem] = digest(load_manifest(manifest_path))
      print(f"recorded {manifest_path.stem}")
  stored["fixtures"] = dict(sorted(stored["fixtures"].items()))
  return fileio.write_json(path, stored, indent=1)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m tests.conformance.synth_weights",
      description=f"Record {DIGEST_FILE} for the model fixtures of a fixture folder "
                  "(existing entries are kept).")
  parser.add_argument("folder", type=Path)
  print(record_digests(parser.parse_args(argv).folder))


if __name__ == "__main__":
  main()
