r"""Throughput of the jitted, sharded train step, against a PyTorch peer in the same process.

    python -m benchmarks.train_step                     # quickstart, HRNet-w32, SimpleBaseline-50
    python -m benchmarks.train_step --configs hrnet_coco,quickstart --batch_per_device 8
    python -m benchmarks.train_step --configs all --dtypes float32,bfloat16 --no_peer
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.train_step ...

Each config's model, loss, optimizer and mesh are built exactly as ``launch.py`` builds
them (``config[:arg]`` selects a variant, e.g. ``hrnet_coco:w=48,size=384x288``), at the
config's real input size, on random data of the right shapes. Prints steps/s, images/s,
compile time and achieved GFLOP/s (XLA cost analysis of the whole step: forward, backward,
optimizer update).

Where ``torch`` is installed and the config's model has a peer (``benchmarks/_torch_peers.py``;
SimpleBaseline and HRNet, whose loss is ``JointsMSELoss`` with target weights), the peer
gets jaxpose's initial weights (``jaxpose.convert.export_state_dict``) and runs the step
the original training scripts run: train-mode forward, the same loss, backward and
``torch.optim.Adam`` at the config's learning rate, on the same (normalised) batch, with
the same thread count. Both start from the same synthetic weights (``benchmarks/inference.py``
``synthetic_weights``: O(1) outputs) and the first step's losses are compared (``loss
diff``: relative; this checks the peer's architecture in train mode). The two alternate in
blocks of steps and the medians are reported. On a shared machine set
``OMP_WAIT_POLICY=passive`` (see ``benchmarks/inference.py``).
"""
from __future__ import annotations

import argparse
import importlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _timing
from benchmarks import inference as inference_benchmark
from jaxpose import convert, models
from jaxpose.train import loop, optim, state as state_lib, topdown as tasks

CONFIGS = ("quickstart", "hrnet_coco", "hrnet_coco:w=48", "hrnet_coco:size=384x288",
           "simplebaseline_coco", "simplebaseline_coco:depth=152", "mspn_coco",
           "mspn_coco:stages=4", "hrnet_mpii", "simplebaseline_mpii", "mspn_mpii")
DEFAULT_CONFIGS = ("quickstart", "hrnet_coco", "simplebaseline_coco")


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
          "target_weight": rs.randint(0, 2, (batch, k)).astype(np.float32)}


def build_case(spec: str, dtype: str, batch_per_device: int):
  """Everything one benchmark row needs: config, model, task, jitted step, state, batch."""
  config = load_config(spec)
  config.unlock()
  config.train.dtype = dtype
  config.init.kind = "scratch"
  mesh = state_lib.make_mesh()
  batch = batch_per_device * jax.device_count()
  task = tasks.make_task(config, loop.KEYPOINT_SETS[config.data.keypoints]["flip_pairs"])
  # Synthetic weights with O(1) outputs, so that the peer's loss check compares real work.
  model = inference_benchmark.synthetic_weights(loop.initial_model(config))
  train_def, _, params, batch_stats = state_lib.split_model(model)
  tx, _ = optim.make_optimizer(config.optim, 1000)
  train_state = jax.device_put(state_lib.init_train_state(params, batch_stats, tx, 0),
                               state_lib.replicated(mesh))
  step = state_lib.make_train_step(train_def, task.loss, tx, task.preprocess)
  host_batch = random_batch(config, batch)
  data = state_lib.global_batch(host_batch, mesh)
  jitted = jax.jit(step, in_shardings=(state_lib.replicated(mesh), state_lib.batch_sharding(mesh)),
                   out_shardings=(state_lib.replicated(mesh), state_lib.replicated(mesh)))
  return config, model, task, jitted, train_state, data, host_batch


def jitted_case(spec: str, dtype: str, batch_per_device: int):
  """``(jitted train step, (state, batch))`` of config ``spec`` (for the profiler)."""
  _, _, _, jitted, train_state, data, _ = build_case(spec, dtype, batch_per_device)
  return jitted, (train_state, data)


