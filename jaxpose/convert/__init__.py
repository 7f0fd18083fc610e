"""Import the original PyTorch checkpoints into jaxpose (Orbax + ml-collections config).

Command line (``python -m jaxpose.convert --help``)::

    jaxpose-convert pose_hrnet_w32_256x192.pth out/hrnet_w32 --cfg w32_256x192_adam_lr1e-3.yaml
    jaxpose-convert pretrained_h36m_cpn.bin out/vp3d -- -arc 3,3,3,3,3
    jaxpose-convert causal_81f.bin out/vp3d_causal -- -arc 3,3,3,3 --causal
    jaxpose-convert challenge.pth out/integral --model-config depth_dim=72

Python::

    from jaxpose import convert
    model, config, report = convert.convert_file("pose_hrnet_w32_256x192.pth")
    model, config, report = convert.convert_file("causal.bin", original_args="-arc 3,3,3 --causal")
    model, config, report = convert.convert_file("integral.pth", original_config="lr1e-3.yaml")
    model, config, report = convert.convert_file("integral.pth", overrides={"depth_dim": 72})
    convert.convert_checkpoint("pose_hrnet_w32_256x192.pth", "out/hrnet_w32")
    model, config = convert.load_converted("out/hrnet_w32")

Checkpoint files are read without PyTorch and without executing pickled code
(``torch_pickle``). The family and the architecture are read from tensor names and shapes;
what the tensors cannot show (VideoPose3D/RIE ``causal``, integral's joints x depth split,
...) comes from the configuration the user gives, as the original took it
(``configuration``); anything still undetermined is assumed with a warning
(``AssumptionWarning``, and ``report.config_report``), or, where the tensors allow several
answers, refused with the candidates. Every tensor must be consumed and every variable
filled, unless ``allow_partial`` is given (ImageNet-pretrained backbones into pose models).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from flax import nnx

from jaxpose import checkpoint
from jaxpose import fileio
from jaxpose import models
from jaxpose.convert import core
from jaxpose.convert import hg3d as hg3d_family
from jaxpose.convert import hrnet as hrnet_family
from jaxpose.convert import integral as integral_family
from jaxpose.convert import mspn as mspn_family
from jaxpose.convert import resnet as resnet_family
from jaxpose.convert import resolve
from jaxpose.convert import rie as rie_family
from jaxpose.convert import torch_pickle
from jaxpose.convert import videopose3d as videopose3d_family
from jaxpose.convert.configuration import AssumptionWarning, ConfigReport
from jaxpose.convert.core import Family, MappingReport, Rename
from jaxpose.convert.torch_pickle import CheckpointError

FAMILIES: dict[str, Family] = {
    "pose_resnet": resnet_family.POSE_RESNET,
    "pose_hrnet": hrnet_family.POSE_HRNET,
    "integral": integral_family.INTEGRAL,
    "hg3d": hg3d_family.HG3D,
    "mspn": mspn_family.MSPN,
    "videopose3d": videopose3d_family.VIDEOPOSE3D,
    "rie": rie_family.RIE,
}

CHECKPOINT_SUBDIR = "checkpoint"
CONFIG_FILE = "model_config.json"
REPORT_FILE = "conversion.json"


def family(name: str) -> Family:
  try:
    return FAMILIES[name]
  except KeyError:
    raise ValueError(f"unknown model family {name!r}; valid names: {sorted(FAMILIES)}") from None


def load_state_dict(path: str | os.PathLike, *, key: str | None = None) -> core.Unwrapped:
  """Reads a checkpoint file and takes the model state dict out of its wrapper."""
  obj = torch_pickle.load(path)
  return core.unwrap_state_dict(obj, key=key, source=os.fspath(path))


def infer_model_config(state_dict: Mapping[str, np.ndarray], *, source: str = "checkpoint",
                       family_name: str | None = None, **user_config):
  """The ``ModelConfig`` of the family whose keys and shapes match ``state_dict``.

  ``user_config``: ``original_config``, ``original_args``, ``overrides`` (see
  ``resolve_model_config``).
  """
  return resolve_model_config(state_dict, source=source, family=family_name, **user_config)[0]


def resolve_model_config(state_dict: Mapping[str, np.ndarray], *, family: str | None = None,
                         original_config=None, original_args=None, overrides=None,
                         saved_args=None, file_name: str | None = None,
                         source: str = "checkpoint", allow_partial: bool = False
                         ) -> tuple[Any, ConfigReport]:
  """``(config, report)``: the model config and where each of its fields came from.

  Args:
    state_dict: PyTorch key -> numpy array (unwrapped).
    family: the family name (default: detected from the tensor names).
    original_config: the original experiment yaml (path), or the same keys as a mapping
      (HRNet/SimpleBaseline ``MODEL.*``, integral ``network.*`` + ``dataset.name``, MSPN
      ``MODEL.STAGE_NUM``..., the lifters' argparse names).
    original_args: the original's command line, a string or a list (VideoPose3D/RIE
      ``run.py``, pytorch-pose-hg-3d ``main.py``); left-out flags take its defaults.
    overrides: ``{"depth_dim": 72}`` or ``["depth_dim=72", "name=integral"]``: jaxpose
      config fields or the original's keys; they win over the other sources.
    saved_args: ``(flat mapping, entry)`` of arguments saved in the checkpoint.
    file_name: the checkpoint's file name (evidence for RIE's stage).
    source: name for messages.
    allow_partial: see ``convert_state_dict``.
  """
  config, report = resolve.resolve_model_config(
      state_dict, FAMILIES, family=family, original_config=original_config,
      original_args=original_args, overrides=overrides, saved_args=saved_args,
      file_name=file_name, source=source, allow_partial=allow_partial)
  report.warn()  # one AssumptionWarning per assumed field
  return config, report


def convert_state_dict(state_dict: Mapping[str, np.ndarray], config=None, *,
                       family: str | None = None, original_config=None, original_args=None,
                       overrides=None, saved_args=None, file_name: str | None = None,
                       source: str = "state dict", allow_partial: bool = False,
                       select: Callable[[str], bool] | None = None, seed: int = 0,
                       ) -> tuple[nnx.Module, Any, MappingReport]:
  """Builds the jaxpose model holding the weights of a PyTorch state dict.

  Args:
    state_dict: PyTorch key -> numpy array (already unwrapped).
    config: the complete target ``ModelConfig`` (or config dict with a ``name``); when
      None it is resolved from the tensors and the user's configuration
      (``family``, ``original_config``, ``original_args``, ``overrides``, ``saved_args``,
      ``file_name``: see ``resolve_model_config``). Assumptions are warned about
      (``AssumptionWarning``).
    source: name for error messages.
    allow_partial: keep variables the checkpoint lacks at their fresh initialisation and
      ignore tensors the model has no place for (ImageNet-pretrained backbones). Shape
      mismatches are still fatal.
    select: predicate on PyTorch keys; others are skipped (``PRETRAINED_LAYERS``).
    seed: initialisation seed for the variables not loaded (partial loading).

  Returns:
    ``(model, config, report)``; ``report.config_report`` says where each config field
    came from.

  Raises:
    CheckpointError: listing every missing, unexpected and mis-shaped name, or naming the
      configuration problem.
  """
  if config is not None:
    if any(v is not None for v in (family, original_config, original_args, overrides)):
      raise ValueError("pass either a complete config or the original configuration "
                       "(family / original_config / original_args / overrides), not both")
    config = models.model_config(config)
    config_report = resolve.given_everything(config)
  else:
    config, config_report = resolve_model_config(
        state_dict, family=family, original_config=original_config,
        original_args=original_args, overrides=overrides, saved_args=saved_args,
        file_name=file_name, source=source, allow_partial=allow_partial)
  fam = FAMILIES[config.name]
  target = models.abstract_model(config)
  report = core.map_state_dict(target, state_dict, fam.renames(config), select=select)
  report.config_report = config_report
  if report.missing:
    report.torch_names = core.torch_names(target, fam.export_renames(config))
  if report.mismatched or (not allow_partial and not report.ok):
    raise CheckpointError(
        f"{source}: does not fit {config.name} ({len(report.assigned)} tensors placed):\n"
        + report.problems())
  if allow_partial and not report.assigned:
    raise CheckpointError(f"{source}: no tensor fits {config.name}\n" + report.problems(limit=10))
  if report.missing:
    model = models.build_model(config, seed=seed)
  else:
    graphdef, state = nnx.split(target)
    model = nnx.merge(graphdef, jax_zeros_like(state))
  core.apply_assignments(model, report.assigned)
  return model, config, report


def jax_zeros_like(state):
  return nnx.map_state(lambda _, v: np.zeros(v.shape, v.dtype), state)


def convert_file(path: str | os.PathLike, config=None, *, key: str | None = None,
                 family: str | None = None, original_config=None, original_args=None,
                 overrides=None, allow_partial: bool = False,
                 select: Callable[[str], bool] | None = None, seed: int = 0
                 ) -> tuple[nnx.Module, Any, MappingReport]:
  """``convert_state_dict`` on the state dict inside a checkpoint file.

  Arguments saved in the checkpoint and its file name serve as evidence for what the
  tensors cannot show, after what the caller gives.
  """
  unwrapped = load_state_dict(path, key=key)
  return _convert_unwrapped(unwrapped, path, config, family=family,
                            original_config=original_config, original_args=original_args,
                            overrides=overrides, allow_partial=allow_partial, select=select,
                            seed=seed)


def _convert_unwrapped(unwrapped: core.Unwrapped, path, config, **kwargs):
  saved = (unwrapped.args, unwrapped.args_key) if unwrapped.args else None
  return convert_state_dict(
      unwrapped.state_dict, config, source=os.fspath(path),
      saved_args=saved if config is None else None,
      file_name=os.path.basename(os.fspath(path)) if config is None else None, **kwargs)


def export_state_dict(model: nnx.Module, config) -> dict[str, np.ndarray]:
  """The model's weights as the original PyTorch project names and lays them out.

  The result loads strictly into the original model class (``torch.from_numpy`` each
  array), e.g. to evaluate a jaxpose-trained model with the original code.
  """
  config = models.model_config(config)
  return core.export_state_dict(model, family(config.name).export_renames(config))


def pretrained_layers_filter(layers: Sequence[str]) -> Callable[[str], bool]:
  """HRNet's ``PRETRAINED_LAYERS``: keep keys whose first component is listed (``'*'``: all)."""
  layers = tuple(layers)
  return lambda key: "*" in layers or key.split(".", 1)[0] in layers


