"""Temporal 2D -> 3D lifters: VideoPose3D and Pose3D-RIE.

**VideoPose3D** (Pavllo et al., CVPR'19; facebookresearch/VideoPose3D ``common/model.py``)
lifts a sequence of 2D keypoints to 3D with a stack of temporal convolutions. The input
``[B, T, J_in, F]`` is flattened to ``J_in * F`` channels (channel = ``F * joint +
coordinate``); an expanding convolution of width ``w_0`` is followed, for every further
filter width ``w_i``, by a residual block: a ``w_i``-wide convolution dilated by ``d_i =
w_0 * ... * w_{i-1}`` and a 1x1 convolution, each followed by BatchNorm, ReLU and dropout.
The residual is the input cropped to the block's output frames (symmetric, or the last
frames when causal) and is added *without* a ReLU after the sum. A 1x1 convolution with
bias maps to ``J_out * 3``. The receptive field is ``w_0 * w_1 * ...`` frames and every
output frame ``t`` uses input frames ``t .. t + receptive_field - 1``.

``TemporalModelOptimized1f`` of the original (strided instead of dilated convolutions,
exactly ``receptive_field`` input frames -> one output frame, used for training) shares
the weights; here it is the method ``VideoPose3D.single_frame``. The ``dense`` ablation
replaces each dilated kernel by an undilated one of width ``(w_i - 1) * d_i + 1``.

**RIE** (Shan et al., ACM MM'21; paTRICK-swk/Pose3D-RIE ``common/model.py``) splits the 17
Human3.6M joints into five groups (torso, left/right arm, left/right leg). Each group is
encoded by its own temporal convolution stack (``TemporalBlock``, LeakyReLU 0.2) from
three encodings of its joints: the coordinates, the coordinates minus the root joint of
the same frame (positional) and minus the same joint in the centre frame (temporal). A
fully-connected ``GlobalInfo`` block encodes the whole centre-frame pose. From stage 2 on,
one ``FuseBlocks[g]`` per group mixes the other four groups' features. Per-group
``Integration_*`` blocks decode ``[local, (fused,) global]`` into the group's 3D joints,
reassembled in the original joint order.

Module names mirror the PyTorch ones (``expand_conv``, ``layers_conv/3``,
``LocalLayer_Torso/shrink``, ``FuseBlocks/2/layers/0/w1``), so checkpoints convert
without renames.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpose.models import layers
from jaxpose.models.base import ModelConfig

Array = jax.Array

# ----------------------------------------------------------------------------------------
# Temporal convolution stack (VideoPose3D TemporalModel / RIE TemporalBlock)
# ----------------------------------------------------------------------------------------


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


def _dropout(drop: nnx.Dropout, x: Array, rngs: nnx.Rngs | None, model: str) -> Array:
  if rngs is None and not drop.deterministic and drop.rate > 0:
    raise ValueError(
        f"{model} is in training mode with dropout {drop.rate}: pass "
        "rngs=nnx.Rngs(dropout=key) to the call, or call model.eval() for inference")
  return drop(x, rngs=rngs)


def _conv1d_strided(conv: layers.Conv, x: Array, stride: int) -> Array:
  """``conv``'s kernel applied undilated with ``stride`` (TemporalModelOptimized1f)."""
  dtype = conv.dtype or x.dtype
  y = jax.lax.conv_general_dilated(
      x.astype(dtype), conv.kernel[...].astype(dtype), window_strides=(stride,),
      padding=[(0, 0)], dimension_numbers=("NWC", "WIO", "NWC"), precision=conv.precision)
  if conv.bias is not None:
    y = y + conv.bias[...].astype(dtype)
  return y


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
    return _dropout(self.drop, self._act(bn(conv_out)), rngs, self.model_name)

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
    x = self._unit(_conv1d_strided(self.expand_conv, x, widths[0]), self.expand_bn, rngs)
    for i, w in enumerate(widths[1:]):
      # Within each group of w frames: the centre one, or the last one when causal.
      start = (w // 2 if self.causal else 0) + w // 2
      res = x[:, start::w]
      x = self._unit(_conv1d_strided(self.layers_conv[2 * i], x, w), self.layers_bn[2 * i], rngs)
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


# ----------------------------------------------------------------------------------------
# VideoPose3D
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VideoPose3DConfig(ModelConfig):
  """VideoPose3D ``TemporalModel`` hyper-parameters (``run.py`` arguments in brackets).

  Attributes:
    num_joints_in: 2D joints per frame (17 Human3.6M, 15 HumanEva).
    in_features: values per input joint (2 for x, y). Checkpoints only store
      ``num_joints_in * in_features``; the converter assumes 2.
    num_joints_out: 3D joints out (1 for the trajectory model ``model_traj``).
    filter_widths: odd temporal widths (``-arc``); receptive field = their product.
    causal: causal convolutions (``--causal``): output frame t sees only frames up to
      t + receptive_field - 1 of the input, i.e. none after the predicted frame once the
      input is padded by ``total_causal_shift``. Not visible in the weights.
    dropout: dropout probability (``-drop``, 0.25). Not visible in the weights.
    channels: convolution channels (``-ch``, 1024).
    dense: undilated wide kernels (``--dense`` ablation), visible in kernel sizes.
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.

  The original's ``TemporalModelOptimized1f`` (used when ``stride == 1`` and not dense)
  changes the computation, not the weights: here it is ``VideoPose3D.single_frame``.
  """
  name: ClassVar[str] = "videopose3d"
  num_joints_in: int = 17
  in_features: int = 2
  num_joints_out: int = 17
  filter_widths: tuple[int, ...] = (3, 3, 3, 3, 3)
  causal: bool = False
  dropout: float = 0.25
  channels: int = 1024
  dense: bool = False
  dtype: str = "float32"

  @classmethod
  def h36m_243f(cls, **kw) -> "VideoPose3DConfig":
    """``pretrained_h36m_cpn.bin``: 17 -> 17 joints, widths 3,3,3,3,3 (243 frames)."""
    return cls(**{"filter_widths": (3, 3, 3, 3, 3), **kw})

  @classmethod
  def h36m_81f(cls, **kw) -> "VideoPose3DConfig":
    return cls(**{"filter_widths": (3, 3, 3, 3), **kw})

  @classmethod
  def h36m_27f(cls, **kw) -> "VideoPose3DConfig":
    return cls(**{"filter_widths": (3, 3, 3), **kw})

  @classmethod
  def humaneva15(cls, **kw) -> "VideoPose3DConfig":
    """``pretrained_humaneva15_detectron.bin``: 15 joints, widths 3,3,3 (27 frames)."""
    return cls(**{"num_joints_in": 15, "num_joints_out": 15, "filter_widths": (3, 3, 3), **kw})

  @classmethod
  def trajectory(cls, **kw) -> "VideoPose3DConfig":
    """``model_traj`` of semi-supervised training: one output 'joint' (the root position)."""
    return cls(**{"num_joints_out": 1, **kw})

  @classmethod
  def tiny(cls, **kw) -> "VideoPose3DConfig":
    """Widths 3,3 (9 frames), 32 channels, 5 joints: for tests and CPU experiments."""
    return cls(**{"num_joints_in": 5, "num_joints_out": 5, "filter_widths": (3, 3),
                  "channels": 32, **kw})


class VideoPose3D(TemporalConvNet):
  """VideoPose3D ``TemporalModel`` (+ ``TemporalModelOptimized1f`` as ``single_frame``).

  Train mode (the default after construction, or ``model.train()``) uses batch statistics
  and dropout: pass ``rngs=nnx.Rngs(dropout=key)``. ``model.eval()`` for inference.
  """
  Config = VideoPose3DConfig

  def __init__(self, config: VideoPose3DConfig, *, rngs: nnx.Rngs):
    if min(config.num_joints_in, config.in_features, config.num_joints_out) < 1:
      raise ValueError(f"VideoPose3D: joint and feature counts must be positive: {config}")
    self.config = config
    super().__init__(
        config.num_joints_in * config.in_features, config.num_joints_out * 3,
        config.filter_widths, causal=config.causal, dropout=config.dropout,
        channels=config.channels, dense=config.dense,
        dtype=layers.as_dtype(config.dtype), rngs=rngs, name="VideoPose3D")

  def _flatten(self, keypoints: Array) -> Array:
    c = self.config
    if keypoints.ndim != 4 or keypoints.shape[2:] != (c.num_joints_in, c.in_features):
      raise ValueError(
          f"VideoPose3D expects 2D keypoints [B, T, {c.num_joints_in}, {c.in_features}], got "
          f"shape {tuple(keypoints.shape)}")
    b, t = keypoints.shape[:2]
    dtype = layers.as_dtype(c.dtype)
    return keypoints.reshape(b, t, -1).astype(dtype)

  def _poses(self, y: Array) -> dict[str, Array]:
    b, t = y.shape[:2]
    return {"poses": y.reshape(b, t, self.config.num_joints_out, 3).astype(jnp.float32)}

  def __call__(self, keypoints: Array, *, rngs: nnx.Rngs | None = None) -> dict[str, Array]:
    """Dilated forward over a whole sequence.

    Args:
      keypoints: ``[B, T, J_in, in_features]`` (normalised screen coordinates), ``T >=
        receptive_field``.
      rngs: dropout randomness (``nnx.Rngs(dropout=key)``), needed in train mode only.

    Returns:
      ``{"poses": [B, T - receptive_field + 1, J_out, 3] float32}``; output frame ``t`` is
      computed from input frames ``t .. t + receptive_field - 1`` (root-relative joints, or
      the root trajectory for the trajectory model).
    """
    return self._poses(self.dilated(self._flatten(keypoints), rngs))

  def single_frame(self, keypoints: Array, *, rngs: nnx.Rngs | None = None
                   ) -> dict[str, Array]:
    """``TemporalModelOptimized1f``: strided convolutions on one receptive field.

    Args:
      keypoints: ``[B, receptive_field, J_in, in_features]``.
      rngs: dropout randomness, needed in train mode only.

    Returns:
      ``{"poses": [B, 1, J_out, 3] float32}``, equal to ``self(keypoints)`` (the original
      trains with this form when ``stride == 1`` and not dense).
    """
    return self._poses(self.strided(self._flatten(keypoints), rngs))


# ----------------------------------------------------------------------------------------
# RIE
# ----------------------------------------------------------------------------------------

RIE_NUM_JOINTS = 17
RIE_IN_FEATURES = 2
# (module suffix, Human3.6M joints) in the order of the original's feature tensor; the
# torso lists the root first. Each group's output holds its joints in this order.
RIE_GROUPS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("Torso", (0, 7, 8, 9, 10)),
    ("LArm", (14, 15, 16)),
    ("RArm", (11, 12, 13)),
    ("LLeg", (1, 2, 3)),
    ("RLeg", (4, 5, 6)),
)
_RIE_GROUP_ORDER = np.concatenate([j for _, j in RIE_GROUPS])
_RIE_UNGROUP = np.argsort(_RIE_GROUP_ORDER)  # group-concatenated joints -> joint order
RIE_GLOBAL_BLOCKS = 2  # residual linear blocks of GlobalInfo (FuseBlocks/Integration: 1)


