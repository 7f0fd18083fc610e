r"""Where the time of one jitted forward or train step goes, per XLA operation.

    python -m benchmarks.profile_ops --model hrnet_w32_256x192 --batch 32
    python -m benchmarks.profile_ops --train simplebaseline_coco --batch 4 --top 25

An inference profile (``--model``) is of the path the entry points take (BatchNorm folded
into the convolutions, micro-batches sized per model); ``--plain`` profiles the model as
built, on the whole batch.

Compiles the function, runs it under ``jax.profiler.trace`` and sums the time of every
executed XLA operation (thunk) over the traced calls. Each row shows the op's share of the
step, its kind (``convolution``, ``convolution-base-dilated`` = a convolution whose input is
dilated, i.e. a transposed convolution or the input gradient of a strided one, ``ynn_fusion``
= a fusion run by XNNPACK, ...) and the optimized-HLO line that defines it (shapes, window).
XLA:CPU runs its convolutions asynchronously on its thread pool, and their trace events
time the dispatch, not the run (0.3 ms for a ~2 ms ``[4, 8, 6, 256]`` 3x3 convolution in
HRNet-w32's train step), so "ops traced" leaves most convolution time out (about half of
that step's wall time): ``benchmarks/conv_primitives.py`` times the convolutions.

A train step is profiled as training runs it: its state donated and each call's output
state the next call's input. (Called again on one undonated state, the step's in-place
update could not reuse the state's buffers, and XLA copied every parameter and moment
first: ~100 ms of ``copy`` rows in HRNet-w32's batch-4 profile that training never runs.)
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
import numpy as np

from jaxpose import host_memory


def hlo_lines(compiled) -> dict[str, str]:
  """Instruction name -> its optimized-HLO line (all computations)."""
  lines = {}
  for line in compiled.as_text().splitlines():
    match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (.*)", line)
    if match:
      lines.setdefault(match.group(1), match.group(2))
  return lines


def call_threaded(compiled, args: list, thread_state: bool):
  """One call of ``compiled(*args)``, waited for; with ``thread_state`` its first output
  replaces ``args[0]`` (a step that donates its state)."""
  out = jax.block_until_ready(compiled(*args))
  if thread_state:
    args[0] = out[0]
  return out


def op_times(compiled, args, calls: int, thread_state: bool = False) -> dict[str, float]:
  """Microseconds per call of each executed op, from a profiler trace of ``calls`` calls
  (``thread_state``: see ``call_threaded``)."""
  args = list(args)
  with tempfile.TemporaryDirectory() as logdir:
    with jax.profiler.trace(logdir, create_perfetto_trace=True):
      for _ in range(calls):
        call_threaded(compiled, args, thread_state)
    path = glob.glob(os.path.join(logdir, "**", "*.trace.json.gz"), recursive=True)[0]
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  names = set(hlo_lines(compiled))
  times: dict[str, float] = collections.defaultdict(float)
  for event in events:
    if event.get("ph") == "X" and event["name"] in names:
      times[event["name"]] += event["dur"] / calls
  return times


def kind(name: str) -> str:
  return re.sub(r"\.\d+$", "", name)


def report(compiled, args, calls: int, top: int, wall_ms: float, thread_state: bool = False
           ) -> None:
  times = op_times(compiled, args, calls, thread_state)
  lines = hlo_lines(compiled)
  total = sum(times.values())
  print(f"\nops traced: {1e-3 * total:.1f} ms per call (wall {wall_ms:.1f} ms)\n")
  by_kind: dict[str, float] = collections.defaultdict(float)
  for name, t in times.items():
    by_kind[kind(name)] += t
  print("| op kind | ms / call | share |\n|---|---|---|")
  for k, t in sorted(by_kind.items(), key=lambda kv: -kv[1])[:top]:
    print(f"| {k} | {1e-3 * t:.1f} | {100 * t / total:.1f}% |")
  print("\n| op | ms / call | share | HLO |\n|---|---|---|---|")
  for name, t in sorted(times.items(), key=lambda kv: -kv[1])[:top]:
    print(f"| {name} | {1e-3 * t:.2f} | {100 * t / total:.1f}% | `{lines[name][:220]}` |")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  what = parser.add_mutually_exclusive_group(required=True)
  what.add_argument("--model", help="a benchmarks.inference RELEASED name (eval forward)")
  what.add_argument("--train", help="a benchmarks.train_step config spec (train step)")
  parser.add_argument("--plain", action="store_true",
                      help="--model: the model as built on the whole batch, not the inference "
                           "path (BatchNorm folded, micro-batches)")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--calls", type=int, default=3)
  parser.add_argument("--top", type=int, default=20)
  args = parser.parse_args(argv)
  if args.train:
    host_memory.configure()  # the policy training runs under (it slows inference)
  if args.model:
    from benchmarks import inference
    fn, fn_args = inference.jitted_case(args.model, args.batch, args.dtype, args.plain)
  else:
    from benchmarks import train_step
    fn, fn_args = train_step.jitted_case(args.train, args.dtype, args.batch)
  thread_state = bool(args.train)
  compiled = fn.lower(*fn_args).compile()
  fn_args = list(fn_args)
  call_threaded(compiled, fn_args, thread_state)
  walls = []
  for _ in range(args.calls):
    t = time.perf_counter()
    call_threaded(compiled, fn_args, thread_state)
    walls.append(time.perf_counter() - t)
  report(compiled, fn_args, args.calls, args.top, 1e3 * float(np.median(walls)), thread_state)


if __name__ == "__main__":
  main()
