r"""What the checkpoint checksums cost: save (blocking part), digests, verified restore.

    python -m benchmarks.checkpoint                        # the quickstart state
    python -m benchmarks.checkpoint --configs quickstart,hrnet_coco --repeats 5

For each config the whole ``TrainState`` (parameters, BatchNorm statistics, Adam moments,
step, RNG) is built as ``launch.py`` builds it and saved with ``TrainCheckpointer``
(asynchronous, as in training), alternating saves with checksums and saves with the
digest computation switched off, in the same process. Columns: the state's size, the
median time ``save()`` blocks the training thread with and without checksums, the
digest computation alone (``tree_digests``: computed on the device, only the 16 bytes
per array are fetched), and a restore with verification.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import numpy as np

from benchmarks import _timing
from benchmarks.train_step import load_config
from jaxpose import checkpoint as ckpt_lib
from jaxpose.train import state as state_lib, tasks


def quickstart_like_state(spec: str):
  """The replicated ``TrainState`` of ``spec``'s model and optimizer."""
  config = load_config(spec)
  config.unlock()
  config.init.kind = "scratch"
  config.eval.boxes = "gt"
  task = tasks.make_task(config)
  model = task.init_model()
  _, _, params, batch_stats = state_lib.split_model(model)
  tx, _ = task.optimizer(model, tasks.base.Schedule(100, 1000))
  mesh = state_lib.make_mesh()
  return jax.device_put(state_lib.init_train_state(params, batch_stats, tx, 0),
                        state_lib.replicated(mesh))


def _median(times: list[float]) -> float:
  return sorted(times)[len(times) // 2]


def benchmark(spec: str, repeats: int) -> dict:
  state = quickstart_like_state(spec)
  size = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(state))
  real_digests = ckpt_lib.tree_digests
  ckpt_lib.tree_digests(state)  # compile
  timings: dict[str, list[float]] = {"on": [], "off": [], "digest": [], "restore": []}
  with tempfile.TemporaryDirectory() as workdir:
    checkpointer = ckpt_lib.TrainCheckpointer(workdir, keep=2, async_save=True)
    step = verified = 0
    for repeat in range(repeats):
      for mode in (("on", "off") if repeat % 2 else ("off", "on")):
        step += 1
        ckpt_lib.tree_digests = real_digests if mode == "on" else (lambda tree: {})
        start = time.perf_counter()
        checkpointer.save(step, state, {"position": step}, {"epoch": 0})
        timings[mode].append(time.perf_counter() - start)
        checkpointer.wait()
        verified = step if mode == "on" else verified
      ckpt_lib.tree_digests = real_digests
      start = time.perf_counter()
      real_digests(state)
      timings["digest"].append(time.perf_counter() - start)
      start = time.perf_counter()
      checkpointer.restore(state, verified)  # a checkpoint with checksums
      timings["restore"].append(time.perf_counter() - start)
    checkpointer.close()
  ckpt_lib.tree_digests = real_digests
  return {"config": spec, "mb": size / 2**20, "arrays": len(jax.tree_util.tree_leaves(state)),
          **{f"{k}_ms": 1e3 * _median(v) for k, v in timings.items()}}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default="quickstart")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  rows = [benchmark(spec, args.repeats) for spec in args.configs.split(",")]
  print(f"\n{jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"{os.cpu_count()} CPUs; medians of {args.repeats}")
  _timing.print_table(rows, [
      ("config", "config", "s"), ("mb", "state MB", ".1f"), ("arrays", "arrays", "d"),
      ("on_ms", "save blocks, checksums (ms)", ".1f"),
      ("off_ms", "save blocks, none (ms)", ".1f"),
      ("digest_ms", "digests alone (ms)", ".1f"),
      ("restore_ms", "verified restore (ms)", ".1f")])


if __name__ == "__main__":
  main()