class ResidualLinear(nnx.Module):
  """RIE's ``Linear``: ``x + drop(act(bn2(w2(drop(act(bn1(w1(x))))))))``."""

  def __init__(self, size: int, dropout: float, *, dtype=None, rngs: nnx.Rngs):
    self.w1 = layers.Linear(size, size, dtype=dtype, rngs=rngs)
    self.batch_norm1 = layers.BatchNorm(size, dtype=dtype)
    self.w2 = layers.Linear(size, size, dtype=dtype, rngs=rngs)
    self.batch_norm2 = layers.BatchNorm(size, dtype=dtype)
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x: Array, rngs: nnx.Rngs | None = None) -> Array:
    y = _dropout(self.dropout, jax.nn.leaky_relu(self.batch_norm1(self.w1(x)), 0.2), rngs, "RIE")
    y = _dropout(self.dropout, jax.nn.leaky_relu(self.batch_norm2(self.w2(y)), 0.2), rngs, "RIE")
    return x + y


class FCBlock(nnx.Module):
  """RIE's ``FCBlock``: fc_1 + BN + LeakyReLU + dropout, residual blocks, fc_2."""

  def __init__(self, in_features: int, out_features: int, size: int, num_blocks: int,
               dropout: float, *, dtype=None, rngs: nnx.Rngs):
    self.fc_1 = layers.Linear(in_features, size, dtype=dtype, rngs=rngs)
    self.bn_1 = layers.BatchNorm(size, dtype=dtype)
    self.layers = nnx.List([ResidualLinear(size, dropout, dtype=dtype, rngs=rngs)
                            for _ in range(num_blocks)])
    self.fc_2 = layers.Linear(size, out_features, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x: Array, rngs: nnx.Rngs | None = None) -> Array:
    """``[N, in_features] -> [N, out_features]``."""
    x = _dropout(self.dropout, jax.nn.leaky_relu(self.bn_1(self.fc_1(x)), 0.2), rngs, "RIE")
    for block in self.layers:
      x = block(x, rngs)
    return self.fc_2(x)


