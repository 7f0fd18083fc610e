"""The inference path (jaxpose.models.inference) computes what the model computes.

Folding is checked in float64, where it must agree with the plain model to ~1e-12 (any
larger difference is a wrong fold, not rounding); the conformance fixtures run through the
same path in ``tests/test_reference.py`` with their float32 tolerances.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpose import models
from jaxpose.models import (hg3d, hrnet, inference, integral, layers, mspn, resnet, rie,
                            videopose3d)

# One small configuration per family in models.MODELS, with an input shape.
TINY = {
    "pose_resnet": (resnet.PoseResNetConfig.tiny(), (1, 32, 32, 3)),
    "pose_hrnet": (hrnet.PoseHRNetConfig.tiny(blocks=1), (1, 32, 32, 3)),
    "integral": (integral.IntegralConfig.tiny(), (1, 32, 32, 3)),
    "hg3d": (hg3d.HG3DConfig.tiny(), (1, 32, 32, 3)),
    "mspn": (mspn.MSPNConfig.tiny(), (1, 64, 48, 3)),
    "videopose3d": (videopose3d.VideoPose3DConfig.tiny(), (2, 11, 5, 2)),
    "rie": (rie.RIEConfig.tiny(), (2, 9, 17, 2)),
}


def test_every_family_has_a_tiny_case():
  assert set(TINY) == set(models.MODELS)


@pytest.mark.parametrize("family", sorted(TINY))
def test_abstract_model_is_the_model_without_values(family):
  """``abstract_model`` (what converting, loading and the inference path start from; built
  with one fixed key for speed) has the structure, variable types, shapes and dtypes of
  the model as ``nnx.Rngs`` builds it."""
  config = TINY[family][0]
  graphdef, state = nnx.split(models.abstract_model(config))
  cls = models.model_class(config.name)
  built_def, built = nnx.split(nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0))))
  assert graphdef == built_def
  leaves = jax.tree_util.tree_leaves_with_path(state)
  assert leaves == jax.tree_util.tree_leaves_with_path(built)
  assert all(isinstance(v, jax.ShapeDtypeStruct) for _, v in leaves)


def _float64_model(config, seed: int = 0) -> nnx.Module:
  """The model computing in float64 with float64 variables and non-trivial BN statistics."""
  model = models.build_model(config.replace(dtype="float64"), seed=seed)
  rs = np.random.RandomState(seed)
  for _, module in nnx.iter_modules(model):
    if isinstance(module, layers.BatchNorm):
      n = module.num_features
      module.scale.set_value(jnp.asarray(rs.uniform(0.5, 1.5, n)))
      module.bias.set_value(jnp.asarray(rs.normal(0, 0.1, n)))
      module.mean.set_value(jnp.asarray(rs.normal(0, 0.1, n)))
      module.var.set_value(jnp.asarray(rs.uniform(0.5, 1.5, n)))
  state = nnx.state(model)
  nnx.update(model, jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), state))
  model.eval()
  return model


@pytest.mark.parametrize("family", sorted(TINY))
def test_prepared_model_equals_model_in_float64(family):
  config, shape = TINY[family]
  with jax.enable_x64(True):
    model = _float64_model(config)
    prepared = inference.prepare_for_inference(model, shape, jnp.float64)
    folded = sum(isinstance(m, layers.BatchNorm) and m.folded
                 for _, m in nnx.iter_modules(prepared))
    assert folded > 0, f"{family}: no BatchNorm folded"
    assert not any(isinstance(m, layers.BatchNorm) and m.folded
                   for _, m in nnx.iter_modules(model)), "the input model was changed"
    x = jnp.asarray(np.random.RandomState(1).standard_normal(shape))
    want, got = (jax.jit(f)(s, x) for f, s in (inference.forward_fn(m, None)
                                               for m in (model, prepared)))
    assert jax.tree_util.tree_structure(want) == jax.tree_util.tree_structure(got)
    for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
      assert b.dtype == a.dtype
      tol = 1e-10 if a.dtype == jnp.float64 else 1e-6  # MSPN's "stages" are cast to float32
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=tol,
                                 atol=tol * float(jnp.max(jnp.abs(a))))


class _SharedOutputs(nnx.Module):
  """conv_a's output is normalised by bn_a *and* added unnormalised; conv_b feeds bn_b only;
  conv_c feeds bn_c and conv_d; bn_d normalises a sum."""

  def __init__(self):
    rngs = nnx.Rngs(0)
    self.conv_a, self.bn_a = layers.Conv(3, 4, 3, padding=1, rngs=rngs), layers.BatchNorm(4)
    self.conv_b, self.bn_b = layers.Conv(3, 4, 1, rngs=rngs), layers.BatchNorm(4)
    self.conv_c, self.bn_c = layers.Conv(3, 4, 1, rngs=rngs), layers.BatchNorm(4)
    self.conv_d, self.bn_d = layers.Conv(4, 4, 1, rngs=rngs), layers.BatchNorm(4)

  def __call__(self, x):
    a = self.conv_a(x)
    c = self.conv_c(x)
    return self.bn_a(a) + a + self.bn_b(self.conv_b(x)) + self.bn_c(c) + self.bn_d(
        self.conv_d(c) + 1.0)


def test_only_batch_norms_that_alone_read_a_convolution_are_folded():
  model = _SharedOutputs()
  model.eval()
  pairs = inference.conv_batch_norm_pairs(model, (1, 8, 8, 3))
  assert [(c, b) for c, b in pairs] == [(model.conv_b, model.bn_b)]


def test_folded_batch_norm_refuses_training_mode():
  config, shape = TINY["pose_resnet"]
  prepared = inference.prepare_for_inference(models.build_model(config), shape)
  prepared.train()
  with pytest.raises(ValueError, match="inference only"):
    prepared(jnp.zeros(shape))


@pytest.mark.parametrize("micro_batch", [2, 5])
def test_micro_batched_forward_equals_whole_batch(micro_batch):
  """Batch 5 in micro-batches of 2 exercises the remainder; outputs keep their structure."""
  config, shape = TINY["mspn"]  # nested outputs: heatmaps + stages
  model = models.build_model(config)
  model.eval()
  x = jnp.asarray(np.random.RandomState(0).standard_normal((5, *shape[1:])), jnp.float32)
  forward, state = inference.forward_fn(model, micro_batch)
  got = jax.jit(forward)(state, x)
  plain, state = inference.forward_fn(model, None)
  want = jax.jit(plain)(state, x)
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
  for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)


def test_micro_batch_rejects_nonpositive_sizes():
  with pytest.raises(ValueError, match="micro_batch"):
    inference.micro_batched(lambda x: x, 0)


def test_largest_intermediate_counts_what_the_input_flows_into_not_the_parameters():
  """Inside nested calls too (jit, custom VJP); a large cast parameter does not count."""
  weight = jnp.ones((64, 256))  # 64 KiB, cast to 32 KiB: neither depends on the input

  @jax.jit
  def inner(x):
    return layers.pointwise_conv(x, weight.astype(jnp.bfloat16).astype(x.dtype))

  apply = lambda x: jnp.sum(inner(jnp.tile(x, (1, 3, 1))), axis=1)  # [1, 30, 256] inside
  nbytes = inference.largest_intermediate_bytes(apply, jnp.zeros((1, 10, 64)))
  assert nbytes == 30 * 256 * 4
  assert inference.largest_intermediate_bytes(lambda x: x[:, :1], jnp.zeros((1, 99))) == 396


def test_auto_micro_batch_follows_the_cache_budget(monkeypatch):
  monkeypatch.setattr(inference.os, "sched_getaffinity", lambda pid: {0, 1})
  budget = 2 * inference.CPU_CACHE_BUDGET_PER_CORE
  assert inference.micro_batch_size(budget // 5, "cpu") == 5
  assert inference.micro_batch_size(budget * 3, "cpu") == 1
  assert inference.micro_batch_size(1, "gpu") is None
  assert [inference._even_split(32, m) for m in (24, 16, 5, 1, 40)] == [16, 16, 5, 1, 32]
  # Items of a fifth of the budget (the [n, rows, 256] intermediate): 12 -> 3 x 4 rows.
  rows = budget // 5 // (256 * 4)
  calls = []

  def apply(x):
    calls.append(x.shape[0])
    return jnp.concatenate([x, 2 * x], axis=-1).sum((1, 2))

  monkeypatch.setattr(inference.jax, "default_backend", lambda: "cpu")
  x = jnp.asarray(np.random.RandomState(0).standard_normal((12, rows, 128)), jnp.float32)
  got = jax.jit(inference.micro_batched(apply, "auto"))(x)
  assert calls[-1] == 4, calls  # traced once on one item to size it, then on 4-row slices
  np.testing.assert_allclose(np.asarray(got), np.asarray(apply(x)), rtol=1e-5)


def test_prepare_inside_jit_folds_traced_parameters():
  """An evaluation step folds the parameters it is called with (they change in training)."""
  config, shape = TINY["pose_hrnet"]
  model = models.build_model(config)
  rs = np.random.RandomState(0)
  for _, module in nnx.iter_modules(model):
    if isinstance(module, layers.BatchNorm):
      module.mean.set_value(jnp.asarray(rs.normal(0, 0.1, module.num_features), jnp.float32))
      module.var.set_value(jnp.asarray(rs.uniform(0.5, 1.5, module.num_features), jnp.float32))
  model.eval()
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)

  @jax.jit
  def step(params, batch_stats, x):
    fast = inference.prepare_for_inference(nnx.merge(graphdef, params, batch_stats),
                                           (1, *x.shape[1:]))
    return inference.micro_batched(fast, 2)(x)["heatmaps"]

  x = jnp.asarray(rs.standard_normal((3, *shape[1:])), jnp.float32)
  want = model(x)["heatmaps"]
  got = step(params, batch_stats, x)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5,
                             atol=1e-5 * float(jnp.max(jnp.abs(want))))
  doubled = jax.tree_util.tree_map(lambda p: 2 * p, params)  # new parameters, same step
  want = nnx.merge(graphdef, doubled, batch_stats)(x)["heatmaps"]
  np.testing.assert_allclose(np.asarray(step(doubled, batch_stats, x)), np.asarray(want),
                             rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want))))


def test_micro_batched_takes_pytrees_of_inputs():
  """Inputs as a dict (the lifting tasks' ``{"keypoints_2d": ...}``), batch 5 by 2."""
  apply = lambda d: {"y": d["a"] * 2 + d["b"][:, :1]}
  x = {"a": jnp.arange(10.0).reshape(5, 2), "b": jnp.arange(15.0).reshape(5, 3)}
  got = jax.jit(inference.micro_batched(apply, 2))(x)
  np.testing.assert_array_equal(np.asarray(got["y"]), np.asarray(apply(x)["y"]))


def test_fast_call_folds_the_model_the_way_the_call_uses_it(monkeypatch):
  """A task-like call (uint8 -> normalised input, flip test: two model calls) inside a
  jitted step with traced parameters: every BatchNorm is folded, outputs equal the plain
  call's in float64."""
  config, shape = TINY["pose_hrnet"]
  folds = []
  fold = inference.fold_batch_norm
  monkeypatch.setattr(inference, "fold_batch_norm",
                      lambda conv, bn: folds.append(bn) or fold(conv, bn))

  def call(model, images):
    x = images.astype(jnp.float64) / 255.0
    return (model(x)["heatmaps"] + model(x[:, :, ::-1])["heatmaps"][:, :, ::-1]) / 2

  with jax.enable_x64(True):
    model = _float64_model(config)
    batch_norms = sum(isinstance(m, layers.BatchNorm) for _, m in nnx.iter_modules(model))
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    step = jax.jit(lambda p, b, x: inference.fast_call(nnx.merge(graphdef, p, b), call, 2)(x))
    x = np.random.RandomState(0).randint(0, 255, (3, *shape[1:])).astype(np.uint8)
    got = np.asarray(step(params, batch_stats, x))
    want = np.asarray(call(model, jnp.asarray(x)))
  assert len(folds) == batch_norms > 0
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.max(np.abs(want)))


