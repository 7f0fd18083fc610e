"""MSPN: Multi-Stage Pose Network (Li et al., "Rethinking on Multi-Stage Networks for Human
Pose Estimation", 2019; megvii-research/MSPN ``exps/mspn.2xstg.*/network.py``).

Structure (``S`` stages, heatmaps at ``output_shape`` = 1/4 of the input):

* ``top``: a ResNet stem, conv 7x7/2 + BN + ReLU and a 3x3/2 max pool -> 64 channels.
* ``stage{s}``: a ResNet-50 style encoder (``downsample``, bottleneck layer1..layer4 giving
  strides 4..32 and 256..2048 channels) and a decoder (``upsample``) of four units
  ``up1..up4`` going coarse to fine. Unit ``i`` adds a 1x1 conv of its encoder feature
  (``u_skip``) to a 1x1 conv of the previous unit's output bilinearly resized to its size
  (``up_conv``; unit 1 has none), applies ReLU, and predicts heatmaps with ``res_conv1``
  (1x1 + BN + ReLU) and ``res_conv2`` (3x3 + BN, no ReLU), resized to ``output_shape``.
* Cross-stage feature aggregation: every stage but the last also emits, per resolution,
  ``skip1`` (1x1 conv of the encoder feature) and ``skip2`` (1x1 conv of the decoder
  output), both added to the next stage's encoder outputs at that resolution; and a
  ``cross_conv`` (1x1 -> 64 channels, ReLU) of its finest decoder output, which is the
  next stage's input in place of the stem output. The last stage has neither.

Numerics follow the original on purpose: every convolution carries a bias even before its
BatchNorm (cvpack's ``conv_bn_relu``); all resizing is bilinear with
``align_corners=True``; heatmaps come straight out of a BatchNorm.

``RUN_EFFICIENT`` of the original configs only wraps each ``conv_bn_relu`` in
``torch.utils.checkpoint`` (activation recomputation): it changes memory use, not the
architecture or the weights, so it has no counterpart here (use ``jax.checkpoint`` /
``nnx.remat`` around a train step if memory requires).

Module names mirror the PyTorch ones (``stage0/downsample/layer1/0/conv_bn_relu1/conv``),
so checkpoint keys map one to one.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jaxpose.models import layers
from jaxpose.models.base import ModelConfig

# Channels of layer4, layer3, layer2, layer1 outputs (bottleneck expansion 4), the inputs of
# the decoder units up1..up4 (``Upsample_module.in_planes``).
ENCODER_CHANNELS: tuple[int, int, int, int] = (2048, 1024, 512, 256)
STEM_CHANNELS = 64  # stem output and cross_conv output (the input of every layer1)
NUM_UNITS = 4


class ConvBnRelu(nnx.Module):
  """cvpack's ``conv_bn_relu``: Conv2d *with bias* -> BatchNorm -> optional ReLU.

  Attributes:
    conv: ``layers.Conv`` (PyTorch ``conv``).
    bn: ``layers.BatchNorm`` (PyTorch ``bn``).
    has_relu: whether a ReLU follows the BatchNorm.
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
               padding: int = 0, has_relu: bool = True,
               kernel_init: layers.Initializer = layers.torch_default_kernel_init,
               dtype=None, rngs: nnx.Rngs):
    self.conv = layers.Conv(in_channels, out_channels, kernel_size, strides=stride,
                            padding=padding, use_bias=True, kernel_init=kernel_init,
                            dtype=dtype, rngs=rngs)
    self.bn = layers.BatchNorm(out_channels, dtype=dtype)
    self.has_relu = has_relu

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C_in]`` -> ``[B, H / stride, W / stride, C_out]``."""
    y = self.bn(self.conv(x))
    return jax.nn.relu(y) if self.has_relu else y


class Bottleneck(nnx.Module):
  """MSPN's bottleneck: 1x1 -> 3x3 (stride here) -> 1x1 ``conv_bn_relu``s, expansion 4.

  ``downsample`` (1x1/stride ``conv_bn_relu`` without ReLU) exists where the shape changes.
  """
  expansion: ClassVar[int] = 4

  def __init__(self, in_channels: int, planes: int, stride: int = 1, *, dtype=None,
               rngs: nnx.Rngs):
    # ResNet_downsample_module re-initialises its convolution weights (not biases).
    conv = dict(kernel_init=layers.kaiming_normal_fan_out, dtype=dtype, rngs=rngs)
    out_channels = planes * self.expansion
    self.conv_bn_relu1 = ConvBnRelu(in_channels, planes, 1, **conv)
    self.conv_bn_relu2 = ConvBnRelu(planes, planes, 3, stride=stride, padding=1, **conv)
    self.conv_bn_relu3 = ConvBnRelu(planes, out_channels, 1, has_relu=False, **conv)
    if stride != 1 or in_channels != out_channels:
      self.downsample = ConvBnRelu(in_channels, out_channels, 1, stride=stride, has_relu=False,
                                   **conv)
    else:
      self.downsample = None

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C_in]`` -> ``[B, H/stride, W/stride, 4 * planes]``."""
    out = self.conv_bn_relu3(self.conv_bn_relu2(self.conv_bn_relu1(x)))
    shortcut = x if self.downsample is None else self.downsample(x)
    return layers.materialize(jax.nn.relu(out + shortcut))  # see layers.materialize