@dataclasses.dataclass(frozen=True)
class RIEConfig(ModelConfig):
  """Pose3D-RIE ``RIEModel`` hyper-parameters (``run.py`` arguments in brackets).

  RIE is hard-wired to 17 Human3.6M joints with (x, y) inputs and its five joint groups.

  Attributes:
    filter_widths: odd temporal widths of every group encoder (``-arc``, 3,3,3,3,3).
    causal: causal temporal convolutions (``--causal``). Not visible in the weights.
      (The original crashes with causal + Optimize1f because its strided residual crop
      reuses the dilated shifts; here the strided path crops consistently.)
    dropout: dropout of the temporal encoders (``-drop``, 0.2). Not in the weights.
    latent_features: dimension of local, global and fused features (``-lfd``).
    channels: temporal convolution channels (``-ch``, 256).
    dense: undilated wide kernels (``--dense``); requires ``optimize_1f=False``.
    optimize_1f: run the encoders with strided convolutions (``Optimize1f=True``, the
      original's evaluation model) instead of dilated ones. The weights are the same and,
      on the one receptive field RIE accepts, so is the result.
    stage: multi-stage optimisation stage (``--stage``). Stage 1 has no ``FuseBlocks``
      and decodes ``[local, global]``; stages 2 and 3 share one architecture (with
      ``FuseBlocks``, decoding ``[local, fused, global]``) and differ only in what trains
      (``rie_trainable``). Stage 2 and 3 checkpoints are indistinguishable; the converter
      reads them as stage 3.
    linear_size: width of the fully-connected blocks (1024, fixed in the original).
    linear_dropout: dropout of the fully-connected blocks (0.25, fixed in the original).
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.
  """
  name: ClassVar[str] = "rie"
  filter_widths: tuple[int, ...] = (3, 3, 3, 3, 3)
  causal: bool = False
  dropout: float = 0.2
  latent_features: int = 256
  channels: int = 256
  dense: bool = False
  optimize_1f: bool = True
  stage: int = 3
  linear_size: int = 1024
  linear_dropout: float = 0.25
  dtype: str = "float32"

  @classmethod
  def gt(cls, **kw) -> "RIEConfig":
    """``gt_pretrained.bin`` (ground-truth 2D keypoints): stage 3, latent dim 256."""
    return cls(**{"latent_features": 256, **kw})

  @classmethod
  def cpn(cls, **kw) -> "RIEConfig":
    """``cpn_pretrained.bin`` (CPN detections): stage 3, latent dim 512."""
    return cls(**{"latent_features": 512, **kw})

  @classmethod
  def tiny(cls, **kw) -> "RIEConfig":
    """Widths 3,3 (9 frames), 16 channels, latent 8, FC width 32: for tests."""
    return cls(**{"filter_widths": (3, 3), "channels": 16, "latent_features": 8,
                  "linear_size": 32, **kw})


