r"""Throughput of the jitted, sharded train step of every released training config.

    python -m benchmarks.train_step                          # all configs, fp32 and bf16
    python -m benchmarks.train_step --configs hrnet_coco,quickstart --batch_per_device 8
    python -m benchmarks.train_step --configs quickstart_3d,videopose3d_h36m:frames=81 \
        --windows_per_device 256 --dtypes float32
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.train_step ...

Each config's model, loss, optimizer and mesh are built exactly as ``launch.py`` builds
them (``config[:arg]`` selects a variant, e.g. ``hrnet_coco:w=48,size=384x288``), at the
config's real input size, on random data of the right shapes. Prints steps/s, images/s,
compile time and achieved TFLOP/s (XLA cost analysis of the whole step: forward,
backward, optimizer update). The lifters (VideoPose3D, Pose3D-RIE) get their own table:
sequences/s (training windows, each ``receptive field + stride - 1`` input frames) and
frames/s (predicted output frames), with their per-step hyper-parameters (BatchNorm
momentum; the semi-supervised branch from its first epoch on).
"""
from __future__ import annotations

import argparse
import functools
import importlib

import jax
import numpy as np

from benchmarks import _timing
from jaxpose import datasets
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


def _topdown_batch(config, batch: int, rs: np.random.RandomState) -> dict[str, np.ndarray]:
  hh, hw = config.data.heatmap_size
  k = datasets.dataset(config.data.dataset).keypoints.num_keypoints
  if config.task == "mspn":
    labels = rs.rand(batch, len(config.data.mspn_kernels), hh, hw, k).astype(np.float32) * 255
    return {"labels": labels, "valid": rs.randint(0, 3, (batch, k)).astype(np.float32)}
  return {"target": rs.rand(batch, hh, hw, k).astype(np.float32),
          "target_weight": np.ones((batch, k), np.float32)}


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


def benchmark(spec: str, dtype: str, batch_per_device: int, repeats: int) -> dict:
  """One config's train step at ``batch_per_device`` examples (images or windows)."""
  config = load_config(spec)
  config.unlock()
  config.train.dtype = dtype
  config.init.kind = "scratch"
  mesh = state_lib.make_mesh()
  batch = batch_per_device * jax.device_count()
  if "boxes" in config.eval:
    config.eval.boxes = "gt"  # the task checks a detection file it would need
  task = tasks.make_task(config)
  is_lifter = isinstance(task, lifting.LiftingTask)
  model = task.init_model()
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
  example = task.example_batch(batch) if is_lifter else random_batch(config, batch)
  data = state_lib.global_batch(example, mesh)
  jitted = jax.jit(step, in_shardings=(state_lib.replicated(mesh), state_lib.batch_sharding(mesh)),
                   out_shardings=(state_lib.replicated(mesh), state_lib.replicated(mesh)))
  r = _timing.compile_and_time(lambda s, b: jitted(s, b), (train_state, data), repeats=repeats)
  row = {"config": spec, "dtype": dtype, "batch": batch, "compile_s": r["compile_s"],
         "steps_s": 1 / r["step_s"], "tflops_s": r["flops"] / 1e12 / r["step_s"]}
  if is_lifter:
    stride = int(config.data.stride)
    return {**row, "lifter": True, "input": f"{task.receptive_field + stride - 1} frames",
            "sequences_s": batch / r["step_s"], "frames_s": batch * stride / r["step_s"]}
  h, w = config.data.input_size
  return {**row, "lifter": False, "input": f"{h}x{w}", "images_s": batch / r["step_s"]}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default=",".join(CONFIGS))
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--batch_per_device", type=int, default=32,
                      help="images per device (2D configs)")
  parser.add_argument("--windows_per_device", type=int, default=256,
                      help="training windows per device (lifter configs)")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  rows = []
  for spec in split_specs(args.configs):
    lifter = spec.split(":")[0] in LIFTER_CONFIGS
    for dtype in args.dtypes.split(","):
      per_device = args.windows_per_device if lifter else args.batch_per_device
      rows.append(benchmark(spec, dtype, per_device, args.repeats))
      unit = "sequences_s" if lifter else "images_s"
      print(f"  {spec} {dtype}: {rows[-1][unit]:.1f} {unit[:-2]}/s", flush=True)
  print(f"\ntrain step (forward + backward + update), {_timing.device_description()}, "
        f"jax {jax.__version__}\n")
  common = [("config", "config", ""), ("input", "input", ""), ("dtype", "compute", ""),
            ("batch", "global batch", "d"), ("compile_s", "compile (s)", ".1f"),
            ("steps_s", "steps/s", ".3f")]
  images = [r for r in rows if not r["lifter"]]
  if images:
    _timing.print_table(images, common + [("images_s", "images/s", ".1f"),
                                          ("tflops_s", "TFLOP/s", ".3f")])
  windows = [r for r in rows if r["lifter"]]
  if windows:
    print("\nlifters (global batch in windows)\n" if images else "")
    _timing.print_table(windows, common + [("sequences_s", "sequences/s", ".1f"),
                                           ("frames_s", "frames/s", ".1f"),
                                           ("tflops_s", "TFLOP/s", ".3f")])


if __name__ == "__main__":
  main()
