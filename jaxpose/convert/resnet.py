"""Checkpoint family of SimpleBaseline (``pose_resnet``), and the torchvision ResNet trunk
readers that the integral (``convert/integral.py``) and hg3d (``convert/hg3d.py``) families
share.

Released SimpleBaseline files (``pose_coco/pose_resnet_50_256x192.pth`` ...) are plain
state dicts: ``conv1``, ``bn1``, ``layer1..4`` (torchvision names), ``deconv_layers.{3i,
3i+1}`` (ConvTranspose2d, BatchNorm2d) and ``final_layer``. Every hyper-parameter is in
the tensors; the original experiment yaml (``--cfg experiments/coco/resnet/*.yaml``:
``MODEL.NUM_JOINTS``, ``MODEL.EXTRA.*``) is checked against them.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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


POSE_RESNET_REQUIRED = ("conv1.weight", "layer1.0.conv1.weight", "deconv_layers.0.weight",
                        "final_layer.weight")


def _infer_pose_resnet(shapes: Shapes, hints: Mapping[str, Any] | None = None, report=None):
  """Every field from the tensors (``hints`` are checked against them by the caller)."""
  del hints, report
  if not all(k in shapes for k in POSE_RESNET_REQUIRED):
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
# torch names <-> jaxpose paths of a ResNet trunk + deconv head (pose_resnet, msra_resnet).
POSE_RESNET_RENAMES = (
    Rename(RESNET_TRUNK, r"backbone/\1"),
    Rename(r"deconv_layers\.(\d+)", r"deconv_layers/layers/\1"),
)
POSE_RESNET_EXPORT_RENAMES = (
    Rename(r"backbone/(.*)", r"\1"),
    Rename(r"deconv_layers/layers/(\d+)", r"deconv_layers/\1"),
)

# The yaml keys of deep-high-resolution-net.pytorch's SimpleBaseline experiments.
POSE_RESNET_YAML = {
    "MODEL.NUM_JOINTS": "num_joints",
    "MODEL.EXTRA.NUM_LAYERS": "num_layers",
    "MODEL.EXTRA.DECONV_WITH_BIAS": "deconv_with_bias",
    "MODEL.EXTRA.NUM_DECONV_FILTERS": "deconv_filters",
    "MODEL.EXTRA.NUM_DECONV_KERNELS": "deconv_kernels",
    "MODEL.EXTRA.FINAL_CONV_KERNEL": "final_conv_kernel",
}


def _pose_resnet_from_yaml(flat: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
  """``MODEL.*`` of an ``experiments/*/resnet/*.yaml`` -> ``PoseResNetConfig`` fields."""
  out = {field: (flat[key], key) for key, field in POSE_RESNET_YAML.items() if key in flat}
  if "MODEL.NAME" in flat:
    out["name"] = (flat["MODEL.NAME"], "MODEL.NAME")
  layers = flat.get("MODEL.EXTRA.NUM_DECONV_LAYERS")
  for key in ("MODEL.EXTRA.NUM_DECONV_FILTERS", "MODEL.EXTRA.NUM_DECONV_KERNELS"):
    if layers is not None and key in flat and len(flat[key]) != layers:
      raise ValueError(f"MODEL.EXTRA.NUM_DECONV_LAYERS is {layers} but {key} has "
                       f"{len(flat[key])} entries (the original asserts they agree)")
  return out


POSE_RESNET = Family(
    name="pose_resnet",
    infer_config=_infer_pose_resnet,
    renames=lambda config: POSE_RESNET_RENAMES,
    export_renames=lambda config: POSE_RESNET_EXPORT_RENAMES,
    description="SimpleBaseline, leoxiaobin/deep-high-resolution-net.pytorch lib/models/pose_resnet.py",
    key_pattern=r"(conv1|bn1|layer[1-4]|deconv_layers|final_layer)\.",
    required=POSE_RESNET_REQUIRED,
    from_original=_pose_resnet_from_yaml,
    original_keys=("MODEL.NAME", "MODEL.EXTRA.NUM_DECONV_LAYERS", *POSE_RESNET_YAML),
    program="deep-high-resolution-net.pytorch",
)
