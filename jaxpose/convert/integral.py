"""Checkpoint family of integral regression (``integral``; JimmySuen/integral-human-pose
``ResPoseNet``).

Checkpoints: ``{'epoch', 'network': state_dict}`` with ``module.`` prefixes
(DataParallelModel), unwrapped by the core: ``backbone.{conv1,bn1,layer1..4}`` and
``head.features.{i}`` (ConvTranspose2d at 3i, BatchNorm2d at 3i+1, the final Conv2d at 3n,
and with ``with_bias_end=False`` its BatchNorm2d at 3n+1).

Every hyper-parameter is in the tensors except one: the final convolution has
``C = num_joints * depth_dim`` channels, and the original reads ``depth_dim`` from its
experiment yaml (``network.depth_dim``) and the joint count from the target dataset
(``dataset.name[dataiter.target_id]``: ``hm36`` and ``hm36_eccv_challenge`` 18, ``mpii``
16, ``coco`` 17). The split is taken, in this order, from:

1. what the user gives: the yaml (``--cfg``), ``--model-config depth_dim=D`` or
   ``num_joints=J`` (either one fixes the other);
2. the rule below, when exactly one split satisfies it;
3. otherwise, if no split satisfies the rule and ``C`` is a multiple of 64, the released
   configs' ``depth_dim=64`` is *assumed* (a warning); if several satisfy it, or none and
   64 does not divide ``C``, the conversion fails listing the candidates.

The rule: ``num_joints`` is a joint count of a dataset the original trains on (16, 17 or
18) and ``depth_dim`` is 1 (a 2D model) or a multiple of 8 from 32 to 256. The released
configs use ``depth_dim`` = the heatmap width = patch width / 4 (64 for 256-pixel patches,
72 for the 288-wide challenge patches), patch sizes are multiples of 32, and patches from
128 to 1024 pixels wide give 32 to 256. So 1296 channels are 18 x 72 (16 x 81 and
17 x 76.2 fail the rule), while 1152 = 18 x 64 = 16 x 72 is ambiguous and needs the yaml
or a flag.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jaxpose.convert.configuration import ConfigReport
from jaxpose.convert.core import CheckpointError, Family, Rename
from jaxpose.convert.resnet import RESNET_TRUNK, deconv_spec, infer_resnet_depth
from jaxpose.models import integral

Shapes = Mapping[str, tuple[int, ...]]

# Joints of the datasets the original trains on (``joint_num`` of its dataset classes).
DATASET_JOINTS = {"hm36": 18, "hm36_eccv_challenge": 18, "mpii": 16, "coco": 17}
KNOWN_JOINT_COUNTS = {16: "MPII", 17: "COCO", 18: "Human3.6M + thorax"}
DEPTH_MULTIPLE = 8  # depth_dim = patch width / 4 with patch sizes multiples of 32
DEPTH_RANGE = (32, 256)  # patches 128 to 1024 pixels wide

INTEGRAL_REQUIRED = ("backbone.conv1.weight", "backbone.layer1.0.conv1.weight",
                     "head.features.0.weight")
INTEGRAL_AMBIGUITY = (
    "the final conv of an integral head has num_joints * depth_dim channels, which the "
    "weights cannot split (the original reads depth_dim from its yaml and the joint count "
    "from the dataset)")
_HOW_TO_PASS = (
    "pass the original yaml (--cfg experiments/.../*.yaml: network.depth_dim and "
    "dataset.name) or --model-config depth_dim=D (or num_joints=J); in Python "
    "original_config='....yaml' or overrides={'depth_dim': D}")


def plausible_depth(depth_dim: int) -> bool:
  """The rule's depth bins: 1 (2D) or a multiple of 8 from 32 to 256."""
  low, high = DEPTH_RANGE
  return depth_dim == 1 or (low <= depth_dim <= high and depth_dim % DEPTH_MULTIPLE == 0)