def test_bfloat16_compute_dtype_stores_rounded_parameters_and_keeps_float32_outputs():
  """The prepared bfloat16 copy stores its matmul parameters in bfloat16 and (on CPUs) its
  2-D convolution kernels rounded to bfloat16 in float32 (``widened``); the model it
  came from keeps float32; outputs are float32 and bfloat16-close to the model's."""
  config, shape = TINY["pose_resnet"]
  model = models.build_model(config)
  model.eval()
  fast = inference.prepare_for_inference(model, shape, compute_dtype="bfloat16")
  assert fast.config.dtype == "bfloat16" and model.config.dtype == "float32"
  assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(nnx.state(model)))
  convs = [m for _, m in nnx.iter_modules(fast) if isinstance(m, inference.ConvLayer)]
  kinds = set()
  for conv in convs:
    kernel = np.asarray(conv.kernel[...])
    if getattr(conv, "widened", False):
      kinds.add("widened")
      assert kernel.dtype == np.float32
      np.testing.assert_array_equal(kernel, kernel.astype(jnp.bfloat16).astype(np.float32))
    else:
      kinds.add("narrow")
      assert conv.kernel.dtype == jnp.bfloat16
    assert conv.bias is None or conv.bias.dtype == jnp.bfloat16
  assert kinds == ({"widened", "narrow"} if jax.default_backend() == "cpu" else {"narrow"})
  assert inference.compute_dtype(fast) == jnp.bfloat16
  assert inference.compute_dtype(model) == jnp.float32
  x = jnp.asarray(np.random.RandomState(0).standard_normal(shape), jnp.float32)
  want, got = model(x)["heatmaps"], fast(x)["heatmaps"]
  assert got.dtype == jnp.float32
  err = float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
  assert 0 < err < 0.05, err  # bfloat16 rounding (8 bits of mantissa), not a wrong model


