"""Checkpoint family of Pose3D-RIE (``rie``).

``run.py`` saves ``{'epoch', 'lr', 'random_state', 'optimizer', 'model_pos': state_dict}``
without a prefix, as ``stage_<N>_epoch_<M>.bin``. The jaxpose module carries the PyTorch
names, so no renames are needed.

Read off the tensors: filter widths, dense or dilated (``temporal.temporal_widths``),
channels, latent feature dimension (``-lfd``), FC width and whether the stage is 1 (no
``FuseBlocks``) or 2/3. ``optimize_1f`` follows the original's evaluation model
(``Optimize1f=True``; False for dense stacks); it changes the computation, never the
weights.

Not in the tensors: ``causal``, ``dropout`` and stage 2 vs 3 (one architecture; they
differ in what trains). They come from the original's command line, parsed as ``run.py``
does (``-- -arc 3,3,3,3,3 --stage 3 -lfd 512 [--causal] [-drop 0.2] [-ch 256]``; flags
left out take run.py's defaults, ``--stage 1`` included), from saved ``args``, from the
``stage_<N>_epoch_<M>.bin`` name run.py gives its checkpoints, or from
``--model-config``. Otherwise ``causal=False``, ``dropout=0.2`` and ``stage=3`` are
assumed, with a warning.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jaxpose.convert.configuration import ConfigReport, OriginalArg
from jaxpose.convert.core import CheckpointError, Family
from jaxpose.convert.temporal import (TEMPORAL_ARG_FIELDS, TEMPORAL_HIDDEN, temporal_from_args,
                                      temporal_widths)
from jaxpose.models import rie

# common/arguments.py flags that shape the model, with run.py's defaults.
RIE_ARGS = (
    OriginalArg(("-arc", "--architecture"), "architecture", str, "3,3,3,3,3"),
    OriginalArg(("--causal",), "causal", None, False),
    OriginalArg(("-drop", "--dropout"), "dropout", float, 0.2),
    OriginalArg(("-ch", "--channels"), "channels", int, 256),
    OriginalArg(("--dense",), "dense", None, False),
    OriginalArg(("--stage",), "stage", int, 1),
    OriginalArg(("-lfd", "--latent-features-dim"), "latent_features_dim", int, 256),
)
RIE_ARG_FIELDS = {**TEMPORAL_ARG_FIELDS, "stage": "stage",
                  "latent_features_dim": "latent_features"}

Shapes = Mapping[str, tuple[int, ...]]


RIE_REQUIRED = ("LocalLayer_Torso.expand_conv.weight", "LocalLayer_Torso.shrink.weight",
                "GlobalInfo.fc_1.weight", "Integration_Torso.fc_1.weight")


def _infer_rie(shapes: Shapes, hints: Mapping[str, Any] | None = None,
               report: ConfigReport | None = None):
  hints = hints or {}
  report = report if report is not None else ConfigReport()
  if not all(k in shapes for k in RIE_REQUIRED):
    return None
  widths, dense = temporal_widths(shapes, "LocalLayer_Torso.", dense=hints.get("dense"),
                                  filter_widths=hints.get("filter_widths"))
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
  fused = "FuseBlocks.0.fc_1.weight" in shapes
  decoder_in = shapes["Integration_Torso.fc_1.weight"][1]
  if decoder_in != (3 if fused else 2) * latent:
    raise CheckpointError(
        f"checkpoint: Integration_Torso.fc_1 takes {decoder_in} features; with latent "
        f"dimension {latent} and{'' if fused else ' no'} FuseBlocks it must take "
        f"{(3 if fused else 2) * latent}")
  stage = _stage(fused, hints.get("stage"), report)
  optimize_1f = hints.get("optimize_1f", not dense)
  report.infer("optimize_1f", optimize_1f, "the original evaluates with Optimize1f=True "
               "(strided encoders); dense stacks have no strided form")
  return rie.RIEConfig(
      filter_widths=widths, latent_features=latent, channels=expand[0], dense=dense,
      optimize_1f=optimize_1f, stage=stage, linear_size=linear_size)


def _stage(fused: bool, given: int | None, report: ConfigReport) -> int:
  """1 without FuseBlocks; with them the given 2 or 3, else 3 (assumed)."""
  if not fused:
    return 1 if given is None else given  # a given 2 or 3 is reported as a contradiction
  if given is None:
    report.assume("stage", 3, "FuseBlocks are present, so the stage is 2 or 3, which share "
                  "one architecture and differ in what trains (rie_trainable); pass the "
                  "original's --stage")
    return 3
  if given not in (2, 3):
    raise CheckpointError(f"the tensors have FuseBlocks (stage 2 or 3) but stage {given} was "
                          "given")
  return given


def stage_from_file_name(name: str) -> dict[str, tuple[Any, str]]:
  """``stage_2_epoch_40.bin`` (the name run.py gives its checkpoints) -> stage 2."""
  match = re.search(r"stage_(\d+)_epoch_\d+", name)
  if match is None:
    return {}
  return {"stage": (int(match.group(1)), f"checkpoint file name {name}")}


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
    key_pattern=r"(LocalLayer_\w+|GlobalInfo|FuseBlocks|Integration_\w+)\.",
    required=RIE_REQUIRED,
    hidden=TEMPORAL_HIDDEN,
    from_original=lambda args: temporal_from_args(args, RIE_ARG_FIELDS),
    original_keys=tuple(RIE_ARG_FIELDS),
    original_args=RIE_ARGS,
    program="Pose3D-RIE run.py",
    file_evidence=stage_from_file_name,
)
