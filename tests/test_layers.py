"""Layer formulations chosen for speed compute what PyTorch's definitions say, values and
gradients (float64, so that any difference is a formulation error, not rounding)."""
from __future__ import annotations

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxpose.models import layers


def _conv_transpose_by_definition(x, w, stride, padding, output_padding, dilation):
  """PyTorch's ConvTranspose{1,2}d written as its sum: out[i * s - p + t * d] += x[i] w[t]."""
  nd = x.ndim - 2
  ksize = w.shape[:nd]
  n_out = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, k, s, p, op, d in zip(
      x.shape[1:-1], ksize, stride, padding, output_padding, dilation)]
  out = np.zeros((x.shape[0], *n_out, w.shape[-1]))
  for i in itertools.product(*(range(n) for n in x.shape[1:-1])):
    for t in itertools.product(*(range(k) for k in ksize)):
      o = [a * s - p + b * d for a, b, s, p, d in zip(i, t, stride, padding, dilation)]
      if all(0 <= v < n for v, n in zip(o, n_out)):
        out[(slice(None), *o)] += x[(slice(None), *i)] @ w[t]
  return out


def _conv_transpose_input_dilated(x, w, stride, padding, output_padding, dilation):
  """The textbook formulation: a stride-1 convolution of the zero-dilated input."""
  nd = x.ndim - 2
  pads = [(d * (k - 1) - p, d * (k - 1) - p + op)
          for k, p, op, d in zip(w.shape[:nd], padding, output_padding, dilation)]
  return jax.lax.conv_general_dilated(
      x, jnp.flip(w, tuple(range(nd))), (1,) * nd, pads, lhs_dilation=stride,
      rhs_dilation=dilation, dimension_numbers=layers._DIMENSION_NUMBERS[nd])


CASES = [  # (ndim, kernel, stride, padding, output_padding, dilation)
    (2, 4, 2, 1, 0, 1),  # SimpleBaseline / integral / hg3d heads
    (2, 3, 2, 1, 1, 1),
    (2, 2, 2, 0, 0, 1),
    (2, 5, 3, 2, 2, 1),
    (2, 1, 2, 0, 1, 1),  # phases that meet no kernel tap
    (2, 3, 1, 1, 0, 1),
    (2, 4, 2, 1, 0, 2),  # dilated: the input-dilated path
    (1, 7, 3, 4, 1, 1),  # padding beyond the kernel's reach: negative (crop) paddings
    (1, 2, 3, 0, 2, 1),
]


@pytest.mark.parametrize("channels", [(3, 4), (24, 40)])  # input gradient: phases / strided
@pytest.mark.parametrize("ndim,kernel,stride,padding,output_padding,dilation", CASES)
def test_conv_transpose_values_and_gradients(ndim, kernel, stride, padding, output_padding,
                                             dilation, channels):
  rs = np.random.RandomState(0)
  x = rs.standard_normal((2, *(5, 4)[:ndim], channels[0]))
  w = rs.standard_normal((*(kernel,) * ndim, *channels))
  args = dict(strides=(stride,) * ndim, padding=(padding,) * ndim,
              output_padding=(output_padding,) * ndim, dilation=(dilation,) * ndim)
  with jax.enable_x64(True):
    got = layers.conv_transpose(jnp.asarray(x), jnp.asarray(w), **args)
    want = _conv_transpose_by_definition(x, w, *args.values())
    assert got.dtype == jnp.float64 and got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)

    cotangent = jnp.asarray(rs.standard_normal(want.shape))
    ours = jax.grad(lambda x, w: jnp.vdot(layers.conv_transpose(x, w, **args), cotangent),
                    argnums=(0, 1))(jnp.asarray(x), jnp.asarray(w))
    theirs = jax.grad(lambda x, w: jnp.vdot(_conv_transpose_input_dilated(
        x, w, *args.values()), cotangent), argnums=(0, 1))(jnp.asarray(x), jnp.asarray(w))
    for a, b in zip(ours, theirs):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)


