"""Checkpoint families built on the torchvision ResNet: SimpleBaseline (``pose_resnet``).

Released SimpleBaseline files (``pose_coco/pose_resnet_50_256x192.pth`` ...) are plain
state dicts: ``conv1``, ``bn1``, ``layer1..4`` (torchvision names), ``deconv_layers.{3i,
3i+1}`` (ConvTranspose2d, BatchNorm2d) and ``final_layer``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from jaxpose.convert.core import CheckpointError, Family, Rename, count_indices
from jaxpose.models import resnet

Shapes = Mapping[str, tuple[int, ...]]

_DEPTH_BY_SPEC = {spec: depth for depth, spec in resnet.RESNET_SPEC.items()}


def infer_resnet_depth(shapes: Shapes, prefix: str = "", source: str = "checkpoint") -> int:
  """ResNet depth (18/34/50/101/152) from block counts under ``prefix`` (e.g. ``'backbone.'``)."""
  block = "bottleneck" if f"{prefix}layer1.0.conv3.weight" in shapes else "basic"
  p = re.escape(prefix)
  counts = tuple(count_indices(shapes, rf"{p}layer{i}\.(\d+)\.conv1\.weight") for i in range(1, 5))
  depth = _DEPTH_BY_SPEC.get((block, counts))
  if depth is None:
    raise CheckpointError(
        f"{source}: ResNet with {block} blocks {counts} per stage is not one of the supported "
        f"depths {sorted(resnet.RESNET_SPEC)}")
  return depth


def deconv_spec(shapes: Shapes, prefix: str) -> tuple[tuple[int, ...], tuple[int, ...], bool]:
  """``(filters, kernels, with_bias)`` of a SimpleBaseline-style deconv stack at ``prefix``.

  The stack is ``Sequential(ConvTranspose2d, BatchNorm2d, ReLU) x n``: transposed-conv
  weights (4-D, ``[in, out, k, k]``) sit at indices ``3i``.
  """
  p = re.escape(prefix)
  indices = sorted(int(m.group(1)) for k in shapes
                   if (m := re.fullmatch(rf"{p}(\d+)\.weight", k)) and len(shapes[k]) == 4)
  filters = tuple(shapes[f"{prefix}{i}.weight"][1] for i in indices)
  kernels = tuple(shapes[f"{prefix}{i}.weight"][2] for i in indices)
  with_bias = f"{prefix}{indices[0]}.bias" in shapes if indices else False
  return filters, kernels, with_bias


def _infer_pose_resnet(shapes: Shapes):
  required = ("conv1.weight", "layer1.0.conv1.weight", "deconv_layers.0.weight",
              "final_layer.weight")
  if not all(k in shapes for k in required) or "hm.weight" in shapes:
    return None
  filters, kernels, with_bias = deconv_spec(shapes, "deconv_layers.")
  final = shapes["final_layer.weight"]
  return resnet.PoseResNetConfig(
      num_layers=infer_resnet_depth(shapes),
      num_joints=final[0],
      deconv_filters=filters,
      deconv_kernels=kernels,
      deconv_with_bias=with_bias,
      final_conv_kernel=final[2],
      in_channels=shapes["conv1.weight"][1],
  )


RESNET_TRUNK = r"(conv1|bn1|layer[1-4](?:\..*)?)"

POSE_RESNET = Family(
    name="pose_resnet",
    infer_config=_infer_pose_resnet,
    renames=lambda config: (
        Rename(RESNET_TRUNK, r"backbone/\1"),
        Rename(r"deconv_layers\.(\d+)", r"deconv_layers/layers/\1"),
    ),
    export_renames=lambda config: (
        Rename(r"backbone/(.*)", r"\1"),
        Rename(r"deconv_layers/layers/(\d+)", r"deconv_layers/\1"),
    ),
    description="SimpleBaseline, leoxiaobin/deep-high-resolution-net.pytorch lib/models/pose_resnet.py",
)
