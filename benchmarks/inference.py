r"""Forward throughput of every released model, against a PyTorch peer in the same process.

    python -m benchmarks.inference                                  # everything, batch 1 and 32
    python -m benchmarks.inference --models hrnet_w32_256x192 --batch_sizes 1,8,32
    python -m benchmarks.inference --dtype bfloat16 --batch_sizes 128   # e.g. on a GPU
    python -m benchmarks.inference --dtype bfloat16 --compare_float32 --no_peer
    python -m benchmarks.inference --compare_plain --micro_batch none   # jaxpose paths only

For each configuration at its released input size, jaxpose runs the path users get
(``jaxpose.models.inference``: BatchNorms folded into convolutions, large batches as
micro-batches, jitted) on deterministic synthetic weights. Where ``torch`` is installed and
the family has a peer (``benchmarks/_torch_peers.py``: SimpleBaseline, HRNet, MSPN,
VideoPose3D written as the originals define them, NCHW, eval mode, ``torch.no_grad``), the
same weights are exported with ``jaxpose.convert.export_state_dict``, loaded strictly into
the peer, and the two outputs are compared once (``peer rel. diff``: max abs difference
relative to the output's max). Both run on the same inputs with the same thread count
(XLA:CPU uses one thread per available core; ``torch.set_num_threads`` gets that number),
alternating in blocks of calls
(each block starts with an untimed call), and the medians are reported: on a shared machine
both see the same load. Without torch only the jaxpose columns are printed. On a machine
shared with other jobs, run with ``OMP_WAIT_POLICY=passive``: PyTorch's OpenMP threads
otherwise spin at every barrier while a sibling thread is descheduled, which slowed the peer
5-30x on a loaded 2-core machine (XLA's work-stealing pool degrades gracefully); on a quiet
machine leave it unset (PyTorch's default).

The jaxpose path returns only the output evaluation and ``predict`` use (heatmaps, or 3D
poses), as those entry points do, so XLA drops what feeds nothing else (MSPN's
intermediate-stage heatmaps); the peer runs the original's eval forward, which computes
them.

GFLOP/s is the model's arithmetic (XLA's cost analysis of the plain batch-1 forward, times
the batch) per second. ``--compare_plain`` also times the plain path (the model as
converted, one jitted call on the whole batch). ``--device`` picks a JAX platform (``gpu``,
``cpu``); the peer always runs on the CPU, so compare against it on CPUs only.
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import _timing
from jaxpose import compile_options, convert, models
from jaxpose.models import (hg3d, hrnet, inference, integral, layers, mspn, resnet, rie,
                            videopose3d)

# name -> (model config, input shape without batch)
RELEASED = {
    "pose_resnet50_256x192": (resnet.PoseResNetConfig.res50(), (256, 192, 3)),
    "pose_resnet50_384x288": (resnet.PoseResNetConfig.res50(), (384, 288, 3)),
    "pose_resnet101_256x192": (resnet.PoseResNetConfig.res101(), (256, 192, 3)),
    "pose_resnet101_384x288": (resnet.PoseResNetConfig.res101(), (384, 288, 3)),
    "pose_resnet152_256x192": (resnet.PoseResNetConfig.res152(), (256, 192, 3)),
    "pose_resnet152_384x288": (resnet.PoseResNetConfig.res152(), (384, 288, 3)),
    "hrnet_w32_256x192": (hrnet.PoseHRNetConfig.w32(), (256, 192, 3)),
    "hrnet_w32_384x288": (hrnet.PoseHRNetConfig.w32(), (384, 288, 3)),
    "hrnet_w48_256x192": (hrnet.PoseHRNetConfig.w48(), (256, 192, 3)),
    "hrnet_w48_384x288": (hrnet.PoseHRNetConfig.w48(), (384, 288, 3)),
    "hrnet_w32_mpii_256x256": (hrnet.PoseHRNetConfig.w32(num_joints=16), (256, 256, 3)),
    "mspn_2stg_256x192": (mspn.MSPNConfig.coco_2xstg(), (256, 192, 3)),
    "mspn_4stg_256x192": (mspn.MSPNConfig.coco_4xstg(), (256, 192, 3)),
    "integral_res50_256": (integral.IntegralConfig.res50_hm36(), (256, 256, 3)),
    "hg3d_res50_256": (hg3d.HG3DConfig.fusion_3d(), (256, 256, 3)),
    "videopose3d_243f": (videopose3d.VideoPose3DConfig.h36m_243f(), (243, 17, 2)),
    "rie_243f": (rie.RIEConfig.gt(), (243, 17, 2)),
}
DEFAULT_MODELS = ("pose_resnet50_256x192", "hrnet_w32_256x192", "mspn_2stg_256x192",
                  "videopose3d_243f")


def synthetic_weights(model: nnx.Module, seed: int = 0) -> nnx.Module:
  """Deterministic weights with realistic scales, set in place: kernels ~ N(0, 1/fan_in),
  biases ~ N(0, 0.1^2), BatchNorm gamma ~ U(0.25, 0.75), beta and mean ~ N(0, 0.1^2), var ~
  U(0.5, 1.5) (so that folding BatchNorms is not a no-op and outputs stay O(1))."""
  rs = np.random.RandomState(seed)

  def normal(shape, std):
    return jnp.asarray(std * rs.standard_normal(shape), jnp.float32)

  for _, module in nnx.iter_modules(model):
    if isinstance(module, (layers.Conv, layers.ConvTranspose, layers.Linear)):
      shape = module.kernel[...].shape
      module.kernel.set_value(normal(shape, 1 / np.sqrt(np.prod(shape[:-1]))))
      if module.bias is not None:
        module.bias.set_value(normal(module.bias[...].shape, 0.1))
    elif isinstance(module, layers.BatchNorm):
      n = module.num_features
      module.scale.set_value(jnp.asarray(rs.uniform(0.25, 0.75, n), jnp.float32))
      module.bias.set_value(normal((n,), 0.1))
      module.mean.set_value(normal((n,), 0.1))
      module.var.set_value(jnp.asarray(rs.uniform(0.5, 1.5, n), jnp.float32))
  return model


def main_output(config) -> str:
  """The output the evaluation and ``predict`` use: heatmaps, or 3D poses for lifters."""
  return "poses" if config.name in ("videopose3d", "rie") else "heatmaps"


def model_flops(model: nnx.Module, shape: tuple[int, ...]) -> float:
  """FLOPs of one item through the plain model (XLA cost analysis, batch 1)."""
  forward, state = inference.forward_fn(model, micro_batch=None)
  x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
  return _timing.flops_of(jax.jit(forward).lower(state, x).compile())


def jitted_case(name: str, batch: int, dtype: str = "float32", plain: bool = False):
  """``(jitted forward, (state, inputs))`` of a RELEASED model at ``batch`` (profiling): the
  path the entry points take (``prepare_for_inference``, micro-batches sized per model,
  the evaluated output), or with ``plain`` the model as built, on the whole batch."""
  config, shape = RELEASED[name]
  model = synthetic_weights(models.build_model(config.replace(dtype=dtype)))
  model.eval()
  if plain:
    forward, state = inference.forward_fn(model, micro_batch=None)
  else:
    forward, state = inference.forward_fn(inference.prepare_for_inference(model, (1, *shape)),
                                          "auto", output=main_output(config))
  x = jnp.asarray(np.random.RandomState(0).standard_normal((batch, *shape)), jnp.float32)
  options = compile_options.for_platform(jax.default_backend(), inference.compute_dtype(model))
  return jax.jit(forward, compiler_options=options), (state, x)


# ----------------------------------------------------------------------------------------
# The PyTorch peer
# ----------------------------------------------------------------------------------------


def torch_threads() -> int:
  """XLA:CPU's intra-op thread count: one per core this process may run on."""
  return len(os.sched_getaffinity(0))


