"""Weakly-supervised 3D pose network (``hg3d``).

Zhou et al., "Towards 3D Human Pose Estimation in the Wild: a Weakly-supervised Approach"
(ICCV'17), as re-implemented in xingyizhou/pytorch-pose-hg-3d ``src/lib/models/
msra_resnet.py`` (``PoseResNet``, ``--arch msra_<depth>``): a torchvision ResNet, a
SimpleBaseline deconvolution stack and one 1x1 convolution (with bias) per output head:
``hm`` (2D joint heatmaps) and, for ``--task human3d``, ``depth`` (one depth map per joint,
read at the joint's heatmap argmax; see ``jaxpose.codecs.hg3d``). The original has no
extra 3x3 "head_conv" before the heads (unlike CenterNet's variant of this file).

``src/lib/opts.py`` sets the heads: ``hm`` has 16 channels (MPII order; 17 for
``--dataset coco``) and ``depth`` as many as ``hm`` when the task is ``human3d``, none
otherwise. The heads are created in sorted order (``depth`` before ``hm``), which only
affects the order of the PyTorch state dict.

Module names mirror the PyTorch ones: ``backbone`` (PyTorch ``conv1``, ``bn1``,
``layer1..4`` at the top level), ``deconv_layers``, ``depth``, ``hm``.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
from flax import nnx

from jaxpose.models import layers
from jaxpose.models.base import ModelConfig
from jaxpose.models.resnet import DeconvLayers, ResNet, deconv_padding, resnet_spec

MPII_NUM_JOINTS = 16
COCO_NUM_JOINTS = 17


@dataclasses.dataclass(frozen=True)
class HG3DConfig(ModelConfig):
  """``msra_resnet.PoseResNet`` hyper-parameters (``opts.py`` heads + the architecture).

  Attributes:
    num_layers: ResNet depth (``--arch msra_18/34/50/101/152``).
    num_joints: channels of the ``hm`` head (16 MPII-order joints; 17 for COCO).
    with_depth: a ``depth`` head with ``num_joints`` channels (``--task human3d``).
    deconv_filters, deconv_kernels: the deconvolution stack (the original fixes
      (256, 256, 256) and (4, 4, 4)); the heads read ``deconv_filters[-1]`` channels.
    deconv_with_bias: bias on the transposed convolutions (False in the original).
    in_channels: image channels (3 in the original).
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.
  """
  name: ClassVar[str] = "hg3d"
  num_layers: int = 50
  num_joints: int = MPII_NUM_JOINTS
  with_depth: bool = True
  deconv_filters: tuple[int, ...] = (256, 256, 256)
  deconv_kernels: tuple[int, ...] = (4, 4, 4)
  deconv_with_bias: bool = False
  in_channels: int = 3
  dtype: str = "float32"

  def __post_init__(self):
    resnet_spec(self.num_layers)  # raises ValueError naming the valid depths
    if self.num_joints < 1 or self.in_channels < 1:
      raise ValueError(f"HG3DConfig: num_joints and in_channels must be >= 1, got "
                       f"{self.num_joints}, {self.in_channels}")
    if len(self.deconv_filters) != len(self.deconv_kernels):
      raise ValueError(f"HG3DConfig: deconv_filters {self.deconv_filters} and deconv_kernels "
                       f"{self.deconv_kernels} differ in length")
    if any(f < 1 for f in self.deconv_filters):
      raise ValueError(f"HG3DConfig: deconv_filters must be >= 1, got {self.deconv_filters}")
    for kernel in self.deconv_kernels:
      deconv_padding(kernel)  # raises ValueError for kernels other than 2/3/4

  @classmethod
  def fusion_3d(cls, num_layers: int = 50, **kw) -> "HG3DConfig":
    """``--task human3d --dataset fusion_3d --arch msra_<num_layers>`` (``fusion_3d_var.pth``)."""
    return cls(**{"num_layers": num_layers, "num_joints": MPII_NUM_JOINTS, "with_depth": True,
                  **kw})

  @classmethod
  def human2d(cls, num_layers: int = 50, num_joints: int = MPII_NUM_JOINTS,
              **kw) -> "HG3DConfig":
    """``--task human2d`` (the 2D pre-training stage): the ``hm`` head alone."""
    return cls(num_layers=num_layers, num_joints=num_joints, with_depth=False, **kw)

  @classmethod
  def tiny(cls, **kw) -> "HG3DConfig":
    """ResNet-18 with a narrow two-layer head, for tests."""
    return cls(**{"num_layers": 18, "num_joints": 4, "deconv_filters": (32, 32),
                  "deconv_kernels": (4, 4), **kw})


class HG3DPoseNet(nnx.Module):
  """ResNet + deconvolutions + ``hm`` / ``depth`` heads at 1/4 resolution.

  Initialisation as the original ``get_pose_net``: backbone convolutions keep PyTorch's
  default init (the original then loads ImageNet weights over them:
  ``convert.convert_state_dict(torchvision_sd, config, allow_partial=True)``),
  deconvolutions and heads ~ N(0, 0.001) with zero biases, BatchNorm scale 1 / bias 0.
  """
  Config = HG3DConfig

  def __init__(self, config: HG3DConfig, *, rngs: nnx.Rngs):
    self.config = config
    dtype = layers.as_dtype(config.dtype)
    self.backbone = ResNet(config.num_layers, in_channels=config.in_channels, dtype=dtype,
                           kernel_init=layers.torch_default_kernel_init, rngs=rngs)
    self.deconv_layers = DeconvLayers(
        self.backbone.out_channels, config.deconv_filters, config.deconv_kernels,
        use_bias=config.deconv_with_bias, dtype=dtype, rngs=rngs)
    head = dict(kernel_size=1, dtype=dtype, kernel_init=layers.normal_init(0.001),
                bias_init=layers.zeros_init, rngs=rngs)
    channels = self.deconv_layers.out_channels
    # Sorted order, as the original creates them.
    self.depth = layers.Conv(channels, config.num_joints, **head) if config.with_depth else None
    self.hm = layers.Conv(channels, config.num_joints, **head)

  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    """Heatmaps and depth maps of a batch of crops.

    Args:
      images: ``[B, H, W, in_channels]`` normalised crops.

    Returns:
      ``{"heatmaps": [B, H', W', J] float32}`` (head ``hm``) and, with ``with_depth``,
      ``"depth": [B, H', W', J] float32`` (head ``depth``; joint ``j``'s depth is read at
      the argmax of heatmap ``j``), ``H' = H * 2^len(deconv_filters) / 32`` (H/4 with three
      deconvolutions).
    """
    layers.check_image_input(images, self.config.in_channels, "HG3DPoseNet")
    x = self.deconv_layers(self.backbone(images))
    out = {"heatmaps": layers.at_least_float32(self.hm(x))}
    if self.depth is not None:
      out["depth"] = layers.at_least_float32(self.depth(x))
    return out
