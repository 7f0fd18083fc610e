"""Checkpoint family of VideoPose3D (``videopose3d``).

``run.py`` saves ``{'epoch', 'lr', 'random_state', 'optimizer', 'model_pos': state_dict,
'model_traj', 'random_state_semi'}`` without a prefix (semi-supervised runs fill
``model_traj``: convert it with ``key='model_traj'``). The jaxpose module carries the
PyTorch names, so no renames are needed.

Read off the tensors: filter widths (kernel sizes of ``expand_conv`` and
``layers_conv.{2i}``), dense or dilated (``temporal.temporal_widths``), channels, joints in
(``expand_conv`` input channels / 2) and out (``shrink`` rows / 3). Not in the tensors,
so left at the original defaults unless a config is passed: ``causal`` (False), dropout
and ``in_features`` (2).
"""
from __future__ import annotations

from collections.abc import Mapping

from jaxpose.convert.core import CheckpointError, Family
from jaxpose.convert.temporal import temporal_widths
from jaxpose.models import videopose3d

Shapes = Mapping[str, tuple[int, ...]]


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
  return videopose3d.VideoPose3DConfig(
      num_joints_in=inputs // 2, in_features=2, num_joints_out=shrink[0] // 3,
      filter_widths=widths, channels=channels, dense=dense)


VIDEOPOSE3D = Family(
    name="videopose3d",
    infer_config=_infer_videopose3d,
    renames=lambda config: (),
    export_renames=lambda config: (),
    description="VideoPose3D TemporalModel, facebookresearch/VideoPose3D common/model.py",
)
