"""Checkpoint families of the temporal lifters: VideoPose3D and Pose3D-RIE.

Both projects save ``{'epoch', 'lr', 'optimizer', 'model_pos': state_dict, ...}`` without
a prefix (VideoPose3D semi-supervised runs add ``model_traj``: convert it with
``key='model_traj'``). The jaxpose modules carry the PyTorch names, so no renames are
needed.

Read off the tensors: filter widths (kernel sizes of ``expand_conv`` and
``layers_conv.{2i}``), dense or dilated (see ``temporal_widths``), channels, joints in
(``expand_conv`` input channels / 2) and out (``shrink`` rows / 3), RIE's latent feature
dimension, FC width and stage (``FuseBlocks`` present: 3, absent: 1). Not in the
tensors, so left at the original defaults unless a config is passed: ``causal`` (False),
dropout, VideoPose3D ``in_features`` (2), and RIE ``optimize_1f`` (True, False for dense
checkpoints; it changes the computation, never the weights) and stage 2 vs 3 (identical
architectures).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping

from jaxpose.convert.core import CheckpointError, Family, count_indices
from jaxpose.models import lifters

Shapes = Mapping[str, tuple[int, ...]]


def temporal_widths(shapes: Shapes, prefix: str = "", source: str = "checkpoint"
                    ) -> tuple[tuple[int, ...], bool]:
  """``(filter_widths, dense)`` of a temporal stack whose keys start with ``prefix``.

  The width of block ``i`` is the kernel size ``k_i`` of ``layers_conv.{2i-2}``; a dense
  stack instead has ``k_i = (w_i - 1) * d_i + 1`` with ``d_i = w_0 * ... * w_{i-1}``. The
  stack is read as dense when every kernel fits that progression with odd widths and at
  least one kernel is wider than its width; otherwise as dilated. (A dilated model whose
  widths happen to follow the progression, e.g. 3,7,19, needs an explicit config.)
  """
  expand = shapes[f"{prefix}expand_conv.weight"]
  count = count_indices(shapes, rf"{re.escape(prefix)}layers_conv\.(\d+)\.weight$")
  if count % 2:
    raise CheckpointError(f"{source}: {prefix}layers_conv has {count} convolutions; "
                          "expected pairs (wide + 1x1) per block")
  kernels = []
  for i in range(0, count, 2):
    wide = shapes[f"{prefix}layers_conv.{i}.weight"]
    point = shapes[f"{prefix}layers_conv.{i + 1}.weight"]
    if len(wide) != 3 or len(point) != 3 or point[2] != 1:
      raise CheckpointError(
          f"{source}: {prefix}layers_conv.{i}/{i + 1} have shapes {wide}/{point}; expected "
          "[C, C, k] and [C, C, 1] Conv1d weights")
    kernels.append(wide[2])
  first = expand[2]
  dense_widths = [first]
  for k in kernels:
    d = math.prod(dense_widths)
    if (k - 1) % d or ((k - 1) // d) % 2:
      break  # not a dense kernel of an odd width
    dense_widths.append((k - 1) // d + 1)
  dense = (len(dense_widths) == len(kernels) + 1
           and any(k != w for k, w in zip(kernels, dense_widths[1:])))
  widths = tuple(dense_widths) if dense else (first, *kernels)
  if any(w % 2 == 0 for w in widths):
    raise CheckpointError(f"{source}: {prefix} temporal kernel sizes {widths} include even "
                          "widths; the original supports odd filter widths only")
  return widths, dense


def _infer_videopose3d(shapes: Shapes):
  expand, shrink = shapes.get("expand_conv.weight"), shapes.get("shrink.weight")
  if expand is None or shrink is None or len(expand) != 3 or len(shrink) != 3:
    return None
  widths, dense = temporal_widths(shapes)
  channels, inputs = expand[0], expand[1]
  if inputs % 2:
    raise CheckpointError(
        f"checkpoint: expand_conv takes {inputs} input channels, not joints x 2 features; "
        "pass a VideoPose3DConfig with num_joints_in/in_features")
  if shrink[0] % 3 or shrink[1] != channels:
    raise CheckpointError(
        f"checkpoint: shrink.weight {shrink} does not map {channels} channels to joints x 3")
  return lifters.VideoPose3DConfig(
      num_joints_in=inputs // 2, in_features=2, num_joints_out=shrink[0] // 3,
      filter_widths=widths, channels=channels, dense=dense)


def _infer_rie(shapes: Shapes):
  required = ("LocalLayer_Torso.expand_conv.weight", "LocalLayer_Torso.shrink.weight",
              "GlobalInfo.fc_1.weight", "Integration_Torso.fc_1.weight")
  if not all(k in shapes for k in required):
    return None
  widths, dense = temporal_widths(shapes, "LocalLayer_Torso.")
  expand = shapes["LocalLayer_Torso.expand_conv.weight"]
  torso_in = 3 * len(lifters.RIE_GROUPS[0][1]) * lifters.RIE_IN_FEATURES
  if expand[1] != torso_in:
    raise CheckpointError(
        f"checkpoint: LocalLayer_Torso.expand_conv takes {expand[1]} channels, RIE's torso "
        f"group takes {torso_in} (RIE is hard-wired to 17 joints x 2 features)")
  latent = shapes["LocalLayer_Torso.shrink.weight"][0]
  linear_size, global_in = shapes["GlobalInfo.fc_1.weight"]
  if global_in != lifters.RIE_NUM_JOINTS * lifters.RIE_IN_FEATURES:
    raise CheckpointError(f"checkpoint: GlobalInfo.fc_1 takes {global_in} inputs, not 17 x 2")
  stage = 3 if "FuseBlocks.0.fc_1.weight" in shapes else 1
  decoder_in = shapes["Integration_Torso.fc_1.weight"][1]
  if decoder_in != (3 if stage == 3 else 2) * latent:
    raise CheckpointError(
        f"checkpoint: Integration_Torso.fc_1 takes {decoder_in} features; with latent "
        f"dimension {latent} and{'' if stage == 3 else ' no'} FuseBlocks it must take "
        f"{(3 if stage == 3 else 2) * latent}")
  return lifters.RIEConfig(
      filter_widths=widths, latent_features=latent, channels=expand[0], dense=dense,
      optimize_1f=not dense, stage=stage, linear_size=linear_size)


def rie_encoders_select(key: str) -> bool:
  """``select`` for RIE stage 2's ``--pretrain``: only the stage-1 encoders' tensors.

  ``convert_state_dict(stage1_sd, RIEConfig(stage=2, ...), allow_partial=True,
  select=rie_encoders_select)`` gives the original's stage-2 starting point (its first
  317 state-dict entries = the five temporal encoders and ``GlobalInfo``).
  """
  return key.split(".", 1)[0] in lifters.RIE_ENCODERS


VIDEOPOSE3D = Family(
    name="videopose3d",
    infer_config=_infer_videopose3d,
    renames=lambda config: (),
    export_renames=lambda config: (),
    description="VideoPose3D TemporalModel, facebookresearch/VideoPose3D common/model.py",
)

RIE = Family(
    name="rie",
    infer_config=_infer_rie,
    renames=lambda config: (),
    export_renames=lambda config: (),
    description="RIEModel, paTRICK-swk/Pose3D-RIE common/model.py",
)