def test_conv_transpose_kernel_gradient_is_written_once_on_cpus():
  """On CPUs the kernel gradient leaves the backward pass through a loop (written in the
  kernel's layout once, not transposed by each reader); values are tested above."""
  x, kernel = jnp.ones((2, 3, 3, 4)), jnp.ones((4, 4, 4, 5))
  f = lambda k: jnp.sum(layers.conv_transpose(x, k, strides=(2, 2), padding=(1, 1),
                                               output_padding=(0, 0)) ** 2)
  forward = jax.jit(f).lower(kernel).compile().as_text()
  backward = jax.jit(jax.grad(f)).lower(kernel).compile().as_text()
  assert " while(" not in forward and " while(" in backward


def test_conv_transpose_layer_matches_torch_semantics_in_float32():
  """The layer (float32) against the definition: SimpleBaseline's 4x4/2 deconvolution."""
  rs = np.random.RandomState(1)
  layer = layers.ConvTranspose(6, 5, 4, strides=2, padding=1, rngs=nnx.Rngs(0))
  x = rs.standard_normal((2, 4, 3, 6)).astype(np.float32)
  want = _conv_transpose_by_definition(x.astype(np.float64), np.asarray(layer.kernel[...],
                                       np.float64), (2, 2), (1, 1), (0, 0), (1, 1))
  want += np.asarray(layer.bias[...], np.float64)
  got = layer(jnp.asarray(x))
  assert got.shape == (2, 8, 6, 5)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_dot_general_accumulates_bfloat16_in_float32_and_rounds_once():
  rs = np.random.RandomState(0)
  a = jnp.asarray(rs.standard_normal((3, 40, 256)), jnp.bfloat16)
  b = jnp.asarray(rs.standard_normal((256, 24)), jnp.bfloat16)
  dims = (((2,), (0,)), ((), ()))
  got = layers.dot_general(a, b, dims)
  assert got.dtype == jnp.bfloat16
  exact = np.einsum("nmk,ko->nmo", np.asarray(a, np.float64), np.asarray(b, np.float64))
  # One rounding to bf16 (half an ulp, 2^-9 relative) plus float32 accumulation.
  np.testing.assert_allclose(np.asarray(got, np.float64), exact, rtol=2.0**-8, atol=1e-5)
  jaxpr = jax.make_jaxpr(lambda a, b: layers.dot_general(a, b, dims))(a, b)
  (dot,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
  assert dot.params["preferred_element_type"] == jnp.float32
  # float32 (and wider) operands: exactly jax.lax.dot_general.
  a32, b32 = a.astype(jnp.float32), b.astype(jnp.float32)
  np.testing.assert_array_equal(np.asarray(layers.dot_general(a32, b32, dims)),
                                np.asarray(jax.lax.dot_general(a32, b32, dims)))


@pytest.mark.parametrize("c_in,c_out", [(8, 3), (3, 8), (5, 5)])
def test_pointwise_conv_gradients_equal_dot_general(c_in, c_out):
  """Both operand orders of the kernel gradient, against plain dot_general (float64)."""
  rs = np.random.RandomState(0)
  with jax.enable_x64(True):
    x = jnp.asarray(rs.standard_normal((2, 4, 3, c_in)))
    k = jnp.asarray(rs.standard_normal((c_in, c_out)))
    cotangent = jnp.asarray(rs.standard_normal((2, 4, 3, c_out)))
    plain = lambda x, k: jax.lax.dot_general(x, k, (((3,), (0,)), ((), ())))
    np.testing.assert_array_equal(np.asarray(layers.pointwise_conv(x, k)), np.asarray(plain(x, k)))
    ours = jax.grad(lambda x, k: jnp.vdot(layers.pointwise_conv(x, k), cotangent),
                    argnums=(0, 1))(x, k)
    theirs = jax.grad(lambda x, k: jnp.vdot(plain(x, k), cotangent), argnums=(0, 1))(x, k)
    for a, b in zip(ours, theirs):
      assert a.shape == b.shape
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)


