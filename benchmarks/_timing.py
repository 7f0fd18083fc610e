"""Shared helpers of the benchmark scripts: compile, time, count FLOPs, print tables."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax


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
