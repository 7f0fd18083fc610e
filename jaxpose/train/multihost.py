"""Several processes (hosts): start-up, barriers, gathering predictions, sharing metrics.

Start-up: ``launch.py``'s flags (``--coordinator_address``, ``--num_processes``,
``--process_id``, ``--local_device_ids``, each falling back to its ``JAX_*`` environment
variable, see ``cluster_from``) or JAX's own detection of SLURM / Open MPI / TPU clusters
(``initialize_distributed``). JAX 0.10 itself reads only the coordinator address from the
environment, which is why the process count and id are passed explicitly. On CPUs the
processes exchange data with gloo (JAX's default CPU collectives).

Every function from ``sync`` on is a collective: every process
must call it, in the same order, with the same arguments where the docstring says so.
With one process they return at once without communicating.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class Cluster:
  """How this process joins a multi-process run (``jax.distributed.initialize``).

  Attributes:
    coordinator_address: ``host:port`` of process 0's coordinator service.
    num_processes: processes in the run.
    process_id: this process, ``0 .. num_processes - 1``.
    local_device_ids: the accelerators this process uses (None: all it sees).
  """
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"${name}={value!r}: must be an integer") from None


def cluster_from(coordinator_address: str | None = None, num_processes: int | None = None,
                 process_id: int | None = None, local_device_ids: str | None = None) -> Cluster:
  """The explicit settings (``launch.py`` flags), each falling back to its environment
  variable: ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``,
  ``JAX_LOCAL_DEVICE_IDS`` (comma-separated).

  Raises:
    ValueError: an incomplete or inconsistent set (one line naming what is missing).
  """
  address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  count = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
  index = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
  ids = local_device_ids if local_device_ids is not None else os.environ.get(
      "JAX_LOCAL_DEVICE_IDS")
  try:
    devices = tuple(int(i) for i in ids.split(",")) if ids else None
  except ValueError:
    raise ValueError(f"local device ids {ids!r}: must be comma-separated integers") from None
  cluster = Cluster(address, count, index, devices)
  given = {"coordinator address (--coordinator_address / $JAX_COORDINATOR_ADDRESS)": address,
           "process count (--num_processes / $JAX_NUM_PROCESSES)": count,
           "process id (--process_id / $JAX_PROCESS_ID)": index}
  partial = any(v is not None for v in given.values()) and any(v is None for v in given.values())
  if partial and not _cluster_environment():  # there JAX fills in the rest
    missing = [k for k, v in given.items() if v is None]
    raise ValueError(f"a multi-process run needs all of coordinator address, process count and "
                     f"process id; missing: {'; '.join(missing)}")
  if count is not None and (count < 1 or (index is not None and not 0 <= index < count)):
    raise ValueError(f"process id {index} and process count {count}: need "
                     "0 <= process id < process count")
  return cluster


def _cluster_environment() -> bool:
  """SLURM, Open MPI or another environment ``jax.distributed`` detects by itself."""
  env = os.environ
  return (int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
          or "MEGASCALE_COORDINATOR_ADDRESS" in env)


def initialize_distributed(cluster: Cluster | None = None, *, force: bool = False) -> bool:
  """Starts ``jax.distributed`` when the run has several processes; returns whether it did.

  With a complete ``cluster`` (explicit settings: ``cluster_from``), initialises with it;
  otherwise lets JAX auto-detect SLURM / Open MPI / cloud TPU clusters (or, with
  ``force``, whatever ``jax.distributed.initialize()`` finds). Nothing happens for a single
  process. Call it before anything else touches JAX devices.
  """
  cluster = cluster or Cluster()
  if jax.distributed.is_initialized():
    return True
  if cluster.num_processes == 1:
    return False
  if cluster.num_processes is not None or force or _cluster_environment():
    jax.distributed.initialize(
        coordinator_address=cluster.coordinator_address,
        num_processes=cluster.num_processes, process_id=cluster.process_id,
        local_device_ids=list(cluster.local_device_ids) if cluster.local_device_ids else None)
    return True
  return False


def maybe_initialize_distributed(force: bool = False) -> None:
  """``initialize_distributed(cluster_from())``: the environment variables
  (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), else
  auto-detection (kept for callers of the earlier API)."""
  initialize_distributed(cluster_from(), force=force)


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