CONV_CASES = [  # (batch, spatial, kernel, stride, padding)
    (2, (16, 12), (3, 3), (1, 1), (1, 1)),  # batch folded into the rows (kernel gradient)
    (4, (18, 16), (3, 3), (1, 1), (0, 0)),  # folded, unpadded
    (1, (14, 16), (5, 3), (1, 1), (2, 1)),  # folded, one image
    (5, (16, 12), (3, 3), (1, 1), (1, 1)),  # XLA's kernel gradient (batch too large)
    (2, (5, 4), (3, 3), (1, 1), (1, 1)),  # XLA's kernel gradient (too few pixels)
    (2, (9, 8), (3, 3), (2, 2), (1, 1)),  # strided: input gradient per output phase
    (3, (13, 10), (7, 7), (2, 2), (3, 3)),  # ResNet stem, odd sizes (output_padding 0 / 1)
    (2, (11, 12), (3, 3), (3, 3), (1, 1)),
    (2, (10, 9), (3, 2), (2, 1), (1, 0)),  # mixed strides
    (2, (13,), (5,), (3,), (1,)),  # 1-D, strided
    (2, (13,), (3,), (1,), (1,)),  # 1-D: XLA's gradients
]


@pytest.mark.parametrize("batch,spatial,kernel,stride,padding", CONV_CASES)
def test_conv_values_and_gradients_equal_xla(batch, spatial, kernel, stride, padding):
  """``layers.conv`` (its gradients in faster forms) against XLA's convolution (float64)."""
  rs = np.random.RandomState(0)
  nd = len(spatial)
  plain = lambda x, k: jax.lax.conv_general_dilated(
      x, k, stride, [(p, p) for p in padding], dimension_numbers=layers._DIMENSION_NUMBERS[nd])
  with jax.enable_x64(True):
    x = jnp.asarray(rs.standard_normal((batch, *spatial, 3)))
    k = jnp.asarray(rs.standard_normal((*kernel, 3, 4)))
    want = plain(x, k)
    np.testing.assert_array_equal(np.asarray(layers.conv(x, k, stride, padding)),
                                  np.asarray(want))
    cotangent = jnp.asarray(rs.standard_normal(want.shape))
    ours = jax.jit(jax.grad(lambda x, k: jnp.vdot(layers.conv(x, k, stride, padding),
                                                  cotangent), argnums=(0, 1)))(x, k)
    theirs = jax.grad(lambda x, k: jnp.vdot(plain(x, k), cotangent), argnums=(0, 1))(x, k)
    for a, b in zip(ours, theirs):
      assert a.shape == b.shape and a.dtype == b.dtype
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)


def test_conv_gradients_off_cpu_are_xlas(monkeypatch):
  """Off the CPU backend ``conv``'s backward is XLA's own: its zero-dilated input gradient
  of a strided convolution is back in the compiled step (traced as for a GPU, compiled
  here)."""
  x, k = jnp.ones((2, 16, 12, 3)), jnp.ones((3, 3, 3, 4))

  def lowered():  # a fresh function each time: nothing comes from the tracing cache
    return jax.jit(jax.grad(lambda x, k: jnp.sum(layers.conv(x, k, (2, 2), (1, 1)) ** 2),
                            argnums=(0, 1))).lower(x, k)

  assert "lhs_dilate=2x2" not in lowered().compile().as_text()
  with monkeypatch.context() as patch:
    patch.setattr(jax, "default_backend", lambda: "gpu")
    gpu_form = lowered()
  assert "lhs_dilate=2x2" in gpu_form.compile().as_text()


def test_conv_cases_cover_both_kernel_gradient_forms():
  folded = [nd == 2 and s == (1, 1) and layers._folds_batch_for_kernel_grad(
      b, *(n + 2 * p - k + 1 for n, k, p in zip(sp, kern, pad)))
            for b, sp, kern, s, pad in CONV_CASES for nd in [len(sp)]]
  assert any(folded) and not all(folded)


def test_conv_layer_uses_conv_for_undilated_ungrouped_kernels():
  """The Conv layer routes through ``layers.conv`` (its custom gradient), 1x1 kernels through
  ``pointwise_conv``, dilated or grouped ones through XLA's convolution."""
  def primitives(layer, x):
    jaxpr = jax.make_jaxpr(lambda x: layer(x))(x)
    return {e.primitive.name for e in jaxpr.jaxpr.eqns}
  x = jnp.zeros((1, 8, 8, 4))
  assert "custom_vjp_call" in primitives(layers.Conv(4, 4, 3, strides=2, padding=1,
                                                     rngs=nnx.Rngs(0)), x)
  assert "conv_general_dilated" in primitives(layers.Conv(4, 4, 3, dilation=2, padding=2,
                                                          rngs=nnx.Rngs(0)), x)
  assert "conv_general_dilated" in primitives(layers.Conv(4, 4, 3, groups=2, padding=1,
                                                          rngs=nnx.Rngs(0)), x)