def make_peer(model: nnx.Module, config, shape: tuple[int, ...]):
  """``(call(x_numpy_nhwc) -> None, check(jax_forward) -> relative max diff)`` or None."""
  try:
    import torch
    from benchmarks import _torch_peers
  except ImportError:
    return None
  if config.name not in _torch_peers.PEERS:
    return None
  torch.set_num_threads(torch_threads())
  peer = _torch_peers.build(config, convert.export_state_dict(model, config))
  image = len(shape) == 3 and config.name not in ("videopose3d", "rie")

  def to_torch(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if image else x))

  def call(x) -> None:
    with torch.no_grad():
      peer(x)

  def check(jax_apply: Callable) -> float:
    x = np.random.RandomState(1).standard_normal((2, *shape)).astype(np.float32)
    with torch.no_grad():
      want = peer(to_torch(x)).numpy()
    want = want.transpose(0, 2, 3, 1) if image else want
    got = np.asarray(jax_apply(jnp.asarray(x)), np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))

  return call, check, to_torch


# ----------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------


def alternate(calls: dict[str, Callable[[], None]], rounds: int, per_block: int
              ) -> dict[str, float]:
  """Median seconds per call of each callable, run in alternating blocks of ``per_block``
  timed calls, each block after one untimed call."""
  times: dict[str, list[float]] = {k: [] for k in calls}
  for _ in range(rounds):
    for key, call in calls.items():
      call()
      for _ in range(per_block):
        start = time.perf_counter()
        call()
        times[key].append(time.perf_counter() - start)
  return {k: float(np.median(v)) for k, v in times.items()}


