r"""Every convolution of a model, alone: jaxpose's layer against PyTorch's, forward and train.

    python -m benchmarks.conv_primitives                       # quickstart, HRNet-w32, SimpleBaseline-50
    python -m benchmarks.conv_primitives --configs quickstart --batch_per_device 16
    python -m benchmarks.conv_primitives --configs hrnet_coco --no_step --top 10

Where a train step is slower than PyTorch's, this says how much of the gap is the
convolution primitives themselves. The config's model is built as ``launch.py`` builds it
and traced once (shapes only) at its real input size; each distinct ``Conv`` /
``ConvTranspose`` call (layer settings and input shape; 1x1 convolutions included, which
jaxpose runs as matmuls) becomes one row, timed in isolation:

* jaxpose: the layer module itself, jitted with the train step's compiler options
  (``jaxpose.compile_options``): forward, and forward + backward (``jax.vjp`` for the
  kernel, bias and input; not the input for the layer that reads the image, as in
  training);
* PyTorch: ``torch.nn.Conv{1,2}d`` / ``ConvTranspose{1,2}d`` with the same settings in the
  peers' NCHW layout, at the same thread count: forward under ``no_grad``, and forward +
  ``backward`` (gradients cleared before each call, as ``zero_grad`` does).

The four calls alternate in blocks (``--rounds`` x ``--per_block``) and medians are
reported, with GFLOP/s of the forward (multiply-adds x 2). The last row sums every call
of the model (each row x its count): the convolutions' time in one forward and in one
training step's forward + backward. With the step (default; ``--no_step`` skips it) the
whole train step is measured too (``benchmarks/train_step.py``, PyTorch peer included)
so that the table ends with the convolutions' share of each side's step.
"""
from __future__ import annotations

import argparse
import contextlib
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import _timing
from benchmarks import inference as inference_benchmark
from benchmarks import train_step as train_step_benchmark
from jaxpose import compile_options
from jaxpose.models import layers
from jaxpose.train import state as state_lib, tasks

DEFAULT_CONFIGS = ("quickstart", "hrnet_coco", "simplebaseline_coco")
_CLASSES = (layers.Conv, layers.ConvTranspose)


@contextlib.contextmanager
def _recording_inputs():
  """Records ``(module, input shape)`` of every ``Conv`` / ``ConvTranspose`` call."""
  calls: list[tuple[nnx.Module, tuple[int, ...]]] = []
  originals = {cls: cls.__call__ for cls in _CLASSES}

  def recorder(original):
    def call(self, x):
      calls.append((self, tuple(x.shape)))
      return original(self, x)
    return call

  try:
    for cls, original in originals.items():
      cls.__call__ = recorder(original)
    yield calls
  finally:
    for cls, original in originals.items():
      cls.__call__ = original


def layer_settings(module: nnx.Module) -> tuple:
  """What identifies a convolution layer's computation (besides its input shape)."""
  transposed = isinstance(module, layers.ConvTranspose)
  return (type(module).__name__, module.in_features, module.out_features, module.kernel_size,
          module.strides, module.padding, module.dilation,
          1 if transposed else module.groups,
          module.output_padding if transposed else None, module.bias is not None)


def conv_calls(config, batch: int) -> list[dict[str, Any]]:
  """The model's distinct convolution calls in one forward at ``batch`` images, in call
  order: ``module``, ``shape`` (input, NHWC), ``count``, ``first`` (reads the image)."""
  model = tasks.make_task(config).init_model()
  model.eval()  # the same shapes as training, without batch-statistic updates under tracing
  h, w = config.data.input_size
  image = jax.ShapeDtypeStruct((batch, h, w, 3), jnp.float32)
  with _recording_inputs() as calls:
    jax.eval_shape(lambda x: state_lib.call_model(model, x, jax.random.key(0)), image)
  rows: dict[tuple, dict[str, Any]] = {}
  for i, (module, shape) in enumerate(calls):
    key = (layer_settings(module), shape, i == 0)
    if key in rows:
      rows[key]["count"] += 1
    else:
      rows[key] = {"module": module, "shape": shape, "count": 1, "first": i == 0}
  return list(rows.values())


