"""The one place that talks to Orbax.

Model variables are stored as a pure pytree ``{"params": ..., "batch_stats": ...}``
(nested dicts mirroring the NNX module tree). Orbax writes into a temporary directory
and renames it on success, so an interrupted save never leaves a half-written checkpoint.

Training checkpoints (``TrainCheckpointer``) also carry checksums: one 64-bit digest per
saved array (computed on the device, where the arrays are, so an asynchronous save
stays asynchronous) and a CRC of each JSON item. A restore verifies them, so a file
changed after it was written (flipped bytes restore "successfully" as NaN or 1e38 in
the optimizer's moments) is reported instead of trained on. A damaged checkpoint
(truncated, deleted or garbled files, or a checksum mismatch) raises
``DamagedCheckpointError``, one line naming it and the problem; resuming falls back to
the previous intact checkpoint and moves the damaged one to ``<workdir>/damaged/``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

logger = logging.getLogger(__name__)

VARIABLE_COLLECTIONS = {"params": nnx.Param, "batch_stats": nnx.BatchStat}
CHECKSUM_VERSION = 1


class CheckpointError(ValueError):
  """A checkpoint cannot be used (the message, one line, names it and says why)."""


class DamagedCheckpointError(CheckpointError):
  """A checkpoint's files are missing, truncated, garbled or fail their checksums."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
  """There is no checkpoint (of the asked step) where one was expected."""


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


# ----------------------------------------------------------------------------------------
# Checksums
# ----------------------------------------------------------------------------------------


def _leaf_name(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator="/")


