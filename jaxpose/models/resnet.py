"""ResNet v1 backbones and SimpleBaseline (``pose_resnet``).

The backbone is the torchvision ResNet used by the original pose projects: the stride of
a bottleneck sits on its 3x3 convolution, BatchNorm eps 1e-5, a 7x7/2 stem followed by a
3x3/2 max pool. SimpleBaseline (Xiao et al., ECCV'18;
leoxiaobin/deep-high-resolution-net.pytorch ``lib/models/pose_resnet.py``) puts three
4x4/2 transposed convolutions and a 1x1 convolution on top, giving heatmaps at 1/4 of the
input resolution.

Module names mirror the PyTorch ones (``layer1/0/conv1``, ``deconv_layers/0``), so the
checkpoint converter maps keys almost one to one.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import jax
from flax import nnx

from jaxpose.models import layers
from jaxpose.models.base import ModelConfig

# num_layers -> (block type, blocks per stage), as torchvision / the originals' resnet_spec.
RESNET_SPEC: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}


def resnet_spec(num_layers: int) -> tuple[str, tuple[int, int, int, int]]:
  try:
    return RESNET_SPEC[num_layers]
  except KeyError:
    raise ValueError(f"unsupported ResNet depth {num_layers}; valid: {sorted(RESNET_SPEC)}") from None


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut; expansion 1."""
  expansion: ClassVar[int] = 1

  def __init__(self, in_channels: int, planes: int, stride: int = 1, *, dtype=None,
               kernel_init=layers.kaiming_normal_fan_out, rngs: nnx.Rngs):
    conv = dict(use_bias=False, dtype=dtype, kernel_init=kernel_init, rngs=rngs)
    self.conv1 = layers.Conv(in_channels, planes, 3, strides=stride, padding=1, **conv)
    self.bn1 = layers.BatchNorm(planes, dtype=dtype)
    self.conv2 = layers.Conv(planes, planes, 3, padding=1, **conv)
    self.bn2 = layers.BatchNorm(planes, dtype=dtype)
    self.downsample = _projection(in_channels, planes, stride, dtype, kernel_init, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: ``[B, H, W, C_in]`` -> ``[B, H/stride, W/stride, planes]``."""
    out = jax.nn.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
    return layers.materialize(jax.nn.relu(out + shortcut))  # see materialize


class Bottleneck(nnx.Module):
  """1x1 -> 3x3 (stride here, torchvision 'v1.5') -> 1x1 convolutions; expansion 4."""
  expansion: ClassVar[int] = 4

  def __init__(self, in_channels: int, planes: int, stride: int = 1, *, dtype=None,
               kernel_init=layers.kaiming_normal_fan_out, rngs: nnx.Rngs):
    conv = dict(use_bias=False, dtype=dtype, kernel_init=kernel_init, rngs=rngs)
    self.conv1 = layers.Conv(in_channels, planes, 1, **conv)
    self.bn1 = layers.BatchNorm(planes, dtype=dtype)
    self.conv2 = layers.Conv(planes, planes, 3, strides=stride, padding=1, **conv)
    self.bn2 = layers.BatchNorm(planes, dtype=dtype)
    self.conv3 = layers.Conv(planes, planes * 4, 1, **conv)
    self.bn3 = layers.BatchNorm(planes * 4, dtype=dtype)
    self.downsample = _projection(in_channels, planes * 4, stride, dtype, kernel_init, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: ``[B, H, W, C_in]`` -> ``[B, H/stride, W/stride, 4 * planes]``."""
    out = jax.nn.relu(self.bn1(self.conv1(x)))
    out = jax.nn.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
    return layers.materialize(jax.nn.relu(out + shortcut))


def _projection(in_channels, out_channels, stride, dtype, kernel_init, rngs):
  """torchvision's ``downsample``: 1x1/stride conv + BN, only where the shape changes."""
  if stride == 1 and in_channels == out_channels:
    return None
  return nnx.List([
      layers.Conv(in_channels, out_channels, 1, strides=stride, use_bias=False, dtype=dtype,
                  kernel_init=kernel_init, rngs=rngs),
      layers.BatchNorm(out_channels, dtype=dtype),
  ])


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nnx.Module):
  """torchvision ResNet trunk without the classifier: stem + layer1..layer4 (stride 32).

  Attributes:
    out_channels: channels of the stride-32 output (512 for 18/34, 2048 for 50/101/152).
  """

  def __init__(self, num_layers: int = 50, *, in_channels: int = 3, width: int = 64, dtype=None,
               kernel_init=layers.kaiming_normal_fan_out, rngs: nnx.Rngs):
    """``width``: channels of the stem and of layer1's blocks (64 in torchvision; the
    later stages double it); a narrower trunk is not an original architecture (used by
    the CPU quickstarts)."""
    block_name, counts = resnet_spec(num_layers)
    block = BLOCKS[block_name]
    if width < 1:
      raise ValueError(f"ResNet width must be >= 1, got {width}")
    self.in_channels = in_channels
    self.conv1 = layers.Conv(in_channels, width, 7, strides=2, padding=3, use_bias=False,
                             dtype=dtype, kernel_init=kernel_init, rngs=rngs)
    self.bn1 = layers.BatchNorm(width, dtype=dtype)
    channels = width
    for index, (planes, count) in enumerate(zip((width, 2 * width, 4 * width, 8 * width), counts)):
      stride = 1 if index == 0 else 2
      blocks = []
      for b in range(count):
        blocks.append(block(channels, planes, stride if b == 0 else 1, dtype=dtype,
                            kernel_init=kernel_init, rngs=rngs))
        channels = planes * block.expansion
      setattr(self, f"layer{index + 1}", nnx.List(blocks))
    self.out_channels = channels

  def stem(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` -> ``[B, H/4, W/4, 64]`` (conv 7x7/2, BN, ReLU, max pool 3x3/2)."""
    x = jax.nn.relu(self.bn1(self.conv1(x)))
    return layers.max_pool(x, 3, 2, 1)

  def stages(self, x: jax.Array) -> list[jax.Array]:
    """Features after layer1..layer4 (strides 4, 8, 16, 32) of images ``[B, H, W, C]``."""
    x = self.stem(x)
    features = []
    for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
      for blk in stage:
        x = blk(x)
      features.append(x)
    return features

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` -> ``[B, H/32, W/32, out_channels]``."""
    return self.stages(x)[-1]


def deconv_padding(kernel: int) -> tuple[int, int]:
  """``(padding, output_padding)`` that make a stride-2 ``kernel`` deconv exactly double."""
  if kernel == 4:
    return 1, 0
  if kernel == 3:
    return 1, 1
  if kernel == 2:
    return 0, 0
  raise ValueError(f"unsupported deconvolution kernel {kernel}; valid: 2, 3, 4")


class DeconvLayers(nnx.Module):
  """SimpleBaseline's upsampling stack: n x [ConvTranspose(k, stride 2), BN, ReLU].

  Stored as one list mirroring PyTorch's ``nn.Sequential`` indices (deconv ``3i``,
  BatchNorm ``3i + 1``, ReLU ``3i + 2``).
  """

  def __init__(self, in_channels: int, filters: Sequence[int], kernels: Sequence[int], *,
               use_bias: bool = False, dtype=None, rngs: nnx.Rngs):
    if len(filters) != len(kernels):
      raise ValueError(f"deconv filters {filters} and kernels {kernels} differ in length")
    mods = []
    for planes, kernel in zip(filters, kernels):
      padding, output_padding = deconv_padding(kernel)
      mods += [
          layers.ConvTranspose(in_channels, planes, kernel, strides=2, padding=padding,
                               output_padding=output_padding, use_bias=use_bias, dtype=dtype,
                               kernel_init=layers.normal_init(0.001),
                               bias_init=layers.zeros_init, rngs=rngs),
          layers.BatchNorm(planes, dtype=dtype),
          layers.ReLU(),
      ]
      in_channels = planes
    self.layers = nnx.List(mods)
    self.out_channels = in_channels

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, h, w, C_in]`` -> ``[B, h * 2^n, w * 2^n, filters[-1]]``."""
    for mod in self.layers:
      x = mod(x)
    return x


