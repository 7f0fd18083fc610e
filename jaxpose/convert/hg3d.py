"""Checkpoint family of weakly-supervised 3D pose (``hg3d``; xingyizhou/pytorch-pose-hg-3d
``msra_resnet.PoseResNet``).

Checkpoints (``save_model`` in ``src/lib/model.py``) are ``{'epoch', 'state_dict'[,
'optimizer']}`` without prefix: torchvision trunk names, ``deconv_layers.{3i, 3i+1}``,
``hm`` and (``--task human3d``) ``depth``. Every hyper-parameter is in the tensors; the
original's options (``-- --arch msra_50 --task human3d --dataset fusion_3d``, as
``src/lib/opts.py`` parses them: ``--arch msra_<depth>``, ``--task`` ``human2d``/``human3d``
and ``--dataset``, 17 joints for ``coco`` and 16 otherwise) are checked against them.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jaxpose.convert.configuration import OriginalArg
from jaxpose.convert.core import CheckpointError, Family
from jaxpose.convert.resnet import (POSE_RESNET_EXPORT_RENAMES, POSE_RESNET_RENAMES,
                                    deconv_spec, infer_resnet_depth)
from jaxpose.models import hg3d

Shapes = Mapping[str, tuple[int, ...]]

HG3D_REQUIRED = ("conv1.weight", "layer1.0.conv1.weight", "deconv_layers.0.weight", "hm.weight")

# src/lib/opts.py flags that shape the model, with their defaults.
HG3D_ARGS = (
    OriginalArg(("--arch",), "arch", str, "msra_50"),
    OriginalArg(("--task",), "task", str, "human2d"),
    OriginalArg(("--dataset",), "dataset", str, "mpii"),
)


def _infer_hg3d(shapes: Shapes, hints: Mapping[str, Any] | None = None, report=None):
  """Every field from the tensors (``hints`` are checked against them by the caller)."""
  del hints, report
  if not all(k in shapes for k in HG3D_REQUIRED):
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


def _hg3d_from_opts(opts: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
  """``opts.py`` values (``arch``, ``task``, ``dataset``) -> ``HG3DConfig`` fields."""
  out = {}
  if "arch" in opts:
    match = re.fullmatch(r"msra_(\d+)", str(opts["arch"]))
    if match is None:
      raise ValueError(f"--arch {opts['arch']!r}: only the msra_<depth> ResNets have a "
                       "jaxpose port (hg / posenet do not)")
    out["num_layers"] = (int(match.group(1)), "arch")
  if "task" in opts:
    out["with_depth"] = (opts["task"] == "human3d", "task")
  if "dataset" in opts:
    out["num_joints"] = (hg3d.COCO_NUM_JOINTS if opts["dataset"] == "coco"
                         else hg3d.MPII_NUM_JOINTS, "dataset")
  return out


HG3D = Family(
    name="hg3d",
    infer_config=_infer_hg3d,
    renames=lambda config: POSE_RESNET_RENAMES,
    export_renames=lambda config: POSE_RESNET_EXPORT_RENAMES,
    description="Weakly-supervised 3D pose, xingyizhou/pytorch-pose-hg-3d "
                "src/lib/models/msra_resnet.py (PoseResNet, heads hm + depth)",
    key_pattern=r"(conv1|bn1|layer[1-4]|deconv_layers|hm|depth)\.",
    required=HG3D_REQUIRED,
    from_original=_hg3d_from_opts,
    original_keys=tuple(a.dest for a in HG3D_ARGS),
    original_args=HG3D_ARGS,
    program="pytorch-pose-hg-3d",
)
