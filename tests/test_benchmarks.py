"""The benchmark scripts' own logic (their timings are not asserted; see benchmarks/)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from benchmarks import _timing, conv_primitives, profile_ops, train_step
from benchmarks import inference as inference_benchmark
from jaxpose.models import layers
from jaxpose.train import tasks


def test_conv_primitives_records_every_convolution_call_once():
  """Rows cover each Conv / ConvTranspose call of the model exactly once (grouped by layer
  settings and input shape); only the first reads the image."""
  config = train_step.benchmark_config("quickstart:size=64x64")
  rows = conv_primitives.conv_calls(config, 2)
  model = tasks.make_task(config).init_model()
  convs = [m for _, m in nnx.iter_modules(model) if isinstance(m, conv_primitives._CLASSES)]
  assert sum(r["count"] for r in rows) == len(convs)
  assert rows[0]["shape"] == (2, 64, 64, 3) and rows[0]["first"]
  assert not any(r["first"] for r in rows[1:])
  assert all(r["shape"][-1] == r["module"].in_features for r in rows)
  # The grouping key tells layers apart: a repeated layer is one row with its count.
  keys = [(conv_primitives.layer_settings(r["module"]), r["shape"]) for r in rows]
  assert len(set(keys)) == len(keys) and max(r["count"] for r in rows) > 1
  # The recorder is gone after the trace.
  assert layers.Conv.__call__ is not None and "recorder" not in layers.Conv.__call__.__qualname__


@pytest.mark.parametrize("make, shape", [
    (lambda r: layers.Conv(4, 6, 3, strides=2, rngs=r), (2, 9, 7, 4)),
    (lambda r: layers.Conv(4, 6, 3, padding=1, rngs=r), (2, 8, 6, 4)),
    (lambda r: layers.Conv(4, 6, 1, use_bias=False, rngs=r), (2, 5, 3, 4)),
    (lambda r: layers.Conv(4, 4, 3, dilation=2, groups=2, ndim=1, rngs=r), (2, 11, 4)),
    (lambda r: layers.ConvTranspose(6, 4, 4, strides=2, padding=1, use_bias=False, rngs=r),
     (2, 3, 5, 6)),
])
def test_conv_primitives_layers_and_their_pytorch_twins(make, shape):
  """Each side's forward and train calls run; PyTorch's layer gives jaxpose's output shape
  (torch_calls raises otherwise); the forward FLOPs are XLA's count where no tap reads padding
  (XLA leaves those out; the benchmark counts the nominal multiply-adds, as papers do)."""
  pytest.importorskip("torch")
  module = make(nnx.Rngs(0))
  rs = np.random.RandomState(0)
  forward, train, out_shape = conv_primitives.jaxpose_calls(module, shape, False, rs)
  forward(), train()
  assert out_shape == tuple(jax.eval_shape(module, jnp.zeros(shape)).shape)
  torch_forward, torch_train = conv_primitives.torch_calls(module, shape, out_shape, False, rs)
  torch_forward(), torch_train()
  if isinstance(module, layers.ConvTranspose):
    taps, c_in = 16, 6
    assert conv_primitives.forward_flops(module, shape, out_shape) == 2 * 2 * 3 * 5 * c_in * 4 * taps
    return
  x = jnp.zeros(shape)
  nd = len(shape) - 2
  lax_conv = lambda x, k: jax.lax.conv_general_dilated(
      x, k, module.strides, [(p, p) for p in module.padding], rhs_dilation=module.dilation,
      dimension_numbers=layers._DIMENSION_NUMBERS[nd], feature_group_count=module.groups)
  xla = _timing.flops_of(jax.jit(lax_conv).lower(x, module.kernel[...]).compile())
  if any(module.padding):
    assert conv_primitives.forward_flops(module, shape, out_shape) > xla
    return
  assert conv_primitives.forward_flops(module, shape, out_shape) == pytest.approx(xla, rel=1e-6)


def test_profile_ops_threads_a_donated_train_state():
  """A donating step is profiled as training calls it: each call's output state is the
  next call's input (called again on its first, donated state, it would fail)."""
  step = jax.jit(lambda state, x: (jnp.tanh(state * x) + x, jnp.sum(state)), donate_argnums=0)
  state, x = jnp.ones((64, 64)), jnp.full((64, 64), 0.5)
  compiled = step.lower(state, x).compile()
  times = profile_ops.op_times(compiled, (state, x), 3, thread_state=True)
  assert times and set(times) <= set(profile_ops.hlo_lines(compiled))
  assert all(t > 0 for t in times.values())
  with pytest.raises(Exception, match="deleted|donated"):
    profile_ops.op_times(compiled, (jnp.ones((64, 64)), x), 2)


def test_inference_profile_case_is_the_entry_points_path():
  """``benchmarks.profile_ops --model`` profiles the prepared path, which returns only the
  evaluated output and agrees with the model as built (``--plain``)."""
  fn, (state, x) = inference_benchmark.jitted_case("videopose3d_243f", 4)
  plain, (plain_state, _) = inference_benchmark.jitted_case("videopose3d_243f", 4, plain=True)
  ours, theirs = fn(state, x), plain(plain_state, x)
  assert not isinstance(ours, dict) and isinstance(theirs, dict)  # the evaluated output only
  np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs["poses"]), rtol=1e-4,
                             atol=1e-4 * float(np.abs(theirs["poses"]).max()))
