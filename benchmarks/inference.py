r"""Jitted forward throughput of every released model configuration.

    python -m benchmarks.inference                       # everything, batch 1 and 32
    python -m benchmarks.inference --models hrnet_w32_256x192,videopose3d_243f --batch_sizes 1
    python -m benchmarks.inference --dtype bfloat16

For each configuration at its released input size: compilation time (lowering + XLA),
the median time of one jitted eval-mode forward, images (or sequences) per second and the
achieved GFLOP/s (FLOPs from XLA's cost analysis / time). Weights are random (throughput
does not depend on them).
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import _timing
from jaxpose import models
from jaxpose.models import hg3d, hrnet, integral, lifters, mspn, resnet

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
    "videopose3d_243f": (lifters.VideoPose3DConfig.h36m_243f(), (243, 17, 2)),
    "rie_243f": (lifters.RIEConfig.gt(), (243, 17, 2)),
}


def forward_fn(config):
  model = nnx.eval_shape(lambda: models.model_class(config.name)(config, rngs=nnx.Rngs(0)))
  model.eval()
  graphdef, state = nnx.split(model)
  state = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype) + 0.01, state)
  state = nnx.as_pure(state)

  def forward(state, x):
    return nnx.merge(graphdef, state)(x)

  return forward, state


def jitted_case(name: str, batch: int, dtype: str = "float32"):
  """``(jitted forward, (state, inputs))`` of a RELEASED model at ``batch``."""
  config, shape = RELEASED[name]
  forward, state = forward_fn(config.replace(dtype=dtype))
  x = jnp.asarray(np.random.RandomState(0).standard_normal((batch, *shape)), jnp.float32)
  return jax.jit(forward), (state, x)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default=",".join(RELEASED),
                      help=f"comma-separated subset of: {', '.join(RELEASED)}")
  parser.add_argument("--batch_sizes", default="1,32")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  rows = []
  for name in args.models.split(","):
    config, shape = RELEASED[name]
    config = config.replace(dtype=args.dtype)
    forward, state = forward_fn(config)
    for batch in (int(b) for b in args.batch_sizes.split(",")):
      x = jnp.asarray(np.random.RandomState(0).standard_normal((batch, *shape)), jnp.float32)
      r = _timing.compile_and_time(forward, (state, x), repeats=args.repeats)
      rows.append({"model": name, "batch": batch, "compile_s": r["compile_s"],
                   "ms": 1e3 * r["step_s"], "items_s": batch / r["step_s"],
                   "gflop": r["flops"] / 1e9, "gflops_s": r["flops"] / 1e9 / r["step_s"]})
      print(f"  {name} batch {batch}: {rows[-1]['items_s']:.1f} /s", flush=True)
  print(f"\nforward, eval mode, {args.dtype} compute, {_timing.device_description()}, "
        f"jax {jax.__version__}\n")
  _timing.print_table(rows, [("model", "model", ""), ("batch", "batch", "d"),
                             ("compile_s", "compile (s)", ".1f"), ("ms", "ms / call", ".1f"),
                             ("items_s", "images or sequences / s", ".1f"),
                             ("gflop", "GFLOP / call", ".2f"), ("gflops_s", "GFLOP/s", ".1f")])


if __name__ == "__main__":
  main()
