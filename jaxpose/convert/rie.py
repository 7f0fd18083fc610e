"""Checkpoint family of Pose3D-RIE (``rie``).

``run.py`` saves ``{'epoch', 'lr', 'random_state', 'optimizer', 'model_pos': state_dict}``
without a prefix, as ``stage_<N>_epoch_<M>.bin``. The jaxpose module carries the PyTorch
names, so no renames are needed.

Read off the tensors: filter widths, dense or dilated (``temporal.temporal_widths``),
channels, latent feature dimension, FC width and stage (``FuseBlocks`` present: 2 or 3,
absent: 1). Not in the tensors, so left at the original defaults unless a config is
passed: ``causal`` (False), dropout, ``optimize_1f`` (True, False for dense checkpoints; it
changes the computation, never the weights) and stage 2 vs 3 (identical architectures).
"""
from __future__ import annotations

from collections.abc import Mapping

from jaxpose.convert.core import CheckpointError, Family
from jaxpose.convert.temporal import temporal_widths
from jaxpose.models import rie

Shapes = Mapping[str, tuple[int, ...]]


def _infer_rie(shapes: Shapes):
  required = ("LocalLayer_Torso.expand_conv.weight", "LocalLayer_Torso.shrink.weight",
              "GlobalInfo.fc_1.weight", "Integration_Torso.fc_1.weight")
  if not all(k in shapes for k in required):
    return None
  widths, dense = temporal_widths(shapes, "LocalLayer_Torso.")
  expand = shapes["LocalLayer_Torso.expand_conv.weight"]
  torso_in = 3 * len(rie.RIE_GROUPS[0][1]) * rie.RIE_IN_FEATURES
  if expand[1] != torso_in:
    raise CheckpointError(
        f"checkpoint: LocalLayer_Torso.expand_conv takes {expand[1]} channels, RIE's torso "
        f"group takes {torso_in} (RIE is hard-wired to 17 joints x 2 features)")
  latent = shapes["LocalLayer_Torso.shrink.weight"][0]
  linear_size, global_in = shapes["GlobalInfo.fc_1.weight"]
  if global_in != rie.RIE_NUM_JOINTS * rie.RIE_IN_FEATURES:
    raise CheckpointError(f"checkpoint: GlobalInfo.fc_1 takes {global_in} inputs, not 17 x 2")
  stage = 3 if "FuseBlocks.0.fc_1.weight" in shapes else 1
  decoder_in = shapes["Integration_Torso.fc_1.weight"][1]
  if decoder_in != (3 if stage == 3 else 2) * latent:
    raise CheckpointError(
        f"checkpoint: Integration_Torso.fc_1 takes {decoder_in} features; with latent "
        f"dimension {latent} and{'' if stage == 3 else ' no'} FuseBlocks it must take "
        f"{(3 if stage == 3 else 2) * latent}")
  return rie.RIEConfig(
      filter_widths=widths, latent_features=latent, channels=expand[0], dense=dense,
      optimize_1f=not dense, stage=stage, linear_size=linear_size)


def rie_encoders_select(key: str) -> bool:
  """``select`` for RIE stage 2's ``--pretrain``: only the stage-1 encoders' tensors.

  ``convert_state_dict(stage1_sd, RIEConfig(stage=2, ...), allow_partial=True,
  select=rie_encoders_select)`` gives the original's stage-2 starting point (its first
  317 state-dict entries = the five temporal encoders and ``GlobalInfo``).
  """
  return key.split(".", 1)[0] in rie.RIE_ENCODERS


RIE = Family(
    name="rie",
    infer_config=_infer_rie,
    renames=lambda config: (),
    export_renames=lambda config: (),
    description="RIEModel, paTRICK-swk/Pose3D-RIE common/model.py",
)
