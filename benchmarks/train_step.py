r"""Throughput of the jitted, sharded train step, against a PyTorch peer in the same process.

    python -m benchmarks.train_step                     # quickstart, HRNet-w32, SimpleBaseline-50
    python -m benchmarks.train_step --configs all --dtypes float32,bfloat16 --no_peer
    python -m benchmarks.train_step --configs hrnet_coco,quickstart --batch_per_device 8
    python -m benchmarks.train_step --configs quickstart_3d,videopose3d_h36m:frames=81 \
        --windows_per_device 256 --dtypes float32
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.train_step ...

Each config's model, loss, optimizer and mesh are built exactly as ``launch.py`` builds
them (``config[:arg]`` selects a variant, e.g. ``hrnet_coco:w=48,size=384x288``), at the
config's real input size, on random data of the right shapes. Prints steps/s, images/s,
compile time and achieved GFLOP/s (XLA cost analysis of the whole step: forward,
backward, optimizer update). The lifters (VideoPose3D, Pose3D-RIE) get their own table:
sequences/s (training windows, each ``receptive field + stride - 1`` input frames) and
frames/s (predicted output frames), with their per-step hyper-parameters (BatchNorm
momentum; the semi-supervised branch from its first epoch on).

Where ``torch`` is installed and the config's model has a peer (``benchmarks/_torch_peers.py``;
SimpleBaseline and HRNet with the heatmap task, whose loss is ``JointsMSELoss`` with target
weights), the peer gets jaxpose's initial weights (``jaxpose.convert.export_state_dict``) and
runs the step the original training scripts run: train-mode forward, the same loss, backward
and ``torch.optim.Adam`` at the config's learning rate, on the same (normalised) batch, with
the same thread count. Both start from the same synthetic weights (``benchmarks/inference.py``
``synthetic_weights``: O(1) outputs) and the first step's losses are compared (``loss
diff``: relative; this checks the peer's architecture in train mode). The two alternate in
blocks of steps and the medians are reported (``ratio``: PyTorch's step time / jaxpose's).
The jaxpose step donates its state and each call's output state is the next call's input,
as in training (the peer's optimizer updates its parameters in place too). On a shared
machine set ``OMP_WAIT_POLICY=passive`` (see ``benchmarks/inference.py``); it slows
PyTorch's step much more than jaxpose's (measured: HRNet-w32 PyTorch 3.84 -> 2.37
images/s), so compare ratios only under one policy and say which.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _timing
from benchmarks import inference as inference_benchmark
from jaxpose import convert, datasets, models
from jaxpose.train import optim, state as state_lib, tasks
from jaxpose.train.tasks import base, lifting

CONFIGS = ("quickstart", "hrnet_coco", "hrnet_coco:w=48", "hrnet_coco:size=384x288",
           "simplebaseline_coco", "simplebaseline_coco:depth=152", "mspn_coco",
           "mspn_coco:stages=4", "hrnet_mpii", "simplebaseline_mpii", "mspn_mpii",
           "quickstart_3d", "videopose3d_h36m:frames=27", "videopose3d_h36m:frames=81",
           "videopose3d_h36m", "videopose3d_h36m:semi=1", "rie_h36m:stage=1",
           "rie_h36m:stage=3,lfd=512",
           "quickstart_3d_image", "integral_h36m", "integral_h36m:challenge",
           "hg3d_h36m:stage=1", "hg3d_h36m:stage=3")
DEFAULT_CONFIGS = ("quickstart", "hrnet_coco", "simplebaseline_coco")


LIFTER_CONFIGS = ("quickstart_3d", "videopose3d_h36m", "rie_h36m")


def split_specs(text: str) -> list[str]:
  """``"a,b:x=1,y=2,c"`` -> ``["a", "b:x=1,y=2", "c"]``: a piece with ``=`` but no ``:``
  continues the previous config's arguments."""
  specs: list[str] = []
  for piece in text.split(","):
    if specs and "=" in piece and ":" not in piece:
      specs[-1] += "," + piece
    else:
      specs.append(piece)
  return specs


def load_config(spec: str):
  name, _, arg = spec.partition(":")
  return importlib.import_module(f"configs.{name}").get_config(arg or None)


def benchmark_config(spec: str, dtype: str = "float32"):
  """``spec``'s config, set to train from scratch in ``dtype`` without the files a real
  run needs (evaluation on ground-truth boxes: no detection file)."""
  config = load_config(spec)
  config.unlock()
  config.train.dtype = dtype
  config.init.kind = "scratch"
  if "boxes" in config.eval:
    config.eval.boxes = "gt"  # the task checks a detection file it would need
  return config


def _topdown_batch(config, batch: int, rs: np.random.RandomState) -> dict[str, np.ndarray]:
  hh, hw = config.data.heatmap_size
  k = datasets.dataset(config.data.dataset).keypoints.num_keypoints
  if config.task == "mspn":
    labels = rs.rand(batch, len(config.data.mspn_kernels), hh, hw, k).astype(np.float32) * 255
    return {"labels": labels, "valid": rs.randint(0, 3, (batch, k)).astype(np.float32)}
  return {"target": rs.rand(batch, hh, hw, k).astype(np.float32),
          "target_weight": rs.randint(0, 2, (batch, k)).astype(np.float32)}


