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
