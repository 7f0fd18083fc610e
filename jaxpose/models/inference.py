"""The fastest correct inference path of a jaxpose model.

Training keeps the model exactly as the original defines it; inference may compute the same
function differently. ``prepare_for_inference`` returns an eval-mode copy of a model in which

* every BatchNorm directly fed by a convolution (or linear layer) is folded into it (kernel
  scaled per output channel, bias ``beta + (b - mean) * gamma / sqrt(var + eps)``, computed
  in float64 and stored in the parameter dtype): exact up to float rounding;
* a model computing in bfloat16 stores its convolution and linear parameters in bfloat16,
  rounded once instead of on every call (``store_in_compute_dtype``: the same values), and
  its jitted calls give XLA:CPU's dots to YNNPACK, which has bfloat16 kernels
  (``compile_options.NARROW_CPU_OPTIONS``).

Where it is used (no switch: every inference entry point takes this path):
``jaxpose.train.loop.make_predict_fns`` (the evaluation step of training and
``--mode=eval``: folds the traced parameters inside the jitted step, micro-batched on a
one-device mesh), ``jaxpose.inference.loading.load_model`` (``jaxpose predict``, the Python
API and ``jaxpose export``, whose artifacts are the folded function; the predictor
micro-batches its device calls).

``forward_fn`` turns a (prepared) model into a pure ``(state, inputs) -> outputs`` function
for ``jax.jit`` that runs a large batch as a sequence of micro-batches (``jax.lax.map``)
where that is faster: activations of a micro-batch stay in the CPU caches (large CPU
batches are memory-bound: HRNet's high-resolution branches, VideoPose3D's 243-frame
sequences). ``"auto"`` sizes the micro-batch from the model's largest intermediate per
item and a measured per-core cache budget on CPUs (``micro_batch_size``), the whole batch
on other platforms. Nothing here changes a model's outputs beyond float rounding
(``tests/test_reference.py`` runs the conformance fixtures through this path and through
each entry point).

Usage (a fixed model: fold once, outside ``jax.jit``)::

    fast = inference.prepare_for_inference(model, (1, 256, 192, 3))
    forward, state = inference.forward_fn(fast, output="heatmaps")
    heatmaps = jax.jit(forward)(state, images)

Inside a jitted step whose parameters change between calls (the evaluation during
training), the same call folds the traced parameters on every call (cheap next to a batch);
``call`` traces the model the way the task uses it::

    def step(params, batch_stats, images):
      model = nnx.merge(eval_def, params, batch_stats)
      return inference.fast_call(model, task.predict)(images)

bfloat16 inference: ``prepare_for_inference(..., compute_dtype="bfloat16")``, jitted with
``compile_options.for_platform(platform, compute_dtype(prepared))`` (``compile_options.jit``
picks that from the arguments' dtypes).
"""
from __future__ import annotations

import collections
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.extend.core as jax_core
import numpy as np
from flax import nnx

from jaxpose.models import layers

Array = jax.Array
ConvLayer = layers.Conv | layers.ConvTranspose | layers.Linear  # kernel [..., C_out]


def _example_inputs(example: Sequence[int] | Any, dtype) -> Any:
  """A shape (of one model input) or a pytree of ``jax.ShapeDtypeStruct`` -> the latter."""
  if isinstance(example, (tuple, list)) and all(isinstance(d, (int, np.integer)) for d in example):
    return jax.ShapeDtypeStruct(tuple(int(d) for d in example), dtype)
  return example


def _call_model(model: nnx.Module, inputs: Any) -> Any:
  return model(inputs)


