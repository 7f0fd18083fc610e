"""Layers with PyTorch semantics, channels-last.

The original pose projects are PyTorch code. To reproduce their forward passes exactly
these layers follow PyTorch's conventions where they differ from Flax's defaults:

* explicit symmetric integer paddings (a stride-2 ``'SAME'`` in XLA pads differently);
* ``ConvTranspose`` with PyTorch's ``padding`` / ``output_padding`` arithmetic;
* ``BatchNorm`` with eps 1e-5, biased variance for normalisation and *unbiased* variance
  for the running estimate, momentum 0.9 in Flax's convention (PyTorch's 0.1);
* max pooling that pads with -inf;
* bilinear resizing with ``align_corners=True`` and nearest upsampling by integer factors.

Every layer that owns parameters declares how its PyTorch tensors map onto its
variables (``torch_to_jax``), so checkpoint conversion needs only key renames per model
family (see ``jaxpose.convert``). Layouts: images ``[B, H, W, C]``, sequences
``[B, T, C]``; kernels ``[*kernel_size, C_in, C_out]``.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]


def as_dtype(name: str | Dtype | None) -> Dtype | None:
  """Maps a config string ('float32', 'bfloat16', ...) to a jnp dtype."""
  if name is None or not isinstance(name, str):
    return name
  try:
    return jnp.dtype(name)
  except TypeError as e:
    raise ValueError(f"unknown dtype {name!r}; use e.g. 'float32' or 'bfloat16'") from e


def _tuple(value: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
  if isinstance(value, int):
    return (value,) * n
  value = tuple(int(v) for v in value)
  if len(value) != n:
    raise ValueError(f"{what} must have {n} entries, got {value}")
  return value


# ----------------------------------------------------------------------------------------
# Initialisers matching torch.nn.init
# ----------------------------------------------------------------------------------------


def torch_default_kernel_init(key, shape, dtype=jnp.float32):
  """PyTorch's default Conv/Linear init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).

  ``shape`` is ``[*kernel, C_in, C_out]`` (fan_in = prod(kernel) * C_in).
  """
  fan_in = int(np.prod(shape[:-1]))
  bound = 1.0 / math.sqrt(max(fan_in, 1))
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def normal_init(std: float) -> Initializer:
  """torch.nn.init.normal_(std=std)."""

  def init(key, shape, dtype=jnp.float32):
    return std * jax.random.normal(key, shape, dtype)

  return init


def kaiming_normal_fan_out(key, shape, dtype=jnp.float32):
  """torch.nn.init.kaiming_normal_(mode='fan_out', nonlinearity='relu') for ``[*k, in, out]``."""
  fan_out = int(np.prod(shape[:-2])) * shape[-1]
  return math.sqrt(2.0 / fan_out) * jax.random.normal(key, shape, dtype)


def _torch_default_bias_init(fan_in: int) -> Initializer:
  bound = 1.0 / math.sqrt(max(fan_in, 1))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def zeros_init(key, shape, dtype=jnp.float32):
  del key
  return jnp.zeros(shape, dtype)


# ----------------------------------------------------------------------------------------
# Call recording (trace time only; used by jaxpose.models.inference to find conv -> BN pairs)
# ----------------------------------------------------------------------------------------

_CALLS: contextvars.ContextVar[list | None] = contextvars.ContextVar("jaxpose_layer_calls",
                                                                     default=None)


@contextlib.contextmanager
def recording_calls():
  """Tags layer inputs and outputs so that a trace of the model shows who reads what.

  While active, the output of every ``Conv``, ``ConvTranspose`` and ``Linear`` call and the
  input of every ``BatchNorm`` call pass through a named identity
  (``jax.ad_checkpoint.checkpoint_name``); ``(module, role, name)`` is appended to the
  yielded list, ``role`` being ``"output"`` or ``"input"``. In a ``jax.make_jaxpr`` of the
  model the ``name`` equations then mark those values. Used by ``jaxpose.models.inference``
  to find BatchNorms that only normalise one convolution's output. Outside the context
  nothing is tagged.
  """
  calls: list = []
  token = _CALLS.set(calls)
  try:
    yield calls
  finally:
    _CALLS.reset(token)


def _tag(module, role: str, value: Array) -> Array:
  calls = _CALLS.get()
  if calls is None:
    return value
  name = f"jaxpose_{role}_{len(calls)}"
  calls.append((module, role, name))
  return checkpoint_name(value, name)


# ----------------------------------------------------------------------------------------
# Convolutions
# ----------------------------------------------------------------------------------------

_DIMENSION_NUMBERS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


def dot_general(a: Array, b: Array, dimension_numbers, precision: jax.lax.PrecisionLike = None
                ) -> Array:
  """``jax.lax.dot_general`` that accumulates floats narrower than float32 (bfloat16) in
  float32 and rounds the result once to the operands' dtype; float32 and wider unchanged.

  XLA:CPU runs a bf16 x bf16 -> bf16 dot without the AVX512_BF16 dot-product path it takes
  for a float32 result (measured on a 2-core EPYC: [2048, 3072] @ [3072, 1024] 50 ms
  either way in bf16 -> bf16 and float32, 17 ms for bf16 -> float32).
  """
  out = jnp.result_type(a, b)
  acc = jnp.promote_types(out, jnp.float32)
  if acc == out:
    return jax.lax.dot_general(a, b, dimension_numbers, precision=precision)
  (lhs_contract, rhs_contract), batch = dimension_numbers
  if (not batch[0] and tuple(lhs_contract) == (a.ndim - 1,) and math.prod(a.shape[:-1]) == 1
      and jax.default_backend() == "cpu"):
    # A one-row product (a matrix-vector product: VideoPose3D's last layers at batch 1)
    # XLA:CPU runs in its own emitter, which widens the bfloat16 matrix to float32 on every
    # call; with a second, zero row YNNPACK runs it in bfloat16 (``compile_options``'
    # NARROW_CPU_OPTIONS; measured: [1, 3072] @ [3072, 1024] 0.84 -> 0.60 ms).
    rows = jnp.concatenate([a.reshape(1, -1), jnp.zeros((1, a.shape[-1]), a.dtype)])
    y = jax.lax.dot_general(rows, b, (((1,), tuple(rhs_contract)), ((), ())),
                            precision=precision, preferred_element_type=acc)[:1]
    return y.reshape(*a.shape[:-1], *y.shape[1:]).astype(out)
  return jax.lax.dot_general(a, b, dimension_numbers, precision=precision,
                             preferred_element_type=acc).astype(out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def pointwise_conv(x: Array, kernel: Array, precision: jax.lax.PrecisionLike = None) -> Array:
  """A 1x1 convolution as a matmul over channels: ``x [..., C_in] @ kernel [C_in, C_out]``.

  Same values and gradients as ``dot_general`` (above); only the kernel gradient's form
  differs. ``dkernel = sum_n x[n]^T g[n]`` contracts the batch and spatial axes, which come
  first in both operands. Contracted as they are, XLA:CPU rewrites the dot with a transposed
  copy of its left operand (a slow strided copy); with both operands flattened to ``[rows,
  channels]`` its matmul reads them in place ([4, 64, 48, 64] x [.., 256]: 4.3 -> 2.8 ms).
  The narrower of ``x`` and ``g`` goes on the left (the small ``[C_out, C_in]`` result
  transposed), which XLA:CPU's matmul runs up to 10% faster.
  """
  return dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision)


def _pointwise_conv_fwd(x, kernel, precision):
  return pointwise_conv(x, kernel, precision), (x, kernel)


def _pointwise_conv_bwd(precision, residuals, g):
  x, kernel = residuals
  dx = dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())), precision)
  # Both operands as [rows, channels] (free reshapes): contracting the leading axes of
  # higher-rank operands, XLA rewrites the dot with a transposed copy of the left one.
  x, g = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
  rows = (((0,), (0,)), ((), ()))
  if kernel.shape[0] > kernel.shape[1]:
    dkernel = dot_general(g, x, rows, precision).T
  else:
    dkernel = dot_general(x, g, rows, precision)
  return dx, dkernel


pointwise_conv.defvjp(_pointwise_conv_fwd, _pointwise_conv_bwd)


def _folds_batch_for_kernel_grad(batch: int, height: int, width: int) -> bool:
  """Whether ``conv`` computes a stride-1 kernel gradient with the images stacked along the
  rows (``batch`` images of ``height x width`` output pixels).

  Measured on a 2-core EPYC, 3x3 kernels, float32 (ms, XLA's form -> folded): [4, 64, 48,
  32] 2.97 -> 2.05, [2, 64, 48, 32] 2.98 -> 1.32, [4, 64, 48, 64] 10.5 -> 5.3, [4, 32, 24,
  64] 2.20 -> 1.54, [4, 16, 12, 128] 1.38 -> 1.28; but [4, 8, 6, 512] 3.65 -> 4.26 and [8,
  64, 48, 32] 4.41 -> 4.56: XLA's form costs a large fixed part per call, the folded one
  grows with the batch.
  """
  return batch <= 4 and height * width >= 192


def _conv_fwd_only(x, kernel, strides, padding, precision):
  return jax.lax.conv_general_dilated(x, kernel, strides, [(p, p) for p in padding],
                                      dimension_numbers=_DIMENSION_NUMBERS[x.ndim - 2],
                                      precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv(x: Array, kernel: Array, strides: tuple[int, ...], padding: tuple[int, ...],
         precision: jax.lax.PrecisionLike = None) -> Array:
  """An undilated, ungrouped convolution ``[B, *spatial, C_in]`` x ``[*k, C_in, C_out]``
  with symmetric zero ``padding``: XLA's values; gradients in forms XLA:CPU runs faster.

  * Input gradient of a strided convolution: the transposed convolution it is the adjoint
    of, computed per output phase (``conv_transpose``). XLA's own form is a convolution of
    ``g`` dilated with zeros, which XLA:CPU runs as a naive loop (12.8% of the traced op
    time of HRNet-w32's batch-4 train step: its stem and transition convolutions).
  * Kernel gradient of a stride-1 2-D convolution on a small batch
    (``_folds_batch_for_kernel_grad``), ``dW[a, b] = sum_{n, i, j} x_pad[n, i + a, j + b]
    g[n, i, j]``: XLA computes it as a convolution whose batch is ``C_in`` and whose input
    feature is the image batch, which on CPUs needs ``x`` copied into ``[C_in, H, W, B]``;
    with a small batch the innermost axis is a few floats and the copy a slow scatter.
    With the images stacked along the rows instead (``[B * (H + 2p), W + 2p]``, one
    zero-padded image after the other, ``g`` with ``kh - 1`` zero rows after each image,
    so no window straddles two images), the same sums are one convolution of a single "image"
    whose input feature is 1: ``x`` is copied as a 2-D transpose ``[rows, C_in] -> [C_in,
    rows]`` and ``g`` is read in place as the kernel.

  Other kernel gradients are XLA's. HRNet-w32's CPU train step at batch 4: 1236 -> 1140 ms
  (the same step both ways in one process). On other backends (cuDNN computes both
  gradients natively; not measured here) all gradients are XLA's.
  """
  return _conv_fwd_only(x, kernel, strides, padding, precision)


def _conv_vjp_fwd(x, kernel, strides, padding, precision):
  return _conv_fwd_only(x, kernel, strides, padding, precision), (x, kernel)


def _conv_vjp_bwd(strides, padding, precision, residuals, g):
  x, kernel = residuals
  nd = x.ndim - 2
  ksize = kernel.shape[:nd]
  forward = lambda x, k: _conv_fwd_only(x, k, strides, padding, precision)
  on_cpu = jax.default_backend() == "cpu"
  if on_cpu and any(s > 1 for s in strides):
    # The adjoint of a stride-s convolution is PyTorch's conv_transpose(g, W, s, p,
    # output_padding) with the kernel's channel axes swapped; output_padding restores the
    # input sizes the strided convolution rounded down.
    output_padding = tuple(n - ((m - 1) * s - 2 * p + k) for n, m, s, p, k in
                           zip(x.shape[1:-1], g.shape[1:-1], strides, padding, ksize))
    dx = _conv_transpose_phases_fwd_only(g, jnp.swapaxes(kernel, -1, -2), strides, padding,
                                         output_padding, precision)
    (dkernel,) = jax.vjp(lambda k: forward(x, k), kernel)[1](g)
  elif on_cpu and nd == 2 and _folds_batch_for_kernel_grad(*g.shape[:3]):
    (dx,) = jax.vjp(lambda x: forward(x, kernel), x)[1](g)
    dkernel = _folded_kernel_grad(x, g, ksize, padding, precision).astype(kernel.dtype)
  else:
    dx, dkernel = jax.vjp(forward, x, kernel)[1](g)
  return dx, dkernel


def _folded_kernel_grad(x, g, ksize, padding, precision):
  """``conv``'s stride-1 2-D kernel gradient with the batch stacked along the rows."""
  n, h, w, c_in = x.shape
  (ph, pw), hp, wp = padding, h + 2 * padding[0], w + 2 * padding[1]
  rows = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0))).reshape(n * hp, wp, c_in)
  # g with hp - h_out (= kh - 1) zero rows after each image; the last image's are not needed.
  h_out = g.shape[1]
  g_rows = jnp.pad(g, ((0, 0), (0, hp - h_out), (0, 0), (0, 0))).reshape(n * hp, g.shape[2], -1)
  g_rows = g_rows[:(n - 1) * hp + h_out]
  # lhs [rows, cols, C_in (batch), 1 (feature)]; rhs [rows, cols, 1 (in), C_out (out)].
  dkernel = jax.lax.conv_general_dilated(
      rows[..., None], g_rows[:, :, None, :], (1, 1), "VALID",
      dimension_numbers=("01NC", "01IO", "01NC"), precision=precision)
  return dkernel.reshape(*ksize, c_in, -1)


