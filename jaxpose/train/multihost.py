"""Several processes (hosts): start-up, barriers, gathering predictions, sharing metrics.

Every function here except ``maybe_initialize_distributed`` is a collective: every process
must call it, in the same order, with the same arguments where the docstring says so.
With one process they return at once without communicating.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np


def maybe_initialize_distributed(force: bool = False) -> None:
  """``jax.distributed.initialize()`` when the environment describes several processes.

  JAX auto-detects SLURM, Open MPI and cloud TPU clusters; a plain multi-host launch sets
  ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.
  """
  env = os.environ
  multi = (force or "JAX_COORDINATOR_ADDRESS" in env
           or int(env.get("SLURM_NTASKS", "1")) > 1
           or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)
  if multi and not jax.distributed.is_initialized():
    jax.distributed.initialize()


def sync(name: str) -> None:
  """Barrier: returns when every process has reached ``sync(name)``."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def _allgather(array: np.ndarray) -> np.ndarray:
  """``[P, *array.shape]``: ``array`` of every process (same shape and dtype everywhere)."""
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(array, tiled=False))


def gather_rows(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Concatenates every process's rows, in process order, on every process (collective).

  Args:
    columns: name -> array whose leading axis is this process's rows; every column has
      the same number of rows ``n_p`` (which may differ between processes) and every
      process passes the same names, dtypes and trailing shapes.

  Returns:
    name -> ``[sum_p n_p, ...]``, process 0's rows first. The arrays travel as raw bytes,
    so float64 and int64 values arrive exactly (JAX without x64 would round them).
  """
  columns = {k: np.asarray(v) for k, v in columns.items()}
  if jax.process_count() == 1:
    return dict(columns)
  lengths = {len(v) for v in columns.values()}
  if len(lengths) > 1:
    raise ValueError(f"gather_rows: columns of different lengths {sorted(lengths)}")
  n = lengths.pop() if lengths else 0
  layout = repr([(k, columns[k].dtype.str, columns[k].shape[1:]) for k in sorted(columns)])
  digests = _allgather(np.frombuffer(hashlib.sha256(layout.encode()).digest(), np.uint8))
  if not (digests == digests[0]).all():
    raise ValueError("gather_rows: processes passed different column names, dtypes or "
                     f"shapes (this process: {layout})")
  counts = _allgather(np.asarray([n], np.int32))[:, 0]
  most = int(counts.max())
  out = {}
  for name in sorted(columns):
    value = np.ascontiguousarray(columns[name])
    if value.dtype.hasobject:
      raise TypeError(f"gather_rows: column {name!r} holds Python objects")
    row_bytes = value.dtype.itemsize * int(np.prod(value.shape[1:], dtype=np.int64))
    raw = np.zeros((most, row_bytes), np.uint8)
    if n and row_bytes:
      raw[:n] = value.reshape(n, -1).view(np.uint8).reshape(n, row_bytes)
    every = _allgather(raw)
    rows = np.concatenate([every[p, :counts[p]] for p in range(len(counts))])
    out[name] = np.ascontiguousarray(rows).view(value.dtype).reshape(-1, *value.shape[1:])
  return out


def broadcast_json(value: Any) -> Any:
  """Process 0's ``value`` (JSON-serialisable) on every process (collective).

  Other processes' ``value`` is ignored (pass None). Floats round-trip exactly.
  """
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils
  payload = json.dumps(value).encode() if jax.process_index() == 0 else b""
  size = int(multihost_utils.broadcast_one_to_all(np.asarray(len(payload), np.int32)))
  buffer = np.zeros(size, np.uint8)
  if jax.process_index() == 0:
    buffer[:] = np.frombuffer(payload, np.uint8)
  buffer = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
  return json.loads(bytes(buffer))