def conv_batch_norm_pairs(model: nnx.Module, input_shape: Sequence[int] | Any,
                          input_dtype=jnp.float32,
                          call: Callable[[nnx.Module, Any], Any] | None = None,
                          ) -> list[tuple[ConvLayer, layers.BatchNorm]]:
  """The ``(conv, batch_norm)`` pairs of ``model`` (conv: a ``Conv``, ``ConvTranspose`` or
  ``Linear``) whose BatchNorm only ever normalises that layer's output, and whose output
  nothing else reads.

  Found by tracing ``call(model, inputs)`` (default ``model(inputs)``) on inputs of
  ``input_shape`` (a shape, of dtype ``input_dtype``, or a pytree of
  ``jax.ShapeDtypeStruct``), with ``jax.make_jaxpr`` and the layers' values tagged
  (``layers.recording_calls``): a pair qualifies when every output of every call of the
  conv has exactly one reader, the input of a call of the BatchNorm, and every call of the
  BatchNorm reads such an output. A layer the call does not reach is left alone. The model
  must be in eval mode.
  """
  call = call or _call_model
  with layers.recording_calls() as calls:
    jaxpr = jax.make_jaxpr(lambda x: call(model, x))(
        _example_inputs(input_shape, input_dtype)).jaxpr
  tagged = {}  # tag -> (tagged value, value before tagging)
  readers: dict = collections.defaultdict(list)  # value -> equations reading it
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "name":
      tagged[eqn.params["name"]] = (eqn.outvars[0], eqn.invars[0])
    for var in eqn.invars:
      if isinstance(var, jax_core.Var):
        readers[var].append(eqn)
  returned = {v for v in jaxpr.outvars if isinstance(v, jax_core.Var)}
  producer = {}  # conv output value -> conv module
  conv_ok: dict[int, bool] = {}
  for module, role, tag in calls:
    if role != "output":
      continue
    value = tagged[tag][0] if tag in tagged else None
    ok = value is not None and value not in returned and len(readers[value]) == 1 and (
        readers[value][0].primitive.name == "name")
    conv_ok[id(module)] = conv_ok.get(id(module), True) and ok
    if value is not None:
      producer[value] = module
  pairs: dict[int, tuple] = {}
  bn_ok: dict[int, bool] = {}
  for module, role, tag in calls:
    if role != "input":
      continue
    conv = producer.get(tagged[tag][1]) if tag in tagged else None
    ok = conv is not None and pairs.get(id(module), (conv,))[0] is conv
    bn_ok[id(module)] = bn_ok.get(id(module), True) and ok
    if ok:
      pairs[id(module)] = (conv, module)
  # A conv feeding two BatchNorms (or one twice via different calls) is rejected by the
  # single-reader rule; a BatchNorm reading two convs by the same-conv rule.
  return [(conv, bn) for key, (conv, bn) in pairs.items()
          if bn_ok[key] and conv_ok[id(conv)] and _feeds_only(conv, bn, calls, tagged, readers)]


def _feeds_only(conv, bn, calls, tagged, readers) -> bool:
  """Every output of ``conv`` is read by the tagged input of a call of ``bn``."""
  bn_inputs = {tag for module, role, tag in calls if module is bn and role == "input"}
  for module, role, tag in calls:
    if module is conv and role == "output":
      reader = readers[tagged[tag][0]][0]
      if reader.params["name"] not in bn_inputs:
        return False
  return True


def fold_batch_norm(conv: ConvLayer, bn: layers.BatchNorm) -> None:
  """Folds eval-mode ``bn`` into ``conv`` in place and marks it folded.

  Concrete variables are folded in float64 (numpy); traced ones (inside ``jax.jit``, e.g.
  an evaluation step that folds its parameters on every call) in at least float32.
  """
  values = [conv.kernel[...], bn.scale[...], bn.bias[...], bn.mean[...], bn.var[...]]
  if conv.bias is not None:
    values.append(conv.bias[...])
  dtype = values[0].dtype
  if any(isinstance(v, jax.core.Tracer) for v in values):
    xp, calc = jnp, jnp.promote_types(dtype, jnp.float32)
  else:
    xp, calc = np, np.float64
  kernel, scale, beta, mean, var = (xp.asarray(v, calc) for v in values[:5])
  bias = xp.asarray(values[5], calc) if conv.bias is not None else xp.zeros(kernel.shape[-1], calc)
  a = scale / xp.sqrt(var + bn.epsilon)
  conv.kernel.set_value(jnp.asarray(kernel * a, dtype))
  conv.bias = nnx.data(nnx.Param(jnp.asarray((bias - mean) * a + beta, dtype)))  # was None?
  bn.folded = True


def fold_batch_norms(model: nnx.Module, input_shape: Sequence[int] | Any,
                     input_dtype=jnp.float32,
                     call: Callable[[nnx.Module, Any], Any] | None = None) -> int:
  """Folds every qualifying BatchNorm of eval-mode ``model`` (in place); returns the count.
  ``input_shape``, ``input_dtype``, ``call``: as ``conv_batch_norm_pairs``."""
  pairs = conv_batch_norm_pairs(model, input_shape, input_dtype, call)
  for conv, bn in pairs:
    fold_batch_norm(conv, bn)
  return len(pairs)