conv.defvjp(_conv_vjp_fwd, _conv_vjp_bwd)


def _widened_input(layer, x: Array, dtype: Dtype) -> tuple[Dtype, Array]:
  """``(dtype the layer convolves in, its input in that dtype)``: ``dtype`` itself, or for a
  ``widened`` layer its kernel's wider dtype, with the input rounded to ``dtype`` first (the
  values a ``dtype`` convolution sees)."""
  x = x.astype(dtype)
  if not layer.widened:
    return dtype, x
  calc = layer.kernel.dtype
  return calc, x.astype(calc)


class Conv(nnx.Module):
  """PyTorch ``Conv1d``/``Conv2d`` in channels-last layout.

  Attributes:
    kernel: ``[*kernel_size, C_in // groups, C_out]`` float.
    bias: ``[C_out]`` (when ``use_bias``).
    widened: set by ``jaxpose.models.inference.store_in_compute_dtype`` on CPUs: the
      kernel holds ``dtype`` (bfloat16) values stored in float32, and the layer convolves in
      float32 -- what XLA:CPU does with a bfloat16 convolution anyway, without widening the
      kernel on every call.
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      kernel_size: int | Sequence[int],
      *,
      strides: int | Sequence[int] = 1,
      padding: int | Sequence[int] = 0,
      dilation: int | Sequence[int] = 1,
      groups: int = 1,
      use_bias: bool = True,
      ndim: int = 2,
      kernel_init: Initializer = torch_default_kernel_init,
      bias_init: Initializer | None = None,
      dtype: Dtype | None = None,
      param_dtype: Dtype = jnp.float32,
      precision: jax.lax.PrecisionLike = None,
      rngs: nnx.Rngs,
  ):
    if in_features % groups or out_features % groups:
      raise ValueError(f"channels {in_features}->{out_features} not divisible by groups={groups}")
    self.in_features = in_features
    self.out_features = out_features
    self.kernel_size = _tuple(kernel_size, ndim, "kernel_size")
    self.strides = _tuple(strides, ndim, "strides")
    self.padding = _tuple(padding, ndim, "padding")
    self.dilation = _tuple(dilation, ndim, "dilation")
    self.groups = groups
    self.ndim = ndim
    self.dtype = as_dtype(dtype)
    self.precision = precision
    self.widened = False
    kernel_shape = (*self.kernel_size, in_features // groups, out_features)
    self._is_pointwise = (all(k == 1 for k in self.kernel_size) and groups == 1
                          and not any(self.padding))
    self.kernel = nnx.Param(kernel_init(rngs.params(), kernel_shape, param_dtype))
    if use_bias:
      fan_in = int(np.prod(kernel_shape[:-1]))
      init = bias_init or _torch_default_bias_init(fan_in)
      self.bias = nnx.Param(init(rngs.params(), (out_features,), param_dtype))
    else:
      self.bias = None

  def __call__(self, x: Array) -> Array:
    """x: ``[B, *spatial, C_in]`` -> ``[B, *spatial', C_out]``."""
    if x.ndim != self.ndim + 2 or x.shape[-1] != self.in_features:
      raise ValueError(
          f"Conv expects input [B, {', '.join('?' * self.ndim)}, {self.in_features}], "
          f"got {tuple(x.shape)}")
    dtype = self.dtype or x.dtype
    calc, x = _widened_input(self, x, dtype)
    kernel = self.kernel[...].astype(calc)
    if self._is_pointwise:
      # A 1x1 convolution is a matmul over channels. Written as one, its gradients are
      # matmuls too (XLA:CPU computes 1x1 convolution weight gradients many times slower).
      x = x[(slice(None),) + tuple(slice(None, None, s) for s in self.strides)]
      y = pointwise_conv(x, kernel.reshape(kernel.shape[-2:]), self.precision)
    elif self.groups == 1 and all(d == 1 for d in self.dilation):
      y = conv(x, kernel, self.strides, self.padding, self.precision)
    else:
      y = jax.lax.conv_general_dilated(
          x,
          kernel,
          window_strides=self.strides,
          padding=[(p, p) for p in self.padding],
          rhs_dilation=self.dilation,
          dimension_numbers=_DIMENSION_NUMBERS[self.ndim],
          feature_group_count=self.groups,
          precision=self.precision,
      )
    y = y.astype(dtype)
    if self.bias is not None:
      y = y + self.bias[...].astype(dtype)
    return _tag(self, "output", y)

  def stride_by_width(self, x: Array) -> Array:
    """This 1-D kernel applied undilated, unpadded, with stride = its width.

    VideoPose3D's ``TemporalModelOptimized1f`` form of a dilated convolution: the windows
    do not overlap, so ``[B, T, C_in]`` -> ``[B, T // k, k * C_in]`` (a free reshape; frames
    past the last whole window are dropped, as the strided convolution drops them) times
    the ``[k * C_in, C_out]`` kernel is one matmul, with ``pointwise_conv``'s gradients
    (XLA:CPU runs a 1-D convolution and its gradients several times slower than the
    matmul).
    """
    if self.ndim != 1 or self.groups != 1 or x.ndim != 3 or x.shape[-1] != self.in_features:
      raise ValueError(f"stride_by_width needs a 1-D, ungrouped Conv and input [B, T, "
                       f"{self.in_features}]; got ndim={self.ndim}, groups={self.groups}, "
                       f"input {tuple(x.shape)}")
    (k,), (b, t, c) = self.kernel_size, x.shape
    if t < k:
      raise ValueError(f"stride_by_width: {t} frames are fewer than the kernel width {k}")
    dtype = self.dtype or x.dtype
    calc, x = _widened_input(self, x, dtype)
    windows = x[:, :t // k * k].reshape(b, t // k, k * c)
    kernel = self.kernel[...].astype(calc).reshape(k * c, self.out_features)
    y = pointwise_conv(windows, kernel, self.precision).astype(dtype)
    if self.bias is not None:
      y = y + self.bias[...].astype(dtype)
    return _tag(self, "output", y)

  @staticmethod
  def torch_to_jax(leaf: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    """PyTorch ``weight [O, I, *k]`` -> ``kernel [*k, I, O]``; ``bias`` unchanged."""
    if leaf == "weight":
      return "kernel", np.moveaxis(array, (0, 1), (-1, -2)) if array.ndim >= 3 else array
    if leaf == "bias":
      return "bias", array
    raise KeyError(leaf)

  @staticmethod
  def jax_to_torch(leaf: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    """Inverse of ``torch_to_jax``."""
    if leaf == "kernel":
      return "weight", np.moveaxis(array, (-1, -2), (0, 1))
    if leaf == "bias":
      return "bias", array
    raise KeyError(leaf)


def _phase_taps(size: int, kernel: int, stride: int, padding: int, output_padding: int
                ) -> tuple[int, int, list[tuple[slice, int, int]]]:
  """One spatial dim of a transposed convolution split into its ``stride`` output phases.

  Output ``o = stride * q + r`` of PyTorch's transposed convolution sums ``x[i] * w[t]`` over
  ``o = i * stride - padding + t``: phase ``r`` only meets the taps ``t = c, c + stride, ...``
  with ``c = (r + padding) % stride``, i.e. it is an ordinary stride-1 correlation of ``x``
  with those taps reversed.

  Returns:
    ``(n_out, q, phases)``: the output length, the outputs computed per phase
    (``ceil(n_out / stride)``; the surplus is cropped) and per phase ``(taps, pad_lo,
    pad_hi)``: a slice of the kernel axis (reversed taps; empty if the phase meets none) and
    the correlation's input padding (negative: crop).
  """
  n_out = (size - 1) * stride - 2 * padding + kernel + output_padding
  q = -(-n_out // stride)
  phases = []
  for r in range(stride):
    c, e = (r + padding) % stride, (r + padding) // stride
    m = len(range(c, kernel, stride))
    lo = e - m + 1  # input offset of the first (reversed) tap
    taps = slice(c + stride * (m - 1), c - 1 if c > 0 else None, -stride) if m else slice(0, 0)
    phases.append((taps, -lo, q + m - 1 - size + lo))
  return n_out, q, phases


def conv_transpose(x: Array, kernel: Array, *, strides: Sequence[int], padding: Sequence[int],
                   output_padding: Sequence[int], dilation: Sequence[int] | None = None,
                   precision: jax.lax.PrecisionLike = None) -> Array:
  """PyTorch's ``conv_transpose{1,2}d`` (groups=1), channels-last.

  Args:
    x: ``[B, *spatial, C_in]``.
    kernel: ``[*k, C_in, C_out]`` (PyTorch's ``[C_in, C_out, *k]`` transposed, not flipped).
    strides, padding, output_padding, dilation: per spatial dim, PyTorch's meaning.

  Returns:
    ``[B, *((n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1),
    C_out]`` in ``x``'s dtype.

  Undilated kernels are computed as ``prod(strides)`` ordinary stride-1 convolutions, one per
  output phase (``_phase_taps``), interleaved: the same sums as the input-dilated
  convolution, without its multiplications by inserted zeros, and with gradients that are
  ordinary convolutions too (XLA:CPU computes the kernel gradient of an input-dilated
  convolution with a naive loop: 80% of SimpleBaseline's CPU train step).
  """
  nd = x.ndim - 2
  dn = _DIMENSION_NUMBERS[nd]
  ksize = kernel.shape[:nd]
  dilation = tuple(dilation) if dilation is not None else (1,) * nd
  if any(d != 1 for d in dilation):
    flipped = jnp.flip(kernel, axis=tuple(range(nd)))
    pads = [(d * (k - 1) - p, d * (k - 1) - p + op)
            for k, p, op, d in zip(ksize, padding, output_padding, dilation)]
    return jax.lax.conv_general_dilated(x, flipped, (1,) * nd, pads, lhs_dilation=strides,
                                        rhs_dilation=dilation, dimension_numbers=dn,
                                        precision=precision)
  return _conv_transpose_phases(x, kernel, tuple(strides), tuple(padding), tuple(output_padding),
                                precision)


def _conv_transpose_phase_kernels(kernel: Array, strides: Sequence[int], padding: Sequence[int]
                                 ) -> list[Array | None]:
  """The kernel taps each output phase of ``conv_transpose`` correlates with, in phase order
  (``itertools.product`` over the spatial dims); None for a phase that meets no tap."""
  nd = len(strides)
  plans = [_phase_taps(1, kernel.shape[d], strides[d], padding[d], 0)[2] for d in range(nd)]
  kernels = []
  for phase in itertools.product(*plans):
    taps = kernel[tuple(t for t, _, _ in phase)]
    kernels.append(None if any(n == 0 for n in taps.shape[:nd]) else taps)
  return kernels


def _conv_transpose_phases_fwd_only(x, kernel, strides, padding, output_padding, precision):
  nd = x.ndim - 2
  plans = [_phase_taps(x.shape[1 + d], kernel.shape[d], strides[d], padding[d],
                       output_padding[d]) for d in range(nd)]
  q = tuple(plan[1] for plan in plans)
  phase_kernels = _conv_transpose_phase_kernels(kernel, strides, padding)
  outs = []
  for phase, taps in zip(itertools.product(*(plan[2] for plan in plans)), phase_kernels):
    if taps is None:
      outs.append(jnp.zeros((x.shape[0], *q, kernel.shape[-1]), x.dtype))
      continue
    crop = tuple(slice(max(-lo, 0), x.shape[1 + d] - max(-hi, 0))
                 for d, (_, lo, hi) in enumerate(phase))
    outs.append(jax.lax.conv_general_dilated(
        x[(slice(None), *crop)], taps, (1,) * nd, [(max(lo, 0), max(hi, 0)) for _, lo, hi in phase],
        dimension_numbers=_DIMENSION_NUMBERS[nd], precision=precision))
  # [B, *q, *strides, C] -> [B, q_0, s_0, q_1, s_1, ..., C] -> [B, *(q * s), C], cropped.
  y = jnp.stack(outs, axis=-2).reshape(x.shape[0], *q, *strides, kernel.shape[-1])
  perm = (0, *(a for d in range(nd) for a in (1 + d, 1 + nd + d)), 1 + 2 * nd)
  y = y.transpose(perm).reshape(x.shape[0], *(n * s for n, s in zip(q, strides)), -1)
  return y[(slice(None), *(slice(0, plan[0]) for plan in plans))]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_transpose_phases(x, kernel, strides, padding, output_padding, precision):
  return _conv_transpose_phases_fwd_only(x, kernel, strides, padding, output_padding, precision)


def _conv_transpose_phases_fwd(x, kernel, strides, padding, output_padding, precision):
  y = _conv_transpose_phases_fwd_only(x, kernel, strides, padding, output_padding, precision)
  return y, (x, kernel)


def _conv_transpose_phases_bwd(strides, padding, output_padding, precision, residuals, g):
  """Gradients through the stride-``s`` convolution the transposed one is the adjoint of,
  ``conv(g, W2)[i] = sum_t g[i * s - p + t] W2[t]`` (``W2``: the kernel with its channel axes
  swapped): <conv_transpose(x, W), g> = <x, conv(g, W2)>.

  * Kernel gradient: that convolution's, ``dW[t] = sum_i x[i] g[i * s - p + t]``: one kernel
    gradient instead of ``prod(s)`` phase gradients with output-sized windows (1.13x
    SimpleBaseline-50's CPU train step; its three-deconvolution head alone, forward +
    backward, batch 4: 1.15-1.19x).
  * Input gradient: that convolution itself where the kernel outsizes ``g``, else the
    phases' own (ordinary convolutions). Each phase's gradient needs its taps flipped and
    their channels swapped, a copy XLA:CPU makes slowly; the strided convolution needs one
    plain transpose of the kernel (SimpleBaseline-50's first deconvolution, 2048 -> 256
    channels at 8x6, batch 4: 36.5 -> 24.1 ms; the third, 256 channels at 32x24: 21.0 ms by
    phases, 22.2 strided).
  """
  x, kernel = residuals
  nd = x.ndim - 2
  pads = [(p, p - op) for p, op in zip(padding, output_padding)]
  crop = tuple(slice(0, g.shape[1 + d] + min(hi, 0)) for d, (_, hi) in enumerate(pads))
  g_cropped = g[(slice(None), *crop)]
  pads = [(lo, max(hi, 0)) for lo, hi in pads]
  adjoint, vjp_w = jax.vjp(lambda w2: jax.lax.conv_general_dilated(
      g_cropped, w2, strides, pads, dimension_numbers=_DIMENSION_NUMBERS[nd],
      precision=precision), jnp.swapaxes(kernel, -1, -2))
  (dw2,) = vjp_w(x)
  if kernel.size > g.size:
    dx = adjoint
  else:
    _, vjp_x = jax.vjp(lambda x: _conv_transpose_phases_fwd_only(
        x, kernel, strides, padding, output_padding, precision), x)
    (dx,) = vjp_x(g)
  dkernel = jnp.swapaxes(dw2, -1, -2)
  if jax.default_backend() == "cpu" and dkernel.size:
    # XLA lays dW2 out as [C_out, *k, C_in] (its kernel-gradient convolution's batch is g's
    # channel), so every reader of the kernel gradient (the optimizer's moment updates and
    # norms: three fusions) would transpose it with a stride of C_in * prod(k) floats.
    # Written once in the kernel's layout instead (a loop is a fusion boundary, see
    # ``materialize``): SimpleBaseline-50's CPU train step 1062 -> 1043 ms (same function
    # both ways in one process, 40 rounds; the first deconvolution's 8.4 M-float gradient).
    dkernel = _one_trip_loop(dkernel)
  return dx, dkernel


_conv_transpose_phases.defvjp(_conv_transpose_phases_fwd, _conv_transpose_phases_bwd)


class ConvTranspose(nnx.Module):
  """PyTorch ``ConvTranspose2d`` (groups=1) in channels-last layout.

  Output size per spatial dim: ``(n - 1) * stride - 2 * padding + dilation * (k - 1)
  + output_padding + 1``, exactly as PyTorch.

  Attributes:
    kernel: ``[*kernel_size, C_in, C_out]`` (PyTorch's ``[C_in, C_out, *k]`` transposed, not
      flipped; ``conv_transpose`` picks each output phase's taps at call time).
    bias: ``[C_out]`` (when ``use_bias``).
    widened: set by ``jaxpose.models.inference.store_in_compute_dtype`` on CPUs: the
      kernel holds ``dtype`` (bfloat16) values stored in float32, and the layer convolves in
      float32 -- what XLA:CPU does with a bfloat16 convolution anyway, without widening the
      kernel on every call.
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      kernel_size: int | Sequence[int],
      *,
      strides: int | Sequence[int] = 1,
      padding: int | Sequence[int] = 0,
      output_padding: int | Sequence[int] = 0,
      dilation: int | Sequence[int] = 1,
      use_bias: bool = True,
      ndim: int = 2,
      kernel_init: Initializer | None = None,
      bias_init: Initializer | None = None,
      dtype: Dtype | None = None,
      param_dtype: Dtype = jnp.float32,
      precision: jax.lax.PrecisionLike = None,
      rngs: nnx.Rngs,
  ):
    self.in_features = in_features
    self.out_features = out_features
    self.kernel_size = _tuple(kernel_size, ndim, "kernel_size")
    self.strides = _tuple(strides, ndim, "strides")
    self.padding = _tuple(padding, ndim, "padding")
    self.output_padding = _tuple(output_padding, ndim, "output_padding")
    self.dilation = _tuple(dilation, ndim, "dilation")
    self.ndim = ndim
    self.dtype = as_dtype(dtype)
    self.precision = precision
    self.widened = False
    kernel_shape = (*self.kernel_size, in_features, out_features)
    # PyTorch computes fan_in of a transposed conv from weight.shape[1] (= C_out).
    fan_in = out_features * int(np.prod(self.kernel_size))
    if kernel_init is None:
      bound = 1.0 / math.sqrt(fan_in)
      kernel_init = lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d, -bound, bound)
    self.kernel = nnx.Param(kernel_init(rngs.params(), kernel_shape, param_dtype))
    if use_bias:
      init = bias_init or _torch_default_bias_init(fan_in)
      self.bias = nnx.Param(init(rngs.params(), (out_features,), param_dtype))
    else:
      self.bias = None

  def __call__(self, x: Array) -> Array:
    """x: ``[B, *spatial, C_in]`` -> ``[B, *spatial * stride (approx.), C_out]``."""
    if x.ndim != self.ndim + 2 or x.shape[-1] != self.in_features:
      raise ValueError(
          f"ConvTranspose expects input [B, {', '.join('?' * self.ndim)}, {self.in_features}], "
          f"got {tuple(x.shape)}")
    dtype = self.dtype or x.dtype
    calc, x = _widened_input(self, x, dtype)
    y = conv_transpose(x, self.kernel[...].astype(calc), strides=self.strides,
                       padding=self.padding, output_padding=self.output_padding,
                       dilation=self.dilation, precision=self.precision).astype(dtype)
    if self.bias is not None:
      y = y + self.bias[...].astype(dtype)
    return _tag(self, "output", y)

  @staticmethod
  def torch_to_jax(leaf: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    """PyTorch ``weight [I, O, *k]`` -> ``kernel [*k, I, O]``; ``bias`` unchanged."""
    if leaf == "weight":
      return "kernel", np.moveaxis(array, (0, 1), (-2, -1))
    if leaf == "bias":
      return "bias", array
    raise KeyError(leaf)

  @staticmethod
  def jax_to_torch(leaf: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    """Inverse of ``torch_to_jax``."""
    if leaf == "kernel":
      return "weight", np.moveaxis(array, (-2, -1), (0, 1))
    if leaf == "bias":
      return "bias", array
    raise KeyError(leaf)


class Linear(nnx.Module):
  """PyTorch ``nn.Linear``: ``kernel [C_in, C_out]``, ``bias [C_out]``."""

  def __init__(
      self,
      in_features: int,
      out_features: int,
      *,
      use_bias: bool = True,
      kernel_init: Initializer = torch_default_kernel_init,
      bias_init: Initializer | None = None,
      dtype: Dtype | None = None,
      param_dtype: Dtype = jnp.float32,
      precision: jax.lax.PrecisionLike = None,
      rngs: nnx.Rngs,
  ):
    self.in_features = in_features
    self.out_features = out_features
    self.dtype = as_dtype(dtype)
    self.precision = precision
    self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features), param_dtype))
    if use_bias:
      init = bias_init or _torch_default_bias_init(in_features)
      self.bias = nnx.Param(init(rngs.params(), (out_features,), param_dtype))
    else:
      self.bias = None

  def __call__(self, x: Array) -> Array:
    """x: ``[..., C_in]`` -> ``[..., C_out]``."""
    if x.shape[-1] != self.in_features:
      raise ValueError(f"Linear expects input [..., {self.in_features}], got {tuple(x.shape)}")
    dtype = self.dtype or x.dtype
    y = dot_general(x.astype(dtype), self.kernel[...].astype(dtype),
                    (((x.ndim - 1,), (0,)), ((), ())), self.precision)
    if self.bias is not None:
      y = y + self.bias[...].astype(dtype)
    return _tag(self, "output", y)

  @staticmethod
  def torch_to_jax(leaf: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    """PyTorch ``weight [O, I]`` -> ``kernel [I, O]``; ``bias`` unchanged."""
    if leaf == "weight":
      return "kernel", array.T
    if leaf == "bias":
      return "bias", array
    raise KeyError(leaf)

  @staticmethod
  def jax_to_torch(leaf: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    """Inverse of ``torch_to_jax``."""
    if leaf == "kernel":
      return "weight", array.T
    if leaf == "bias":
      return "bias", array
    raise KeyError(leaf)


# ----------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------


def _normalize(x32: Array, mean: Array, rstd: Array, scale: Array, bias: Array,
               out_dtype: Dtype) -> Array:
  """``(x - mean) * rstd * scale + bias`` in ``x32``'s (at least float32) dtype."""
  return ((x32 - mean) * (rstd * scale.astype(x32.dtype)) + bias.astype(x32.dtype)
          ).astype(out_dtype)


def _batch_norm_forward(x, scale, bias, epsilon, out_dtype):
  """``(y, mean, biased variance, 1 / std)`` with batch statistics in at least float32."""
  x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x32, axis=axes)
  var = jnp.mean(jnp.square(x32 - mean), axis=axes)
  rstd = jax.lax.rsqrt(var + epsilon)
  return _normalize(x32, mean, rstd, scale, bias, out_dtype), mean, var, rstd


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x: Array, scale: Array, bias: Array, epsilon: float, out_dtype: Dtype
                     ) -> tuple[Array, Array, Array]:
  """Training-mode batch normalisation: ``(y, batch mean, biased batch variance)``.

  ``y = (x - mean) / sqrt(var + epsilon) * scale + bias`` over the last (channel) axis, the
  statistics in at least float32 over every other axis. The gradient is the closed form
  PyTorch's ``batch_norm_backward`` uses, ``dx = scale / std * (g - mean(g) - xhat *
  mean(g * xhat))``: two reductions and one elementwise pass, where differentiating the
  forward formula leaves XLA several more passes over the activation (measured: forward +
  backward of BatchNorm + ReLU at [4, 64, 48, 256] 7.9 -> 5.3 ms on the 2-core CPU). The
  statistics' cotangents (zero in a train step: they only feed the running averages) are
  added when they are not symbolically zero.
  """
  return _batch_norm_forward(x, scale, bias, epsilon, out_dtype)[:3]


def _batch_norm_train_fwd(x, scale, bias, epsilon, out_dtype):
  x, scale, bias = x.value, scale.value, bias.value  # symbolic_zeros: wrapped primals
  y, mean, var, rstd = _batch_norm_forward(x, scale, bias, epsilon, out_dtype)
  return (y, mean, var), (x, mean, rstd, scale, bias)


def _batch_norm_train_bwd(epsilon, out_dtype, residuals, cotangents):
  del epsilon, out_dtype
  x, mean, rstd, scale, bias = residuals
  g, g_mean, g_var = cotangents
  x32 = x.astype(mean.dtype)
  axes = tuple(range(x.ndim - 1))
  n = math.prod(x.shape[:-1])
  centred = x32 - mean
  if isinstance(g, jax.custom_derivatives.SymbolicZero):
    dx = jnp.zeros_like(x32)
    dscale = jnp.zeros_like(mean)
    dbias = jnp.zeros_like(mean)
  else:
    g = g.astype(x32.dtype)
    dbias = jnp.sum(g, axis=axes)
    dscale = jnp.sum(g * centred, axis=axes) * rstd
    dx = (rstd * scale.astype(x32.dtype)) * (g - dbias / n - centred * (rstd * dscale / n))
  if not isinstance(g_mean, jax.custom_derivatives.SymbolicZero):
    dx = dx + g_mean / n
  if not isinstance(g_var, jax.custom_derivatives.SymbolicZero):
    dx = dx + centred * (2.0 * g_var / n)
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd, symbolic_zeros=True)


class BatchNorm(nnx.Module):
  """PyTorch ``BatchNorm1d/2d`` over the last (channel) axis.

  Training mode normalises with the biased batch variance and updates the running
  variance with the unbiased one, as PyTorch does; ``momentum`` is Flax's convention
  (running = momentum * running + (1 - momentum) * batch; PyTorch's 0.1 is 0.9 here).
  Statistics are computed in at least float32 over every axis but the last; under ``jax.jit`` with
  a batch sharded over devices this is the global-batch statistic (synchronised BN).

  Attributes:
    scale, bias: ``[C]`` params (PyTorch ``weight``, ``bias``).
    mean, var: ``[C]`` batch statistics (PyTorch ``running_mean``, ``running_var``).
    folded: set by ``jaxpose.models.inference.fold_batch_norms`` once the convolution
      before this layer applies its eval-mode normalisation; the layer then only casts.
  """

  def __init__(
      self,
      num_features: int,
      *,
      momentum: float = 0.9,
      epsilon: float = 1e-5,
      use_running_average: bool = False,
      scale_init: float = 1.0,
      dtype: Dtype | None = None,
      param_dtype: Dtype = jnp.float32,
      rngs: nnx.Rngs | None = None,
  ):
    del rngs  # deterministic init; accepted for a uniform constructor signature.
    self.num_features = num_features
    self.momentum = momentum
    self.epsilon = epsilon
    self.use_running_average = use_running_average
    self.dtype = as_dtype(dtype)
    self.scale = nnx.Param(jnp.full((num_features,), scale_init, param_dtype))
    self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))
    self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
    self.folded = False

  def __call__(self, x: Array) -> Array:
    """x: ``[..., C]`` -> same shape, dtype ``self.dtype or x.dtype``."""
    if x.shape[-1] != self.num_features:
      raise ValueError(f"BatchNorm expects input [..., {self.num_features}], got {tuple(x.shape)}")
    out_dtype = self.dtype or x.dtype
    x = _tag(self, "input", x)
    if self.folded:
      if not self.use_running_average:
        raise ValueError("a BatchNorm folded into its convolution is for inference only "
                         "(use the unfolded model in training mode)")
      return x.astype(out_dtype)
    if not self.use_running_average:
      y, mean, var = batch_norm_train(x, self.scale[...], self.bias[...], self.epsilon, out_dtype)
      n = math.prod(x.shape[:-1])
      unbiased = var * (n / max(n - 1, 1))
      m = self.momentum
      self.mean.set_value(m * self.mean[...] + (1.0 - m) * mean)
      self.var.set_value(m * self.var[...] + (1.0 - m) * unbiased)
      return y
    return _normalize(x.astype(jnp.promote_types(x.dtype, jnp.float32)), self.mean[...],
                      jax.lax.rsqrt(self.var[...] + self.epsilon), self.scale[...],
                      self.bias[...], out_dtype)

  @staticmethod
  def torch_to_jax(leaf: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    names = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
    return names[leaf], array

  @staticmethod
  def jax_to_torch(leaf: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    """Inverse of ``torch_to_jax`` (``num_batches_tracked`` is added by the exporter)."""
    names = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
    return names[leaf], array


# ----------------------------------------------------------------------------------------
# Stateless ops
# ----------------------------------------------------------------------------------------


def _max_pool_windows(x: Array, kernel_size: int, stride: int, padding: int):
  """``[(i, j, window)]`` in PyTorch's scan order (row-major over the kernel): ``window
  [B, H_out, W_out, C]`` holds, for every output position, the input at kernel offset
  ``(i, j)`` (``-inf`` in the padding)."""
  b, h, w, c = x.shape
  ho = (h + 2 * padding - kernel_size) // stride + 1
  wo = (w + 2 * padding - kernel_size) // stride + 1
  padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)),
                   constant_values=-jnp.inf)
  return [(i, j, jax.lax.slice(padded, (0, i, j, 0),
                               (b, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c),
                               (1, stride, stride, 1)))
          for i in range(kernel_size) for j in range(kernel_size)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: Array, kernel_size: int, stride: int, padding: int) -> Array:
  """PyTorch ``MaxPool2d(kernel_size, stride, padding)`` on ``[B, H, W, C]`` (pads with -inf).

  The maximum of the ``kernel_size**2`` strided windows, one elementwise pass; the gradient
  goes to the first maximum of each window in PyTorch's scan order, as its
  ``max_pool2d_with_indices_backward`` sends it. XLA:CPU's own reduce-window gradient
  (select-and-scatter) was the stem's bottleneck: SimpleBaseline's 3x3/2 pool on [4, 128,
  96, 64], forward + backward 64 -> 9.6 ms.
  """
  if not 0 <= 2 * padding <= kernel_size:
    raise ValueError(f"max_pool: padding {padding} must be at most half the kernel "
                     f"{kernel_size} (PyTorch's rule)")
  windows = _max_pool_windows(x, kernel_size, stride, padding)
  out = windows[0][2]
  for _, _, window in windows[1:]:
    out = jnp.maximum(out, window)
  return out


