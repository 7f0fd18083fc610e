"""Integral human pose regression network (``integral``).

Sun et al., "Integral Human Pose Regression" (ECCV'18); JimmySuen/integral-human-pose
``pytorch_projects/common_pytorch/blocks/resnet_pose.py`` (``ResPoseNet``,
``get_pose_net``) with ``base_modules/resnet.py`` (``ResNetBackbone``) and
``base_modules/deconv_head.py`` (``DeconvHead``).

A torchvision ResNet trunk, ``num_deconv_layers`` x [ConvTranspose2d (stride 2, no bias),
BatchNorm, ReLU] with one filter count and one kernel size for every layer, then a
convolution to ``num_joints * depth_dim`` channels: per joint a volume of ``depth_dim``
depth bins over the heatmap grid, decoded by the soft-argmax of
``jaxpose.codecs.integral``. The output stays raw (no softmax) with channel
``j * depth_dim + d``, the original's layout, channels-last.

Module names: ``backbone`` (the PyTorch ``backbone``), ``deconv_layers`` (PyTorch
``head.features.0 .. 3n-1``), ``final_layer`` (``head.features.3n``) and, when the head
ends without bias (``with_bias_end=False``), ``final_bn`` (``head.features.3n+1``).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
from flax import nnx

from jaxpose.models import layers
from jaxpose.models.base import ModelConfig
from jaxpose.models.resnet import EXPANSION, DeconvLayers, ResNet, deconv_padding, resnet_spec

# Released configurations (the yaml files of the original project) all use depth_dim equal
# to the heatmap width: 64 for 256x256 patches, 72 for 384x288 patches.
RELEASED_DEPTH_DIM = 64
HM36_NUM_JOINTS = 18  # Human3.6M's 17 joints + thorax (``s_36_jt_num``).


@dataclasses.dataclass(frozen=True)
class IntegralConfig(ModelConfig):
  """``ResPoseNet`` hyper-parameters (the yaml ``network`` section + the dataset's joints).

  Attributes:
    num_layers: ResNet depth (18, 34, 50, 101, 152).
    num_joints: joints ``J`` (18 for Human3.6M + thorax, 16 MPII, 17 COCO).
    depth_dim: depth bins ``D`` per joint (``network.depth_dim``); 1 for 2D models. The
      output has ``J * D`` channels. The released configs use ``D`` = heatmap width, which
      the original's ``get_joint_location_result`` assumes.
    num_deconv_layers: stride-2 transposed convolutions (0 gives stride-32 output).
    num_deconv_filters: channels of every deconvolution.
    num_deconv_kernel: deconvolution kernel (4, 3 or 2; each exactly doubles the size).
    final_conv_kernel: kernel of the last convolution (1 or 3).
    with_bias_end: ``DeconvHead(with_bias_end=)``: True (as ``get_pose_net`` builds it) ends
      with a biased convolution; False with an unbiased convolution + BatchNorm + ReLU.
    in_channels: image channels (``network.input_channel``).
    backbone_width: channels of the ResNet stem and first stage (64 in every released
      model; narrower trunks are jaxpose's CPU quickstart variant).
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.
  """
  name: ClassVar[str] = "integral"
  num_layers: int = 50
  num_joints: int = HM36_NUM_JOINTS
  depth_dim: int = RELEASED_DEPTH_DIM
  num_deconv_layers: int = 3
  num_deconv_filters: int = 256
  num_deconv_kernel: int = 4
  final_conv_kernel: int = 1
  with_bias_end: bool = True
  in_channels: int = 3
  backbone_width: int = 64
  dtype: str = "float32"

  def __post_init__(self):
    resnet_spec(self.num_layers)  # raises ValueError naming the valid depths
    for field in ("num_joints", "depth_dim", "num_deconv_filters", "in_channels",
                  "backbone_width"):
      if getattr(self, field) < 1:
        raise ValueError(f"IntegralConfig.{field} must be >= 1, got {getattr(self, field)}")
    if self.num_deconv_layers < 0:
      raise ValueError(f"IntegralConfig.num_deconv_layers must be >= 0, got "
                       f"{self.num_deconv_layers}")
    deconv_padding(self.num_deconv_kernel)  # raises ValueError for kernels other than 2/3/4
    if self.final_conv_kernel not in (1, 3):
      raise ValueError(f"IntegralConfig.final_conv_kernel must be 1 or 3, got "
                       f"{self.final_conv_kernel}")

  @property
  def out_channels(self) -> int:
    """``num_joints * depth_dim``: channels of the raw output."""
    return self.num_joints * self.depth_dim

  @classmethod
  def res50_hm36(cls, **kw) -> "IntegralConfig":
    """``integral_human_pose/experiments/hm36/resnet50v1_ft/d-mh_ps-256_deconv256x3...``.

    ResNet-50, 256x256 patches, 64x64x64 volumes for 18 joints.
    """
    return cls(**{"num_layers": 50, "num_joints": HM36_NUM_JOINTS, "depth_dim": 64, **kw})

  @classmethod
  def res152_hm36(cls, **kw) -> "IntegralConfig":
    """``hm36_challenge/.../resnet152v1_ft/d-mh_ps-256_deconv256x3...``: 256x256, D = 64."""
    return cls(**{"num_layers": 152, "num_joints": HM36_NUM_JOINTS, "depth_dim": 64, **kw})

  @classmethod
  def res152_hm36_challenge(cls, **kw) -> "IntegralConfig":
    """``hm36_challenge/.../resnet152v1_ft/d-mch_384x288_deconv256x3...``: 384x288, D = 72."""
    return cls(**{"num_layers": 152, "num_joints": HM36_NUM_JOINTS, "depth_dim": 72, **kw})

  @classmethod
  def tiny(cls, **kw) -> "IntegralConfig":
    """ResNet-18 with a narrow two-layer head and small volumes, for tests."""
    return cls(**{"num_layers": 18, "num_joints": 3, "depth_dim": 4, "num_deconv_layers": 2,
                  "num_deconv_filters": 32, **kw})


class IntegralPoseNet(nnx.Module):
  """``ResPoseNet``: ResNet + ``DeconvHead`` -> raw per-joint volumes at 1/4 resolution.

  Initialisation as the original: every backbone and head convolution ~ N(0, 0.001),
  BatchNorm scale 1 / bias 0, the final bias 0 (``init_pose_net`` then loads the
  ImageNet backbone: ``convert.convert_state_dict(torchvision_sd, config,
  allow_partial=True)``).
  """
  Config = IntegralConfig

  def __init__(self, config: IntegralConfig, *, rngs: nnx.Rngs):
    block, _ = resnet_spec(config.num_layers)
    trunk_channels = 8 * config.backbone_width * EXPANSION[block]
    if config.num_deconv_layers == 0 and config.num_deconv_filters != trunk_channels:
      raise ValueError(
          f"IntegralConfig: without deconvolutions the final conv reads the backbone's "
          f"{trunk_channels} channels (the original builds it with num_deconv_filters "
          f"inputs), so num_deconv_filters must be {trunk_channels}, got "
          f"{config.num_deconv_filters}")
    self.config = config
    dtype = layers.as_dtype(config.dtype)
    std = layers.normal_init(0.001)
    self.backbone = ResNet(config.num_layers, in_channels=config.in_channels,
                           width=config.backbone_width, dtype=dtype,
                           kernel_init=std, rngs=rngs)
    n = config.num_deconv_layers
    self.deconv_layers = DeconvLayers(
        self.backbone.out_channels, (config.num_deconv_filters,) * n,
        (config.num_deconv_kernel,) * n, use_bias=False, dtype=dtype, rngs=rngs)
    k = config.final_conv_kernel
    self.final_layer = layers.Conv(
        self.deconv_layers.out_channels, config.out_channels, k, padding=(k - 1) // 2,
        use_bias=config.with_bias_end, dtype=dtype, kernel_init=std,
        bias_init=layers.zeros_init, rngs=rngs)
    self.final_bn = (None if config.with_bias_end
                     else layers.BatchNorm(config.out_channels, dtype=dtype))

  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    """Raw integral volumes of a batch of patches.

    Args:
      images: ``[B, H, W, in_channels]`` normalised patches.

    Returns:
      ``{"heatmaps": [B, H', W', num_joints * depth_dim] float32}`` (float64 under x64)
      with channel ``j * depth_dim + d`` and ``H' = H * 2^num_deconv_layers / 32`` (H/4 with three
      deconvolutions): logits, decode with ``jaxpose.codecs.integral``.
    """
    layers.check_image_input(images, self.config.in_channels, "IntegralPoseNet")
    x = self.backbone(images)
    x = self.deconv_layers(x)
    x = self.final_layer(x)
    if self.final_bn is not None:
      x = jax.nn.relu(self.final_bn(x))
    return {"heatmaps": layers.at_least_float32(x)}