def store_in_compute_dtype(model: nnx.Module, platform: str | None = None) -> int:
  """Stores, in place, the parameters of every convolution and linear layer that computes in
  a narrower float dtype than it stores them (a ``bfloat16`` layer with ``float32``
  parameters) rounded to that dtype once, instead of on every call; returns the number of
  layers changed. The layers compute the same values.

  * Matmuls (linear layers, 1x1 and VideoPose3D's strided convolutions) and every layer off
    CPUs: parameters stored in the narrow dtype. The call's cast is a no-op.
  * 2-D convolutions and transposed convolutions on CPUs (``platform``, default
    ``jax.default_backend()``): XLA:CPU has no bfloat16 convolution; it widens both
    operands to float32, convolves and rounds the result. The kernel is stored rounded but
    in float32 and the layer convolves in float32 itself (``widened``): the same
    arithmetic, without widening the kernel on every call. The bias is stored narrow.

  Measured on a 2-core EPYC, profiled at batch 1, bfloat16: VideoPose3D-243's 17 M
  parameters read in float32, rounded and written again took 94% of the traced op time, and
  HRNet-w32's convolution kernels widened from bfloat16 55%.
  """
  platform = platform or jax.default_backend()
  changed = 0
  for _, module in nnx.iter_graph(model):
    if not isinstance(module, ConvLayer) or module.dtype is None:
      continue
    narrow = jnp.dtype(module.dtype)
    params = [p for p in (module.kernel, module.bias) if p is not None]
    if not jnp.issubdtype(narrow, jnp.floating) or not any(
        jnp.issubdtype(p.dtype, jnp.floating) and jnp.finfo(p.dtype).bits > jnp.finfo(narrow).bits
        for p in params):
      continue
    widen = (platform == "cpu" and isinstance(module, (layers.Conv, layers.ConvTranspose))
             and module.ndim == 2 and not getattr(module, "_is_pointwise", False))
    for p in params:
      rounded = p[...].astype(narrow)
      p.set_value(rounded.astype(p.dtype) if widen and p is module.kernel else rounded)
    if widen:
      module.widened = True
    changed += 1
  return changed


def compute_dtype(model: nnx.Module) -> Any:
  """The narrowest float dtype any layer of ``model`` computes in (``float32`` when none is
  set): what ``compile_options.for_platform`` tunes the compilation for."""
  widths = [jnp.dtype(m.dtype) for _, m in nnx.iter_graph(model)
            if isinstance(m, ConvLayer) and m.dtype is not None]
  return min(widths, key=lambda d: jnp.finfo(d).bits, default=jnp.dtype(jnp.float32))


def with_compute_dtype(model: nnx.Module, dtype: str) -> nnx.Module:
  """A copy of ``model``'s variables in the same architecture computing in ``dtype``
  ('bfloat16', ...), in eval mode.

  Parameters stay as they are (float32); every layer casts them to ``dtype`` when it runs,
  as a model built with ``config.dtype = dtype`` does (``prepare_for_inference`` then
  stores them cast).
  """
  from jaxpose import models  # the family table imports this package
  layers.as_dtype(dtype)
  graphdef, _ = nnx.split(models.abstract_model(model.config.replace(dtype=dtype)))
  result = nnx.merge(graphdef, nnx.state(nnx.clone(model)))
  result.eval()
  return result


def prepare_for_inference(model: nnx.Module, input_shape: Sequence[int] | Any,
                          input_dtype=jnp.float32, compute_dtype: str | None = None,
                          call: Callable[[nnx.Module, Any], Any] | None = None
                          ) -> nnx.Module:
  """An eval-mode copy of ``model`` computing the same outputs (up to rounding), faster.

  Args:
    model: any jaxpose model with concrete (not abstract) variables; left unchanged.
    input_shape: the shape of one model input (e.g. ``(1, 256, 192, 3)``; the batch size
      does not matter), used to trace which layers feed which; or, with ``call``, a pytree
      of ``jax.ShapeDtypeStruct`` of ``call``'s inputs.
    input_dtype: the input's dtype.
    compute_dtype: e.g. ``'bfloat16'``: compute in that dtype (the convolution and linear
      parameters stored in it, the others float32; outputs float32). None keeps the
      model's own ``config.dtype``. bfloat16 is faster on CPUs with AVX512_BF16/AMX and on
      GPUs, at an accuracy cost measured by ``benchmarks/bf16_accuracy.py``.
    call: ``(model, inputs) -> anything``: how the caller uses the model (e.g. a task's
      ``predict``: preprocessing, flip test), traced to find what to fold; default
      ``model(inputs)``.

  Returns:
    The prepared copy, in eval mode. Not for training: its BatchNorms are folded away.
  """
  prepared = with_compute_dtype(model, compute_dtype) if compute_dtype else nnx.clone(model)
  prepared.eval()
  fold_batch_norms(prepared, input_shape, input_dtype, call)
  store_in_compute_dtype(prepared)
  return prepared