# What each stage trains (README of Pose3D-RIE, run.py ``--pretrain`` / ``--finetune``).
RIE_ENCODERS = tuple(f"LocalLayer_{g}" for g, _ in RIE_GROUPS) + ("GlobalInfo",)
RIE_DECODERS = tuple(f"Integration_{g}" for g, _ in RIE_GROUPS)
RIE_STAGES: dict[int, dict[str, tuple[str, ...]]] = {
    # Stage 1: encoders + decoders from scratch (no FuseBlocks exist).
    1: {"init_from_previous": (), "trainable": RIE_ENCODERS + RIE_DECODERS, "frozen": ()},
    # Stage 2 (``-p stage_1.bin``): encoders loaded from stage 1 and frozen; FuseBlocks and
    # the (wider) decoders are new and trained.
    2: {"init_from_previous": RIE_ENCODERS, "trainable": ("FuseBlocks",) + RIE_DECODERS,
        "frozen": RIE_ENCODERS},
    # Stage 3 (``-ft stage_2.bin -lr 0.0005``): everything loaded from stage 2, all trained.
    3: {"init_from_previous": RIE_ENCODERS + ("FuseBlocks",) + RIE_DECODERS,
        "trainable": RIE_ENCODERS + ("FuseBlocks",) + RIE_DECODERS, "frozen": ()},
}