def rule_candidates(channels: int) -> list[tuple[int, int]]:
  """``(num_joints, depth_dim)`` splits of ``channels`` that satisfy the rule."""
  return [(j, channels // j) for j in sorted(KNOWN_JOINT_COUNTS)
          if channels % j == 0 and plausible_depth(channels // j)]


def _splits(channels: int, limit: int = 12) -> str:
  splits = [(j, channels // j) for j in range(1, channels + 1) if channels % j == 0]
  shown = ", ".join(f"J={j} x D={d}" for j, d in splits[:limit])
  return shown + (" ..." if len(splits) > limit else "")


def split_integral_channels(channels: int, depth_dim: int | None, num_joints: int | None,
                            report: ConfigReport | None = None) -> tuple[int, int]:
  """``(num_joints, depth_dim)`` with ``num_joints * depth_dim == channels`` (module rules).

  Raises:
    CheckpointError: the given numbers do not divide ``channels``, or the split is
      ambiguous (listing the candidates and how to pass the configuration).
  """
  report = report if report is not None else ConfigReport()
  if depth_dim is not None or num_joints is not None:
    given = f"depth_dim={depth_dim}" if depth_dim is not None else f"num_joints={num_joints}"
    d = depth_dim if depth_dim is not None else (channels // num_joints if num_joints else 0)
    j = num_joints if num_joints is not None else (channels // depth_dim if depth_dim else 0)
    if j < 1 or d < 1 or j * d != channels:
      raise CheckpointError(
          f"integral checkpoint: the final conv has {channels} channels = num_joints * "
          f"depth_dim, which {given} does not divide. Possible splits: {_splits(channels)}")
    other = "num_joints" if depth_dim is not None else "depth_dim"
    report.infer(other, j if other == "num_joints" else d,
                 f"{channels} final conv channels / {given}")
    return j, d
  candidates = rule_candidates(channels)
  if len(candidates) == 1:
    j, d = candidates[0]
    why = (f"{channels} final conv channels = {j} joints ({KNOWN_JOINT_COUNTS[j]}) x {d} depth "
           f"bins, the only split with a known joint count (16, 17, 18) and a depth of 1 or a "
           f"multiple of {DEPTH_MULTIPLE} in {DEPTH_RANGE[0]}..{DEPTH_RANGE[1]}")
    report.infer("num_joints", j, why)
    report.infer("depth_dim", d, why)
    return j, d
  if candidates:
    shown = " or ".join(f"num_joints={j} ({KNOWN_JOINT_COUNTS[j]}) x depth_dim={d}"
                        for j, d in candidates)
    raise CheckpointError(
        f"integral checkpoint: the final conv has {channels} channels; {INTEGRAL_AMBIGUITY}. "
        f"Candidates: {shown}; {_HOW_TO_PASS}")
  d = integral.RELEASED_DEPTH_DIM
  if channels % d:
    raise CheckpointError(
        f"integral checkpoint: the final conv has {channels} channels; {INTEGRAL_AMBIGUITY}. "
        f"No known joint count (16, 17, 18) gives a depth of 1 or a multiple of "
        f"{DEPTH_MULTIPLE} in {DEPTH_RANGE[0]}..{DEPTH_RANGE[1]}, and {channels} is not a "
        f"multiple of the released depth_dim={d}. "
        f"Possible splits: {_splits(channels)}; {_HOW_TO_PASS}")
  report.assume("depth_dim", d,
                f"{channels} final conv channels have no split with a known joint count; "
                f"the released configs' depth_dim={d} gives {channels // d} joints "
                "(pass --cfg or --model-config depth_dim=D if that is wrong)")
  report.infer("num_joints", channels // d, f"{channels} final conv channels / depth_dim={d}")
  return channels // d, d


def infer_integral_config(shapes: Shapes, hints: Mapping[str, Any] | None = None,
                          report: ConfigReport | None = None, *, depth_dim: int | None = None,
                          num_joints: int | None = None):
  """The ``IntegralConfig`` of a ``ResPoseNet`` state dict, or None if it is not one.

  Every hyper-parameter is read off the tensors except the split of the final channels
  (``split_integral_channels``; ``depth_dim``/``num_joints`` or ``hints`` resolve it)::

      config = infer_integral_config(convert.core.shape_table(sd), depth_dim=72)

  Raises:
    CheckpointError: the keys are an integral network's but inconsistent, or the channel
      split cannot be resolved.
  """
  hints = hints or {}
  depth_dim = depth_dim if depth_dim is not None else hints.get("depth_dim")
  num_joints = num_joints if num_joints is not None else hints.get("num_joints")
  p = "head.features."
  if not all(k in shapes for k in INTEGRAL_REQUIRED):
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
  num_joints, depth_dim = split_integral_channels(channels, depth_dim, num_joints, report)
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


# ``network`` keys of the original yaml (``get_default_network_config``) -> fields.
INTEGRAL_YAML = {
    "network.num_layers": "num_layers",
    "network.num_deconv_layers": "num_deconv_layers",
    "network.num_deconv_filters": "num_deconv_filters",
    "network.num_deconv_kernel": "num_deconv_kernel",
    "network.final_conv_kernel": "final_conv_kernel",
    "network.depth_dim": "depth_dim",
    "network.input_channel": "in_channels",
}


def _integral_from_yaml(flat: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
  """An experiment yaml -> ``IntegralConfig`` fields; the joints from the target dataset."""
  block = flat.get("pytorch.block")
  if block is not None and block != "resnet_pose":
    raise ValueError(f"pytorch.block is {block!r}: only resnet_pose (ResPoseNet, the integral "
                     "regression network) has a jaxpose port")
  out = {field: (flat[key], key) for key, field in INTEGRAL_YAML.items() if key in flat}
  if "dataset.name" in flat:
    names = flat["dataset.name"]
    names = [names] if isinstance(names, str) else list(names)
    target = flat.get("dataiter.target_id", 0)
    if not isinstance(target, int) or not 0 <= target < len(names):
      raise ValueError(f"dataiter.target_id {target!r} does not index dataset.name {names}")
    if names[target] not in DATASET_JOINTS:
      raise ValueError(f"dataset {names[target]!r} (dataset.name[{target}]) is unknown; known: "
                       f"{sorted(DATASET_JOINTS)}")
    out["num_joints"] = (DATASET_JOINTS[names[target]], "dataset.name")
  return out


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
    key_pattern=r"(backbone|head)\.",
    required=INTEGRAL_REQUIRED,
    from_original=_integral_from_yaml,
    original_keys=(*INTEGRAL_YAML, "dataset.name", "dataiter.target_id", "pytorch.block"),
    program="integral-human-pose",
)