def convert_checkpoint(input_path: str | os.PathLike, output_dir: str | os.PathLike, *,
                       config=None, key: str | None = None, family: str | None = None,
                       original_config=None, original_args=None, overrides=None,
                       allow_partial: bool = False, select: Callable[[str], bool] | None = None
                       ) -> Any:
  """Converts a PyTorch checkpoint file into an Orbax checkpoint + model config.

  Writes ``output_dir/checkpoint`` (Orbax: ``{"params", "batch_stats"}``),
  ``output_dir/model_config.json`` (ml-collections config, ``build_model`` input) and
  ``output_dir/conversion.json`` (source file, wrapper, counts, anything left out, and
  ``configuration``: what was given, inferred and assumed). The configuration arguments
  are those of ``convert_file``.

  Returns:
    The model config.
  """
  unwrapped = load_state_dict(input_path, key=key)
  model, config, report = _convert_unwrapped(
      unwrapped, input_path, config, family=family, original_config=original_config,
      original_args=original_args, overrides=overrides, allow_partial=allow_partial,
      select=select)
  output_dir = os.path.abspath(os.fspath(output_dir))
  ckpt_dir = os.path.join(output_dir, CHECKPOINT_SUBDIR)
  if os.path.exists(ckpt_dir):
    raise FileExistsError(f"{ckpt_dir} already exists; choose a new output directory")
  os.makedirs(output_dir, exist_ok=True)
  checkpoint.save_variables(ckpt_dir, checkpoint.model_variables(model))
  fileio.write_json(os.path.join(output_dir, CONFIG_FILE), config.to_config().to_dict(), indent=1)
  fileio.write_json(os.path.join(output_dir, REPORT_FILE), {
      "source": os.path.abspath(os.fspath(input_path)),
      "family": config.name,
      "wrapper_key": unwrapped.wrapper_key,
      "stripped_prefix": unwrapped.prefix,
      "checkpoint_extra": unwrapped.extra,
      "checkpoint_args": unwrapped.args_key,
      "configuration": report.config_report.to_json(),
      "tensors_loaded": len(report.assigned),
      "skipped": report.skipped,
      "missing": report.missing,
      "missing_torch_keys": {p: report.torch_names[p] for p in report.missing
                             if p in report.torch_names},
      "unexpected": report.unexpected,
  }, indent=1, default=str)
  return config