@pytest.mark.parametrize("family", sorted(TINY))
def test_parameters_stored_in_the_compute_dtype_change_no_output(family, monkeypatch):
  """``store_in_compute_dtype`` only moves the rounding each bfloat16 layer does on every
  call to preparation time (and the convolutions XLA:CPU widens to float32 anyway into the
  layer): bit-identical outputs on this platform, and on any other (``platform="gpu"``:
  every parameter narrow)."""
  config, shape = TINY[family]
  model = models.build_model(config.replace(dtype="bfloat16"), seed=1)
  model.eval()
  x = jnp.asarray(np.random.RandomState(1).standard_normal(shape), jnp.float32)
  outputs = {}
  for platform in ("none", "cpu", "gpu"):
    store = inference.store_in_compute_dtype
    monkeypatch.setattr(inference, "store_in_compute_dtype",
                        lambda m, p=platform: 0 if p == "none" else store(m, p))
    fast = inference.prepare_for_inference(model, shape)
    monkeypatch.undo()
    stored = {str(v.dtype) for v in jax.tree_util.tree_leaves(nnx.state(fast, nnx.Param))}
    assert "bfloat16" in stored if platform != "none" else stored == {"float32"}
    forward, state = inference.forward_fn(fast, micro_batch=None)
    outputs[platform] = jax.tree_util.tree_map(np.asarray, jax.jit(forward)(state, x))
  for platform in ("cpu", "gpu"):
    for got, want in zip(jax.tree_util.tree_leaves(outputs[platform]),
                         jax.tree_util.tree_leaves(outputs["none"])):
      np.testing.assert_array_equal(got, want)
