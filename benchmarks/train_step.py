r"""Throughput of the jitted, sharded train step of every released training config.

    python -m benchmarks.train_step                          # all configs, fp32 and bf16
    python -m benchmarks.train_step --configs hrnet_coco,quickstart --batch_per_device 8
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.train_step ...

Each config's model, loss, optimizer and mesh are built exactly as ``launch.py`` builds
them (``config[:arg]`` selects a variant, e.g. ``hrnet_coco:w=48,size=384x288``), at the
config's real input size, on random data of the right shapes. Prints steps/s, images/s,
compile time and achieved TFLOP/s (XLA cost analysis of the whole step: forward,
backward, optimizer update).
"""
from __future__ import annotations

import argparse
import importlib

import jax
import numpy as np

from benchmarks import _timing
from jaxpose.train import loop, optim, state as state_lib, topdown as tasks

CONFIGS = ("quickstart", "hrnet_coco", "hrnet_coco:w=48", "hrnet_coco:size=384x288",
           "simplebaseline_coco", "simplebaseline_coco:depth=152", "mspn_coco",
           "mspn_coco:stages=4", "hrnet_mpii", "simplebaseline_mpii", "mspn_mpii")


def load_config(spec: str):
  name, _, arg = spec.partition(":")
  return importlib.import_module(f"configs.{name}").get_config(arg or None)


def random_batch(config, batch: int) -> dict[str, np.ndarray]:
  """A batch with the shapes and dtypes the input pipeline produces for ``config``."""
  rs = np.random.RandomState(0)
  h, w = config.data.input_size
  hh, hw = config.data.heatmap_size
  k = len(loop.KEYPOINT_SETS[config.data.keypoints]["names"])
  images = rs.randint(0, 255, (batch, h, w, 3)).astype(np.uint8)
  if config.task == "mspn":
    labels = rs.rand(batch, len(config.data.mspn_kernels), hh, hw, k).astype(np.float32) * 255
    return {"image": images, "labels": labels,
            "valid": rs.randint(0, 3, (batch, k)).astype(np.float32)}
  return {"image": images, "target": rs.rand(batch, hh, hw, k).astype(np.float32),
          "target_weight": np.ones((batch, k), np.float32)}


def jitted_case(spec: str, dtype: str, batch_per_device: int):
  """``(jitted train step, (state, batch))`` of config ``spec``."""
  config = load_config(spec)
  config.unlock()
  config.train.dtype = dtype
  config.init.kind = "scratch"
  mesh = state_lib.make_mesh()
  batch = batch_per_device * jax.device_count()
  task = tasks.make_task(config, loop.KEYPOINT_SETS[config.data.keypoints]["flip_pairs"])
  model = loop.initial_model(config)
  train_def, _, params, batch_stats = state_lib.split_model(model)
  tx, _ = optim.make_optimizer(config.optim, 1000)
  train_state = jax.device_put(state_lib.init_train_state(params, batch_stats, tx, 0),
                               state_lib.replicated(mesh))
  step = state_lib.make_train_step(train_def, task.loss, tx, task.preprocess)
  data = state_lib.global_batch(random_batch(config, batch), mesh)
  jitted = jax.jit(step, in_shardings=(state_lib.replicated(mesh), state_lib.batch_sharding(mesh)),
                   out_shardings=(state_lib.replicated(mesh), state_lib.replicated(mesh)))
  return jitted, (train_state, data)


def benchmark(spec: str, dtype: str, batch_per_device: int, repeats: int) -> dict:
  config = load_config(spec)
  config.unlock()
  config.train.dtype = dtype
  config.init.kind = "scratch"
  mesh = state_lib.make_mesh()
  batch = batch_per_device * jax.device_count()
  task = tasks.make_task(config, loop.KEYPOINT_SETS[config.data.keypoints]["flip_pairs"])
  model = loop.initial_model(config)
  train_def, _, params, batch_stats = state_lib.split_model(model)
  tx, _ = optim.make_optimizer(config.optim, 1000)
  train_state = jax.device_put(state_lib.init_train_state(params, batch_stats, tx, 0),
                               state_lib.replicated(mesh))
  step = state_lib.make_train_step(train_def, task.loss, tx, task.preprocess)
  data = state_lib.global_batch(random_batch(config, batch), mesh)
  jitted = jax.jit(step, in_shardings=(state_lib.replicated(mesh), state_lib.batch_sharding(mesh)),
                   out_shardings=(state_lib.replicated(mesh), state_lib.replicated(mesh)))
  r = _timing.compile_and_time(lambda s, b: jitted(s, b), (train_state, data), repeats=repeats)
  h, w = config.data.input_size
  return {"config": spec, "input": f"{h}x{w}", "dtype": dtype, "batch": batch,
          "compile_s": r["compile_s"], "steps_s": 1 / r["step_s"],
          "images_s": batch / r["step_s"], "tflops_s": r["flops"] / 1e12 / r["step_s"]}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default=",".join(CONFIGS))
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--batch_per_device", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  rows = []
  for spec in args.configs.split(","):
    for dtype in args.dtypes.split(","):
      rows.append(benchmark(spec, dtype, args.batch_per_device, args.repeats))
      print(f"  {spec} {dtype}: {rows[-1]['images_s']:.1f} images/s", flush=True)
  print(f"\ntrain step (forward + backward + update), {_timing.device_description()}, "
        f"jax {jax.__version__}\n")
  _timing.print_table(rows, [("config", "config", ""), ("input", "input", ""),
                             ("dtype", "compute", ""), ("batch", "global batch", "d"),
                             ("compile_s", "compile (s)", ".1f"), ("steps_s", "steps/s", ".3f"),
                             ("images_s", "images/s", ".1f"), ("tflops_s", "TFLOP/s", ".3f")])


if __name__ == "__main__":
  main()