def _words(x: jax.Array) -> jax.Array:
  """The bits of ``x`` as a flat uint32 vector (traced; 1/2/4/8-byte dtypes)."""
  x = jnp.ravel(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  size = x.dtype.itemsize
  if size == 4:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  if size in (1, 2):
    unsigned = jnp.uint8 if size == 1 else jnp.uint16
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
  if size == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
  raise TypeError(f"no checksum for dtype {x.dtype}")


def _digest(x: jax.Array) -> jax.Array:
  """``uint32 [2]``: two position-weighted sums of ``x``'s bits (traced, exact).

  Lane 1 is ``sum_i w_i (2i + 1) c1 mod 2^32`` over the 32-bit words ``w_i``: its odd
  weights make any single changed bit, and any moved word, change the sum. Lane 2 sums a
  non-linear mix of each word with other odd weights, so that two lanes collide only by
  chance (about 2^-64 for random damage). Integer sums are exact in any reduction order,
  so the digest is the same on every device count and platform.
  """
  w = _words(x)
  odd = 2 * jax.lax.iota(jnp.uint32, w.size) + jnp.uint32(1)
  lane1 = jnp.sum(w * odd * jnp.uint32(0x9E3779B1), dtype=jnp.uint32)
  mixed = (w ^ (w >> 15)) * jnp.uint32(0x85EBCA77)
  mixed = mixed ^ (mixed >> 13)
  lane2 = jnp.sum(mixed * odd * jnp.uint32(0xC2B2AE35), dtype=jnp.uint32)
  return jnp.stack([lane1, lane2])


@jax.jit
def _tree_digests(leaves: list[jax.Array]) -> jax.Array:
  return jnp.stack([_digest(x) for x in leaves]) if leaves else jnp.zeros((0, 2), jnp.uint32)


def _host(array: jax.Array) -> np.ndarray:
  if getattr(array, "is_fully_addressable", True) or array.is_fully_replicated:
    return np.asarray(jax.device_get(array))
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def tree_digests(tree: Any) -> dict[str, str]:
  """``{leaf path: 16 hex digits}`` of every array in ``tree`` (computed where the arrays
  are; waits only for the small result)."""
  flat = jax.tree_util.tree_leaves_with_path(tree)
  if not flat:
    return {}
  digests = _host(_tree_digests([jnp.asarray(v) if isinstance(v, np.ndarray | np.generic)
                                 else v for _, v in flat]))
  return {_leaf_name(p): f"{int(a):08x}{int(b):08x}" for (p, _), (a, b) in zip(flat, digests)}


def json_digest(obj: Any) -> str:
  """CRC-32 (8 hex digits) of ``obj``'s canonical JSON."""
  return f"{zlib.crc32(json.dumps(obj, sort_keys=True).encode()):08x}"


def _first_line(error: BaseException, limit: int = 300) -> str:
  """``Type: message`` on one line, without TensorStore's spec dumps."""
  text = " ".join(str(error).split())
  for noise in (" See full TensorStore details", " [tensorstore_spec"):
    text = text.split(noise)[0]
  text = text if len(text) <= limit else text[:limit] + " ..."
  return f"{type(error).__name__}: {text}"


def _quiet_closed_loop_callbacks() -> None:
  """Drops TensorStore's late callbacks into Orbax's closed event loop.

  When a read of a damaged checkpoint fails, Orbax stops waiting and closes its event
  loop while TensorStore still finishes the other reads; each late completion then
  reports ``RuntimeError('Event loop is closed')`` as an unraisable error (a traceback on
  stderr each, dozens per damaged checkpoint) that says nothing the
  ``DamagedCheckpointError`` does not. This wraps ``sys.unraisablehook`` (once per
  process) to log exactly those at debug level; everything else reaches the previous hook.
  """
  previous = sys.unraisablehook
  if getattr(previous, "jaxpose_quiet", False):
    return

  def hook(unraisable) -> None:
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
      logger.debug("late TensorStore callback after a failed checkpoint read: %s", error)
      return
    previous(unraisable)

  hook.jaxpose_quiet = True
  sys.unraisablehook = hook


def _agree(ok: bool) -> bool:
  """True when ``ok`` on every process (collective when there are several)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils
  every = multihost_utils.process_allgather(np.asarray([int(ok)], np.int32))
  return bool(np.all(np.asarray(every)))


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


# ----------------------------------------------------------------------------------------
# Training checkpoints
# ----------------------------------------------------------------------------------------


def _saved_shapes(step_dir: str) -> dict[str, tuple[tuple[int, ...], str]]:
  """``{leaf path: (shape, dtype)}`` of a step's ``state`` item, from its metadata.

  Raises:
    DamagedCheckpointError: the metadata is missing or unreadable.
  """
  _quiet_closed_loop_callbacks()
  handler = ocp.PyTreeCheckpointHandler()
  try:
    tree = handler.metadata(epath.Path(step_dir) / "state").tree
  except Exception as e:  # Orbax/TensorStore raise many types for unreadable files
    raise DamagedCheckpointError(
        f"checkpoint {step_dir} is damaged: its state metadata cannot be read "
        f"({_first_line(e)})") from e
  finally:
    handler.close()
  return {_leaf_name(p): (tuple(v.shape), np.dtype(v.dtype).name)
          for p, v in jax.tree_util.tree_leaves_with_path(tree) if hasattr(v, "shape")}


def _shape_problems(want: Mapping[str, tuple], have: Mapping[str, tuple]) -> list[str]:
  return ([f"missing {k}" for k in sorted(set(want) - set(have))]
          + [f"unexpected {k}" for k in sorted(set(have) - set(want))]
          + [f"{k} is {have[k][0]} {have[k][1]}, expected {want[k][0]} {want[k][1]}"
             for k in sorted(set(want) & set(have)) if want[k] != have[k]])


class TrainCheckpointer:
  """Periodic, asynchronous training checkpoints plus the best one by an eval metric.

  Each checkpoint holds four items: ``state`` (the whole ``TrainState`` pytree: params,
  BatchNorm statistics, optimizer state, step, RNG), ``data`` (the grain iterator state,
  JSON), ``meta`` (JSON: epoch, metrics, anything else) and ``checksums`` (JSON: a digest
  per ``state`` array, a CRC per JSON item; see ``tree_digests``).
  ``workdir/checkpoints`` keeps the ``keep`` most recent; ``workdir/best`` keeps the one
  with the best ``best_metric``.

  Orbax writes every checkpoint into a temporary directory and renames it when complete,
  so a crash mid-save never leaves a checkpoint that looks valid; damage after that
  (disk errors, truncation, deletion) is caught on restore by the checksums and by
  Orbax's own errors (``DamagedCheckpointError``).

  Every method is called by every process (Orbax saves and restores are collectives).
  """

  ITEMS = ("state", "data", "meta", "checksums")

  def __init__(self, workdir: str | os.PathLike, *, keep: int = 3, async_save: bool = True,
               best_metric: str | None = None, best_mode: str = "max"):
    self.workdir = os.path.abspath(os.fspath(workdir))
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.latest = ocp.CheckpointManager(os.path.join(self.workdir, "checkpoints"),
                                        options=options, item_names=self.ITEMS)
    best_options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                                enable_async_checkpointing=async_save)
    self.best = ocp.CheckpointManager(os.path.join(self.workdir, "best"), options=best_options,
                                      item_names=self.ITEMS)
    self.best_metric = best_metric
    self.best_mode = best_mode
    self._best_value: float | None = None
    self._best_value_read = False

  # -- saving -----------------------------------------------------------------------------

  @staticmethod
  def _save_args(state, data: dict, meta: dict) -> ocp.args.Composite:
    checksums = {"version": CHECKSUM_VERSION, "state": tree_digests(state),
                 "data": json_digest(data), "meta": json_digest(meta)}
    return ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(data), meta=ocp.args.JsonSave(meta),
                              checksums=ocp.args.JsonSave(checksums))

  def save(self, step: int, state, data: dict, meta: dict, *, force: bool = False) -> None:
    """Saves (asynchronously) unless a checkpoint of ``step`` already exists."""
    if step in self.latest.all_steps():
      return
    self.latest.save(step, args=self._save_args(state, data, meta), force=force)

  def best_value(self) -> float | None:
    """``best_metric`` of the checkpoint in ``best/`` (None: none yet). A damaged best
    checkpoint is moved to ``<workdir>/damaged/`` with a warning (and then counts as
    none)."""
    if self._best_value_read:
      return self._best_value
    self._best_value_read = True
    step = self.best.latest_step()
    if step is None or self.best_metric is None:
      return None
    try:
      meta = self._read_json(self.best, step, "meta", self._checksums(self.best, step))
    except DamagedCheckpointError as e:
      logger.warning("%s; moving it aside, the next evaluation saves a new best", e)
      self.set_aside(self.best, step)
      return None
    self._best_value = meta.get("metrics", {}).get(self.best_metric)
    return self._best_value

  def maybe_save_best(self, step: int, state, data: dict, meta: dict,
                      metrics: dict[str, float]) -> bool:
    """Saves to ``best/`` when ``metrics[best_metric]`` improves; returns whether it did."""
    if self.best_metric is None or self.best_metric not in metrics:
      return False
    value = float(metrics[self.best_metric])
    best = self.best_value()
    better = (best is None or (value > best if self.best_mode == "max" else value < best))
    if not better:
      return False
    self._best_value = value
    self.best.save(step, args=self._save_args(state, data, {**meta, "metrics": metrics}),
                   force=True)
    return True

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  # -- restoring --------------------------------------------------------------------------

  def step_dir(self, manager: ocp.CheckpointManager, step: int) -> str:
    return os.path.join(os.fspath(manager.directory), str(step))

  def _read_json(self, manager: ocp.CheckpointManager, step: int, item: str,
                 sums: dict | None) -> Any:
    """One JSON item, checked against its CRC in ``sums`` (the step's checksums, if any)."""
    where = self.step_dir(manager, step)
    try:
      value = manager.restore(step, args=ocp.args.Composite(
          **{item: ocp.args.JsonRestore()}))[item]
    except Exception as e:
      raise DamagedCheckpointError(
          f"checkpoint {where} is damaged: its {item} item cannot be read "
          f"({_first_line(e)})") from e
    if sums is not None and sums.get(item) != json_digest(value):
      raise DamagedCheckpointError(f"checkpoint {where} is damaged: its {item} item does not "
                                   "match its checksum (the file changed after it was written)")
    return value

  def _checksums(self, manager: ocp.CheckpointManager, step: int) -> dict | None:
    """The step's checksums item; None for checkpoints written without one."""
    where = self.step_dir(manager, step)
    if not os.path.isdir(os.path.join(where, "checksums")):
      logger.warning("checkpoint %s has no checksums (written by an older jaxpose); its "
                     "arrays are not verified", where)
      return None
    try:
      sums = manager.restore(step, args=ocp.args.Composite(
          checksums=ocp.args.JsonRestore()))["checksums"]
    except Exception as e:
      raise DamagedCheckpointError(f"checkpoint {where} is damaged: its checksums cannot be "
                                   f"read ({_first_line(e)})") from e
    if not isinstance(sums, dict) or sums.get("version") != CHECKSUM_VERSION:
      raise DamagedCheckpointError(f"checkpoint {where} is damaged: unreadable checksums")
    return sums

  def restore(self, target_state, step: int | None = None, *, best: bool = False):
    """``(state, data, meta)`` of ``step`` (default latest; ``best=True``: the best one),
    verified against its checksums.

    Args:
      target_state: a pytree like the saved state (arrays or ``jax.ShapeDtypeStruct`` with
        shardings) that fixes structure, dtypes and placement.

    Raises:
      MissingCheckpointError: no such checkpoint (also a ``FileNotFoundError``).
      DamagedCheckpointError: the checkpoint's files are damaged.
      CheckpointError: the checkpoint holds other arrays than ``target_state`` (another
        model or optimizer: not damage, every checkpoint of the run would say the same).
    """
    _quiet_closed_loop_callbacks()
    manager = self.best if best else self.latest
    step = manager.latest_step() if step is None else step
    if step is None:
      raise MissingCheckpointError(f"no checkpoint in {manager.directory}")
    if step not in manager.all_steps():
      raise MissingCheckpointError(f"no checkpoint of step {step} in {manager.directory}; "
                                   f"steps: {list(manager.all_steps())}")
    where = self.step_dir(manager, step)
    target = jax.tree_util.tree_map(
        lambda a: a if isinstance(a, jax.ShapeDtypeStruct) else jax.ShapeDtypeStruct(
            np.shape(a), a.dtype, sharding=getattr(a, "sharding", None)), target_state)
    want = {_leaf_name(p): (tuple(v.shape), np.dtype(v.dtype).name)
            for p, v in jax.tree_util.tree_leaves_with_path(target)}
    problems = _shape_problems(want, _saved_shapes(where))
    if problems:
      raise CheckpointError(
          f"checkpoint {where} holds other arrays than this run's model and optimizer "
          f"({len(problems)} differences: {'; '.join(problems[:5])}); was it written with "
          "another config?")
    sums = self._checksums(manager, step)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))["state"]
    except Exception as e:
      raise DamagedCheckpointError(f"checkpoint {where} is damaged: its arrays cannot be "
                                   f"read ({_first_line(e)})") from e
    if sums is not None:
      got = tree_digests(restored)
      bad = sorted(k for k in want if got.get(k) != sums["state"].get(k))
      if bad:
        raise DamagedCheckpointError(
            f"checkpoint {where} is damaged: {len(bad)} arrays do not match their checksums "
            f"({', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''}; the files changed after "
            "they were written)")
    data = self._read_json(manager, step, "data", sums)
    meta = self._read_json(manager, step, "meta", sums)
    return restored, data, meta

  def restore_latest_intact(self, target_state, *, set_aside: bool):
    """``(state, data, meta)`` of the newest checkpoint that restores and verifies, or
    None when ``checkpoints/`` is empty.

    A damaged checkpoint is skipped with a warning naming it and the problem (and, with
    ``set_aside``, moved to ``<workdir>/damaged/`` so that the run can write that step
    again). Every process takes the same decisions.

    Raises:
      DamagedCheckpointError: every checkpoint is damaged.
      CheckpointError: the checkpoints hold another model or optimizer.
    """
    tried = []
    for step in sorted(self.latest.all_steps(), reverse=True):
      error = None
      try:
        result = self.restore(target_state, step)
      except DamagedCheckpointError as e:
        error = e
      if _agree(error is None):
        return result
      message = str(error) if error is not None else (
          f"checkpoint {self.step_dir(self.latest, step)} is damaged on another process")
      tried.append(message)
      logger.warning("%s; falling back to the previous checkpoint", message)
      if set_aside:
        self.set_aside(self.latest, step)
    if tried:
      raise DamagedCheckpointError(
          f"every checkpoint in {self.latest.directory} is damaged ({len(tried)}; newest: "
          f"{tried[0]})" + ("; they were moved to " + os.path.join(self.workdir, "damaged")
                            + ", so the next run starts from scratch" if set_aside else ""))
    return None

  def set_aside(self, manager: ocp.CheckpointManager, step: int) -> str:
    """Moves a damaged step to ``<workdir>/damaged/<manager>_<step>`` (process 0; every
    process calls it) and returns the new place."""
    manager.wait_until_finished()
    source = self.step_dir(manager, step)
    root = os.path.join(self.workdir, "damaged")
    name = f"{os.path.basename(os.fspath(manager.directory))}_{step}"
    dest, k = os.path.join(root, name), 1
    while os.path.exists(dest):
      dest, k = os.path.join(root, f"{name}.{k}"), k + 1
    if jax.process_index() == 0 and os.path.exists(source):
      os.makedirs(root, exist_ok=True)
      shutil.move(source, dest)
      logger.warning("moved the damaged checkpoint %s to %s", source, dest)
    _sync(f"jaxpose_set_aside_{name}")
    manager.reload()
    return dest

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def training_checkpoint(path: str | os.PathLike) -> tuple[str, int] | None:
  """``(manager directory, step)`` when ``path`` is a ``TrainCheckpointer`` checkpoint.

  ``path`` may be a training workdir (its best checkpoint, else its latest), its
  ``best/`` or ``checkpoints/`` directory (the latest step there), one step directory
  (``.../checkpoints/1200``) or an item inside one (``.../1200/state``). Returns None for
  anything else.
  """
  path = os.path.abspath(os.fspath(path))
  if (os.path.basename(path) in TrainCheckpointer.ITEMS
      and os.path.basename(os.path.dirname(path)).isdigit()):
    path = os.path.dirname(path)
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
  into ``model`` (in place), verified against the checkpoint's checksums; the optimizer
  state, step and RNG of the run are not read, so the checkpoint may come from a run with
  another optimizer (e.g. an earlier training stage). Every process calls it.

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
    DamagedCheckpointError: the checkpoint is damaged.
  """
  directory = os.path.abspath(os.fspath(directory))
  where = os.path.join(directory, str(step))
  current = model_variables(model)
  target = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype,
                                     sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])),
      current)
  have = {k: v[0] for k, v in _saved_shapes(where).items()}
  have = {k: v for k, v in have.items() if k.split("/")[0] in current}
  want = {_leaf_name(p): tuple(np.shape(v)) for p, v in jax.tree_util.tree_leaves_with_path(current)}
  missing = sorted(set(want) - set(have))
  problems = ([] if allow_missing else [f"missing {k}" for k in missing]
              + [f"unexpected {k}" for k in sorted(set(have) - set(want))])
  problems += [f"{k} is {have[k]}, the model's {want[k]}" for k in sorted(set(want) & set(have))
               if have[k] != want[k]]
  if problems:
    raise ValueError(f"{where}: the training checkpoint does not match the model's "
                     f"variables ({len(problems)} differences): {'; '.join(problems[:10])}")
  if missing:
    target = _without_paths(target, set(missing))
  manager = ocp.CheckpointManager(directory, item_names=TrainCheckpointer.ITEMS)
  try:
    try:
      restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True)))["state"]
    except Exception as e:
      raise DamagedCheckpointError(f"checkpoint {where} is damaged: its arrays cannot be "
                                   f"read ({_first_line(e)})") from e
    if os.path.isdir(os.path.join(where, "checksums")):
      sums = manager.restore(step, args=ocp.args.Composite(
          checksums=ocp.args.JsonRestore()))["checksums"]
      got = tree_digests(restored)
      bad = sorted(k for k in got if got[k] != sums.get("state", {}).get(k))
      if bad:
        raise DamagedCheckpointError(
            f"checkpoint {where} is damaged: {len(bad)} arrays do not match their checksums "
            f"({', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''})")
  finally:
    manager.close()
  set_model_variables(model, restored)
  return missing


def _without_paths(tree: Any, paths: set[str]) -> Any:
  """``tree`` (nested dicts) without the leaves whose ``_leaf_name(path)`` is in ``paths``."""
  flat = {_leaf_name(p): (p, v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}
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