def _max_pool_fwd(x, kernel_size, stride, padding):
  y = max_pool(x, kernel_size, stride, padding)
  return y, (x, y)


def _max_pool_bwd(kernel_size, stride, padding, residuals, g):
  x, y = residuals
  windows = _max_pool_windows(x, kernel_size, stride, padding)
  # The first window position holding the maximum (later ones overwritten by earlier).
  first = jnp.full(y.shape, len(windows), jnp.int32)
  for n in reversed(range(len(windows))):
    first = jnp.where(windows[n][2] == y, n, first)
  h, w = x.shape[1] + 2 * padding, x.shape[2] + 2 * padding
  ho, wo = y.shape[1:3]
  dx = None
  zero = jnp.zeros((), g.dtype)
  for n, (i, j, _) in enumerate(windows):
    # Back to input positions: every stride-th row/column from offset (i, j).
    part = jax.lax.pad(jnp.where(first == n, g, zero), zero, (
        (0, 0, 0), (i, h - i - stride * (ho - 1) - 1, stride - 1),
        (j, w - j - stride * (wo - 1) - 1, stride - 1), (0, 0, 0)))
    dx = part if dx is None else dx + part
  return (dx[:, padding:h - padding, padding:w - padding],)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def upsample_nearest(x: Array, factor: int) -> Array:
  """PyTorch ``Upsample(scale_factor=factor, mode='nearest')`` on ``[B, H, W, C]``."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def _align_corners_axis(x: Array, axis: int, size: int) -> Array:
  n = x.shape[axis]
  if n == size:
    return x
  if size == 1 or n == 1:
    pos = jnp.zeros((size,), jnp.float32)
  else:
    pos = jnp.arange(size, dtype=jnp.float32) * ((n - 1) / (size - 1))
  lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, n - 1)
  hi = jnp.minimum(lo + 1, n - 1)
  frac = (pos - lo.astype(jnp.float32)).astype(x.dtype)
  shape = [1] * x.ndim
  shape[axis] = size
  frac = frac.reshape(shape)
  a = jnp.take(x, lo, axis=axis)
  b = jnp.take(x, hi, axis=axis)
  return a + (b - a) * frac


def resize_bilinear_align_corners(x: Array, size: tuple[int, int]) -> Array:
  """PyTorch ``F.interpolate(mode='bilinear', align_corners=True)`` on ``[B, H, W, C]``.

  ``size`` is ``(H_out, W_out)``. Source position of output pixel i is
  ``i * (n_in - 1) / (n_out - 1)`` (corners aligned), which ``jax.image.resize`` does not do.
  """
  x = _align_corners_axis(x, 1, int(size[0]))
  return _align_corners_axis(x, 2, int(size[1]))


def _one_trip_loop(x: Array) -> Array:
  """``x``, returned by a while loop XLA can neither unroll nor see through.

  The trip count depends on ``x`` (1, or 2 when its first element is infinite), so it is
  unknown at compile time; the body keeps ``y`` (``i < trips`` holds inside the loop) with
  a select XLA cannot fold, so JAX does not forward the carry past the loop either.
  """
  first = x.reshape(-1)[0]
  trips = jnp.where(first == first + 1, 2, 1)

  def body(carry):
    i, y = carry
    return i + 1, jnp.where(i < trips, y, jnp.zeros_like(y))

  return jax.lax.while_loop(lambda c: c[0] < trips, body, (jnp.int32(0), x))[1]


@jax.custom_vjp
def _materialized(x: Array) -> Array:
  return x  # not differentiated (inference): nothing is recomputed, nothing to do


def _materialized_fwd(x):
  return _one_trip_loop(x), None


def _materialized_bwd(_, g):
  return (_one_trip_loop(g),)


_materialized.defvjp(_materialized_fwd, _materialized_bwd)


def materialize(x: Array) -> Array:
  """Identity that makes XLA:CPU compute ``x`` (and its gradient) once, into memory.

  XLA:CPU fuses a cheap elementwise producer into *every* consumer, duplicating it. A
  residual network's block output ``relu(bn(conv(.)) + shortcut)`` is such a producer,
  and so is its shortcut, the previous block's output: the whole chain of BatchNorm +
  add + ReLU back to the stage's start is recomputed inside every fusion that reads a
  block output -- in the backward pass each convolution's kernel gradient transposes its
  input through such a fusion. The cost grows with the square of the depth (HRNet-w32:
  43% of a train step's op time). A while loop is a fusion boundary, so ``x`` is written
  once and read by its consumers; ``lax.optimization_barrier`` is not (XLA:CPU expands it
  before fusion). The gradient passes through a loop too. Values and gradients are
  unchanged; measured: HRNet-w32's CPU train step 1.8x faster and its compilation 2x.

  The loop is only built where a gradient is taken (the forward rule of a custom VJP): a
  forward pass alone (inference) keeps its fusions. Only on the CPU backend (a while loop
  costs a device-to-host synchronisation on a GPU); ``x`` unchanged elsewhere and for
  empty arrays.
  """
  if x.size == 0 or jax.default_backend() != "cpu":
    return x
  return _materialized(x)


def at_least_float32(x: Array) -> Array:
  """``x`` in float32, or kept in float64 (model outputs and losses; bf16 compute -> fp32)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def check_image_input(x: Array, channels: int, model: str) -> None:
  """Raises a clear error unless ``x`` is ``[B, H, W, channels]``."""
  if x.ndim != 4 or x.shape[-1] != channels:
    raise ValueError(
        f"{model} expects images [B, H, W, {channels}] (NHWC, normalised float), got shape "
        f"{tuple(x.shape)}"
        + (" -- this looks like NCHW; transpose with x.transpose(0, 2, 3, 1)"
           if x.ndim == 4 and x.shape[1] == channels and x.shape[-1] != channels else ""))


class ReLU(nnx.Module):
  """Stateless ``nn.ReLU`` so module lists can mirror PyTorch ``Sequential`` indices."""

  def __call__(self, x: Array) -> Array:
    return jax.nn.relu(x)