def batch_of_one(inputs: Any) -> Any:
  """``jax.ShapeDtypeStruct`` of one item of ``inputs`` (arrays or a pytree of arrays with a
  leading batch axis): the example ``prepare_for_inference`` traces with."""
  return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((1, *a.shape[1:]), a.dtype),
                                inputs)


def fast_call(model: nnx.Module, call: Callable[[nnx.Module, Any], Any],
              micro_batch: int | None | str = "auto") -> Callable[[Any], Any]:
  """``inputs -> call(model, inputs)`` through the inference path, for use inside ``jax.jit``
  (e.g. an evaluation step whose parameters are traced): the model folded the way ``call``
  uses it (``prepare_for_inference``) on the first call's input shapes, the batch run as
  micro-batches (``"auto"``: see ``micro_batched``)."""

  def run(inputs: Any) -> Any:
    fast = prepare_for_inference(model, batch_of_one(inputs), call=call)
    return micro_batched(lambda x: call(fast, x), micro_batch)(inputs)

  return run


# ----------------------------------------------------------------------------------------
# Micro-batching
# ----------------------------------------------------------------------------------------

# Activation bytes per core a micro-batch's largest intermediate may take on CPUs. Measured
# on 2-core machines (an AMD EPYC, 1 MiB L2 per core and 32 MiB shared L3; a Xeon, 4 MiB L2
# per core), batch 32, items/s at micro-batches of 1 / 2 / 4 / 8 / 16 / 32 (BatchNorms
# folded; XLA:CPU with YNNPACK convolutions): SimpleBaseline-50 21.1 / 22.7 / 23.1,
# HRNet-w32 11.5 / 12.2 / 11.7, MSPN-2stg 10.7 / 11.5 / 11.5; VideoPose3D dilated over 244
# frames 52.5 / 63.1 / 65.6 / 64.1 / 61.1 / 57.9, strided over one 243-frame window 317 /
# 488 / 698 / 813 / 922 / 998. With XLA's own convolution emitters (``compile_options``;
# the same compiled function per micro-batch in one process, alternating), micro-batch 2
# vs 3: SimpleBaseline-50 20.2 / 20.6, HRNet-w32 11.2 / 11.6, MSPN 11.0 / 11.6 (largest
# intermediate ~3 MiB per image -> 3); VideoPose3D strided 16 vs 32: 600 / 706 (0.32 MiB
# -> the whole batch), dilated 8 vs 11: 65 / 62 (0.95 MiB -> 11). The budget is the
# smallest that gives the strided VideoPose3D its whole batch: the image models gain 2-5%,
# dilated VideoPose3D over a batch of whole sequences loses 5%. Larger splits divide the
# image models (SimpleBaseline-50 at 8: 24.2, HRNet-w32 at 8: 11.6). A micro-batch's
# activations stay in the caches while its matmuls stay wide enough to amortise reading
# the weights.
CPU_CACHE_BUDGET_PER_CORE = int(5.5 * 2**20)


def largest_intermediate_bytes(apply: Callable[[Any], Any], example: Any) -> int:
  """Bytes of the largest value computed from the input in ``apply(example)`` (the input
  itself, intermediates and outputs, inside nested calls too; not the parameters or what
  is computed from them alone, such as a cast kernel), from its jaxpr: tracing only."""
  def nbytes(aval) -> int:
    if not (hasattr(aval, "shape") and hasattr(aval, "dtype")):
      return 0
    return math.prod(aval.shape) * np.dtype(aval.dtype).itemsize

  def largest(jaxpr, dependent: list[bool]) -> int:
    from_input = {v for v, d in zip(jaxpr.invars, dependent) if d}
    most = max([nbytes(v.aval) for v in from_input] + [0])
    for eqn in jaxpr.eqns:
      reads = [isinstance(v, jax_core.Var) and v in from_input for v in eqn.invars]
      if not any(reads):
        continue
      from_input.update(eqn.outvars)
      most = max([most] + [nbytes(v.aval) for v in eqn.outvars])
      for param in eqn.params.values():
        for sub in param if isinstance(param, (tuple, list)) else (param,):
          sub = sub.jaxpr if isinstance(sub, jax_core.ClosedJaxpr) else sub
          if isinstance(sub, jax_core.Jaxpr):
            # Positional when the nested call takes the equation's operands, else all.
            inner = reads if len(sub.invars) == len(reads) else [True] * len(sub.invars)
            most = max(most, largest(sub, inner))
    return most

  spec = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), example)
  closed = jax.make_jaxpr(apply)(spec)
  return largest(closed.jaxpr, [True] * len(closed.jaxpr.invars))