@pytest.mark.parametrize("width,frames,use_bias", [(3, 9, True), (3, 11, False), (5, 5, True),
                                                    (1, 4, False)])
def test_stride_by_width_equals_the_strided_convolution(width, frames, use_bias):
  """``Conv.stride_by_width`` (one matmul) against the stride-``width`` convolution in
  float64: values, input and parameter gradients; frames past the last window dropped."""
  rs = np.random.RandomState(width * frames)
  with jax.enable_x64(True):
    conv = layers.Conv(4, 6, width, ndim=1, use_bias=use_bias, dtype=jnp.float64,
                       param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    x = jnp.asarray(rs.standard_normal((2, frames, 4)))
    cotangent = jnp.asarray(rs.standard_normal((2, frames // width, 6)))

    def by_conv(x, kernel, bias):
      y = jax.lax.conv_general_dilated(x, kernel, (width,), [(0, 0)],
                                       dimension_numbers=("NWC", "WIO", "NWC"))
      return y + bias if use_bias else y

    bias = conv.bias[...] if use_bias else jnp.zeros(6)
    want = by_conv(x, conv.kernel[...], bias)
    got = conv.stride_by_width(x)
    assert got.shape == want.shape == (2, frames // width, 6)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)
    want_grads = jax.grad(lambda *a: jnp.vdot(by_conv(*a), cotangent), argnums=(0, 1, 2))(
        x, conv.kernel[...], bias)
    d_layer, dx = nnx.grad(lambda m, x: jnp.vdot(m.stride_by_width(x), cotangent),
                           argnums=(0, 1))(conv, x)
    got_grads = [dx, d_layer["kernel"][...]] + ([d_layer["bias"][...]] if use_bias else [])
    for a, b in zip(got_grads, want_grads):
      assert a.shape == b.shape
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)


def test_stride_by_width_refuses_what_it_does_not_cover():
  conv2d = layers.Conv(3, 4, 3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="1-D, ungrouped"):
    conv2d.stride_by_width(jnp.zeros((1, 9, 3)))
  conv = layers.Conv(3, 4, 3, ndim=1, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="fewer than the kernel width 3"):
    conv.stride_by_width(jnp.zeros((1, 2, 3)))
  with pytest.raises(ValueError, match=r"input \[B, T, 3\]"):
    conv.stride_by_width(jnp.zeros((1, 9, 5)))


# ----------------------------------------------------------------------------------------
# max_pool: PyTorch's gradient routing
# ----------------------------------------------------------------------------------------


def _max_pool_by_definition(x, g, k, s, p):
  """MaxPool2d and its gradient by loops: each window's first maximum in row-major order
  receives the window's cotangent (PyTorch's indices)."""
  b, h, w, c = x.shape
  ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
  y, dx = np.zeros((b, ho, wo, c)), np.zeros_like(x)
  for n, oh, ow, ch in itertools.product(range(b), range(ho), range(wo), range(c)):
    best = None
    for i, j in itertools.product(range(k), range(k)):
      r, q = oh * s - p + i, ow * s - p + j
      if 0 <= r < h and 0 <= q < w and (best is None or x[n, r, q, ch] > x[n, best[0],
                                                                          best[1], ch]):
        best = (r, q)
    y[n, oh, ow, ch] = x[n, best[0], best[1], ch]
    dx[n, best[0], best[1], ch] += g[n, oh, ow, ch]
  return y, dx


@pytest.mark.parametrize("k,s,p,size", [(3, 2, 1, (7, 6)), (3, 2, 1, (8, 5)), (2, 2, 0, (5, 4)),
                                        (3, 1, 1, (4, 5)), (3, 3, 0, (7, 7))])
def test_max_pool_values_and_gradient_follow_pytorch(k, s, p, size):
  """Ties everywhere (values from {0, 1, 2}, ReLU-like zeros): the gradient goes to each
  window's first maximum, overlapping windows add; float64, exact."""
  rs = np.random.RandomState(k * 10 + s)
  x = rs.randint(0, 3, (2, *size, 3)).astype(np.float64)
  with jax.enable_x64(True):
    y = layers.max_pool(jnp.asarray(x), k, s, p)
    g = rs.standard_normal(y.shape)
    want_y, want_dx = _max_pool_by_definition(x, g, k, s, p)
    np.testing.assert_array_equal(np.asarray(y), want_y)
    dx = jax.jit(jax.grad(lambda x: jnp.vdot(layers.max_pool(x, k, s, p), jnp.asarray(g))))(
        jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(dx), want_dx, rtol=1e-12, atol=1e-12)


def test_max_pool_matches_torch_on_the_resnet_stem():
  torch = pytest.importorskip("torch")
  x = np.maximum(np.random.RandomState(3).standard_normal((2, 12, 10, 4)), 0).astype(np.float32)
  g = np.random.RandomState(4).standard_normal((2, 6, 5, 4)).astype(np.float32)
  tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
  ty = torch.nn.functional.max_pool2d(tx, 3, 2, 1)
  ty.backward(torch.tensor(g.transpose(0, 3, 1, 2)))
  y, vjp = jax.vjp(lambda x: layers.max_pool(x, 3, 2, 1), jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(y), ty.detach().numpy().transpose(0, 2, 3, 1))
  np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(g))[0]),
                             tx.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="at most half the kernel"):
    layers.max_pool(jnp.zeros((1, 4, 4, 1)), 3, 2, 2)


# ----------------------------------------------------------------------------------------
# batch_norm_train: the closed-form gradient
# ----------------------------------------------------------------------------------------


def _batch_norm_by_formula(x, scale, bias, epsilon):
  x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x32, axis=axes)
  var = jnp.mean(jnp.square(x32 - mean), axis=axes)
  y = (x32 - mean) * jax.lax.rsqrt(var + epsilon) * scale + bias
  return y.astype(x.dtype), mean, var


