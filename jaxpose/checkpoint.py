"""The one place that talks to Orbax.

Model variables are stored as a pure pytree ``{"params": ..., "batch_stats": ...}``
(nested dicts mirroring the NNX module tree). Orbax writes into a temporary directory
and renames it on success, so an interrupted save never leaves a half-written checkpoint.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

VARIABLE_COLLECTIONS = {"params": nnx.Param, "batch_stats": nnx.BatchStat}


def model_variables(model: nnx.Module) -> dict[str, Any]:
  """``{"params": pure dict, "batch_stats": pure dict}`` of ``model``'s variables."""
  return {name: nnx.to_pure_dict(nnx.state(model, kind))
          for name, kind in VARIABLE_COLLECTIONS.items()}


def set_model_variables(model: nnx.Module, variables: dict[str, Any]) -> None:
  """Writes a ``model_variables``-style pytree back into ``model`` (in place)."""
  for name, kind in VARIABLE_COLLECTIONS.items():
    state = nnx.state(model, kind)
    nnx.replace_by_pure_dict(state, variables.get(name, {}))
    nnx.update(model, state)


def save_variables(path: str | os.PathLike, variables: dict[str, Any]) -> None:
  """Saves a pytree of arrays to ``path`` (a new directory), atomically."""
  path = os.path.abspath(os.fspath(path))
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, jax.tree_util.tree_map(np.asarray, variables))
    checkpointer.wait_until_finished()


def restore_variables(path: str | os.PathLike, model: nnx.Module) -> None:
  """Restores variables saved by ``save_variables`` into ``model`` (shapes must match).

  Raises:
    ValueError: the checkpoint does not exist or does not fit the model's variables.
  """
  path = os.path.abspath(os.fspath(path))
  if not os.path.isdir(path):
    raise ValueError(f"{path}: no Orbax checkpoint directory here")
  target = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), model_variables(model))
  with ocp.StandardCheckpointer() as checkpointer:
    try:
      restored = checkpointer.restore(path, target)
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{path}: checkpoint does not match the model's variables: {e}") from e
  set_model_variables(model, restored)


class TrainCheckpointer:
  """Periodic, asynchronous training checkpoints plus the best one by an eval metric.

  Each checkpoint holds three items: ``state`` (the whole ``TrainState`` pytree: params,
  BatchNorm statistics, optimizer state, step, RNG), ``data`` (the grain iterator state,
  JSON) and ``meta`` (JSON: epoch, metrics, anything else). ``workdir/checkpoints`` keeps
  the ``keep`` most recent; ``workdir/best`` keeps the one with the best ``best_metric``.

  Orbax writes every checkpoint into a temporary directory and renames it when complete,
  so a crash mid-save never leaves a checkpoint that looks valid.
  """

  ITEMS = ("state", "data", "meta")

  def __init__(self, workdir: str | os.PathLike, *, keep: int = 3, async_save: bool = True,
               best_metric: str | None = None, best_mode: str = "max"):
    workdir = os.path.abspath(os.fspath(workdir))
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.latest = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), options=options,
                                        item_names=self.ITEMS)
    best_options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                                enable_async_checkpointing=async_save)
    self.best = ocp.CheckpointManager(os.path.join(workdir, "best"), options=best_options,
                                      item_names=self.ITEMS)
    self.best_metric = best_metric
    self.best_mode = best_mode
    self.best_value: float | None = None
    best_step = self.best.latest_step()
    if best_step is not None and best_metric is not None:
      meta = self.best.restore(best_step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      self.best_value = meta["meta"].get("metrics", {}).get(best_metric)

  @staticmethod
  def _save_args(state, data: dict, meta: dict) -> ocp.args.Composite:
    return ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(data), meta=ocp.args.JsonSave(meta))

  def save(self, step: int, state, data: dict, meta: dict, *, force: bool = False) -> None:
    """Saves (asynchronously) unless a checkpoint of ``step`` already exists."""
    if step in self.latest.all_steps():
      return
    self.latest.save(step, args=self._save_args(state, data, meta), force=force)

  def maybe_save_best(self, step: int, state, data: dict, meta: dict,
                      metrics: dict[str, float]) -> bool:
    """Saves to ``best/`` when ``metrics[best_metric]`` improves; returns whether it did."""
    if self.best_metric is None or self.best_metric not in metrics:
      return False
    value = float(metrics[self.best_metric])
    better = (self.best_value is None or
              (value > self.best_value if self.best_mode == "max" else value < self.best_value))
    if not better:
      return False
    self.best_value = value
    self.best.save(step, args=self._save_args(state, data, {**meta, "metrics": metrics}),
                   force=True)
    return True

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore(self, target_state, step: int | None = None, *, best: bool = False):
    """``(state, data, meta)`` of ``step`` (default latest; ``best=True``: the best one).

    Args:
      target_state: a pytree like the saved state (arrays or ``jax.ShapeDtypeStruct`` with
        shardings) that fixes structure, dtypes and placement.
    """
    manager = self.best if best else self.latest
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    target = jax.tree_util.tree_map(
        lambda a: a if isinstance(a, jax.ShapeDtypeStruct) else jax.ShapeDtypeStruct(
            np.shape(a), a.dtype, sharding=getattr(a, "sharding", None)), target_state)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
    return restored["state"], restored["data"], restored["meta"]

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()
