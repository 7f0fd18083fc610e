"""Models and their weights from a config: fresh, ImageNet-initialised or loaded whole.

Shared by every task (``jaxpose.train.tasks``): ``Task.init_model`` / ``load_model`` call
these for single-model tasks, and ``jaxpose predict`` can call ``load_weights`` directly.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

import ml_collections
import numpy as np
from flax import nnx

from jaxpose import checkpoint as ckpt_lib
from jaxpose import convert
from jaxpose import models

logger = logging.getLogger(__name__)

StateDictTransform = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def model_config(config: ml_collections.ConfigDict):
  """The model config (``config.model``) with the run's compute dtype (``train.dtype``)."""
  cfg = models.model_config(config.model)
  return cfg.replace(dtype=config.train.dtype) if "dtype" in config.get("train", {}) else cfg


def initial_model(config: ml_collections.ConfigDict,
                  imagenet_transform: StateDictTransform | None = None) -> nnx.Module:
  """The model with its initial weights as ``config.init`` says.

  * 'scratch': the original's random initialisation (seed ``train.seed``).
  * 'imagenet': an ImageNet classification checkpoint (``init.path``, ``.pth``) loaded
    partially (what fits; ``init.pretrained_layers`` as HRNet's ``PRETRAINED_LAYERS``),
    the rest freshly initialised -- as the originals start training. ``imagenet_transform``
    (the task's) renames the checkpoint's keys first (e.g. torchvision -> MSPN names).
  * 'checkpoint': every weight from ``init.path`` (a jaxpose training workdir or
    checkpoint, a ``jaxpose.convert`` directory or a ``.pth`` of the same architecture;
    see ``load_weights``); with ``init.partial`` the checkpoint may lack parts of the
    model, which keep their fresh initialisation (a training stage that adds a head, as
    PyTorch's ``load_state_dict(strict=False)``).

  Raises:
    ValueError: unknown ``init.kind``.
    FileNotFoundError: ``init.path`` missing for 'imagenet' / 'checkpoint'.
  """
  cfg = model_config(config)
  kind, path = check_init(config)
  seed = config.train.seed
  if kind == "scratch":
    return models.build_model(cfg, seed=seed)
  if kind == "checkpoint":
    return load_weights(path, cfg, partial=bool(config.init.get("partial", False)), seed=seed)
  state_dict = convert.load_state_dict(path).state_dict
  if imagenet_transform is not None:
    state_dict = imagenet_transform(state_dict)
  model, _, report = convert.convert_state_dict(
      state_dict, cfg, source=path, allow_partial=True, seed=seed,
      select=convert.pretrained_layers_filter(config.init.pretrained_layers))
  logger.info("initialised %d tensors from %s; %d variables keep their fresh init, %d "
              "checkpoint tensors unused", len(report.assigned), path, len(report.missing),
              len(report.unexpected))
  return model


INIT_KINDS = ("scratch", "imagenet", "checkpoint")


def check_init(config: ml_collections.ConfigDict) -> tuple[str, str]:
  """``(init.kind, expanded init.path)`` after checking them (no file is read).

  Raises:
    ValueError: unknown ``init.kind``.
    FileNotFoundError: ``init.path`` missing for 'imagenet' / 'checkpoint'.
  """
  kind, path = config.init.kind, os.path.expanduser(config.init.get("path", "") or "")
  if kind not in INIT_KINDS:
    raise ValueError(f"init.kind={kind!r}: must be one of {', '.join(map(repr, INIT_KINDS))}")
  if kind != "scratch" and (not path or not os.path.exists(path)):
    raise FileNotFoundError(
        f"init.kind={kind!r} needs init.path, the file to start from; {path or '(unset)'} "
        "does not exist. Download the ImageNet-pretrained weights the original project uses "
        "(see the config's docstring) or start from random weights with "
        "--config.init.kind=scratch")
  return kind, path


def load_weights(path: str, cfg, partial: bool = False, seed: int = 0) -> nnx.Module:
  """All weights of ``cfg``'s model from a jaxpose training checkpoint, a converter
  directory or a ``.pth`` file (``partial``: the weights it has; the rest keep the fresh
  initialisation of ``seed``; every shape must still agree).

  A training checkpoint (``checkpoint.training_checkpoint``: a workdir -- its best
  checkpoint, else its latest --, its ``best/`` or ``checkpoints/`` directory, or one step
  directory) gives its parameters and BatchNorm statistics, whatever optimizer the run
  used: how a training stage starts from the previous stage's best checkpoint
  (``init.kind='checkpoint'``, ``init.path=<previous workdir>``).

  Raises:
    ValueError: the directory holds a different architecture than ``cfg``.
  """
  found = ckpt_lib.training_checkpoint(path)
  if found is not None:
    model = models.build_model(cfg, seed=seed)
    missing = ckpt_lib.restore_train_variables(*found, model, allow_missing=partial)
    logger.info("loaded the weights of step %d from %s%s", found[1], found[0],
                f"; {len(missing)} variables it lacks keep their fresh initialisation "
                f"(e.g. {missing[0]})" if missing else "")
    return model
  if partial:
    model, _, report = convert.convert_file(path, cfg, allow_partial=True, seed=seed)
    logger.info("loaded %d tensors from %s; %d variables keep their fresh initialisation",
                len(report.assigned), path, len(report.missing))
    return model
  if os.path.isdir(path):
    if not os.path.isfile(os.path.join(path, convert.CONFIG_FILE)):
      raise ValueError(
          f"{path}: neither a jaxpose training run or checkpoint (best/<step>/state, "
          f"checkpoints/<step>/state) nor a jaxpose.convert directory ({convert.CONFIG_FILE})"
          + ("; it is a training workdir without any complete checkpoint"
             if os.path.isfile(os.path.join(path, "config.json")) else ""))
    model, loaded = convert.load_converted(path, dtype=cfg.dtype)
    if loaded.replace(dtype=cfg.dtype) != cfg:
      raise ValueError(f"{path} holds a {loaded} model, the config asks for {cfg}")
    return model
  model, _, _ = convert.convert_file(path, cfg)
  return model