@dataclasses.dataclass(frozen=True)
class PoseResNetConfig(ModelConfig):
  """SimpleBaseline (``MODEL.NAME: pose_resnet``) hyper-parameters.

  Attributes:
    num_layers: ResNet depth (18, 34, 50, 101, 152).
    num_joints: heatmap channels (17 COCO, 16 MPII).
    deconv_filters, deconv_kernels: ``MODEL.EXTRA.NUM_DECONV_FILTERS/KERNELS``.
    deconv_with_bias: ``MODEL.EXTRA.DECONV_WITH_BIAS``.
    final_conv_kernel: ``MODEL.EXTRA.FINAL_CONV_KERNEL`` (1 or 3).
    in_channels: image channels.
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.
  """
  name: ClassVar[str] = "pose_resnet"
  num_layers: int = 50
  num_joints: int = 17
  deconv_filters: tuple[int, ...] = (256, 256, 256)
  deconv_kernels: tuple[int, ...] = (4, 4, 4)
  deconv_with_bias: bool = False
  final_conv_kernel: int = 1
  in_channels: int = 3
  dtype: str = "float32"

  @classmethod
  def res50(cls, **kw) -> "PoseResNetConfig":
    return cls(num_layers=50, **kw)

  @classmethod
  def res101(cls, **kw) -> "PoseResNetConfig":
    return cls(num_layers=101, **kw)

  @classmethod
  def res152(cls, **kw) -> "PoseResNetConfig":
    return cls(num_layers=152, **kw)

  @classmethod
  def tiny(cls, **kw) -> "PoseResNetConfig":
    """ResNet-18 with a narrow two-layer head, for tests and CPU experiments."""
    kw = {"deconv_filters": (64, 64), "deconv_kernels": (4, 4), **kw}
    return cls(num_layers=18, **kw)


