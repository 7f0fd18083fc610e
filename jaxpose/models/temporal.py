"""Temporal convolution stack shared by the lifters (VideoPose3D, Pose3D-RIE).

VideoPose3D's ``TemporalModel`` (facebookresearch/VideoPose3D ``common/model.py``) and
RIE's per-group ``TemporalBlock`` (paTRICK-swk/Pose3D-RIE ``common/model.py``) are the
same stack: an expanding convolution of width ``w_0``, then for every further filter
width ``w_i`` a residual block (a ``w_i``-wide convolution dilated by ``d_i = w_0 * ... *
w_{i-1}`` and a 1x1 convolution, each followed by BatchNorm, an activation and dropout),
and a 1x1 ``shrink`` convolution with bias. The residual is the block input cropped to
the block's output frames (symmetric, or the last frames when causal), added without an
activation after the sum. The receptive field is ``w_0 * w_1 * ...`` frames.

``TemporalConvNet.dilated`` is ``TemporalModel``'s forward; ``TemporalConvNet.strided`` is
``TemporalModelOptimized1f``'s (strided instead of dilated convolutions, exactly one
receptive field in, one frame out), which shares the weights. The ``dense`` ablation
replaces each dilated kernel by an undilated one of width ``(w_i - 1) * d_i + 1``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from flax import nnx

from jaxpose.models import layers

Array = jax.Array


def validate_filter_widths(filter_widths: Sequence[int], model: str) -> tuple[int, ...]:
  """Checks the widths are a non-empty sequence of odd positive ints (as the originals)."""
  widths = tuple(int(w) for w in filter_widths)
  if not widths or any(w < 1 or w % 2 == 0 for w in widths):
    raise ValueError(f"{model}: filter_widths must be odd positive integers, got {widths}")
  return widths


def dilations(filter_widths: Sequence[int]) -> tuple[int, ...]:
  """Dilation of each block's first convolution: ``d_i = w_0 * ... * w_{i-1}`` (i >= 1)."""
  return tuple(math.prod(filter_widths[:i]) for i in range(1, len(filter_widths)))


