"""One entry point from "a model the user names" to a ready-to-run model: ``load_model``.

A model specification (``spec``) is any of

* a jaxpose training workdir (its ``config.json`` decides preprocessing and decoding; the
  weights are its best checkpoint, else its latest; ``checkpoint='latest'``, ``'best'``
  or a step number picks one), or a folder inside it (``best/``, ``checkpoints/``,
  ``checkpoints/1200``);
* a ``jaxpose.convert`` output directory (``model_config.json`` + ``checkpoint/``);
* an original PyTorch checkpoint file (``.pth``, ``.pt``, ``.bin``, ``.tar``), converted
  in memory as ``--mode=eval`` does.

A converted directory or an original file holds weights and the architecture, not how
the images were preprocessed (input size, RGB/BGR, mean/std), whether the flip test ran
or how heatmaps are decoded: for a 2D model that comes from the user, as the jaxpose
config the model was trained with (``config='configs/hrnet_coco.py:w=32'``, a
``config.json``, or a ``ConfigDict``). Temporal lifters need no preprocessing config
(their input is normalised screen coordinates); what their weights cannot show (the 2D
keypoint layout they take) is asked for by ``jaxpose.inference.lifting``.

Every model is returned in eval mode on the inference path (``_prepare_for_inference``:
BatchNorms folded into their convolutions, ``jaxpose.models.inference``), so that
``jaxpose predict``, ``jaxpose export`` and the Python API all get it; such a model is for
inference only.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxpose import checkpoint as ckpt_lib
from jaxpose import convert, datasets, fileio
from jaxpose.data import keypoints as kp
from jaxpose.models import inference
from jaxpose.train import tasks as tasks_lib
from jaxpose.train import weights
from jaxpose.train.tasks import base

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".tar")
LIFTER_FAMILIES = ("videopose3d", "rie")
CONFIG_FILE = "config.json"  # what the training loop writes into its workdir


class ModelSpecError(ValueError):
  """The model specification cannot be resolved (one line: what and where)."""


@dataclasses.dataclass
class LoadedModel:
  """A model ready for inference.

  Attributes:
    model: the ``nnx.Module`` in eval mode, BatchNorms folded (inference only).
    model_config: its ``ModelConfig`` (architecture).
    config: the whole jaxpose config (``model``, ``task``, ``data``, ``eval``) for 2D
      models; None for a lifter loaded without one.
    task: the method's task built for inference (``preprocess``, ``predict``,
      ``decode``, ``spec``), or None for a lifter.
    keypoint_set: the 2D model's output keypoints (None for a lifter).
    source: the resolved path the weights came from.
  """
  model: nnx.Module
  model_config: Any
  config: ml_collections.ConfigDict | None
  task: base.Task | None
  keypoint_set: kp.KeypointSet | None
  source: str

  @property
  def is_lifter(self) -> bool:
    return self.model_config.name in LIFTER_FAMILIES


def load_config(config: str | os.PathLike | ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A jaxpose config: a ``ConfigDict``, a JSON file (a workdir's ``config.json``) or a
  Python config file with an optional argument (``configs/hrnet_coco.py:w=48``)."""
  if isinstance(config, ml_collections.ConfigDict):
    return config
  text = os.fspath(config)
  path, _, arg = text.partition(":") if not os.path.exists(text) else (text, "", "")
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise ModelSpecError(f"config {text}: no such file")
  if path.endswith(".json"):
    return ml_collections.ConfigDict(fileio.read_json(path, ModelSpecError))
  if not path.endswith(".py"):
    raise ModelSpecError(f"config {text}: expected a .py config file or a .json config")
  name = f"_jaxpose_config_{abs(hash(os.path.abspath(path)))}"
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  sys.path.insert(0, root)  # config files import ``configs.common``
  try:
    spec.loader.exec_module(module)
  finally:
    sys.path.remove(root)
  if not hasattr(module, "get_config"):
    raise ModelSpecError(f"config {path}: defines no get_config()")
  return module.get_config(arg or None)


def _workdir_config(path: str) -> str | None:
  """``config.json`` of the training workdir holding ``path`` (path or up to 2 levels up)."""
  probe = os.path.abspath(path)
  for _ in range(3):
    candidate = os.path.join(probe, CONFIG_FILE)
    if os.path.isfile(candidate):
      return candidate
    probe = os.path.dirname(probe)
  return None


def _training_checkpoint_path(path: str, checkpoint: str | int | None) -> str:
  """The folder ``load_weights`` should read for ``checkpoint`` of a workdir."""
  if checkpoint in (None, ""):
    return path
  if checkpoint == "best":
    target = os.path.join(path, "best")
  elif checkpoint == "latest":
    target = os.path.join(path, "checkpoints")
  elif str(checkpoint).isdigit():
    target = os.path.join(path, "checkpoints", str(int(checkpoint)))
  else:
    raise ModelSpecError(f"checkpoint must be 'best', 'latest' or a step number, got "
                         f"{checkpoint!r}")
  if ckpt_lib.training_checkpoint(target) is None:
    raise ModelSpecError(f"{path}: no {checkpoint} checkpoint ({target} holds none)")
  return target