def micro_batch_size(item_bytes: int, platform: str | None = None) -> int | None:
  """The micro-batch ``"auto"`` means on ``platform`` (default backend) for a computation
  whose largest intermediate takes ``item_bytes`` per batch item: on CPUs as many items as
  fit ``CPU_CACHE_BUDGET_PER_CORE`` per core usable by this process (at least 1); on other
  platforms (GPU, TPU) None, the whole batch."""
  if (platform or jax.default_backend()) != "cpu":
    return None
  cores = len(os.sched_getaffinity(0))
  return max(1, cores * CPU_CACHE_BUDGET_PER_CORE // max(1, int(item_bytes)))


def _even_split(n: int, most: int) -> int:
  """The micro-batch of at most ``most`` items splitting ``n`` into the fewest, most equal
  parts (32 items at most 24 -> 16)."""
  parts = -(-n // most)
  return -(-n // parts)


def auto_micro_batch(apply: Callable[[Any], Any], inputs: Any) -> int | None:
  """The micro-batch ``"auto"`` runs ``apply`` on ``inputs`` (leading batch axis) with: None
  (the whole batch) off CPUs, else ``micro_batch_size`` for ``apply``'s largest intermediate
  on one item, split evenly over the batch."""
  n = jax.tree_util.tree_leaves(inputs)[0].shape[0]
  if jax.default_backend() != "cpu" or n <= 1:  # nothing to size: skip the tracing
    return None
  return _even_split(n, micro_batch_size(largest_intermediate_bytes(apply, batch_of_one(inputs))))


def micro_batched(apply: Callable[[Array], Any], micro_batch: int | None | str
                  ) -> Callable[[Array], Any]:
  """``apply`` run over consecutive ``micro_batch``-sized slices of the batch axis.

  The slices run one after the other (``jax.lax.map``); a remainder that does not fill a
  micro-batch runs as one more call. Inputs and outputs: arrays, or pytrees of arrays, with
  a leading batch axis; outputs are concatenated back. ``micro_batch`` None or >= the
  batch: ``apply`` itself. ``"auto"``: ``auto_micro_batch`` (traced when the batch's
  shapes are known).
  """
  if micro_batch != "auto" and micro_batch is not None and micro_batch < 1:
    raise ValueError(f"micro_batch must be >= 1, None or 'auto', got {micro_batch}")
  tree_map = jax.tree_util.tree_map

  def run(x: Any):
    n = jax.tree_util.tree_leaves(x)[0].shape[0]
    size = auto_micro_batch(apply, x) if micro_batch == "auto" else micro_batch
    if size is None or n <= size:
      return apply(x)
    full = (n // size) * size
    chunks = tree_map(lambda a: a[:full].reshape(n // size, size, *a.shape[1:]), x)
    out = jax.lax.map(apply, chunks)
    out = tree_map(lambda y: y.reshape(full, *y.shape[2:]), out)
    if full == n:
      return out
    rest = apply(tree_map(lambda a: a[full:], x))
    return tree_map(lambda a, b: jnp.concatenate([a, b]), out, rest)

  return run


def forward_fn(model: nnx.Module, micro_batch: int | None | str = "auto",
               output: str | None = None) -> tuple[Callable[[Any, Array], Any], Any]:
  """``(forward, state)``: the pure function ``forward(state, x) -> model(x)`` for ``jax.jit``.

  Args:
    model: a (prepared) model; its current mode (eval) is kept.
    micro_batch: ``"auto"`` (``micro_batched``: sized by the model's largest intermediate
      per item), None (whole batch) or a size.
    output: return only this entry of the model's output dict (e.g. ``"heatmaps"``), so
      that XLA drops what computes nothing else (MSPN's earlier stages' heatmaps).
  """
  graphdef, state = nnx.split(model)

  def forward(state, x: Array):
    module = nnx.merge(graphdef, state)
    apply = module if output is None else (lambda x: module(x)[output])
    return micro_batched(apply, micro_batch)(x)

  return forward, nnx.as_pure(state)