def load_model_config(output_dir: str | os.PathLike) -> ml_collections.ConfigDict:
  path = os.path.join(os.fspath(output_dir), CONFIG_FILE)
  if not os.path.exists(path):
    raise ValueError(f"{path}: missing; is {output_dir} a jaxpose.convert output directory?")
  return ml_collections.ConfigDict(fileio.read_json(path))


def load_converted(output_dir: str | os.PathLike, *, dtype: str | None = None
                   ) -> tuple[nnx.Module, Any]:
  """Rebuilds the model written by ``convert_checkpoint`` and restores its variables.

  Args:
    output_dir: a ``convert_checkpoint`` output directory.
    dtype: optionally override the compute dtype (e.g. ``"bfloat16"``).
  """
  config_dict = load_model_config(output_dir)
  if dtype is not None:
    config_dict.dtype = dtype
  config = models.model_config(config_dict)
  graphdef, state = nnx.split(models.abstract_model(config))
  model = nnx.merge(graphdef, jax_zeros_like(state))
  checkpoint.restore_variables(os.path.join(os.fspath(output_dir), CHECKPOINT_SUBDIR), model)
  return model, config


__all__ = [
    "FAMILIES", "AssumptionWarning", "CheckpointError", "ConfigReport", "Family",
    "MappingReport", "Rename", "convert_checkpoint", "convert_file", "convert_state_dict",
    "export_state_dict", "family", "infer_model_config", "load_converted", "load_model_config",
    "load_state_dict", "pretrained_layers_filter", "resolve_model_config",
]
