"""The host allocator policy of a process that runs jaxpose's steps on XLA:CPU.

XLA:CPU allocates each execution's temporary buffer (every activation and gradient of a
train step: ~670 MB for SimpleBaseline-50 at batch 4) afresh, and glibc's malloc serves it
from memory it returns to the kernel when it is freed (``mmap``ed chunks, and the heaps
of its per-thread arenas, which it unmaps once empty). Every step then touches that
memory for the first time again: measured on a 2-core EPYC, SimpleBaseline-50's CPU
train step at batch 4 took 164 K page faults and 0.37 s of kernel time per step (of
1.28 s). With one arena, no ``mmap``ed chunks and no trimming, the memory stays in the
process and is reused: ~100 faults and 0.005 s of kernel time per step, the step 1261 ->
1141 ms (separate processes, otherwise the same). ``python -m benchmarks.train_step``,
whose PyTorch peer shares the process and so the policy: ratio SimpleBaseline-50 0.97 ->
1.01, HRNet-w32 0.88 -> 0.99. The quickstart's training loop (small steps, the input
pipeline on the same two cores) took the same 6:22 with and without it: kernel time
3:00 -> 0:31, user time 9:31 -> 11:40 (one arena serialises the pipeline threads'
allocations). A function whose large output is freed between calls can still fault on
some of them (a 32 MB element-wise op: 1-2 calls in 10, cause not established); the
train step does not.

``configure()`` sets that policy (``mallopt``: ``M_ARENA_MAX`` 1, ``M_MMAP_MAX`` 0,
``M_TRIM_THRESHOLD`` 2 GiB - 1) when the process will run XLA:CPU, i.e. no accelerator
plugin is installed or ``JAX_PLATFORMS`` is ``cpu``; on an accelerator host the large
buffers live in device memory and the policy is left alone (one arena would serialise
the input pipeline's threads' allocations).

It is training's policy: only processes that train set it (``launch.py --mode=train``,
``benchmarks/train_step.py``, ``conv_primitives``, ``profile_ops --train``). Batched
inference is slower under it: separate processes, jaxpose alone, batch 32, HRNet-w32
6.89 -> 5.99 and 7.80 -> 6.74 images/s, SimpleBaseline-50 12.9 -> 10.9 and 13.3 -> 11.3
(user time +12%, no page faults either way; ``M_ARENA_MAX`` 1 alone, with ``mmap`` on,
was as fast as the defaults). So ``launch.py --mode=eval``, ``jaxpose predict`` /
``export`` and ``benchmarks/inference.py`` keep glibc's defaults.

The arena limit only binds threads that have not allocated yet, so it is set before JAX
starts its backend (called later, the result is partial: measured, no effect once the
backend runs). ``launch.py`` sets it after parsing its flags, when the config file's
imports have started JAX's first threads but not its backend: SimpleBaseline-50's step
then takes 41 faults (5 when set before any import; 164 K without the policy). The
cost: the process keeps the peak of its heap until it exits.
``JAXPOSE_HOST_MALLOC=default`` leaves glibc's defaults. Other C libraries (musl,
macOS) are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.metadata
import logging
import os

logger = logging.getLogger(__name__)

OPT_OUT_ENV = "JAXPOSE_HOST_MALLOC"
# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
POLICY = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
_ACCELERATOR_PACKAGES = ("jax-cuda12-plugin", "jax-cuda13-plugin", "jax-rocm-plugin",
                         "jax-rocm7-plugin", "libtpu", "libtpu-nightly")


def runs_on_cpu(platforms: str | None = None, environ=os.environ) -> bool:
  """Whether JAX will run on its CPU backend in this process, decided without starting it:
  ``platforms`` (JAX's ``jax_platforms`` setting) or ``JAX_PLATFORMS`` when set, else
  whether an accelerator plugin is installed."""
  platforms = (platforms or environ.get("JAX_PLATFORMS", "")).strip().lower()
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  for name in _ACCELERATOR_PACKAGES:
    try:
      importlib.metadata.distribution(name)
      return False
    except importlib.metadata.PackageNotFoundError:
      pass
  return True


def _glibc():
  """The process's glibc (``ctypes.CDLL``), or None for another C library."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.gnu_get_libc_version  # glibc only  # noqa: B018
    return libc
  except (OSError, AttributeError):
    return None


@functools.cache
def configure(platforms: str | None = None) -> bool:
  """Sets the allocator policy above once per process (``platforms``: as ``runs_on_cpu``);
  True if it is in force."""
  if os.environ.get(OPT_OUT_ENV, "").strip().lower() == "default" or not runs_on_cpu(platforms):
    return False
  libc = _glibc()
  if libc is None:
    return False
  ok = all(libc.mallopt(param, value) == 1 for param, value in POLICY)
  if not ok:
    logger.warning("glibc refused part of jaxpose's host allocator policy (mallopt)")
  return ok