def temporal_pads(filter_widths: Sequence[int]) -> tuple[int, ...]:
  """Frames each layer removes per side: ``w_0 // 2``, then ``(w_i - 1) * d_i // 2``."""
  return (filter_widths[0] // 2,) + tuple(
      (w - 1) * d // 2 for w, d in zip(filter_widths[1:], dilations(filter_widths)))


def receptive_field(filter_widths: Sequence[int]) -> int:
  """Input frames per output frame: ``1 + 2 * sum(pads)`` = ``prod(filter_widths)``."""
  return 1 + 2 * sum(temporal_pads(filter_widths))


def apply_dropout(drop: nnx.Dropout, x: Array, rngs: nnx.Rngs | None, model: str) -> Array:
  """``drop(x)``; a clear error when a model in training mode is called without ``rngs``."""
  if rngs is None and not drop.deterministic and drop.rate > 0:
    raise ValueError(
        f"{model} is in training mode with dropout {drop.rate}: pass "
        "rngs=nnx.Rngs(dropout=key) to the call, or call model.eval() for inference")
  return drop(x, rngs=rngs)


class TemporalConvNet(nnx.Module):
  """VideoPose3D's temporal convolution stack on flattened channels.

  ``[B, T, in_channels] -> [B, T - receptive_field + 1, out_channels]``. VideoPose3D uses
  it with ReLU and ``out_channels = 3 * J_out``; RIE's ``TemporalBlock`` with LeakyReLU(0.2)
  and ``out_channels`` = latent feature dimension.

  Attributes:
    expand_conv: ``w_0``-wide convolution ``in_channels -> channels`` (no bias).
    expand_bn: its BatchNorm.
    layers_conv: per block ``i >= 1``: ``[2i-2]`` the ``w_i``-wide dilated (or dense)
      convolution, ``[2i-1]`` the 1x1 convolution (no biases).
    layers_bn: the BatchNorm after each of ``layers_conv``.
    shrink: 1x1 convolution ``channels -> out_channels`` with bias.
  """

  def __init__(self, in_channels: int, out_channels: int, filter_widths: Sequence[int], *,
               causal: bool = False, dropout: float = 0.25, channels: int = 1024,
               dense: bool = False, negative_slope: float = 0.0, dtype=None,
               rngs: nnx.Rngs, name: str = "TemporalConvNet"):
    widths = validate_filter_widths(filter_widths, name)
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout}")
    if min(in_channels, out_channels, channels) < 1:
      raise ValueError(f"{name}: channel counts must be positive, got in={in_channels}, "
                       f"out={out_channels}, channels={channels}")
    self.model_name = name
    self.in_channels = in_channels
    self.filter_widths = widths
    self.causal = causal
    self.dense = dense
    self.negative_slope = negative_slope
    self.pads = temporal_pads(widths)
    # First frame of each block's output within its input (the residual crop).
    self.residual_starts = tuple(
        2 * p if causal else p for p in self.pads[1:])
    conv = dict(ndim=1, use_bias=False, dtype=dtype, rngs=rngs)
    self.expand_conv = layers.Conv(in_channels, channels, widths[0], **conv)
    self.expand_bn = layers.BatchNorm(channels, dtype=dtype)
    convs, bns = [], []
    for w, d, p in zip(widths[1:], dilations(widths), self.pads[1:]):
      if dense:
        convs.append(layers.Conv(channels, channels, 2 * p + 1, **conv))
      else:
        convs.append(layers.Conv(channels, channels, w, dilation=d, **conv))
      bns.append(layers.BatchNorm(channels, dtype=dtype))
      convs.append(layers.Conv(channels, channels, 1, **conv))
      bns.append(layers.BatchNorm(channels, dtype=dtype))
    self.layers_conv = nnx.List(convs)
    self.layers_bn = nnx.List(bns)
    self.shrink = layers.Conv(channels, out_channels, 1, ndim=1, dtype=dtype, rngs=rngs)
    self.drop = nnx.Dropout(dropout)

  @property
  def receptive_field(self) -> int:
    """Input frames per output frame (``prod(filter_widths)``)."""
    return 1 + 2 * sum(self.pads)

  @property
  def total_causal_shift(self) -> int:
    """Frames by which a causal model's output lags the window centre.

    ``(receptive_field - 1) // 2`` when causal, else 0: pad the input sequence with
    ``pad + shift`` frames on the left and ``pad - shift`` on the right to get one output
    per input frame (``run.py``'s ``causal_shift = pad``). ``TemporalModel.
    total_causal_shift()`` of the original multiplies the already dilated shifts by the
    dilation again and over-counts; ``run.py`` never calls it.
    """
    return (self.receptive_field - 1) // 2 if self.causal else 0

  def _act(self, x: Array) -> Array:
    if self.negative_slope:
      return jax.nn.leaky_relu(x, self.negative_slope)
    return jax.nn.relu(x)

  def _unit(self, conv_out: Array, bn: layers.BatchNorm, rngs) -> Array:
    return apply_dropout(self.drop, self._act(bn(conv_out)), rngs, self.model_name)

  def check_frames(self, x: Array, *, exact: bool) -> None:
    """Raises unless ``x`` is ``[B, T, in_channels]`` with enough (or exactly RF) frames."""
    rf = self.receptive_field
    if x.ndim != 3 or x.shape[-1] != self.in_channels:
      raise ValueError(f"{self.model_name} expects [B, T, {self.in_channels}], got {x.shape}")
    if (exact and x.shape[1] != rf) or x.shape[1] < rf:
      need = f"exactly {rf}" if exact else f"at least {rf}"
      raise ValueError(
          f"{self.model_name}: needs {need} frames (the receptive field of filter widths "
          f"{self.filter_widths}), got T={x.shape[1]} in input of shape {tuple(x.shape)}")

  def dilated(self, x: Array, rngs: nnx.Rngs | None = None) -> Array:
    """``TemporalModel`` forward: ``[B, T, C_in] -> [B, T - RF + 1, out_channels]``."""
    self.check_frames(x, exact=False)
    x = self._unit(self.expand_conv(x), self.expand_bn, rngs)
    for i, start in enumerate(self.residual_starts):
      res = x[:, start:x.shape[1] - 2 * self.pads[i + 1] + start]
      x = self._unit(self.layers_conv[2 * i](x), self.layers_bn[2 * i], rngs)
      x = res + self._unit(self.layers_conv[2 * i + 1](x), self.layers_bn[2 * i + 1], rngs)
    return self.shrink(x)

  def strided(self, x: Array, rngs: nnx.Rngs | None = None) -> Array:
    """``TemporalModelOptimized1f`` forward: ``[B, RF, C_in] -> [B, 1, out_channels]``.

    Each dilated convolution becomes a convolution with stride = width, computing only
    the frames the single output needs. Equal to ``dilated`` on the same frames. A dense
    stack has no strided form and runs ``dilated``.
    """
    self.check_frames(x, exact=True)
    if self.dense:
      return self.dilated(x, rngs)
    widths = self.filter_widths
    x = self._unit(self.expand_conv.stride_by_width(x), self.expand_bn, rngs)
    for i, w in enumerate(widths[1:]):
      # Within each group of w frames: the centre one, or the last one when causal.
      start = (w // 2 if self.causal else 0) + w // 2
      res = x[:, start::w]
      x = self._unit(self.layers_conv[2 * i].stride_by_width(x), self.layers_bn[2 * i], rngs)
      x = res + self._unit(self.layers_conv[2 * i + 1](x), self.layers_bn[2 * i + 1], rngs)
    return self.shrink(x)

  def batch_norms(self) -> list[layers.BatchNorm]:
    return [self.expand_bn, *self.layers_bn]

  def set_bn_momentum(self, momentum: float) -> None:
    """The original's ``set_bn_momentum`` (PyTorch convention: new-statistic weight).

    VideoPose3D and RIE decay it from 0.1 to 0.001 over training. It is a static module
    attribute: a jitted step recompiles when it changes (once per epoch in the originals).
    """
    for bn in self.batch_norms():
      bn.momentum = 1.0 - float(momentum)
