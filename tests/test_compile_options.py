"""jaxpose.compile_options: the XLA:CPU options every jitted jaxpose step is compiled with."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import nnx

from jaxpose import compile_options
from jaxpose.models import layers
from jaxpose.train import state as state_lib


def _conv_step_model():
  return nnx.Sequential(layers.Conv(3, 8, 3, padding=1, rngs=nnx.Rngs(0)),
                        layers.Conv(8, 8, 1, rngs=nnx.Rngs(1)))


def _fusions(compiled) -> dict[str, set[str]]:
  """Library fusion kind (``ynn``, ``xnn``, ``onednn``) -> the HLO opcodes its fused
  computations run."""
  text = compiled.as_text()
  bodies = {m.group(1): m.group(2) for m in re.finditer(r"^%?([\w.\-]+) \(.*?\{\n(.*?)^\}",
                                                        text, re.S | re.M)}
  kinds: dict[str, set[str]] = {}
  for m in re.finditer(r"calls=%?([\w.\-]+).*?\"kind\":\"__(ynn|xnn|onednn)_fusion\"", text):
    ops = set(re.findall(r"= \S+ ([a-z][\w\-]*)\(", bodies[m.group(1)])) - {"parameter"}
    kinds.setdefault(m.group(2), set()).update(ops)
  return kinds


def test_cpu_options_are_accepted_and_other_platforms_get_none():
  assert compile_options.for_platform("cpu") == compile_options.CPU_OPTIONS
  assert compile_options.for_platform("gpu") == {}
  assert compile_options.for_platform("tpu") == {}


def test_train_step_on_a_cpu_mesh_runs_convolutions_and_dots_outside_ynnpack():
  """The jitted train step carries the options: XLA's default fuses its matmul into a
  YNNPACK call, jaxpose's compile leaves YNNPACK only the reductions (here the loss's mean
  of squares); both compute the same step."""
  model = _conv_step_model()
  train_def, params = nnx.split(model, nnx.Param)
  mesh = state_lib.make_mesh(jax.devices()[:1])

  def step(state, batch):
    def loss(p):
      return jnp.mean(nnx.merge(train_def, p)(batch["x"]) ** 2)
    value, grads = jax.value_and_grad(loss)(state)
    return jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, state, grads), {"loss": value}

  x = np.random.RandomState(0).standard_normal((2, 32, 24, 3))
  batch = {"x": jnp.asarray(x, jnp.float32)}
  ours = state_lib.jit_train_step(step, mesh, donate=False).lower(params, batch).compile()
  default = jax.jit(step).lower(params, batch).compile()
  # Else this jaxlib's default changed: revisit the options.
  assert "dot" in _fusions(default).get("ynn", set())
  ours_fused = _fusions(ours)
  assert set(ours_fused) == {"ynn"} and "reduce" in ours_fused["ynn"]
  assert not {"convolution", "dot"} & ours_fused["ynn"]
  (p1, m1), (p2, m2) = ours(params, batch), default(params, batch)
  np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_lazy_jit_compiles_with_the_options_at_first_call():
  calls = []

  def fn(x):
    calls.append(1)
    return x * 2

  jitted = compile_options.jit(fn)
  assert calls == []  # nothing traced at decoration
  np.testing.assert_array_equal(np.asarray(jitted(jnp.arange(3.0))), [0.0, 2.0, 4.0])
  jitted(jnp.arange(3.0) + 1)
  assert calls == [1]  # one trace: the jitted function is built once


def test_users_xla_flags_setting_wins(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", f"--{compile_options.YNN_FUSION_TYPE}="
                     "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")
  assert compile_options.for_platform("cpu") == {}


def test_options_this_jaxlib_rejects_fall_back_to_xla_defaults_with_a_warning(monkeypatch):
  monkeypatch.setattr(compile_options, "CPU_OPTIONS",
                      {"xla_cpu_no_such_option_in_any_jaxlib": "1"})
  compile_options._supported_cpu_options.cache_clear()
  try:
    with pytest.warns(RuntimeWarning, match="xla_cpu_no_such_option_in_any_jaxlib"):
      assert compile_options.for_platform("cpu") == {}
  finally:
    compile_options._supported_cpu_options.cache_clear()


@pytest.mark.parametrize("rows", [(64,), (1,), (1, 1)])
def test_bfloat16_computations_also_give_ynnpack_their_dots(rows):
  """XLA:CPU's own dot emitter widens bfloat16 operands to float32 on every call; a
  narrow-dtype computation (``for_platform(..., "bfloat16")``, and ``compile_options.jit``
  called with bfloat16 arguments) runs its dots in YNNPACK, the float32 one does not. A
  single-row product too (``layers.dot_general`` adds a zero row: YNNPACK leaves one-row
  products to XLA)."""
  assert compile_options.for_platform("cpu", "bfloat16") == compile_options.NARROW_CPU_OPTIONS
  assert compile_options.for_platform("cpu", jnp.float32) == compile_options.CPU_OPTIONS
  assert compile_options.for_platform("gpu", "bfloat16") == {}

  def matmul(x, w):
    return layers.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))

  rs = np.random.RandomState(0)
  x32, w32 = rs.standard_normal((*rows, 96)), rs.standard_normal((96, 32))
  x16, w16 = jnp.asarray(x32, jnp.bfloat16), jnp.asarray(w32, jnp.bfloat16)
  narrow = jax.jit(matmul, compiler_options=compile_options.for_platform("cpu", "bfloat16"))
  wide = jax.jit(matmul, compiler_options=compile_options.for_platform("cpu"))
  assert "dot" in _fusions(narrow.lower(x16, w16).compile()).get("ynn", set())
  assert "dot" not in _fusions(wide.lower(x16, w16).compile()).get("ynn", set())
  want = np.asarray(x16, np.float64) @ np.asarray(w16, np.float64)
  for fn in (narrow, wide, compile_options.jit(matmul)):
    got = fn(x16, w16)
    assert got.shape == (*rows, 32) and got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0,
                               atol=1e-2 * np.abs(want).max())


def test_lazy_jit_picks_the_narrow_options_from_its_arguments(monkeypatch):
  wide, narrow = (compile_options.for_platform("cpu", d) for d in (None, "bfloat16"))
  seen = []  # (after the options' own probe compiles above)
  real_jit = jax.jit

  def recording_jit(fun, **kwargs):
    seen.append(kwargs.get("compiler_options"))
    return real_jit(fun, **kwargs)

  monkeypatch.setattr(jax, "jit", recording_jit)
  jitted = compile_options.jit(lambda tree, x: x * tree["w"])
  jitted({"w": jnp.ones(3)}, jnp.ones(3))
  jitted({"w": jnp.ones(3, jnp.bfloat16)}, jnp.ones(3))
  jitted({"w": jnp.ones(3, jnp.bfloat16), "n": jnp.arange(3)}, jnp.ones(3))  # cached
  assert seen == [wide, narrow] and wide != narrow
  assert compile_options.narrowest_float({"a": jnp.arange(2), "b": None}) is None


def test_evaluation_step_of_a_bfloat16_model_runs_its_dots_in_ynnpack():
  """``--mode=eval`` and the evaluation during training compile for the model's compute
  dtype (``loop.make_predict_fns(..., compute_dtype)``)."""
  import types
  from jaxpose.models import inference
  from jaxpose.train import loop

  model = nnx.Sequential(layers.Conv(3, 8, 3, padding=1, dtype="bfloat16", rngs=nnx.Rngs(0)),
                         layers.Conv(8, 8, 1, dtype="bfloat16", rngs=nnx.Rngs(1)))
  assert inference.compute_dtype(model) == jnp.bfloat16
  _, eval_def, params, batch_stats = state_lib.split_model(model)
  mesh = state_lib.make_mesh(jax.devices()[:1])
  task = types.SimpleNamespace(predict=lambda m, x: m(x).astype(jnp.float32))
  x = state_lib.global_batch(np.zeros((2, 16, 12, 3), np.float32), mesh)
  kinds = {}
  for dtype in (None, jnp.bfloat16):
    sharded, _ = loop.make_predict_fns(eval_def, task, mesh, dtype)
    kinds[dtype] = _fusions(sharded.lower(params, batch_stats, x).compile()).get("ynn", set())
  assert "dot" in kinds[jnp.bfloat16] and "dot" not in kinds[None]