@pytest.mark.parametrize("shape", [(3, 5, 4, 6), (7, 2), (2, 9, 1)])
@pytest.mark.parametrize("use_stats", [False, True])
def test_batch_norm_train_gradient_equals_the_differentiated_formula(shape, use_stats):
  """Values and gradients (x, scale, bias) of the custom VJP equal autodiff of the forward
  formula in float64, with and without cotangents on the returned statistics."""
  rs = np.random.RandomState(sum(shape))
  with jax.enable_x64(True):
    x = jnp.asarray(rs.standard_normal(shape) * 3 + 1)
    scale = jnp.asarray(rs.uniform(0.5, 1.5, shape[-1]))
    bias = jnp.asarray(rs.standard_normal(shape[-1]))
    weights = [jnp.asarray(rs.standard_normal(s)) for s in (shape, shape[-1:], shape[-1:])]

    def loss(fn):
      def f(x, scale, bias):
        y, mean, var = fn(x, scale, bias)
        out = jnp.vdot(jax.nn.relu(y), weights[0])
        if use_stats:
          out = out + jnp.vdot(mean, weights[1]) + jnp.vdot(var, weights[2])
        return out
      return f

    ours = lambda x, s, b: layers.batch_norm_train(x, s, b, 1e-5, x.dtype)
    theirs = lambda x, s, b: _batch_norm_by_formula(x, s, b, 1e-5)
    for a, b in zip(ours(x, scale, bias), theirs(x, scale, bias)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)
    for wrap in (jax.jit, lambda fn: fn):
      got = wrap(jax.grad(loss(ours), argnums=(0, 1, 2)))(x, scale, bias)
      want = jax.grad(loss(theirs), argnums=(0, 1, 2))(x, scale, bias)
      for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10)


