"""The fastest correct inference path of a jaxpose model.

Training keeps the model exactly as the original defines it; inference may compute the same
function differently. ``prepare_for_inference`` returns an eval-mode copy of a model in which

* every BatchNorm directly fed by a convolution (or linear layer) is folded into it (kernel
  scaled per output channel, bias ``beta + (b - mean) * gamma / sqrt(var + eps)``, computed
  in float64 and stored in the parameter dtype): exact up to float rounding.

``forward_fn`` turns a (prepared) model into a pure ``(state, inputs) -> outputs`` function
for ``jax.jit`` that runs a large batch as a sequence of micro-batches (``jax.lax.map``)
where that is faster: activations of a micro-batch stay in the CPU caches (HRNet's
high-resolution branches make large CPU batches memory-bound). ``micro_batch_size`` holds
the measured choice per platform. Both are what the evaluation step, ``predict`` and
exported artifacts should call; nothing here changes a model's outputs beyond float
rounding (``tests/test_inference.py`` runs the conformance fixtures through this path).

Usage::

    fast = inference.prepare_for_inference(model, (1, 256, 192, 3))
    forward, state = inference.forward_fn(fast)
    heatmaps = jax.jit(forward)(state, images)["heatmaps"]
"""
from __future__ import annotations

import collections
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


def conv_batch_norm_pairs(model: nnx.Module, input_shape: Sequence[int],
                          input_dtype=jnp.float32) -> list[tuple[ConvLayer, layers.BatchNorm]]:
  """The ``(conv, batch_norm)`` pairs of ``model`` (conv: a ``Conv``, ``ConvTranspose`` or
  ``Linear``) whose BatchNorm only ever normalises that layer's output, and whose output
  nothing else reads.

  Found by tracing one call of the model on ``input_shape`` (``jax.make_jaxpr`` with the
  layers' values tagged, ``layers.recording_calls``): a pair qualifies when every output of
  every call of the conv has exactly one reader, the input of a call of the BatchNorm, and
  every call of the BatchNorm reads such an output. The model must be in eval mode.
  """
  with layers.recording_calls() as calls:
    jaxpr = jax.make_jaxpr(lambda x: model(x))(
        jax.ShapeDtypeStruct(tuple(input_shape), input_dtype)).jaxpr
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
  """Folds eval-mode ``bn`` into ``conv`` in place (float64 arithmetic) and marks it folded."""
  kernel = np.asarray(conv.kernel[...], np.float64)
  a = np.asarray(bn.scale[...], np.float64) / np.sqrt(np.asarray(bn.var[...], np.float64)
                                                      + bn.epsilon)
  bias = np.zeros(kernel.shape[-1]) if conv.bias is None else np.asarray(conv.bias[...],
                                                                          np.float64)
  new_bias = (bias - np.asarray(bn.mean[...], np.float64)) * a + np.asarray(bn.bias[...],
                                                                            np.float64)
  dtype = conv.kernel[...].dtype
  conv.kernel.set_value(jnp.asarray(kernel * a, dtype))
  conv.bias = nnx.data(nnx.Param(jnp.asarray(new_bias, dtype)))  # may have been None
  bn.folded = True


def fold_batch_norms(model: nnx.Module, input_shape: Sequence[int],
                     input_dtype=jnp.float32) -> int:
  """Folds every qualifying BatchNorm of eval-mode ``model`` (in place); returns the count."""
  pairs = conv_batch_norm_pairs(model, input_shape, input_dtype)
  for conv, bn in pairs:
    fold_batch_norm(conv, bn)
  return len(pairs)


def prepare_for_inference(model: nnx.Module, input_shape: Sequence[int],
                          input_dtype=jnp.float32) -> nnx.Module:
  """An eval-mode copy of ``model`` computing the same outputs (up to rounding), faster.

  Args:
    model: any jaxpose model with concrete (not abstract) variables; left unchanged.
    input_shape: the shape of one model input (e.g. ``(1, 256, 192, 3)``; the batch size
      does not matter), used to trace which layers feed which.
    input_dtype: the input's dtype.

  Returns:
    The prepared copy, in eval mode. Not for training: its BatchNorms are folded away.
  """
  prepared = nnx.clone(model)
  prepared.eval()
  fold_batch_norms(prepared, input_shape, input_dtype)
  return prepared


# ----------------------------------------------------------------------------------------
# Micro-batching
# ----------------------------------------------------------------------------------------

# Micro-batch per platform, measured with benchmarks/inference.py (2-core CPU: HRNet-w32
# batch 32 gains most from 1..4; the others do not lose). None: the whole batch at once.
MICRO_BATCH = {"cpu": 4}


def micro_batch_size(platform: str | None = None) -> int | None:
  """The micro-batch ``forward_fn`` uses by default on ``platform`` (default backend)."""
  return MICRO_BATCH.get(platform or jax.default_backend())


def micro_batched(apply: Callable[[Array], Any], micro_batch: int | None
                  ) -> Callable[[Array], Any]:
  """``apply`` run over consecutive ``micro_batch``-sized slices of the batch axis.

  The slices run one after the other (``jax.lax.map``); a remainder that does not fill a
  micro-batch runs as one more call. Outputs (any pytree of arrays with a leading batch axis)
  are concatenated back. ``micro_batch`` None or >= the batch: ``apply`` itself.
  """
  if micro_batch is not None and micro_batch < 1:
    raise ValueError(f"micro_batch must be >= 1 or None, got {micro_batch}")

  def run(x: Array):
    n = x.shape[0]
    if micro_batch is None or n <= micro_batch:
      return apply(x)
    full = (n // micro_batch) * micro_batch
    chunks = x[:full].reshape(n // micro_batch, micro_batch, *x.shape[1:])
    out = jax.lax.map(apply, chunks)
    out = jax.tree_util.tree_map(lambda y: y.reshape(full, *y.shape[2:]), out)
    if full == n:
      return out
    rest = apply(x[full:])
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), out, rest)

  return run


def forward_fn(model: nnx.Module, micro_batch: int | None | str = "auto",
               output: str | None = None) -> tuple[Callable[[Any, Array], Any], Any]:
  """``(forward, state)``: the pure function ``forward(state, x) -> model(x)`` for ``jax.jit``.

  Args:
    model: a (prepared) model; its current mode (eval) is kept.
    micro_batch: ``"auto"`` (``micro_batch_size()``), None (whole batch) or a size.
    output: return only this entry of the model's output dict (e.g. ``"heatmaps"``), so
      that XLA drops what computes nothing else (MSPN's earlier stages' heatmaps).
  """
  if micro_batch == "auto":
    micro_batch = micro_batch_size()
  graphdef, state = nnx.split(model)

  def forward(state, x: Array):
    module = nnx.merge(graphdef, state)
    apply = module if output is None else (lambda x: module(x)[output])
    return micro_batched(apply, micro_batch)(x)

  return forward, nnx.as_pure(state)
