"""Checkpoint family of VideoPose3D (``videopose3d``).

``run.py`` saves ``{'epoch', 'lr', 'random_state', 'optimizer', 'model_pos': state_dict,
'model_traj', 'random_state_semi'}`` without a prefix (semi-supervised runs fill
``model_traj``: convert it with ``key='model_traj'``). The jaxpose module carries the
PyTorch names, so no renames are needed.

Read off the tensors: filter widths (kernel sizes of ``expand_conv`` and
``layers_conv.{2i}``), dense or dilated (``temporal.temporal_widths``; kernels that fit
both readings need ``--dense`` or ``-arc``), channels, joints out (``shrink`` rows / 3)
and joints in (``expand_conv`` input channels = joints x features: 2 features, x and y,
when that gives as many joints in as out).

Not in the tensors: ``causal`` and ``dropout``. They come from the original's command
line, which the converter parses as ``run.py`` does (``-- -arc 3,3,3,3 --causal -drop
0.25 -ch 1024 [--dense]``; flags left out take run.py's defaults), from saved ``args`` in
the checkpoint, or from ``--model-config causal=true``. Otherwise ``causal=False`` and
``dropout=0.25`` are assumed, with a warning: a causal model converted as symmetric gives
silently wrong poses.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxpose.convert.configuration import ConfigReport, OriginalArg
from jaxpose.convert.core import CheckpointError, Family
from jaxpose.convert.temporal import (TEMPORAL_ARG_FIELDS, TEMPORAL_HIDDEN, temporal_from_args,
                                      temporal_widths)
from jaxpose.models import videopose3d

Shapes = Mapping[str, tuple[int, ...]]

# common/arguments.py flags that shape the model, with run.py's defaults.
VIDEOPOSE3D_ARGS = (
    OriginalArg(("-arc", "--architecture"), "architecture", str, "3,3,3"),
    OriginalArg(("--causal",), "causal", None, False),
    OriginalArg(("-drop", "--dropout"), "dropout", float, 0.25),
    OriginalArg(("-ch", "--channels"), "channels", int, 1024),
    OriginalArg(("--dense",), "dense", None, False),
)


def input_split(inputs: int, joints_out: int, hints: Mapping[str, Any],
                report: ConfigReport | None) -> tuple[int, int]:
  """``(num_joints_in, in_features)`` of ``expand_conv``'s ``inputs = joints x features``."""
  report = report if report is not None else ConfigReport()
  features, joints = hints.get("in_features"), hints.get("num_joints_in")
  if features is not None or joints is not None:
    if features is not None and joints is None and features > 0 and inputs % features == 0:
      report.infer("num_joints_in", inputs // features,
                   f"expand_conv reads {inputs} channels / in_features={features}")
      return inputs // features, features
    if joints is not None and features is None and joints > 0 and inputs % joints == 0:
      report.infer("in_features", inputs // joints,
                   f"expand_conv reads {inputs} channels / num_joints_in={joints}")
      return joints, inputs // joints
    if features is not None and joints is not None and features * joints == inputs:
      return joints, features
    raise CheckpointError(f"expand_conv takes {inputs} input channels, which "
                          f"num_joints_in={joints} x in_features={features} does not give")
  if inputs % 2:
    raise CheckpointError(
        f"expand_conv takes {inputs} input channels, not joints x 2 features; pass "
        "--model-config in_features=F (or num_joints_in=J)")
  if inputs == 2 * joints_out:
    why = (f"expand_conv reads {inputs} channels = 2 features (x, y) x {joints_out} joints, "
           "as many joints as the model outputs")
    report.infer("in_features", 2, why)
    report.infer("num_joints_in", joints_out, why)
  else:
    report.assume("in_features", 2, f"expand_conv reads {inputs} channels = joints x "
                  f"features; 2D keypoints (x, y) give {inputs // 2} joints (pass "
                  "--model-config in_features=F if the inputs are not (x, y))")
    report.infer("num_joints_in", inputs // 2, f"{inputs} expand_conv channels / 2 features")
  return inputs // 2, 2


def _infer_videopose3d(shapes: Shapes, hints: Mapping[str, Any] | None = None,
                       report: ConfigReport | None = None):
  hints = hints or {}
  expand, shrink = shapes.get("expand_conv.weight"), shapes.get("shrink.weight")
  if expand is None or shrink is None or len(expand) != 3 or len(shrink) != 3:
    return None
  widths, dense = temporal_widths(shapes, dense=hints.get("dense"),
                                  filter_widths=hints.get("filter_widths"))
  channels, inputs = expand[0], expand[1]
  if shrink[0] % 3 or shrink[1] != channels:
    raise CheckpointError(
        f"checkpoint: shrink.weight {shrink} does not map {channels} channels to joints x 3")
  joints_in, features = input_split(inputs, shrink[0] // 3, hints, report)
  return videopose3d.VideoPose3DConfig(
      num_joints_in=joints_in, in_features=features, num_joints_out=shrink[0] // 3,
      filter_widths=widths, channels=channels, dense=dense)


VIDEOPOSE3D = Family(
    name="videopose3d",
    infer_config=_infer_videopose3d,
    renames=lambda config: (),
    export_renames=lambda config: (),
    description="VideoPose3D TemporalModel, facebookresearch/VideoPose3D common/model.py",
    key_pattern=r"(expand_conv|expand_bn|layers_conv|layers_bn|shrink)\.",
    required=("expand_conv.weight", "shrink.weight"),
    hidden=TEMPORAL_HIDDEN,
    from_original=lambda args: temporal_from_args(args, TEMPORAL_ARG_FIELDS),
    original_keys=tuple(TEMPORAL_ARG_FIELDS),
    original_args=VIDEOPOSE3D_ARGS,
    program="VideoPose3D run.py",
)