def describe(module: nnx.Module) -> str:
  kind = "ConvT" if isinstance(module, layers.ConvTranspose) else "Conv"
  text = f"{kind} {'x'.join(map(str, module.kernel_size))}"
  if any(s > 1 for s in module.strides):
    text += f" s{'x'.join(map(str, module.strides))}"
  if any(d > 1 for d in module.dilation):
    text += f" d{'x'.join(map(str, module.dilation))}"
  if not isinstance(module, layers.ConvTranspose) and module.groups > 1:
    text += f" g{module.groups}"
  return text


def forward_flops(module: nnx.Module, shape: tuple[int, ...], out_shape: tuple[int, ...]
                  ) -> float:
  """2 x the nominal multiply-adds of one forward, taps on padding included, as papers
  count them (XLA's cost analysis leaves those out); a transposed convolution's per input
  pixel."""
  taps = math.prod(module.kernel_size)
  if isinstance(module, layers.ConvTranspose):
    return 2.0 * math.prod(shape) * module.out_features * taps
  groups = module.groups
  return 2.0 * math.prod(out_shape[:-1]) * module.out_features * taps * (
      module.in_features // groups)


def jaxpose_calls(module: nnx.Module, shape: tuple[int, ...], first: bool, rs):
  """``(forward(), train(), output shape)`` of the layer, jitted as the train step is."""
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  x = jnp.asarray(rs.standard_normal(shape), jnp.float32)

  def apply(p, x):
    return nnx.merge(graphdef, p, rest)(x)

  out_shape = jax.eval_shape(apply, params, x).shape
  g = jnp.asarray(rs.standard_normal(out_shape), jnp.float32)

  def train(p, x, g):  # returns the output too: the forward is not dead code
    if first:  # the image needs no gradient
      y, vjp = jax.vjp(lambda p: apply(p, x), p)
    else:
      y, vjp = jax.vjp(apply, p, x)
    return y, vjp(g)

  jit = lambda fn: compile_options.jit(fn, platform=jax.default_backend())
  fwd, step = jit(apply), jit(train)
  jax.block_until_ready((fwd(params, x), step(params, x, g)))
  return (lambda: jax.block_until_ready(fwd(params, x)),
          lambda: jax.block_until_ready(step(params, x, g)), tuple(out_shape))


def torch_calls(module: nnx.Module, shape: tuple[int, ...], out_shape: tuple[int, ...],
                first: bool, rs):
  """``(forward(), train())`` of the same layer in PyTorch (NCHW, float32)."""
  import torch  # pylint: disable=import-outside-toplevel
  nd = module.ndim
  common = dict(stride=module.strides, padding=module.padding, dilation=module.dilation,
                bias=module.bias is not None)
  if isinstance(module, layers.ConvTranspose):
    cls = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d}[nd]
    layer = cls(module.in_features, module.out_features, module.kernel_size,
                output_padding=module.output_padding, **common)
  else:
    cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d}[nd]
    layer = cls(module.in_features, module.out_features, module.kernel_size,
                groups=module.groups, **common)
  to_nchw = lambda s: (s[0], s[-1], *s[1:-1])
  x = torch.from_numpy(rs.standard_normal(to_nchw(shape)).astype(np.float32))
  x.requires_grad_(not first)
  g = torch.from_numpy(rs.standard_normal(to_nchw(out_shape)).astype(np.float32))

  def forward():
    with torch.no_grad():
      layer(x)

  def train():
    for t in (*layer.parameters(), x):
      t.grad = None
    layer(x).backward(g)

  if tuple(layer(x).shape) != to_nchw(out_shape):
    raise AssertionError(f"PyTorch's {layer} gives {tuple(layer(x).shape)} for "
                         f"{to_nchw(shape)}, jaxpose {to_nchw(out_shape)}")
  return forward, train