def make_peer(config, model, task, host_batch):
  """``(step() -> loss)`` of the PyTorch peer on this batch, or None."""
  try:
    import torch
    from benchmarks import _torch_peers
  except ImportError:
    return None
  cfg = models.model_config(config.model)
  if cfg.name not in ("pose_resnet", "pose_hrnet") or config.task != "heatmap":
    return None
  torch.set_num_threads(inference_benchmark.torch_threads())
  peer = _torch_peers.build(cfg, convert.export_state_dict(model, cfg)).train()
  opt = torch.optim.Adam(peer.parameters(), lr=float(config.optim.lr))
  images = np.asarray(task.preprocess(jnp.asarray(host_batch["image"])), np.float32)
  x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  target = torch.from_numpy(np.ascontiguousarray(host_batch["target"].transpose(0, 3, 1, 2)))
  weight = torch.from_numpy(host_batch["target_weight"])[:, :, None, None]

  def step() -> float:
    opt.zero_grad()
    out = peer(x)
    loss = 0.5 * torch.mean(torch.square((out - target) * weight))  # JointsMSELoss
    loss.backward()
    opt.step()
    return loss.item()

  return step


def benchmark(spec: str, dtype: str, batch_per_device: int, rounds: int, per_block: int,
              peer: bool) -> dict:
  config, model, task, jitted, train_state, data, host_batch = build_case(
      spec, dtype, batch_per_device)
  start = time.perf_counter()
  compiled = jitted.lower(train_state, data).compile()
  compile_s = time.perf_counter() - start
  calls = {"jaxpose": lambda: jax.block_until_ready(compiled(train_state, data))}
  row = {}
  torch_step = make_peer(config, model, task, host_batch) if peer and dtype == "float32" else None
  if torch_step is not None:
    ours = float(compiled(train_state, data)[1]["loss"])
    theirs = torch_step()
    row["loss_diff"] = f"{abs(ours - theirs) / abs(theirs):.1e}"
    calls["torch"] = torch_step
  med = inference_benchmark.alternate(calls, rounds, per_block)
  batch = batch_per_device * jax.device_count()
  h, w = config.data.input_size
  row.update({"config": spec, "input": f"{h}x{w}", "dtype": dtype, "batch": batch,
              "compile_s": compile_s, "ms": 1e3 * med["jaxpose"],
              "images_s": batch / med["jaxpose"],
              "gflops_s": _timing.flops_of(compiled) / 1e9 / med["jaxpose"]})
  if "torch" in med:
    row.update(torch_images_s=batch / med["torch"], ratio=med["torch"] / med["jaxpose"])
  return row


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                      help=f"comma-separated specs, or 'all' ({', '.join(CONFIGS)})")
  parser.add_argument("--dtypes", default="float32")
  parser.add_argument("--batch_per_device", type=int, default=None,
                      help="default: 4 on a CPU (as the PyTorch comparison), else 32")
  parser.add_argument("--no_peer", dest="peer", action="store_false")
  parser.add_argument("--device", default=None, help="JAX platform, e.g. gpu or cpu")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--per_block", type=int, default=2)
  args = parser.parse_args(argv)
  if args.device:
    jax.config.update("jax_platforms", args.device)
  batch = args.batch_per_device or (4 if jax.default_backend() == "cpu" else 32)
  specs = CONFIGS if args.configs == "all" else args.configs.split(",")
  rows = []
  for spec in specs:
    for dtype in args.dtypes.split(","):
      rows.append(benchmark(spec, dtype, batch, args.rounds, args.per_block, args.peer))
      print(f"  {spec} {dtype}: {rows[-1]['images_s']:.2f} images/s"
            + (f", PyTorch {rows[-1]['torch_images_s']:.2f}" if "ratio" in rows[-1] else ""),
            flush=True)
  print(f"\ntrain step (forward + backward + update), {_timing.device_description()}, "
        f"jax {jax.__version__}, {inference_benchmark.torch_threads()} threads\n")
  columns = [("config", "config", ""), ("input", "input", ""), ("dtype", "compute", ""),
             ("batch", "global batch", "d"), ("compile_s", "compile (s)", ".1f"),
             ("ms", "ms / step", ".0f"), ("images_s", "images/s", ".2f"),
             ("gflops_s", "GFLOP/s", ".1f")]
  if any("ratio" in r for r in rows):
    columns += [("torch_images_s", "PyTorch images/s", ".2f"), ("ratio", "ratio", ".2f"),
                ("loss_diff", "loss diff", "")]
  _timing.print_table(rows, columns)


if __name__ == "__main__":
  main()
