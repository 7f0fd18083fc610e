"""Layer formulations chosen for speed compute what PyTorch's definitions say, values and
gradients (float64, so that any difference is a formulation error, not rounding)."""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
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


@pytest.mark.parametrize("ndim,kernel,stride,padding,output_padding,dilation", CASES)
def test_conv_transpose_values_and_gradients(ndim, kernel, stride, padding, output_padding,
                                             dilation):
  rs = np.random.RandomState(0)
  x = rs.standard_normal((2, *(5, 4)[:ndim], 3))
  w = rs.standard_normal((*(kernel,) * ndim, 3, 4))
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