class ResNetTop(nnx.Module):
  """``ResNet_top``: conv 7x7/2 (bias) + BN + ReLU, max pool 3x3/2 -> 64 channels."""

  def __init__(self, in_channels: int = 3, *, dtype=None, rngs: nnx.Rngs):
    self.conv = ConvBnRelu(in_channels, STEM_CHANNELS, 7, stride=2, padding=3, dtype=dtype,
                           rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` -> ``[B, H/4, W/4, 64]`` (sizes as PyTorch: ceil(ceil(H/2)/2))."""
    return layers.max_pool(self.conv(x), 3, 2, 1)


Features = tuple[jax.Array, jax.Array, jax.Array, jax.Array]


class DownsampleModule(nnx.Module):
  """``ResNet_downsample_module``: bottleneck layer1..layer4 on a 64-channel input.

  With ``has_skip`` (every stage but the first) the previous stage's ``skip1`` and
  ``skip2`` are added to the output of each layer before the next layer runs.
  """

  def __init__(self, num_blocks: Sequence[int], *, has_skip: bool, dtype=None,
               rngs: nnx.Rngs):
    self.has_skip = has_skip
    channels = STEM_CHANNELS
    for index, (planes, count) in enumerate(zip((64, 128, 256, 512), num_blocks)):
      stride = 1 if index == 0 else 2
      blocks = []
      for b in range(count):
        blocks.append(Bottleneck(channels, planes, stride if b == 0 else 1, dtype=dtype,
                                 rngs=rngs))
        channels = planes * Bottleneck.expansion
      setattr(self, f"layer{index + 1}", nnx.List(blocks))

  def __call__(self, x: jax.Array, skip1: Features | None = None,
               skip2: Features | None = None) -> Features:
    """Encoder features.

    Args:
      x: ``[B, h, w, 64]`` (stride 4 of the image).
      skip1, skip2: with ``has_skip``, the previous stage's cross-stage features ordered
        layer1..layer4: ``[B, h, w, 256]``, ``[B, h/2, w/2, 512]``, ``[B, h/4, w/4, 1024]``,
        ``[B, h/8, w/8, 2048]``.

    Returns:
      ``(x4, x3, x2, x1)``: layer4 (stride 32, 2048 channels) down to layer1 (stride 4,
      256 channels), as the original returns them.
    """
    if self.has_skip and (skip1 is None or skip2 is None):
      raise ValueError("this MSPN stage aggregates the previous stage's features; "
                       "skip1 and skip2 are required")
    outs = []
    for index, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
      for block in layer:
        x = block(x)
      if self.has_skip:
        x = x + skip1[index] + skip2[index]
      outs.append(x)
    return outs[3], outs[2], outs[1], outs[0]


class UpsampleUnit(nnx.Module):
  """``Upsample_unit`` ``index`` (0 coarsest .. 3 finest) of an MSPN decoder.

  Attributes:
    u_skip: 1x1 ``conv_bn_relu`` (no ReLU) of the encoder feature to ``channels``.
    up_conv: (index > 0) 1x1 ``conv_bn_relu`` (no ReLU) of the resized coarser output.
    skip1, skip2: (``gen_skip``) 1x1 + BN + ReLU of the encoder feature / of this unit's
      output, back to the encoder's width, for the next stage.
    cross_conv: (index 3 and ``gen_cross_conv``) 1x1 + BN + ReLU to 64 channels, the next
      stage's input.
    res_conv1, res_conv2: heatmap head, 1x1 + BN + ReLU then 3x3 + BN.
  """

  def __init__(self, index: int, in_channels: int, channels: int, num_joints: int, *,
               gen_skip: bool, gen_cross_conv: bool, dtype=None, rngs: nnx.Rngs):
    conv = dict(dtype=dtype, rngs=rngs)
    self.index = index
    self.u_skip = ConvBnRelu(in_channels, channels, 1, has_relu=False, **conv)
    self.up_conv = (ConvBnRelu(channels, channels, 1, has_relu=False, **conv)
                    if index > 0 else None)
    if gen_skip:
      self.skip1 = ConvBnRelu(in_channels, in_channels, 1, **conv)
      self.skip2 = ConvBnRelu(channels, in_channels, 1, **conv)
    else:
      self.skip1 = self.skip2 = None
    self.cross_conv = (ConvBnRelu(channels, STEM_CHANNELS, 1, **conv)
                       if index == NUM_UNITS - 1 and gen_cross_conv else None)
    self.res_conv1 = ConvBnRelu(channels, channels, 1, **conv)
    self.res_conv2 = ConvBnRelu(channels, num_joints, 3, padding=1, has_relu=False, **conv)

  def __call__(self, x: jax.Array, up_x: jax.Array | None, output_size: tuple[int, int]):
    """One decoder step.

    Args:
      x: encoder feature ``[B, h, w, in_channels]``.
      up_x: previous (coarser) unit output ``[B, h', w', channels]``; None for unit 0.
      output_size: ``(H_out, W_out)`` of the heatmaps.

    Returns:
      ``(out [B, h, w, channels], heatmaps [B, H_out, W_out, K], skip1 | None,
      skip2 | None, cross | None)``.
    """
    out = self.u_skip(x)
    if self.up_conv is not None:
      # The original resizes to up_size (from OUTPUT_SHAPE); MSPN.output_size checked that
      # this is the size of ``x``.
      up_x = layers.resize_bilinear_align_corners(up_x, x.shape[1:3])
      out = out + self.up_conv(up_x)
    out = jax.nn.relu(out)
    res = self.res_conv2(self.res_conv1(out))
    res = layers.resize_bilinear_align_corners(res, output_size)
    skip1 = self.skip1(x) if self.skip1 is not None else None
    skip2 = self.skip2(out) if self.skip2 is not None else None
    cross = self.cross_conv(out) if self.cross_conv is not None else None
    return out, res, skip1, skip2, cross


class UpsampleModule(nnx.Module):
  """``Upsample_module``: units ``up1`` (on layer4) .. ``up4`` (on layer1)."""

  def __init__(self, num_joints: int, channels: int, *, gen_skip: bool, gen_cross_conv: bool,
               dtype=None, rngs: nnx.Rngs):
    for index, in_channels in enumerate(ENCODER_CHANNELS):
      setattr(self, f"up{index + 1}", UpsampleUnit(
          index, in_channels, channels, num_joints, gen_skip=gen_skip,
          gen_cross_conv=gen_cross_conv, dtype=dtype, rngs=rngs))

  def __call__(self, features: Features, output_size: tuple[int, int]):
    """Decoder on ``(x4, x3, x2, x1)``.

    Returns:
      ``(res, skip1, skip2, cross)``: ``res`` four heatmaps ``[B, H_out, W_out, K]`` coarse
      to fine; ``skip1``/``skip2`` ordered layer1..layer4 (None without ``gen_skip``);
      ``cross`` ``[B, h1, w1, 64]`` or None.
    """
    res, skip1, skip2 = [], [], []
    out, cross = None, None
    for unit, x in zip((self.up1, self.up2, self.up3, self.up4), features):
      out, heatmaps, s1, s2, cross = unit(x, out, output_size)
      res.append(heatmaps)
      skip1.append(s1)
      skip2.append(s2)
    if self.up1.skip1 is None:
      return tuple(res), None, None, cross
    return tuple(res), tuple(reversed(skip1)), tuple(reversed(skip2)), cross


class SingleStageModule(nnx.Module):
  """``Single_stage_module``: encoder (``downsample``) + decoder (``upsample``)."""

  def __init__(self, num_joints: int, channels: int, num_blocks: Sequence[int], *,
               has_skip: bool, gen_skip: bool, gen_cross_conv: bool, dtype=None,
               rngs: nnx.Rngs):
    self.downsample = DownsampleModule(num_blocks, has_skip=has_skip, dtype=dtype, rngs=rngs)
    self.upsample = UpsampleModule(num_joints, channels, gen_skip=gen_skip,
                                   gen_cross_conv=gen_cross_conv, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, skip1: Features | None, skip2: Features | None,
               output_size: tuple[int, int]):
    """``x [B, h, w, 64]`` -> ``(res, skip1, skip2, cross)`` (see ``UpsampleModule``)."""
    return self.upsample(self.downsample(x, skip1, skip2), output_size)


@dataclasses.dataclass(frozen=True)
class MSPNConfig(ModelConfig):
  """MSPN hyper-parameters (``exps/mspn.*/config.py`` of megvii-research/MSPN).

  Attributes:
    num_stages: ``MODEL.STAGE_NUM`` (1 or more; released 2, 3 and 4).
    num_joints: ``DATASET.KEYPOINT.NUM`` (17 COCO, 16 MPII).
    upsample_channels: ``MODEL.UPSAMPLE_CHANNEL_NUM`` (decoder width, 256).
    output_shape: ``OUTPUT_SHAPE`` ``(H, W)`` of the heatmaps, or None to take it from the
      input (a checkpoint does not record it). The original decoder adds features of
      sizes ``(H//8, W//8)``, ``(H//4, W//4)``, ``(H//2, W//2)``, ``(H, W)`` to the
      encoder's stride-32..4 features, so it must equal the stride-4 feature size of the
      input (e.g. (64, 48) for 256x192 images); other inputs raise ``ValueError``.
    num_blocks: bottlenecks in layer1..layer4 of every stage. The original fixes
      ``(3, 4, 6, 3)`` (ResNet-50 layout; ``MODEL.BACKBONE = 'Res-50'`` is not read);
      other counts (e.g. 101's ``(3, 4, 23, 3)``, or ``(1, 1, 1, 1)`` for tests) keep the
      same widths.
    in_channels: image channels (3, BGR in the original data pipeline).
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.
  """
  name: ClassVar[str] = "mspn"
  num_stages: int = 2
  num_joints: int = 17
  upsample_channels: int = 256
  output_shape: tuple[int, int] | None = (64, 48)
  num_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
  in_channels: int = 3
  dtype: str = "float32"

  @classmethod
  def coco_2xstg(cls, **kw) -> "MSPNConfig":
    """``exps/mspn.2xstg.coco``: 2 stages, 17 joints, 256x192 input -> 64x48 heatmaps."""
    return cls(**{"num_stages": 2, "num_joints": 17, "output_shape": (64, 48), **kw})

  @classmethod
  def coco_3xstg(cls, **kw) -> "MSPNConfig":
    """The README's 3-stage COCO model (256x192 input)."""
    return cls(**{"num_stages": 3, "num_joints": 17, "output_shape": (64, 48), **kw})

  @classmethod
  def coco_4xstg(cls, **kw) -> "MSPNConfig":
    """The README's 4-stage COCO model (256x192 input -> 64x48)."""
    return cls(**{"num_stages": 4, "num_joints": 17, "output_shape": (64, 48), **kw})

  @classmethod
  def coco_4xstg_384x288(cls, **kw) -> "MSPNConfig":
    """The README's 4-stage COCO model at 384x288 input (-> 96x72)."""
    return cls(**{"num_stages": 4, "num_joints": 17, "output_shape": (96, 72), **kw})

  @classmethod
  def mpii_2xstg(cls, **kw) -> "MSPNConfig":
    """``exps/mspn.2xstg.mpii``: 2 stages, 16 joints, 256x256 input -> 64x64."""
    return cls(**{"num_stages": 2, "num_joints": 16, "output_shape": (64, 64), **kw})

  @classmethod
  def mpii_4xstg(cls, **kw) -> "MSPNConfig":
    """The README's 4-stage MPII model (256x256 input -> 64x64)."""
    return cls(**{"num_stages": 4, "num_joints": 16, "output_shape": (64, 64), **kw})

  @classmethod
  def tiny(cls, **kw) -> "MSPNConfig":
    """2 stages, one bottleneck per layer, a 32-wide decoder, 64x48 input -> 16x12."""
    return cls(**{"num_stages": 2, "num_joints": 17, "upsample_channels": 32,
                  "output_shape": (16, 12), "num_blocks": (1, 1, 1, 1), **kw})


def _stride2_size(n: int) -> int:
  """Output size of PyTorch's k3/s2/p1 conv or pool, and of the k7/s2/p3 stem conv."""
  return (n - 1) // 2 + 1


def feature_sizes(height: int, width: int) -> tuple[tuple[int, int], ...]:
  """Spatial sizes of the encoder features (stride 4, 8, 16, 32) for an input ``H x W``."""
  size = (_stride2_size(_stride2_size(height)), _stride2_size(_stride2_size(width)))
  sizes = [size]
  for _ in range(3):
    size = (_stride2_size(size[0]), _stride2_size(size[1]))
    sizes.append(size)
  return tuple(sizes)


class MSPN(nnx.Module):
  """Multi-stage pose network; see the module docstring."""
  Config = MSPNConfig

  def __init__(self, config: MSPNConfig, *, rngs: nnx.Rngs):
    if config.num_stages < 1:
      raise ValueError(f"MSPN needs num_stages >= 1, got {config.num_stages}")
    if len(config.num_blocks) != 4 or any(int(b) < 1 for b in config.num_blocks):
      raise ValueError(f"num_blocks must be 4 positive counts (layer1..4), got "
                       f"{config.num_blocks}")
    if config.output_shape is not None and (
        len(config.output_shape) != 2 or any(int(s) < 1 for s in config.output_shape)):
      raise ValueError(f"output_shape must be (H, W) or None, got {config.output_shape}")
    if config.num_joints < 1 or config.upsample_channels < 1:
      raise ValueError(f"num_joints and upsample_channels must be positive, got "
                       f"{config.num_joints}, {config.upsample_channels}")
    self.config = config
    dtype = layers.as_dtype(config.dtype)
    self.top = ResNetTop(config.in_channels, dtype=dtype, rngs=rngs)
    for s in range(config.num_stages):
      last = s == config.num_stages - 1
      setattr(self, f"stage{s}", SingleStageModule(
          config.num_joints, config.upsample_channels, config.num_blocks, has_skip=s > 0,
          gen_skip=not last, gen_cross_conv=not last, dtype=dtype, rngs=rngs))

  @property
  def stages(self) -> tuple[SingleStageModule, ...]:
    return tuple(getattr(self, f"stage{s}") for s in range(self.config.num_stages))

  def output_size(self, height: int, width: int) -> tuple[int, int]:
    """Heatmap ``(H_out, W_out)`` for an ``height x width`` input; raises if it cannot run."""
    sizes = feature_sizes(height, width)
    h, w = sizes[0]
    if self.config.output_shape is not None and tuple(self.config.output_shape) != (h, w):
      raise ValueError(
          f"MSPN with output_shape {tuple(self.config.output_shape)} needs images whose "
          f"stride-4 features have that size (e.g. {4 * self.config.output_shape[0]}x"
          f"{4 * self.config.output_shape[1]}); a {height}x{width} input gives {h}x{w}")
    expected = ((h // 2, w // 2), (h // 4, w // 4))
    if sizes[1:3] != expected:
      raise ValueError(
          f"MSPN cannot run on a {height}x{width} input: its stride-8/16 features are "
          f"{sizes[1]} and {sizes[2]}, but the decoder (as the original's Upsample_module) "
          f"resizes to {expected[0]} and {expected[1]} (floor of the stride-4 size "
          f"{(h, w)} / 2, / 4); use a height and width divisible by 16")
    return h, w

  def __call__(self, images: jax.Array) -> dict:
    """Heatmaps of every stage.

    Args:
      images: ``[B, H, W, in_channels]`` float, normalised.

    Returns:
      ``{"heatmaps": [B, h, w, K] float32`` (the last stage's finest unit, what the
      original returns in eval mode), ``"stages": ((4 x [B, h, w, K]) x num_stages)``
      float32, each stage's four unit heatmaps coarse to fine, resized to ``(h, w)`` -- what
      the coarse-to-fine training loss supervises.
    """
    layers.check_image_input(images, self.config.in_channels, "MSPN")
    output_size = self.output_size(images.shape[1], images.shape[2])
    x = self.top(images)
    skip1 = skip2 = None
    stages = []
    for stage in self.stages:
      res, skip1, skip2, x = stage(x, skip1, skip2, output_size)
      stages.append(tuple(r.astype(jnp.float32) for r in res))
    return {"heatmaps": stages[-1][-1], "stages": tuple(stages)}
