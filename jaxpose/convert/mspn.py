"""MSPN checkpoints (megvii-research/MSPN) and its ImageNet ResNet-50 initialisation.

Trained models are written by cvpack's ``Engine.save_checkpoint`` as ``{"model":
state_dict, "optimizer", "scheduler", "iteration"}`` with MSPN's own module names
(``top.conv.conv``, ``stage{s}.downsample.layer{l}.{b}.conv_bn_relu{k}.{conv,bn}``,
``stage{s}.upsample.up{u}.{u_skip,up_conv,skip1,skip2,cross_conv,res_conv1,res_conv2}``),
which jaxpose's ``MSPN`` uses too, so no renames are needed.

ImageNet initialisation in the original: ``train.py`` calls
``engine.load_checkpoint(cfg.MODEL.WEIGHT)`` with ``MODEL.WEIGHT =
$MSPN_HOME/lib/models/resnet-50_rename.pth`` (a ResNet-50 distributed separately, already
renamed to MSPN's names). cvpack's ``load_model`` matches each model key to the longest
checkpoint key that is a string suffix of it (``_align_and_update_loaded_state_dicts``)
and loads with ``strict=False``; per the authors only the first stage is initialised.
Torchvision names (``layer1.0.conv1.weight``) are never suffixes of MSPN names, hence
the renamed file. Here:

* ``torchvision_resnet_to_mspn(sd)`` renames a torchvision ResNet-50 state dict to the
  MSPN stem + first-stage encoder names;
* ``align_by_suffix(sd, config)`` applies cvpack's suffix rule to any state dict (e.g. the
  renamed file itself);

and either result goes through ``convert.convert_state_dict(sd, config,
allow_partial=True)``. Torchvision convolutions have no biases; MSPN's keep their fresh
initialisation, as in the original.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from jaxpose import models
from jaxpose.convert.core import CheckpointError, Family, count_indices, layer_modules
from jaxpose.convert.core import variable_paths
from jaxpose.models import layers, mspn

Shapes = Mapping[str, tuple[int, ...]]

_STEM = "top.conv.conv.weight"
_HEAD = "stage0.upsample.up1.res_conv2.conv.weight"
_DECODER = "stage0.upsample.up1.u_skip.conv.weight"


def _require(shapes: Shapes, key: str) -> tuple[int, ...]:
  if key not in shapes:
    raise CheckpointError(f"MSPN checkpoint lacks {key!r}")
  return tuple(shapes[key])


def _infer_mspn(shapes: Shapes, hints: Mapping[str, Any] | None = None,
                report=None) -> mspn.MSPNConfig | None:
  """MSPN config from a state dict's ``{key: shape}``; None if it is not an MSPN one.

  ``output_shape`` is not in the tensors: it stays None (taken from the input) unless
  given (``OUTPUT_SHAPE``); the caller applies and reports it.
  """
  del hints, report
  if _STEM not in shapes or _DECODER not in shapes:
    return None
  num_stages = count_indices(shapes, r"stage(\d+)\.")
  blocks = []
  for s in range(num_stages):
    pattern = rf"stage{s}\.downsample\.layer{{}}\.(\d+)\.conv_bn_relu1\.conv\.weight"
    blocks.append(tuple(count_indices(shapes, pattern.format(l)) for l in range(1, 5)))
  if any(0 in b for b in blocks):
    raise CheckpointError(f"MSPN checkpoint: a stage has an empty layer (blocks per stage "
                          f"and layer: {blocks})")
  if len(set(blocks)) != 1:
    raise CheckpointError(f"MSPN checkpoint: stages differ in blocks per layer {blocks}; "
                          "every stage has the same encoder")
  return mspn.MSPNConfig(
      num_stages=num_stages,
      num_joints=_require(shapes, _HEAD)[0],
      upsample_channels=_require(shapes, _DECODER)[0],
      output_shape=None,  # not recorded in a checkpoint; taken from the input
      num_blocks=blocks[0],
      in_channels=shapes[_STEM][1],
  )


# ``exps/mspn.*/config.py`` keys (the file is Python, never executed: pass its values as a
# yaml/JSON with ``--cfg`` or as ``--model-config KEY=VALUE``) -> fields.
MSPN_CONFIG_KEYS = {
    "MODEL.STAGE_NUM": "num_stages",
    "MODEL.UPSAMPLE_CHANNEL_NUM": "upsample_channels",
    "DATASET.KEYPOINT.NUM": "num_joints",
    "OUTPUT_SHAPE": "output_shape",
}


def _mspn_from_config(flat: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
  return {field: (flat[key], key) for key, field in MSPN_CONFIG_KEYS.items() if key in flat}


MSPN = Family(
    name="mspn",
    infer_config=_infer_mspn,
    renames=lambda config: (),
    export_renames=lambda config: (),
    description="MSPN, megvii-research/MSPN exps/mspn.*/network.py",
    key_pattern=r"(top\.|stage\d+\.(downsample|upsample)\.)",
    required=(_STEM, _DECODER),
    hidden={"output_shape": "the heatmap size (OUTPUT_SHAPE) is not in the weights; None "
                            "takes it from the input (input / 4), which is OUTPUT_SHAPE for the "
                            "configs' INPUT_SHAPE"},
    from_original=_mspn_from_config,
    original_keys=tuple(MSPN_CONFIG_KEYS),
    program="MSPN",
)


# ----------------------------------------------------------------------------------------
# ImageNet initialisation
# ----------------------------------------------------------------------------------------

_TV_LAYER = re.compile(r"layer([1-4])\.(\d+)\.(conv([123])|bn([123])|downsample\.([01]))\.(\w+)")


def torchvision_resnet_to_mspn(state_dict: Mapping[str, np.ndarray], *,
                               stages: Iterable[int] = (0,)) -> dict[str, np.ndarray]:
  """Renames a torchvision ResNet (bottleneck) state dict to MSPN's encoder names.

  ``conv1``/``bn1`` -> ``top.conv.conv``/``top.conv.bn``;
  ``layer{l}.{b}.conv{k}``/``bn{k}`` -> ``stage{s}.downsample.layer{l}.{b}.conv_bn_relu{k}
  .conv``/``.bn``; ``layer{l}.{b}.downsample.0``/``.1`` -> ``...downsample.conv``/``.bn``;
  ``fc`` is dropped. The original initialises the first stage only (``stages=(0,)``);
  mmpose copies the encoder into every stage (``stages=range(num_stages)``).

  Args:
    state_dict: torchvision ``resnet50().state_dict()``-style names -> arrays.
    stages: MSPN stages whose encoder receives the layer1..4 weights.

  Returns:
    ``{mspn key: array}`` for ``convert.convert_state_dict(..., allow_partial=True)``.

  Raises:
    ValueError: a key that is not a torchvision ResNet name (listed).
  """
  stages = tuple(int(s) for s in stages)
  out: dict[str, np.ndarray] = {}
  unknown = []
  for key, value in state_dict.items():
    if key.startswith("fc."):
      continue
    stem = re.fullmatch(r"(conv1|bn1)\.(\w+)", key)
    if stem:
      out[f"top.conv.{'conv' if stem.group(1) == 'conv1' else 'bn'}.{stem.group(2)}"] = value
      continue
    m = _TV_LAYER.fullmatch(key)
    if m is None:
      unknown.append(key)
      continue
    layer, block, _, conv_k, bn_k, ds, leaf = m.groups()
    if conv_k or bn_k:
      module = f"conv_bn_relu{conv_k or bn_k}.{'conv' if conv_k else 'bn'}"
    else:
      module = f"downsample.{'conv' if ds == '0' else 'bn'}"
    for s in stages:
      out[f"stage{s}.downsample.layer{layer}.{block}.{module}.{leaf}"] = value
  if unknown:
    raise ValueError(f"not torchvision ResNet keys ({len(unknown)}): {unknown[:10]}")
  return out


def torch_key_shapes(config: mspn.MSPNConfig) -> dict[str, tuple[int, ...]]:
  """``{PyTorch key: shape}`` of the original ``MSPN`` built with ``config``.

  Includes the BatchNorm ``num_batches_tracked`` buffers (shape ``()``), as
  ``MSPN(cfg).state_dict()`` does.
  """
  model = models.abstract_model(config)
  shapes = variable_paths(model)
  out = {}
  for module_path, module in layer_modules(model).items():
    prefix = f"{module_path}/"
    torch_path = module_path.replace("/", ".")
    for path, shape in shapes.items():
      if path.startswith(prefix) and "/" not in path[len(prefix):]:
        leaf, array = type(module).jax_to_torch(
            path[len(prefix):], np.broadcast_to(np.float32(0), shape))
        out[f"{torch_path}.{leaf}"] = tuple(array.shape)
    if isinstance(module, layers.BatchNorm):
      out[f"{torch_path}.num_batches_tracked"] = ()
  return out


def align_by_suffix(state_dict: Mapping[str, np.ndarray], config: mspn.MSPNConfig
                    ) -> dict[str, np.ndarray]:
  """cvpack's ``_align_and_update_loaded_state_dicts`` for an MSPN of ``config``.

  Every key of the MSPN state dict takes the tensor of the longest checkpoint key that is
  a string suffix of it; checkpoint keys matching nothing keep their names (the original
  then ignores them, ``strict=False``; ``convert_state_dict(..., allow_partial=True)``
  reports them as unexpected and ignores them too).

  Raises:
    ValueError: one checkpoint key is the best match of several model keys (the original
      fails there too, popping the key twice).
  """
  loaded = dict(state_dict)
  claimed: dict[str, str] = {}
  renamed: dict[str, np.ndarray] = {}
  for key in sorted(torch_key_shapes(config)):
    best = max((k for k in state_dict if key.endswith(k)), key=len, default=None)
    if best is None:
      continue
    if best in claimed:
      raise ValueError(f"checkpoint key {best!r} is the suffix match of both {claimed[best]!r} "
                       f"and {key!r}; the original loader fails on this file too")
    claimed[best] = key
    renamed[key] = loaded.pop(best)
  return {**loaded, **renamed}