def rie_trainable(stage: int) -> nnx.filterlib.Filter:
  """NNX filter of the parameters RIE's multi-stage optimisation trains at ``stage``.

  Use it for the optimiser (``nnx.Optimizer(model, tx, wrt=rie_trainable(stage))``) and
  for gradients (``nnx.DiffState(0, rie_trainable(stage))``). As in the original (which
  sets ``requires_grad=False`` on the first 167 parameters, i.e. the five temporal
  encoders and ``GlobalInfo`` of the default 5-width model), freezing covers parameters
  only: in train mode the frozen encoders' BatchNorm statistics keep updating and their
  dropout stays active. See ``RIE_STAGES`` for what each stage loads from the previous one.
  """
  if stage not in RIE_STAGES:
    raise ValueError(f"RIE stage must be one of {sorted(RIE_STAGES)}, got {stage}")
  names = RIE_STAGES[stage]["trainable"]
  return nnx.All(nnx.Param, nnx.Any(*(nnx.PathContains(n) for n in names)))


class RIEModel(nnx.Module):
  """Pose3D-RIE: grouped relative-encoding temporal encoders + global and fused features.

  Predicts the 3D pose of one frame from exactly ``receptive_field`` input frames (the
  centre frame, or the last one when causal). Train mode needs ``rngs`` for dropout.
  """
  Config = RIEConfig

  def __init__(self, config: RIEConfig, *, rngs: nnx.Rngs):
    if config.stage not in RIE_STAGES:
      raise ValueError(f"RIE stage must be one of {sorted(RIE_STAGES)}, got {config.stage}")
    if config.dense and config.optimize_1f:
      raise ValueError("RIE: dense kernels have no strided (Optimize1f) form; set "
                       "optimize_1f=False (the original silently builds non-dense layers)")
    if not 0.0 <= config.linear_dropout < 1.0:
      raise ValueError(f"RIE: linear_dropout must be in [0, 1), got {config.linear_dropout}")
    self.config = config
    dtype = layers.as_dtype(config.dtype)
    lfd, size = config.latent_features, config.linear_size
    for group, joints in RIE_GROUPS:
      setattr(self, f"LocalLayer_{group}", TemporalConvNet(
          3 * len(joints) * RIE_IN_FEATURES, lfd, config.filter_widths, causal=config.causal,
          dropout=config.dropout, channels=config.channels, dense=config.dense,
          negative_slope=0.2, dtype=dtype, rngs=rngs, name=f"RIE LocalLayer_{group}"))
    fc = dict(dropout=config.linear_dropout, dtype=dtype, rngs=rngs)
    self.GlobalInfo = FCBlock(RIE_NUM_JOINTS * RIE_IN_FEATURES, lfd, size, RIE_GLOBAL_BLOCKS,
                              **fc)
    if config.stage == 1:
      self.FuseBlocks = None
      decoder_in = 2 * lfd
    else:
      self.FuseBlocks = nnx.List([FCBlock(4 * lfd, lfd, size, 1, **fc) for _ in RIE_GROUPS])
      decoder_in = 3 * lfd
    for group, joints in RIE_GROUPS:
      setattr(self, f"Integration_{group}", FCBlock(decoder_in, 3 * len(joints), size, 1, **fc))

  def encoders(self) -> list[TemporalConvNet]:
    return [getattr(self, f"LocalLayer_{g}") for g, _ in RIE_GROUPS]

  @property
  def receptive_field(self) -> int:
    return self.LocalLayer_Torso.receptive_field

  @property
  def total_causal_shift(self) -> int:
    return self.LocalLayer_Torso.total_causal_shift

  def set_bn_momentum(self, momentum: float) -> None:
    """As the original: only the temporal encoders' BatchNorms (the FC blocks keep 0.1)."""
    for encoder in self.encoders():
      encoder.set_bn_momentum(momentum)

  def _check_input(self, keypoints: Array) -> None:
    rf = self.receptive_field
    if keypoints.ndim != 4 or keypoints.shape[2:] != (RIE_NUM_JOINTS, RIE_IN_FEATURES):
      raise ValueError(
          f"RIE expects 2D keypoints [B, {rf}, {RIE_NUM_JOINTS}, {RIE_IN_FEATURES}] (it is "
          f"hard-wired to the 17 Human3.6M joints), got shape {tuple(keypoints.shape)}")
    if keypoints.shape[1] != rf:
      raise ValueError(
          f"RIE predicts one frame from exactly receptive_field={rf} frames (its global "
          f"branch and temporal encoding use the centre input frame), got T="
          f"{keypoints.shape[1]}; cut the sequence into {rf}-frame windows")

  def _group_inputs(self, keypoints: Array) -> list[Array]:
    """Per group ``[B, T, 3 * n_joints * 2]``: coordinates, minus root, minus centre frame."""
    x = keypoints.astype(jnp.float32)
    b, t = x.shape[:2]
    root_relative = x - x[:, :, :1]
    centre = t // 2
    time_relative = x - x[:, centre:centre + 1]
    out = []
    for _, joints in RIE_GROUPS:
      idx = np.asarray(joints)
      parts = [e[:, :, idx].reshape(b, t, -1) for e in (x, root_relative, time_relative)]
      out.append(jnp.concatenate(parts, axis=-1))
    return out

  def _forward(self, keypoints: Array, rngs: nnx.Rngs | None, strided: bool
               ) -> dict[str, Array]:
    self._check_input(keypoints)
    dtype = layers.as_dtype(self.config.dtype)
    b, t = keypoints.shape[:2]
    centre_pose = keypoints[:, t // 2].reshape(b, -1).astype(dtype)
    x_global = self.GlobalInfo(centre_pose, rngs)
    local = []
    for encoder, group_input in zip(self.encoders(), self._group_inputs(keypoints)):
      group_input = group_input.astype(dtype)
      y = encoder.strided(group_input, rngs) if strided else encoder.dilated(group_input, rngs)
      local.append(y[:, 0])  # [B, latent]
    features = []
    for g, (group, _) in enumerate(RIE_GROUPS):
      parts = [local[g]]
      if self.FuseBlocks is not None:
        others = jnp.concatenate([f for h, f in enumerate(local) if h != g], axis=-1)
        parts.append(self.FuseBlocks[g](others, rngs))
      parts.append(x_global)
      decoder = getattr(self, f"Integration_{group}")
      features.append(decoder(jnp.concatenate(parts, axis=-1), rngs).reshape(b, -1, 3))
    grouped = jnp.concatenate(features, axis=1)  # [B, 17, 3] in group order
    poses = jnp.take(grouped, _RIE_UNGROUP, axis=1)
    return {"poses": poses[:, None].astype(jnp.float32)}

  def __call__(self, keypoints: Array, *, rngs: nnx.Rngs | None = None) -> dict[str, Array]:
    """Lifts one receptive field of 2D keypoints.

    Args:
      keypoints: ``[B, receptive_field, 17, 2]`` normalised screen coordinates.
      rngs: dropout randomness (``nnx.Rngs(dropout=key)``), needed in train mode only.

    Returns:
      ``{"poses": [B, 1, 17, 3] float32}`` in the input joint order. The encoders run
      strided when ``config.optimize_1f`` (the original's evaluation model), dilated
      otherwise; both give the same result.
    """
    return self._forward(keypoints, rngs, strided=self.config.optimize_1f and not
                         self.config.dense)

  def single_frame(self, keypoints: Array, *, rngs: nnx.Rngs | None = None
                   ) -> dict[str, Array]:
    """The strided (Optimize1f) forward regardless of ``config.optimize_1f``."""
    return self._forward(keypoints, rngs, strided=not self.config.dense)
