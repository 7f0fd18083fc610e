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


def training_checkpoint(path: str | os.PathLike) -> tuple[str, int] | None:
  """``(manager directory, step)`` when ``path`` is a ``TrainCheckpointer`` checkpoint.

  ``path`` may be a training workdir (its best checkpoint, else its latest), its
  ``best/`` or ``checkpoints/`` directory (the latest step there) or one step directory
  (``.../checkpoints/1200``). Returns None for anything else.
  """
  path = os.path.abspath(os.fspath(path))
  steps = lambda d: sorted(int(n) for n in os.listdir(d)
                           if n.isdigit() and os.path.isdir(os.path.join(d, n, "state")))
  for sub in ("best", "checkpoints"):
    directory = os.path.join(path, sub)
    if os.path.isdir(directory) and steps(directory):
      return directory, steps(directory)[-1]
  if os.path.isdir(path) and steps(path):
    return path, steps(path)[-1]
  if os.path.basename(path).isdigit() and os.path.isdir(os.path.join(path, "state")):
    return os.path.dirname(path), int(os.path.basename(path))
  return None


def restore_train_variables(directory: str | os.PathLike, step: int, model: nnx.Module,
                            allow_missing: bool = False) -> list[str]:
  """Writes the parameters and BatchNorm statistics of a ``TrainCheckpointer`` checkpoint
  into ``model`` (in place); the optimizer state, step and RNG of the run are not read, so
  the checkpoint may come from a run with another optimizer (e.g. an earlier training
  stage). Every process calls it.

  Args:
    directory, step: the checkpoint (``training_checkpoint``).
    model: receives the variables.
    allow_missing: variables the checkpoint lacks keep their values and variables only
      the checkpoint has are ignored (an earlier stage without a head this one adds, as
      PyTorch's ``load_state_dict(strict=False)``); shapes must still agree.

  Returns:
    The model variables the checkpoint did not have (``allow_missing``).

  Raises:
    ValueError: the checkpoint's variables do not fit the model.
  """
  directory = os.path.abspath(os.fspath(directory))
  current = model_variables(model)
  target = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype,
                                     sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])),
      current)
  with ocp.PyTreeCheckpointer() as reader:
    saved = reader.metadata(os.path.join(directory, str(step), "state")).item_metadata.tree
  name = lambda path: "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
  shapes = lambda tree: {name(p): tuple(v.shape) if hasattr(v, "shape") else np.shape(v)
                         for p, v in jax.tree_util.tree_leaves_with_path(tree)}
  want = shapes(current)
  have = shapes({kind: saved.get(kind, {}) for kind in current})
  missing = sorted(set(want) - set(have))
  problems = ([] if allow_missing else [f"missing {k}" for k in missing]
              + [f"unexpected {k}" for k in sorted(set(have) - set(want))])
  problems += [f"{k} is {have[k]}, the model's {want[k]}" for k in sorted(set(want) & set(have))
               if have[k] != want[k]]
  if problems:
    raise ValueError(f"{directory}/{step}: the training checkpoint does not match the model's "
                     f"variables ({len(problems)} differences): {'; '.join(problems[:10])}")
  if missing:
    target = _without_paths(target, set(missing), name)
  manager = ocp.CheckpointManager(directory, item_names=TrainCheckpointer.ITEMS)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)))["state"]
  finally:
    manager.close()
  set_model_variables(model, restored)
  return missing


def _without_paths(tree: Any, paths: set[str], name) -> Any:
  """``tree`` (nested dicts) without the leaves whose ``name(path)`` is in ``paths``."""
  flat = {name(p): (p, v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}
  out: dict = {}
  for key, (path, value) in flat.items():
    if key in paths:
      continue
    node = out
    keys = [getattr(k, "key", getattr(k, "idx", k)) for k in path]
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = value
  return out
