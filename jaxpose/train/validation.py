"""Checks of a whole run configuration before any work: one error, one line.

``validate_config(config, mode=..., checkpoint=...)`` is called by both
``loop.train_and_evaluate`` and ``loop.evaluate`` before anything is built, read or
compiled (and by ``launch.py`` before it starts the distributed runtime). It checks the
sections the shared mechanics read -- ``task``, ``train``, ``optim``, ``init`` -- and then
builds the task (``Task.from_config``), which validates the task's own sections (its
``data``, ``eval``, ``model``). Every problem raises ``ConfigError`` (a ``ValueError``;
``ConfigFileNotFoundError`` is also a ``FileNotFoundError``) whose message is one line
naming the field and what it may be.
"""
from __future__ import annotations

import math
import os

import jax
import ml_collections
import numpy as np

from jaxpose import checkpoint as ckpt_lib, convert
from jaxpose.train import optim, tasks as tasks_lib, weights
from jaxpose.train.tasks import base


class ConfigError(ValueError):
  """An invalid configuration value or command-line argument (one-line message naming the
  field and the valid values)."""


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
  """A file named by the configuration does not exist."""


def config_error(error: Exception) -> ConfigError:
  """``error`` (a ``ValueError`` / ``FileNotFoundError`` of a config check) as a
  ``ConfigError`` with the same message (kept as its cause)."""
  if isinstance(error, ConfigError):
    return error
  cls = ConfigFileNotFoundError if isinstance(error, FileNotFoundError) else ConfigError
  converted = cls(" ".join(str(error).split()))
  converted.__cause__ = error
  return converted


def _integer(train: ml_collections.ConfigDict, name: str, minimum: int,
             optional: bool = False) -> None:
  """``train.<name>`` is an integer >= ``minimum`` (or None when ``optional``)."""
  value = train.get(name)
  if value is None and optional:
    return
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
    raise ConfigError(f"train.{name}={value!r}: must be an integer >= {minimum}"
                      + (" (or None)" if optional else ""))


def check_train(config: ml_collections.ConfigDict, device_count: int | None = None,
                process_count: int = 1) -> None:
  """The ``train`` section the loop reads (cadences, batch, checkpoints, dtype)."""
  train = config.get("train")
  if train is None:
    raise ConfigError("config.train is missing (configs/common.py: train(...))")
  for name in ("global_batch_size", "log_every_steps", "checkpoint_every_steps",
               "keep_checkpoints", "eval_every_epochs"):
    _integer(train, name, 1)
  _integer(train, "total_steps", 1, optional=True)
  if train.get("total_steps") is None:
    _integer(train, "num_epochs", 1)
  _integer(train, "seed", 0)
  if not isinstance(train.get("async_checkpoints", True), bool):
    raise ConfigError(f"train.async_checkpoints={train.async_checkpoints!r}: must be True or False")
  dtype = train.get("dtype", "float32")
  if dtype not in ("float32", "bfloat16", "float16", "float64"):
    raise ConfigError(f"train.dtype={dtype!r}: must be one of 'float32', 'bfloat16', "
                      "'float16', 'float64'")
  if dtype == "float64" and not jax.config.jax_enable_x64:
    raise ConfigError("train.dtype='float64' needs 64-bit JAX: set JAX_ENABLE_X64=1 (else "
                      "JAX computes in float32)")
  batch = train.global_batch_size
  if device_count and batch % device_count:
    raise ConfigError(f"train.global_batch_size={batch}: must be divisible by the "
                      f"{device_count} devices")
  if batch % process_count:
    raise ConfigError(f"train.global_batch_size={batch}: must be divisible by the "
                      f"{process_count} processes")


def check_optim(config: ml_collections.ConfigDict) -> None:
  """``optim`` (when the config has one): the optimizer and schedule can be built."""
  section = config.get("optim")
  if section is None:
    return
  lr = section.get("lr")
  if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0:
    raise ConfigError(f"optim.lr={lr!r}: must be a finite number >= 0")
  try:  # large epochs so that schedules given in epochs stay ordered
    optim.make_optimizer(section, steps_per_epoch=10_000)
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise config_error(ValueError(f"optim: {e}")) from e


def check_init(config: ml_collections.ConfigDict) -> None:
  """``init`` (when the config has one): a known kind, and its file exists."""
  if config.get("init") is None:
    return
  try:
    weights.check_init(config)
  except (ValueError, FileNotFoundError) as e:
    raise config_error(e) from e


def check_checkpoint_argument(checkpoint: str | None) -> None:
  """``--checkpoint`` of ``--mode=eval``: None/'latest', 'best', a step number or an
  existing path."""
  if checkpoint in (None, "", "latest", "best") or str(checkpoint).isdigit():
    return
  path = os.path.expanduser(str(checkpoint))
  if not os.path.exists(path):
    raise ConfigFileNotFoundError(
        f"--checkpoint={checkpoint!r}: neither 'latest', 'best', a step number nor an existing "
        "path (a training workdir or checkpoint, a jaxpose.convert directory or an original "
        ".pth file)")
  if os.path.isdir(path) and ckpt_lib.training_checkpoint(path) is None and not os.path.isfile(
      os.path.join(path, convert.CONFIG_FILE)):
    what = ("a jaxpose training workdir without any complete checkpoint"
            if os.path.isfile(os.path.join(path, "config.json")) else
            "neither a jaxpose training run or checkpoint (best/<step>, checkpoints/<step>) nor "
            "a jaxpose.convert directory (model_config.json)")
    raise ConfigError(f"--checkpoint={checkpoint!r}: {path} is {what}")


def validate_config(config: ml_collections.ConfigDict, *, mode: str = "train",
                    checkpoint: str | None = None, device_count: int | None = None,
                    process_count: int = 1) -> base.Task:
  """Checks the whole run configuration and returns the run's task (every process).

  Args:
    config: the run's config.
    mode: 'train' or 'eval'.
    checkpoint: ``--checkpoint`` of an evaluation.
    device_count, process_count: of the run (None: not checked yet).

  Raises:
    ConfigError: the first problem found, one line naming the field and the valid values.
  """
  if mode not in ("train", "eval"):
    raise ConfigError(f"--mode={mode!r}: must be 'train' or 'eval'")
  try:
    task_class = tasks_lib.task_class(config.get("task"))
  except ValueError as e:
    raise ConfigError(f"config.task: {e}") from e
  if mode == "train":  # evaluation does not use the training batch
    check_train(config, device_count, process_count)
  else:
    check_train(config)
  check_optim(config)  # evaluation builds the optimizer state's structure too
  if mode == "train":
    check_init(config)
  else:
    check_checkpoint_argument(checkpoint)
  try:
    return task_class.from_config(config)
  except (ValueError, FileNotFoundError) as e:
    raise config_error(e) from e

