"""Shared helpers of the benchmark scripts: compile, time, count FLOPs, print tables."""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

from jaxpose import host_memory


def flops_of(compiled) -> float:
  """FLOPs of one call of a compiled function, from XLA's cost analysis (0 if unknown)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


def compile_and_time(fn: Callable, args: Sequence[Any], *, repeats: int, warmup: int = 1,
                     min_seconds: float = 0.0) -> dict[str, float]:
  """Compiles ``jax.jit(fn)`` for ``args`` and times it.

  Returns:
    ``compile_s`` (lowering + XLA compilation), ``step_s`` (median wall time per call,
    results blocked on), ``flops`` (per call).
  """
  jitted = jax.jit(fn)
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    jax.block_until_ready(compiled(*args))
  times = []
  begin = time.perf_counter()
  while len(times) < repeats or time.perf_counter() - begin < min_seconds:
    t = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t)
  times.sort()
  return {"compile_s": compile_s, "step_s": times[len(times) // 2], "flops": flops_of(compiled)}


def print_table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> None:
  """Markdown table; ``columns`` = (key, header, format)."""
  print("| " + " | ".join(h for _, h, _ in columns) + " |")
  print("|" + "|".join("---" for _ in columns) + "|")
  for row in rows:
    cells = []
    for key, _, fmt in columns:
      value = row.get(key, "")
      cells.append(format(value, fmt) if isinstance(value, (int, float)) and fmt else str(value))
    print("| " + " | ".join(cells) + " |")


def device_description() -> str:
  d = jax.devices()[0]
  return f"{jax.device_count()} x {d.platform.upper()} ({getattr(d, 'device_kind', d.platform)})"


def add_comparison_args(parser: argparse.ArgumentParser, *, rounds: int) -> None:
  """The options the PyTorch-comparing scripts share: the peer, the platform, MFU's peak
  and the alternating blocks (``--rounds`` blocks of ``--per_block`` calls each)."""
  parser.add_argument("--no_peer", dest="peer", action="store_false",
                      help="skip the PyTorch peer")
  parser.add_argument("--device", default=None, help="JAX platform, e.g. gpu or cpu")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="the device's peak TFLOP/s for the compute dtype: adds a model FLOPs "
                      "utilisation column (e.g. 989 for an H100/H200 SXM in bfloat16)")
  parser.add_argument("--rounds", type=int, default=rounds)
  parser.add_argument("--per_block", type=int, default=2)


def parse_comparison_args(parser: argparse.ArgumentParser, argv=None, *,
                          training: bool) -> argparse.Namespace:
  """Parses ``argv`` and selects the JAX platform ``--device`` names. ``training``: the
  script times training, so it sets training's host allocator policy
  (``jaxpose.host_memory``, before any JAX work), as ``launch.py --mode=train`` does; an
  inference benchmark keeps glibc's defaults, as ``--mode=eval`` and ``jaxpose predict``
  do. PyTorch's peer runs in the same process under the same allocator settings."""
  args = parser.parse_args(argv)
  if args.device:
    jax.config.update("jax_platforms", args.device)
  if training:
    host_memory.configure(args.device)
  return args
