"""Checkpoint families built on the torchvision ResNet: SimpleBaseline (``pose_resnet``),
integral regression (``integral``) and weakly-supervised 3D (``hg3d``).

Released SimpleBaseline files (``pose_coco/pose_resnet_50_256x192.pth`` ...) are plain
state dicts: ``conv1``, ``bn1``, ``layer1..4`` (torchvision names), ``deconv_layers.{3i,
3i+1}`` (ConvTranspose2d, BatchNorm2d) and ``final_layer``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from jaxpose.convert.core import CheckpointError, Family, Rename, count_indices
from jaxpose.models import hg3d, integral, resnet

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
# torch names <-> jaxpose paths of a ResNet trunk + deconv head (pose_resnet, msra_resnet).
POSE_RESNET_RENAMES = (
    Rename(RESNET_TRUNK, r"backbone/\1"),
    Rename(r"deconv_layers\.(\d+)", r"deconv_layers/layers/\1"),
)
POSE_RESNET_EXPORT_RENAMES = (
    Rename(r"backbone/(.*)", r"\1"),
    Rename(r"deconv_layers/layers/(\d+)", r"deconv_layers/\1"),
)

POSE_RESNET = Family(
    name="pose_resnet",
    infer_config=_infer_pose_resnet,
    renames=lambda config: POSE_RESNET_RENAMES,
    export_renames=lambda config: POSE_RESNET_EXPORT_RENAMES,
    description="SimpleBaseline, leoxiaobin/deep-high-resolution-net.pytorch lib/models/pose_resnet.py",
)


# ----------------------------------------------------------------------------------------
# Integral regression (JimmySuen/integral-human-pose ResPoseNet)
# ----------------------------------------------------------------------------------------
# Checkpoints: ``{'epoch', 'network': state_dict}`` with ``module.`` prefixes
# (DataParallelModel), unwrapped by the core: ``backbone.{conv1,bn1,layer1..4}`` and
# ``head.features.{i}`` (ConvTranspose2d at 3i, BatchNorm2d at 3i+1, the final Conv2d at 3n,
# and with ``with_bias_end=False`` its BatchNorm2d at 3n+1).

INTEGRAL_AMBIGUITY = (
    "the final conv of an integral head has num_joints * depth_dim channels, and the "
    "weights cannot tell the two apart (the original reads depth_dim from its yaml and "
    "the joint count from the dataset)")


def infer_integral_config(shapes: Shapes, *, depth_dim: int | None = None,
                          num_joints: int | None = None):
  """The ``IntegralConfig`` of a ``ResPoseNet`` state dict, or None if it is not one.

  Every hyper-parameter is read off the tensors except the split of the final channels
  ``C = num_joints * depth_dim`` (see ``INTEGRAL_AMBIGUITY``). Give ``depth_dim`` or
  ``num_joints`` to resolve it; with neither, ``depth_dim`` defaults to 64, the value of
  the released Human3.6M configs (256x256 patches: depth_dim = heatmap width, which the
  original's ``get_joint_location_result`` also assumes). Other checkpoints (e.g. the
  384x288 challenge model, D = 72; 2D models, D = 1) need it explicitly::

      shapes = convert.core.shape_table(sd)
      config = infer_integral_config(shapes, depth_dim=72)
      model, config, report = convert.convert_state_dict(sd, config)

  or on the command line ``--model-config cfg.json`` with e.g.
  ``{"name": "integral", "num_layers": 152, "num_joints": 18, "depth_dim": 72}``.

  Args:
    shapes: ``{torch key: shape}`` of the unwrapped state dict.
    depth_dim: depth bins per joint, if known.
    num_joints: joint count, if known.

  Raises:
    CheckpointError: the keys are an integral network's but inconsistent, or the channel
      split cannot be resolved.
  """
  p = "head.features."
  required = ("backbone.conv1.weight", "backbone.layer1.0.conv1.weight", f"{p}0.weight")
  if not all(k in shapes for k in required):
    return None
  conv_indices = sorted(int(m.group(1)) for k in shapes
                        if (m := re.fullmatch(r"head\.features\.(\d+)\.weight", k))
                        and len(shapes[k]) == 4)
  final = conv_indices[-1]
  if final % 3 or conv_indices != list(range(0, final + 1, 3)):
    raise CheckpointError(
        f"integral head: 4-D weights at head.features.{conv_indices}, expected indices "
        f"0, 3, ..., 3n (n deconvolutions, then the final conv)")
  num_deconv = final // 3
  filters, kernels, with_bias = deconv_spec(
      {k: v for k, v in shapes.items() if not k.startswith(f"{p}{final}.")}, p)
  if len(set(filters)) > 1 or len(set(kernels)) > 1 or with_bias:
    raise CheckpointError(
        f"integral head: DeconvHead has one filter count and one kernel and no deconv bias, "
        f"got filters {filters}, kernels {kernels}, bias {with_bias}")
  weight = shapes[f"{p}{final}.weight"]
  channels, conv_in, kernel = weight[0], weight[1], weight[2]
  if filters and conv_in != filters[0]:
    raise CheckpointError(f"integral head: final conv reads {conv_in} channels, the "
                          f"deconvolutions give {filters[0]}")
  with_bias_end = f"{p}{final}.bias" in shapes
  if not with_bias_end and f"{p}{final + 1}.running_mean" not in shapes:
    raise CheckpointError(f"integral head: final conv head.features.{final} has neither a "
                          f"bias nor a BatchNorm at head.features.{final + 1}")
  num_joints, depth_dim = _split_integral_channels(channels, depth_dim, num_joints)
  try:
    return integral.IntegralConfig(
        num_layers=infer_resnet_depth(shapes, "backbone."),
        num_joints=num_joints,
        depth_dim=depth_dim,
        num_deconv_layers=num_deconv,
        num_deconv_filters=filters[0] if filters else conv_in,
        num_deconv_kernel=kernels[0] if kernels else 4,
        final_conv_kernel=kernel,
        with_bias_end=with_bias_end,
        in_channels=shapes["backbone.conv1.weight"][1],
    )
  except ValueError as e:
    raise CheckpointError(f"integral checkpoint: {e}") from None


def _split_integral_channels(channels: int, depth_dim: int | None,
                             num_joints: int | None) -> tuple[int, int]:
  """``(num_joints, depth_dim)`` with ``num_joints * depth_dim == channels``."""
  if depth_dim is None and num_joints is None:
    depth_dim = integral.RELEASED_DEPTH_DIM
    how = f"the default depth_dim={depth_dim} (the released configs' value)"
  else:
    how = f"depth_dim={depth_dim}, num_joints={num_joints} as given"
  if depth_dim is None:
    depth_dim = channels // num_joints if num_joints > 0 else 0
  if num_joints is None:
    num_joints = channels // depth_dim if depth_dim > 0 else 0
  if num_joints < 1 or depth_dim < 1 or num_joints * depth_dim != channels:
    splits = [(j, channels // j) for j in range(1, channels + 1) if channels % j == 0]
    shown = ", ".join(f"J={j} x D={d}" for j, d in splits[:12])
    raise CheckpointError(
        f"integral checkpoint: final conv has {channels} channels; {INTEGRAL_AMBIGUITY}. "
        f"{channels} is not num_joints * depth_dim with {how}. Possible splits: {shown}"
        f"{' ...' if len(splits) > 12 else ''}. Pass the config explicitly: "
        f"convert_state_dict(sd, IntegralConfig(num_joints=..., depth_dim=..., ...)), "
        f"infer_integral_config(shapes, depth_dim=...), or the CLI's --model-config.")
  return num_joints, depth_dim


def _integral_head_renames(config) -> tuple[Rename, ...]:
  final = 3 * config.num_deconv_layers

  def target(match: re.Match) -> str:
    index = int(match.group(1))
    if index < final:
      return f"deconv_layers/layers/{index}"
    if index == final:
      return "final_layer"
    if index == final + 1 and not config.with_bias_end:
      return "final_bn"
    return f"head/features/{index}"  # no such module: reported as unexpected

  return (Rename(r"head\.features\.(\d+)", target),)


INTEGRAL = Family(
    name="integral",
    infer_config=infer_integral_config,
    renames=lambda config: (
        Rename(rf"backbone\.{RESNET_TRUNK}", r"backbone/\1"),
        Rename(RESNET_TRUNK, r"backbone/\1"),  # torchvision ImageNet state dicts (partial)
        *_integral_head_renames(config),
    ),
    export_renames=lambda config: (
        Rename(r"deconv_layers/layers/(\d+)", r"head/features/\1"),
        Rename(r"final_layer", f"head/features/{3 * config.num_deconv_layers}"),
        Rename(r"final_bn", f"head/features/{3 * config.num_deconv_layers + 1}"),
    ),
    description="Integral regression, JimmySuen/integral-human-pose "
                "common_pytorch/blocks/resnet_pose.py (ResPoseNet)",
)


# ----------------------------------------------------------------------------------------
# Weakly-supervised 3D (xingyizhou/pytorch-pose-hg-3d msra_resnet.PoseResNet)
# ----------------------------------------------------------------------------------------
# Checkpoints: ``{'epoch', 'state_dict'}`` without prefix: torchvision trunk names,
# ``deconv_layers.{3i, 3i+1}``, ``hm`` and (task human3d) ``depth``.


def _infer_hg3d(shapes: Shapes):
  required = ("conv1.weight", "layer1.0.conv1.weight", "deconv_layers.0.weight", "hm.weight")
  if not all(k in shapes for k in required) or "final_layer.weight" in shapes:
    return None
  hm = shapes["hm.weight"]
  if len(hm) != 4 or hm[2:] != (1, 1):
    raise CheckpointError(f"hg3d: head hm.weight {hm} is not a 1x1 convolution")
  depth = shapes.get("depth.weight")
  if depth is not None and depth != hm:
    raise CheckpointError(f"hg3d: head depth.weight {depth} differs from hm.weight {hm} "
                          f"(opts.py gives both heads one channel per joint)")
  filters, kernels, with_bias = deconv_spec(shapes, "deconv_layers.")
  try:
    return hg3d.HG3DConfig(
        num_layers=infer_resnet_depth(shapes),
        num_joints=hm[0],
        with_depth=depth is not None,
        deconv_filters=filters,
        deconv_kernels=kernels,
        deconv_with_bias=with_bias,
        in_channels=shapes["conv1.weight"][1],
    )
  except ValueError as e:
    raise CheckpointError(f"hg3d checkpoint: {e}") from None


HG3D = Family(
    name="hg3d",
    infer_config=_infer_hg3d,
    renames=lambda config: POSE_RESNET_RENAMES,
    export_renames=lambda config: POSE_RESNET_EXPORT_RENAMES,
    description="Weakly-supervised 3D pose, xingyizhou/pytorch-pose-hg-3d "
                "src/lib/models/msra_resnet.py (PoseResNet, heads hm + depth)",
)