def benchmark(spec: str, batch_per_device: int, rounds: int, per_block: int, peer: bool
              ) -> list[dict[str, Any]]:
  """One row per distinct convolution call of ``spec``'s model, and a total row."""
  config = train_step_benchmark.benchmark_config(spec)
  batch = batch_per_device * jax.device_count()
  try:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(inference_benchmark.torch_threads())
  except ImportError:
    peer = False
  rows = []
  rs = np.random.RandomState(0)
  for call in conv_calls(config, batch):
    module, shape, first = call["module"], call["shape"], call["first"]
    fwd, train, out_shape = jaxpose_calls(module, shape, first, rs)
    timed = {"fwd": fwd, "train": train}
    if peer:
      timed["torch_fwd"], timed["torch_train"] = torch_calls(module, shape, out_shape, first, rs)
    med = inference_benchmark.alternate(timed, rounds, per_block)
    flops = forward_flops(module, shape, out_shape)
    row = {"config": spec, "layer": describe(module),
           "input": "x".join(map(str, shape)), "c_out": module.out_features,
           "count": call["count"], "gflop": flops / 1e9,
           "fwd_ms": 1e3 * med["fwd"], "train_ms": 1e3 * med["train"],
           "gflops_s": flops / 1e9 / med["fwd"]}
    if peer:
      row.update(torch_fwd_ms=1e3 * med["torch_fwd"], torch_train_ms=1e3 * med["torch_train"],
                 torch_gflops_s=flops / 1e9 / med["torch_fwd"],
                 ratio=med["torch_train"] / med["train"])
    rows.append(row)
  total = {"config": spec, "layer": "**all (x count)**", "input": f"batch {batch}",
           "c_out": "", "count": sum(r["count"] for r in rows)}
  for key in ("gflop", "fwd_ms", "train_ms", "torch_fwd_ms", "torch_train_ms"):
    if key in rows[0]:
      total[key] = sum(r[key] * r["count"] for r in rows)
  if peer:
    total["ratio"] = total["torch_train_ms"] / total["train_ms"]
  total["gflops_s"] = total["gflop"] / total["fwd_ms"] * 1e3
  if peer:
    total["torch_gflops_s"] = total["gflop"] / total["torch_fwd_ms"] * 1e3
  return rows + [total]


COLUMNS = [("layer", "layer", ""), ("input", "input (NHWC)", ""), ("c_out", "C_out", "d"),
           ("count", "count", "d"), ("gflop", "GFLOP fwd", ".2f"),
           ("fwd_ms", "jaxpose fwd ms", ".2f"), ("torch_fwd_ms", "torch fwd ms", ".2f"),
           ("gflops_s", "jaxpose fwd GFLOP/s", ".0f"),
           ("torch_gflops_s", "torch fwd GFLOP/s", ".0f"),
           ("train_ms", "jaxpose fwd+bwd ms", ".2f"),
           ("torch_train_ms", "torch fwd+bwd ms", ".2f"), ("ratio", "ratio fwd+bwd", ".2f")]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                      help="comma-separated benchmarks.train_step config specs (image models)")
  parser.add_argument("--batch_per_device", type=int, default=4)
  parser.add_argument("--top", type=int, default=0,
                      help="print only the N rows with the most jaxpose fwd+bwd time x count "
                      "(0: every row, in call order)")
  parser.add_argument("--no_step", dest="step", action="store_false",
                      help="skip the whole-train-step comparison")
  _timing.add_comparison_args(parser, rounds=5)
  args = _timing.parse_comparison_args(parser, argv, training=True)
  print(f"# convolution primitives, float32, {_timing.device_description()}, "
        f"{inference_benchmark.torch_threads()} threads")
  for spec in train_step_benchmark.split_specs(args.configs):
    rows = benchmark(spec, args.batch_per_device, args.rounds, args.per_block, args.peer)
    *layer_rows, total = rows
    if args.top:
      layer_rows = sorted(layer_rows, key=lambda r: -r["train_ms"] * r["count"])[:args.top]
    print(f"\n## {spec}, batch {args.batch_per_device * jax.device_count()}\n")
    _timing.print_table(layer_rows + [total], [c for c in COLUMNS if c[0] in total])
    if args.step:
      step = train_step_benchmark.benchmark(spec, "float32", args.batch_per_device,
                                            args.rounds, args.per_block, args.peer)
      line = (f"\ntrain step: jaxpose {step['ms']:.1f} ms, of which convolutions "
              f"{total['train_ms']:.1f} ms ({100 * total['train_ms'] / step['ms']:.0f}%)")
      if "torch_images_s" in step:
        torch_ms = 1e3 * step["batch"] / step["torch_images_s"]
        line += (f"; PyTorch {torch_ms:.1f} ms, of which convolutions "
                 f"{total['torch_train_ms']:.1f} ms "
                 f"({100 * total['torch_train_ms'] / torch_ms:.0f}%); the rest: jaxpose "
                 f"{step['ms'] - total['train_ms']:.1f} ms, PyTorch "
                 f"{torch_ms - total['torch_train_ms']:.1f} ms")
      print(line)


if __name__ == "__main__":
  main()
