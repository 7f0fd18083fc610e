"""Checkpoint family of the pose HRNet (``pose_hrnet``).

Released files (``pose_coco/pose_hrnet_w32_256x192.pth``, ``pose_mpii/pose_hrnet_w48_256x256
.pth``, ...) are plain state dicts of ``PoseHighResolutionNet``: ``conv1``, ``bn1``, ``conv2``,
``bn2``, ``layer1.{0..3}``, ``transition{1..3}``, ``stage{2..4}.{module}.branches.{branch}
.{block}``, ``stage{k}.{module}.fuse_layers.{i}.{j}`` and ``final_layer``. The jaxpose
module tree uses the same names, so no renames are needed.

Every hyper-parameter is read off the tensors: the number of stages (``stage<k>`` prefixes),
per stage the module count, the branch count, the block type (Bottlenecks have ``conv3``), the
blocks per branch and the planes per branch (``conv1`` output channels), plus the joints and
kernel of ``final_layer`` and the image channels of ``conv1``. The original experiment yaml
(``--cfg experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml``: ``MODEL.NAME``,
``MODEL.NUM_JOINTS``, ``MODEL.EXTRA.FINAL_CONV_KERNEL`` and ``STAGE2..4``) is checked
against them, and gives the head's shape when ``final_layer.weight`` is missing.

ImageNet classification HRNets (HRNet-Image-Classification ``hrnet_w32-36af842e.pth``, ...)
share the trunk names but add ``incre_modules``, ``downsamp_modules``, a ``final_layer``
``Sequential`` and a ``classifier``, and their last module fuses into every branch. They are
not pose models: ``infer_config`` refuses them with instructions. To initialise a pose HRNet
from one, as the originals do with ``MODEL.PRETRAINED`` and ``PRETRAINED_LAYERS``::

    model, config, report = convert.convert_state_dict(
        imagenet_sd, hrnet.PoseHRNetConfig.w32(), allow_partial=True,
        select=convert.pretrained_layers_filter(hrnet.PRETRAINED_LAYERS))

or ``python -m jaxpose.convert hrnet_w32-36af842e.pth out/ --allow-partial --model-config
w32.json --pretrained-layers conv1 bn1 conv2 bn2 layer1 transition1 stage2 transition2
stage3 transition3 stage4``. Classification tensors have no place in the pose model
(``final_layer.0.weight`` is a module path the pose model lacks, its ``final_layer`` being a
single conv), so they are reported as unexpected or skipped, never loaded.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jaxpose.convert.configuration import ConfigReport, subtree
from jaxpose.convert.core import CheckpointError, Family, count_indices
from jaxpose.models import hrnet

Shapes = Mapping[str, tuple[int, ...]]

# Top-level modules of the ImageNet classification HRNet that the pose HRNet lacks.
CLASSIFICATION_MODULES = ("incre_modules", "downsamp_modules", "classifier")

_PRETRAINED_HINT = (
    "convert it with a pose config and partial loading: "
    "convert.convert_state_dict(sd, hrnet.PoseHRNetConfig.w32(), allow_partial=True, "
    "select=convert.pretrained_layers_filter(hrnet.PRETRAINED_LAYERS)), or on the command line "
    "--allow-partial --model-config POSE_CONFIG.json --pretrained-layers "
    + " ".join(hrnet.PRETRAINED_LAYERS))


def _stage_numbers(shapes: Shapes, prefix: str) -> list[int]:
  return sorted({int(m.group(1)) for k in shapes if (m := re.match(rf"{prefix}(\d+)\.", k))})


def _infer_stage(shapes: Shapes, k: int) -> hrnet.HRNetStage:
  """``STAGE<k>`` from the tensors of ``stage<k>.0`` (later modules are checked by mapping)."""
  modules = count_indices(shapes, rf"stage{k}\.(\d+)\.")
  branches = count_indices(shapes, rf"stage{k}\.0\.branches\.(\d+)\.")
  if branches == 0:
    raise CheckpointError(f"stage{k}.0 has no branches (no stage{k}.0.branches.* tensors)")
  bottleneck = [f"stage{k}.0.branches.{b}.0.conv3.weight" in shapes for b in range(branches)]
  if len(set(bottleneck)) != 1:
    raise CheckpointError(
        f"stage{k}.0 mixes Basic and Bottleneck branches (conv3 present: {bottleneck}); "
        "one BLOCK per stage")
  blocks, planes = [], []
  for b in range(branches):
    blocks.append(count_indices(shapes, rf"stage{k}\.0\.branches\.{b}\.(\d+)\.conv1\.weight"))
    key = f"stage{k}.0.branches.{b}.0.conv1.weight"
    if key not in shapes:
      raise CheckpointError(f"missing {key} (first block of stage{k} branch {b})")
    planes.append(shapes[key][0])
  return hrnet.HRNetStage(num_modules=modules, block="bottleneck" if bottleneck[0] else "basic",
                          num_blocks=tuple(blocks), num_channels=tuple(planes))


def _infer_stem(shapes: Shapes) -> dict[str, int]:
  """``stem_channels``, ``layer1_blocks``, ``layer1_planes`` (64 / 4 / 64 in the original)."""
  stem = shapes["conv1.weight"][0]
  problems = []
  if tuple(shapes["conv1.weight"][2:]) != (3, 3):
    problems.append(f"conv1.weight {shapes['conv1.weight']} (expected a 3x3 kernel)")
  if tuple(shapes["conv2.weight"]) != (stem, stem, 3, 3):
    problems.append(f"conv2.weight {shapes['conv2.weight']} (expected [{stem}, {stem}, 3, 3])")
  blocks = count_indices(shapes, r"layer1\.(\d+)\.conv1\.weight")
  if blocks < 1 or "layer1.0.conv3.weight" not in shapes:
    problems.append(f"layer1 has {blocks} blocks "
                    f"({'Bottleneck' if 'layer1.0.conv3.weight' in shapes else 'Basic'}); "
                    "expected Bottlenecks")
  if problems:
    raise CheckpointError("HRNet stem/layer1 are not pose_hrnet's: " + "; ".join(problems))
  return {"stem_channels": stem, "layer1_blocks": blocks,
          "layer1_planes": shapes["layer1.0.conv1.weight"][0]}


TRUNK_REQUIRED = ("conv1.weight", "conv2.weight", "layer1.0.conv1.weight",
                  "stage2.0.branches.0.0.conv1.weight")


def infer_pose_hrnet(shapes: Shapes, hints: Mapping[str, Any] | None = None,
                     report: ConfigReport | None = None) -> hrnet.PoseHRNetConfig | None:
  """The ``PoseHRNetConfig`` of a ``PoseHighResolutionNet`` state dict, or None if not one.

  A file without ``final_layer.weight`` (a damaged file, or another head on an HRNet
  trunk) gives None, unless ``hints`` give ``num_joints`` (and ``final_conv_kernel``,
  else assumed 1): then the head's shape comes from the hints and the mapping reports the
  missing tensors by name.

  Raises:
    CheckpointError: an ImageNet classification HRNet (with instructions for partial
      loading), or an HRNet state dict whose tensors are inconsistent.
  """
  hints = hints or {}
  if not all(k in shapes for k in TRUNK_REQUIRED):
    return None
  heads = sorted({k.split(".", 1)[0] for k in shapes} & set(CLASSIFICATION_MODULES))
  if heads:
    raise CheckpointError(
        f"this is an ImageNet classification HRNet (it has {', '.join(heads)}), not a pose "
        f"model; to initialise pose_hrnet from it, {_PRETRAINED_HINT}")
  stem = _infer_stem(shapes)
  numbers = _stage_numbers(shapes, "stage")
  if numbers != list(range(2, len(numbers) + 2)):
    raise CheckpointError(f"HRNet stages {numbers} are not consecutive from stage2")
  transitions = _stage_numbers(shapes, "transition")
  if any(t > len(numbers) for t in transitions):
    t = max(transitions)
    raise CheckpointError(f"transition{t} tensors without a stage{t + 1}")
  stages = tuple(_infer_stage(shapes, k) for k in numbers)
  last = numbers[-1]
  last_module = stages[-1].num_modules - 1
  outputs = count_indices(shapes, rf"stage{last}\.{last_module}\.fuse_layers\.(\d+)\.")
  if outputs > 1:
    raise CheckpointError(
        f"the last module of stage{last} fuses into {outputs} outputs; pose_hrnet keeps only the "
        "highest-resolution one (this looks like an HRNet backbone or classification trunk); "
        f"to initialise pose_hrnet from it, {_PRETRAINED_HINT}")
  final = shapes.get("final_layer.weight")
  if final is not None and len(final) == 4:
    if final[2] != final[3]:
      raise CheckpointError(f"final_layer.weight {final}: non-square kernel")
    joints, kernel = final[0], final[2]
  elif "num_joints" in hints:  # the head's shape as the user gave it
    joints = hints["num_joints"]
    kernel = hints.get("final_conv_kernel")
    if kernel is None:
      kernel = 1
      if report is not None:
        report.assume("final_conv_kernel", 1, "final_layer.weight is missing and "
                      "MODEL.EXTRA.FINAL_CONV_KERNEL was not given; 1 as in every released yaml")
  else:
    return None  # another head on an HRNet trunk (e.g. HigherHRNet's final_layers)
  try:
    return hrnet.PoseHRNetConfig(stages=stages, num_joints=joints, final_conv_kernel=kernel,
                                 in_channels=shapes["conv1.weight"][1], **stem)
  except ValueError as e:
    raise CheckpointError(f"inconsistent pose_hrnet state dict: {e}") from e


def _hrnet_from_yaml(flat: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
  """``MODEL.*`` of an ``experiments/*/hrnet/*.yaml`` -> ``PoseHRNetConfig`` fields."""
  out: dict[str, tuple[Any, str]] = {}
  for key, field in (("MODEL.NAME", "name"), ("MODEL.NUM_JOINTS", "num_joints"),
                     ("MODEL.EXTRA.FINAL_CONV_KERNEL", "final_conv_kernel")):
    if key in flat:
      out[field] = (flat[key], key)
  stages = {k: subtree(flat, f"MODEL.EXTRA.STAGE{k}") for k in (2, 3, 4)}
  present = [k for k, v in stages.items() if v]
  if present and len(present) != 3:
    raise ValueError(f"MODEL.EXTRA has STAGE{present} but pose_hrnet reads STAGE2, STAGE3 and "
                     "STAGE4")
  if present:
    out["stages"] = (tuple(hrnet.HRNetStage.from_original(stages[k]) for k in (2, 3, 4)),
                     "MODEL.EXTRA.STAGE2-4")
  return out


POSE_HRNET = Family(
    name="pose_hrnet",
    infer_config=infer_pose_hrnet,
    renames=lambda config: (),
    export_renames=lambda config: (),
    description="HRNet, leoxiaobin/deep-high-resolution-net.pytorch lib/models/pose_hrnet.py",
    key_pattern=r"(conv1|bn1|conv2|bn2|layer1|transition\d+|stage\d+\.\d+|final_layer)\.",
    required=(*TRUNK_REQUIRED, "final_layer.weight"),
    from_original=_hrnet_from_yaml,
    original_keys=("MODEL.NAME", "MODEL.NUM_JOINTS", "MODEL.EXTRA.FINAL_CONV_KERNEL",
                   "MODEL.EXTRA.STAGE2.", "MODEL.EXTRA.STAGE3.", "MODEL.EXTRA.STAGE4."),
    program="deep-high-resolution-net.pytorch",
)