def test_batch_norm_layer_trains_in_bfloat16_with_float32_statistics():
  """bf16 activations: statistics and the gradient's arithmetic in float32, outputs and the
  input gradient in bf16, parameter gradients in the parameters' float32."""
  bn = layers.BatchNorm(4, dtype=jnp.bfloat16)
  x = jnp.asarray(np.random.RandomState(1).standard_normal((6, 3, 4)) * 2 + 5, jnp.bfloat16)
  y = bn(x)
  assert y.dtype == jnp.bfloat16 and bn.mean[...].dtype == jnp.float32
  x32 = x.astype(jnp.float32)
  np.testing.assert_allclose(np.asarray(bn.mean[...]), 0.1 * np.asarray(x32.mean((0, 1))),
                             rtol=1e-6)
  # A cotangent exact in bf16: the only rounding left is the input gradient's, to bf16.
  w = jnp.asarray(np.random.RandomState(2).standard_normal(x.shape), jnp.bfloat16)
  w32 = w.astype(jnp.float32)
  grads = jax.grad(lambda x, s, b: jnp.vdot(
      layers.batch_norm_train(x, s, b, 1e-5, jnp.bfloat16)[0].astype(jnp.float32), w32),
      argnums=(0, 1, 2))(x, bn.scale[...], bn.bias[...])
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.float32, jnp.float32]
  want = jax.grad(lambda x, s, b: jnp.vdot(_batch_norm_by_formula(x, s, b, 1e-5)[0], w32),
                  argnums=(0, 1, 2))(x32, bn.scale[...], bn.bias[...])
  for g, v, rtol in zip(grads, want, (1e-2, 1e-5, 1e-6)):
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(v), rtol=rtol,
                               atol=rtol * float(jnp.max(jnp.abs(v))))


# ----------------------------------------------------------------------------------------
# materialize: a fusion boundary for residual chains (XLA:CPU)
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_materialize_keeps_values_and_gradients(dtype):
  x = jnp.asarray(np.random.RandomState(0).standard_normal((2, 5, 4, 3)), dtype)
  f = lambda m: lambda x: jnp.sum(jnp.sin(m(jnp.cos(x) * 2)).astype(jnp.float32) ** 2)
  for wrap in (jax.jit, lambda fn: fn):
    ours = wrap(jax.value_and_grad(f(layers.materialize)))(x)
    plain = wrap(jax.value_and_grad(f(lambda y: y)))(x)
    for a, b in zip(ours, plain):
      np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
  inf_first = x.at[0, 0, 0, 0].set(jnp.inf)  # the loop runs twice then: same values
  grad = jax.jit(jax.grad(lambda x: jnp.sum(layers.materialize(x).astype(jnp.float32) * 3)))
  np.testing.assert_array_equal(np.asarray(grad(inf_first), np.float32), np.full(x.shape, 3.0))
  assert jax.grad(lambda x: jnp.sum(layers.materialize(x)))(jnp.zeros((0, 3))).shape == (0, 3)


def test_materialize_builds_a_loop_only_where_a_gradient_is_taken():
  x = jnp.ones((2, 3))
  forward = jax.jit(lambda x: layers.materialize(jnp.cos(x))).lower(x).compile().as_text()
  backward = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(layers.materialize(jnp.cos(x)))))
                     ).lower(x).compile().as_text()
  assert " while(" not in forward and " while(" in backward


def _relu_count_of_train_step(blocks: int) -> int:
  """ReLU (``maximum``) instructions XLA:CPU emits for a training step of ``blocks``
  residual blocks: one per block and its gradient when nothing is recomputed."""
  from jaxpose.models import resnet
  from jaxpose.train import state as state_lib

  class Chain(nnx.Module):
    def __init__(self):
      self.blocks = nnx.List([resnet.BasicBlock(8, 8, rngs=nnx.Rngs(i)) for i in range(blocks)])

    def __call__(self, x):
      for block in self.blocks:
        x = block(x)
      return x

  train_def, _, params, batch_stats = state_lib.split_model(Chain())
  tx = optax.sgd(0.1)
  step = state_lib.make_train_step(
      train_def, lambda m, b, rng, hp: (jnp.mean(m(b["x"]) ** 2), {}), tx)
  state = state_lib.init_train_state(params, batch_stats, tx, 0)
  batch = {"x": jnp.ones((2, 8, 6, 8), jnp.float32)}
  text = jax.jit(step).lower(state, batch).compile().as_text()
  return len(re.findall(r" maximum\(", text))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="materialize acts on XLA:CPU only")
def test_residual_chains_are_not_recomputed_in_the_train_step():
  """Without ``materialize`` every fusion reading a block output recomputes the BatchNorm,
  add and ReLU of all earlier blocks (measured on 2 cores: 30 ms per block per step with
  12 blocks, 35 ms with 24; HRNet-w32's kernel-gradient transposes took 43% of its step);
  with it the emitted ReLUs grow linearly with the depth."""
  counts = {n: _relu_count_of_train_step(n) for n in (2, 4, 8)}
  assert counts[8] - counts[4] == 2 * (counts[4] - counts[2]), counts