def inference_task(config: ml_collections.ConfigDict) -> tuple[base.Task, kp.KeypointSet]:
  """The config's task built for inference only, with its dataset's keypoint set.

  Raises:
    ModelSpecError: the method cannot run on users' images (``Task.predict_unsupported``).
  """
  cls = tasks_lib.task_class(config.task)
  if cls.predict_unsupported:
    raise ModelSpecError(f"task {config.task!r}: {cls.predict_unsupported}")
  keypoint_set = datasets.dataset(config.data.dataset).keypoints
  try:
    task = cls.from_config(config, keypoint_set=keypoint_set)
  except TypeError as e:
    raise ModelSpecError(f"task {config.task!r} cannot be built for inference on images "
                         f"({e})") from None
  return task, keypoint_set


def _prepare_for_inference(model: nnx.Module, model_config: Any,
                           task: base.Task | None = None) -> nnx.Module:
  """The inference path of ``model`` (``jaxpose.models.inference.prepare_for_inference``:
  eval mode, every BatchNorm fed by a convolution folded into it): every inference path
  (``predict``, ``export``, the Python API) loads through here.

  A 2D model is traced the way its task calls it (``task.predict`` on one uint8 crop of
  the task's input size), a lifter on one window of its receptive field.
  """
  model.eval()
  if task is not None:
    h, w = task.spec.input_size
    return inference.prepare_for_inference(
        model, jax.ShapeDtypeStruct((1, h, w, 3), jnp.uint8), call=task.predict)
  shape = (1, int(model.receptive_field),
           int(getattr(model_config, "num_joints_in", kp.H36M_NUM_JOINTS)),
           int(getattr(model_config, "in_features", 2)))
  return inference.prepare_for_inference(model, shape)


def load_model(spec: str | os.PathLike, *,
               config: str | os.PathLike | ml_collections.ConfigDict | None = None,
               checkpoint: str | int | None = None, dtype: str | None = None,
               original_args: str | None = None) -> LoadedModel:
  """The model named by ``spec``, in eval mode, with what inference needs.

  Args:
    spec: a training workdir (or a checkpoint folder inside it), a ``jaxpose.convert``
      directory or an original ``.pth``/``.bin`` file (see the module docstring).
    config: the jaxpose config of a 2D model whose ``spec`` has none (converted
      directory or original file); overrides a workdir's ``config.json`` if given.
    checkpoint: for a workdir: 'best', 'latest' or a step (default: best, else latest).
    dtype: compute dtype override ('float32', 'bfloat16').
    original_args: for an original lifter file without a config: the original's command
      line for what its weights cannot show (``"-arc 3,3,3 --causal"``; see
      ``jaxpose.convert``).

  Raises:
    ModelSpecError: the spec does not exist, is none of the above, or a 2D model comes
      without the config that says how to preprocess its input.
    ValueError / CheckpointError: the weights do not fit the architecture (from
      ``jaxpose.train.weights`` / ``jaxpose.convert``).
  """
  path = os.path.abspath(os.path.expanduser(os.fspath(spec)))
  if not os.path.exists(path):
    raise ModelSpecError(f"model {spec}: no such file or directory")
  found_config = _workdir_config(path) if os.path.isdir(path) else None
  if config is None and found_config is not None:
    config = found_config
  if found_config is not None:
    path = _training_checkpoint_path(path, checkpoint)
  elif checkpoint not in (None, ""):
    raise ModelSpecError(f"model {spec}: checkpoint={checkpoint!r} applies to training "
                         "workdirs only")
  is_file = os.path.isfile(path)
  if is_file and not path.lower().endswith(CHECKPOINT_SUFFIXES):
    raise ModelSpecError(f"model {spec}: not a checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)})")
  if (os.path.isdir(path) and found_config is None
      and not os.path.isfile(os.path.join(path, convert.CONFIG_FILE))):
    raise ModelSpecError(f"model {spec}: neither a training workdir ({CONFIG_FILE} here or "
                         f"above), nor a jaxpose.convert directory ({convert.CONFIG_FILE})")

  if config is None:
    return _load_without_config(path, spec, dtype, original_args)
  full = load_config(config)
  unsupported = tasks_lib.task_class(full.task).predict_unsupported
  if unsupported:  # before reading any weights
    raise ModelSpecError(f"model {spec}: {unsupported}")
  cfg = weights.model_config(full)
  if dtype:
    cfg = cfg.replace(dtype=dtype)
  model = weights.load_weights(path, cfg)
  if cfg.name in LIFTER_FAMILIES:
    return LoadedModel(_prepare_for_inference(model, cfg), cfg, full, None, None, path)
  task, keypoint_set = inference_task(full)
  return LoadedModel(_prepare_for_inference(model, cfg, task), cfg, full, task, keypoint_set,
                     path)


def _load_without_config(path: str, spec, dtype: str | None, original_args: str | None
                         ) -> LoadedModel:
  """A converted directory or an original file with no jaxpose config: lifters only."""
  if os.path.isdir(path):
    model, cfg = convert.load_converted(path, dtype=dtype)
  else:
    model, cfg, _ = convert.convert_file(path, original_args=original_args)
    if dtype:
      model, cfg, _ = convert.convert_file(path, cfg.replace(dtype=dtype))
  if cfg.name not in LIFTER_FAMILIES:
    raise ModelSpecError(
        f"model {spec}: holds a {cfg.name} model but not how its input is preprocessed "
        "(input size, RGB/BGR, mean/std, flip test, decoding); pass the jaxpose config it "
        "was trained with, e.g. --config configs/hrnet_coco.py")
  return LoadedModel(_prepare_for_inference(model, cfg), cfg, None, None, None, path)