def _integral_batch(config, batch: int, rs: np.random.RandomState) -> dict[str, np.ndarray]:
  k = config.model.num_joints
  weight = np.ones((batch, k, 3), np.float32)
  weight[: batch // 2, :, 2] = 0  # half the batch 2D, as the MPII + Human3.6M mixture
  return {"color_scale": rs.uniform(0.8, 1.2, (batch, 3)).astype(np.float32),
          "target": rs.uniform(-0.5, 0.5, (batch, k, 3)).astype(np.float32),
          "target_weight": weight}


def _hg3d_batch(config, batch: int, rs: np.random.RandomState) -> dict[str, np.ndarray]:
  hh, hw = config.data.heatmap_size
  k = config.model.num_joints
  x, y = rs.randint(0, hw, (batch, k)), rs.randint(0, hh, (batch, k))
  return {"heatmaps": rs.rand(batch, hh, hw, k).astype(np.float32),
          "reg_mask": (np.arange(batch)[:, None] < batch // 2).repeat(k, 1).astype(np.float32),
          "reg_ind": ((y * hw + x) * k + np.arange(k)).astype(np.int32),
          "reg_target": rs.uniform(-0.3, 0.3, (batch, k)).astype(np.float32),
          "gt_2d": np.stack([x, y], -1).astype(np.float32) / hh}


# The targets of each task's batches (``config.task``), next to the uint8 crops.
TARGETS = {"heatmap": _topdown_batch, "mspn": _topdown_batch, "integral": _integral_batch,
           "hg3d": _hg3d_batch}


def random_batch(config, batch: int) -> dict[str, np.ndarray]:
  """A batch with the shapes and dtypes the input pipeline produces for ``config``."""
  rs = np.random.RandomState(0)
  h, w = config.data.input_size
  images = rs.randint(0, 255, (batch, h, w, 3)).astype(np.uint8)
  return {"image": images, **TARGETS[config.task](config, batch, rs)}


def build_case(spec: str, dtype: str, batch_per_device: int, xla_default: bool = False,
               donate: bool = False) -> dict:
  """Everything one benchmark row needs: config, task, model, jitted step, state, batch.

  ``donate``: the jitted step donates its state, as training runs it (the caller threads
  the returned state into the next call); without, it can be called on one state again.
  """
  config = benchmark_config(spec, dtype)
  mesh = state_lib.make_mesh()
  batch = batch_per_device * jax.device_count()
  task = tasks.make_task(config)
  is_lifter = isinstance(task, lifting.LiftingTask)
  # Synthetic weights with O(1) outputs, so that the peer's loss check compares real work.
  model = inference_benchmark.synthetic_weights(task.init_model())
  train_def, _, params, batch_stats = state_lib.split_model(model)
  # Past the first epoch: the lifters' semi-supervised branch is on.
  plan = base.Schedule(steps_per_epoch=1, total_steps=1000)
  tx, _ = task.optimizer(model, plan) if is_lifter else optim.make_optimizer(config.optim, 1000)
  train_state = jax.device_put(state_lib.init_train_state(params, batch_stats, tx, 0),
                               state_lib.replicated(mesh))
  train_state = train_state.replace(step=train_state.step + 10)
  phase = task.step_phase(10, plan)
  loss = task.loss if phase is None else functools.partial(task.loss, phase=phase)
  step = state_lib.make_train_step(train_def, loss, tx, lambda s: task.step_hparams(s, plan))
  host_batch = task.example_batch(batch) if is_lifter else random_batch(config, batch)
  data = state_lib.global_batch(host_batch, mesh)
  # xla_default: the same step with XLA's default compiler options (no compile_options).
  jitted = state_lib.jit_train_step(step, mesh, donate=donate,
                                    compiler_options={} if xla_default else None)
  return dict(config=config, task=task, is_lifter=is_lifter, model=model, jitted=jitted,
              state=train_state, data=data, host_batch=host_batch, batch=batch)


def jitted_case(spec: str, dtype: str, batch_per_device: int):
  """``(jitted train step, (state, batch))`` of config ``spec`` (for the profiler): the step
  donates its state, as in training, so each call's output state is the next call's input."""
  case = build_case(spec, dtype, batch_per_device, donate=True)
  return case["jitted"], (case["state"], case["data"])


def make_peer(config, model, task, host_batch):
  """``step() -> loss`` of the PyTorch peer on this batch, or None (no torch, no peer)."""
  try:
    import torch
    from benchmarks import _torch_peers
  except ImportError:
    return None
  cfg = models.model_config(config.model)
  if (cfg.name not in ("pose_resnet", "pose_hrnet") or config.task != "heatmap"
      or config.get("loss", {}).get("ohkm", False)):
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
              peer: bool, xla_default: bool = False) -> dict:
  """One config's train step at ``batch_per_device`` examples (images or windows)."""
  case = build_case(spec, dtype, batch_per_device, xla_default, donate=True)
  config, data, batch = case["config"], case["data"], case["batch"]
  start = time.perf_counter()
  compiled = case["jitted"].lower(case["state"], data).compile()
  compile_s = time.perf_counter() - start
  # As training runs it: the state is donated and each step's output state is the next
  # step's input (updated in place; a fresh ~0.5 GB state per SimpleBaseline-50 step
  # otherwise), as the peer's optimizer updates its parameters in place.
  current = {"state": case.pop("state")}

  def ours() -> float:
    current["state"], metrics = jax.block_until_ready(compiled(current["state"], data))
    return float(metrics["loss"])

  calls = {"jaxpose": ours}
  row = {"config": spec, "dtype": dtype, "batch": batch, "compile_s": compile_s}
  torch_step = None
  if peer and dtype == "float32" and not case["is_lifter"]:
    torch_step = make_peer(config, case["model"], case["task"], case["host_batch"])
  if torch_step is not None:
    ours_loss = ours()
    theirs = torch_step()
    row["loss_diff"] = f"{abs(ours_loss - theirs) / abs(theirs):.1e}"
    calls["torch"] = torch_step
  med = inference_benchmark.alternate(calls, rounds, per_block)
  step_s = med["jaxpose"]
  row.update(ms=1e3 * step_s, steps_s=1 / step_s,
             gflops_s=_timing.flops_of(compiled) / 1e9 / step_s)
  if "torch" in med:
    row.update(torch_images_s=batch / med["torch"], ratio=med["torch"] / step_s)
  if case["is_lifter"]:
    stride = int(config.data.stride)
    return {**row, "lifter": True,
            "input": f"{case['task'].receptive_field + stride - 1} frames",
            "sequences_s": batch / step_s, "frames_s": batch * stride / step_s}
  h, w = config.data.input_size
  return {**row, "lifter": False, "input": f"{h}x{w}", "images_s": batch / step_s}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                      help=f"comma-separated specs, or 'all' ({', '.join(CONFIGS)})")
  parser.add_argument("--dtypes", default="float32")
  parser.add_argument("--batch_per_device", type=int, default=None,
                      help="images per device (2D configs); default: 4 on a CPU (as the "
                      "PyTorch comparison), else 32")
  parser.add_argument("--windows_per_device", type=int, default=256,
                      help="training windows per device (lifter configs)")
  parser.add_argument("--xla_default", action="store_true",
                      help="compile with XLA's default options, not jaxpose.compile_options "
                      "(the before of that change)")
  _timing.add_comparison_args(parser, rounds=3)
  args = _timing.parse_comparison_args(parser, argv, training=True)
  images_per_device = args.batch_per_device or (4 if jax.default_backend() == "cpu" else 32)
  specs = CONFIGS if args.configs == "all" else split_specs(args.configs)
  rows = []
  for spec in specs:
    lifter = spec.split(":")[0] in LIFTER_CONFIGS
    for dtype in args.dtypes.split(","):
      per_device = args.windows_per_device if lifter else images_per_device
      rows.append(benchmark(spec, dtype, per_device, args.rounds, args.per_block, args.peer,
                            args.xla_default))
      unit = "sequences_s" if lifter else "images_s"
      print(f"  {spec} {dtype}: {rows[-1][unit]:.2f} {unit[:-2]}/s"
            + (f", PyTorch {rows[-1]['torch_images_s']:.2f}" if "ratio" in rows[-1] else ""),
            flush=True)
  options = "XLA defaults" if args.xla_default else "jaxpose.compile_options"
  print(f"\ntrain step (forward + backward + update), {_timing.device_description()}, "
        f"jax {jax.__version__}, {inference_benchmark.torch_threads()} threads, compiled with "
        f"{options}\n")
  common = [("config", "config", ""), ("input", "input", ""), ("dtype", "compute", ""),
            ("batch", "global batch", "d"), ("compile_s", "compile (s)", ".1f"),
            ("ms", "ms / step", ".0f")]
  mfu = []
  if args.peak_tflops:
    for row in rows:
      row["mfu"] = row["gflops_s"] / 1e3 / args.peak_tflops
    mfu = [("mfu", f"MFU (of {args.peak_tflops:g} TFLOP/s)", ".1%")]
  images = [r for r in rows if not r["lifter"]]
  if images:
    columns = common + [("images_s", "images/s", ".2f"), ("gflops_s", "GFLOP/s", ".1f")] + mfu
    if any("ratio" in r for r in images):
      columns += [("torch_images_s", "PyTorch images/s", ".2f"), ("ratio", "ratio", ".2f"),
                  ("loss_diff", "loss diff", "")]
    _timing.print_table(images, columns)
  windows = [r for r in rows if r["lifter"]]
  if windows:
    print("\nlifters (global batch in windows)\n" if images else "")
    _timing.print_table(windows, common + [("sequences_s", "sequences/s", ".1f"),
                                           ("frames_s", "frames/s", ".1f"),
                                           ("gflops_s", "GFLOP/s", ".1f")] + mfu)


if __name__ == "__main__":
  main()