class PoseResNet(nnx.Module):
  """SimpleBaseline: ResNet + deconvolution head -> heatmaps at 1/4 resolution."""
  Config = PoseResNetConfig

  def __init__(self, config: PoseResNetConfig, *, rngs: nnx.Rngs):
    if config.final_conv_kernel not in (1, 3):
      raise ValueError(f"final_conv_kernel must be 1 or 3, got {config.final_conv_kernel}")
    self.config = config
    dtype = layers.as_dtype(config.dtype)
    self.backbone = ResNet(config.num_layers, in_channels=config.in_channels, dtype=dtype,
                           rngs=rngs)
    self.deconv_layers = DeconvLayers(
        self.backbone.out_channels, config.deconv_filters, config.deconv_kernels,
        use_bias=config.deconv_with_bias, dtype=dtype, rngs=rngs)
    k = config.final_conv_kernel
    self.final_layer = layers.Conv(
        self.deconv_layers.out_channels, config.num_joints, k, padding=1 if k == 3 else 0,
        dtype=dtype, kernel_init=layers.normal_init(0.001), bias_init=layers.zeros_init,
        rngs=rngs)

  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    """images ``[B, H, W, in_channels]`` (normalised) -> ``{"heatmaps": [B, H/4, W/4, K]}``.

    (The stride is ``32 / 2^len(deconv_filters)``: 1/4 with three deconvolutions.)
    """
    layers.check_image_input(images, self.config.in_channels, "PoseResNet")
    x = self.backbone(images)
    x = self.deconv_layers(x)
    heatmaps = self.final_layer(x)
    return {"heatmaps": layers.at_least_float32(heatmaps)}