def run_model(name: str, args) -> list[dict]:
  config, shape = RELEASED[name]
  config = config.replace(dtype=args.dtype)
  model = synthetic_weights(models.build_model(config))
  model.eval()
  flops = model_flops(model, shape)
  named = {"auto": "auto", "none": None}
  micro = named[args.micro_batch] if args.micro_batch in named else int(args.micro_batch)
  prepared = inference.prepare_for_inference(model, (1, *shape))
  forward, state = inference.forward_fn(prepared, micro, output=main_output(config))
  options = compile_options.for_platform(jax.default_backend(), inference.compute_dtype(model))
  paths = {"jaxpose": (jax.jit(forward, compiler_options=options), state)}
  if args.compare_xla_default:
    paths["xla default"] = (jax.jit(forward), state)
  if args.compare_float32 and args.dtype != "float32":
    model32 = synthetic_weights(models.build_model(config.replace(dtype="float32")))
    model32.eval()
    wide, wide_state = inference.forward_fn(
        inference.prepare_for_inference(model32, (1, *shape)), micro, output=main_output(config))
    paths["float32"] = (jax.jit(wide, compiler_options=compile_options.for_platform(
        jax.default_backend())), wide_state)
  if args.compare_plain:
    plain, plain_state = inference.forward_fn(model, micro_batch=None, output=main_output(config))
    paths["plain"] = (jax.jit(plain, compiler_options=options), plain_state)
  peer = make_peer(model, config.replace(dtype="float32"), shape) if args.peer else None
  check = None
  if peer is not None:
    fn, st = paths["jaxpose"]
    check = peer[1](lambda x: fn(st, x))
    print(f"  {name}: peer max|diff| / max|out| = {check:.2e}", flush=True)
  rows = []
  for batch in (int(b) for b in args.batch_sizes.split(",")):
    x_np = np.random.RandomState(0).standard_normal((batch, *shape)).astype(np.float32)
    x = jnp.asarray(x_np)
    calls, compile_s = {}, {}
    for key, (fn, st) in paths.items():
      start = time.perf_counter()
      compiled = fn.lower(st, x).compile()
      compile_s[key] = time.perf_counter() - start
      calls[key] = (lambda c, s: lambda: jax.block_until_ready(c(s, x)))(compiled, st)
    if peer is not None:
      tx = peer[2](x_np)
      calls["torch"] = lambda: peer[0](tx)
    med = alternate(calls, args.rounds, args.per_block)
    if micro == "auto":
      out = main_output(config)
      used = inference.auto_micro_batch(lambda x: prepared(x)[out], x)
    else:
      used = micro
    row = {"model": name, "batch": batch, "dtype": args.dtype, "micro": min(used or batch, batch),
           "compile_s": compile_s["jaxpose"], "ms": 1e3 * med["jaxpose"],
           "items_s": batch / med["jaxpose"], "gflops_s": flops * batch / 1e9 / med["jaxpose"]}
    if "plain" in med:
      row["plain_items_s"] = batch / med["plain"]
    if "xla default" in med:
      row["xla_default_items_s"] = batch / med["xla default"]
    if "float32" in med:
      row.update(float32_items_s=batch / med["float32"], vs_float32=med["float32"] / med["jaxpose"])
    if "torch" in med:
      row.update(torch_items_s=batch / med["torch"], ratio=med["torch"] / med["jaxpose"],
                 peer_diff=f"{check:.1e}")
    rows.append(row)
    print(f"  {name} batch {batch}: " + ", ".join(
        f"{k} {batch / v:.2f}/s" for k, v in med.items()), flush=True)
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                      help=f"comma-separated subset of: {', '.join(RELEASED)}")
  parser.add_argument("--batch_sizes", default="1,32")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--micro_batch", default="auto",
                      help="'auto' (inference.auto_micro_batch: sized per model), 'none' or a size")
  parser.add_argument("--compare_plain", action="store_true",
                      help="also time the plain path (model as converted, whole batch)")
  parser.add_argument("--compare_xla_default", action="store_true",
                      help="also time the jaxpose path compiled with XLA's default options "
                      "(without jaxpose.compile_options)")
  parser.add_argument("--compare_float32", action="store_true",
                      help="with --dtype bfloat16: also time the same model in float32 "
                      "(alternating, same process) and print the speed-up")
  _timing.add_comparison_args(parser, rounds=5)
  args = _timing.parse_comparison_args(parser, argv, training=False)
  rows = []
  for name in args.models.split(","):
    if name not in RELEASED:
      raise SystemExit(f"unknown model {name!r}; valid: {', '.join(RELEASED)}")
    rows += run_model(name, args)
  print(f"\nforward, eval mode, {args.dtype} compute, {_timing.device_description()}, "
        f"jax {jax.__version__}, micro-batch {args.micro_batch}, {torch_threads()} threads\n")
  columns = [("model", "model", ""), ("batch", "batch", "d"), ("micro", "micro-batch", "d"),
             ("dtype", "dtype", ""),
             ("compile_s", "compile (s)", ".1f"), ("ms", "ms / call", ".1f"),
             ("items_s", "jaxpose items/s", ".2f"), ("gflops_s", "GFLOP/s", ".1f")]
  if any("plain_items_s" in r for r in rows):
    columns.append(("plain_items_s", "plain path items/s", ".2f"))
  if any("xla_default_items_s" in r for r in rows):
    columns.append(("xla_default_items_s", "XLA-default options items/s", ".2f"))
  if any("float32_items_s" in r for r in rows):
    columns += [("float32_items_s", "float32 items/s", ".2f"),
                ("vs_float32", f"{args.dtype} / float32", ".2f")]
  if any("torch_items_s" in r for r in rows):
    columns += [("torch_items_s", "PyTorch fp32 items/s", ".2f"),
                ("ratio", "ratio", ".2f"), ("peer_diff", "peer rel. diff", "")]
  if args.peak_tflops:
    for row in rows:
      row["mfu"] = row["gflops_s"] / 1e3 / args.peak_tflops
    columns.append(("mfu", f"MFU (of {args.peak_tflops:g} TFLOP/s)", ".1%"))
  _timing.print_table(rows, columns)


if __name__ == "__main__":
  main()
