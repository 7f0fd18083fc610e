"""The one training loop of every method (``launch.py`` calls these).

``train_and_evaluate(config, workdir)``: builds the run's task (``config.task``, see
``jaxpose.train.tasks``), lets it prepare its data (process 0), takes its model, optimizer
and training iterator, then runs the sharded train step with a progress bar, TensorBoard
scalars, periodic asynchronous checkpoints (exact resume: parameters, optimizer, step, RNG
and data-iterator position), evaluation every ``train.eval_every_epochs`` and at the end,
and the best checkpoint by the task's metric and direction. The whole config is checked
first (``validation.validate_config``); every checkpoint is saved before the evaluation of
its step. A non-finite loss stops the run after saving the last good state with its own
data position (``guards``: never a frozen state; a resumed run continues from it, e.g. with
a lower learning rate); a loss grown a hundredfold over its minimum is warned about once.
Resuming skips damaged checkpoints (warning, moved to ``<workdir>/damaged/``).

``evaluate(config, workdir, checkpoint)``: loads the latest/best/given checkpoint (a
training checkpoint, a ``jaxpose.convert`` output directory, or an original ``.pth``) and
evaluates it.

User-facing errors (``USER_ERRORS``: configuration mistakes, unusable checkpoints, a
non-finite loss) carry one-line messages; ``launch.py`` prints them without a traceback.

Everything method- or dataset-specific is the task's; this module has no branch on either.
Multi-host: every process runs this same code; collectives (checkpoint saves and restores,
the predictions gather, the metrics broadcast, barriers) are reached by every process in
the same order, and the metrics are identical on every process after each evaluation.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from tqdm import tqdm

from jaxpose import checkpoint as ckpt_lib
from jaxpose import compile_options
from jaxpose import fileio
from jaxpose.models import inference
from jaxpose.train import guards, multihost, state as state_lib, summary, validation
from jaxpose.train import tasks as tasks_lib
from jaxpose.train.multihost import maybe_initialize_distributed  # noqa: F401 (launch.py)
from jaxpose.train.tasks import base

logger = logging.getLogger(__name__)

Schedule = base.Schedule


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or inf (the message names the step)."""


USER_ERRORS = (validation.ConfigError, ckpt_lib.CheckpointError, NonFiniteLossError)
"""Errors whose one-line message says everything (``launch.py`` prints no traceback)."""


# ----------------------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------------------


def make_task(config: ml_collections.ConfigDict) -> base.Task:
  """The run's task with its data prepared (see ``prepare_data``)."""
  return prepare_data(tasks_lib.make_task(config))


def prepare_data(task: base.Task) -> base.Task:
  """Lets ``task`` prepare its data: process 0 prepares, the others wait (and raise too
  when it fails, instead of waiting forever). Returns ``task``."""
  if jax.process_count() == 1:
    task.prepare_data()
    return task
  error = None
  if jax.process_index() == 0:
    try:
      task.prepare_data()
    except Exception as e:  # every process must reach the broadcast, then all raise
      error = f"{type(e).__name__}: {e}"
      multihost.broadcast_json(error)
      raise
  error = multihost.broadcast_json(error)
  if error is not None:
    raise RuntimeError(f"preparing the data failed on process 0: {error}")
  return task


def validate_config(config: ml_collections.ConfigDict, *, mode: str = "train",
                    checkpoint: str | None = None) -> base.Task:
  """``validation.validate_config`` for this run's devices and processes: the whole config
  checked before any work; returns the run's task (data not prepared yet)."""
  return validation.validate_config(config, mode=mode, checkpoint=checkpoint,
                                    device_count=jax.device_count(),
                                    process_count=jax.process_count())


def schedule(config: ml_collections.ConfigDict, num_examples: int) -> Schedule:
  """Steps per epoch (whole global batches) and in total (``train.total_steps`` or epochs)."""
  batch = config.train.global_batch_size
  steps_per_epoch = num_examples // batch
  if steps_per_epoch == 0:
    raise ValueError(f"global batch {batch} is larger than the {num_examples} training examples")
  total = config.train.get("total_steps") or config.train.num_epochs * steps_per_epoch
  return Schedule(steps_per_epoch, int(total))


def _train_state(task: base.Task, model: nnx.Module, plan: Schedule, mesh: Mesh, seed: int):
  """``(train graphdef, eval graphdef, replicated TrainState, optimizer, lr schedule)``."""
  train_def, eval_def, params, batch_stats = state_lib.split_model(model)
  tx, lr_schedule = task.optimizer(model, plan)
  state = state_lib.init_train_state(params, batch_stats, tx, seed)
  return train_def, eval_def, jax.device_put(state, state_lib.replicated(mesh)), tx, lr_schedule


# ----------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------


def make_predict_fns(eval_def: nnx.GraphDef, task: base.Task, mesh: Mesh,
                     compute_dtype: Any = None):
  """Jitted ``(params, batch_stats, inputs) -> task.predict(model, inputs)``: batch-sharded
  and replicated variants, compiled for the model's ``compute_dtype``
  (``inference.compute_dtype``; None: float32).

  Both take the inference path (``jaxpose.models.inference.fast_call``): the traced
  parameters' BatchNorms folded into their convolutions inside the step. The batch-sharded
  one, whose rows are independent by definition, runs its rows as micro-batches on a
  one-device mesh (``inference.micro_batched``, ``"auto"``); the replicated one (whole sequences,
  whose leading axis need not be independent rows) runs as one call.
  """

  def predict_fn(micro_batch):
    def predict(params, batch_stats, inputs):
      model = nnx.merge(eval_def, params, batch_stats)
      return inference.fast_call(model, task.predict, micro_batch)(inputs)
    return predict

  rep, rows = state_lib.replicated(mesh), state_lib.batch_sharding(mesh)
  micro_batch = "auto" if mesh.size == 1 else None
  options = compile_options.for_platform(state_lib.mesh_platform(mesh), compute_dtype)
  sharded = jax.jit(predict_fn(micro_batch), in_shardings=(rep, rep, rows), out_shardings=rows,
                    compiler_options=options)
  whole = jax.jit(predict_fn(None), in_shardings=(rep, rep, rep), out_shardings=rep,
                  compiler_options=options)
  return sharded, whole


def _replicated_input(tree: Any, mesh: Mesh) -> Any:
  """Host arrays every process holds whole -> global replicated arrays."""
  sharding = state_lib.replicated(mesh)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_callback(np.shape(x), sharding,
                                             lambda idx, x=np.asarray(x): x[idx]), tree)


def eval_context(predict_fns, params, batch_stats, mesh: Mesh, step: int, workdir: str,
                 writer: summary.SummaryWriter) -> base.EvalContext:
  """The ``EvalContext`` of one evaluation of ``params`` / ``batch_stats``."""
  sharded, whole = predict_fns

  def predict(inputs):
    out = sharded(params, batch_stats, state_lib.global_batch(inputs, mesh))
    return jax.tree_util.tree_map(state_lib.host_local, out)

  def predict_replicated(inputs):
    out = whole(params, batch_stats, _replicated_input(inputs, mesh))
    return jax.tree_util.tree_map(np.asarray, out)

  return base.EvalContext(mesh=mesh, step=step, workdir=workdir, writer=writer,
                          process_index=jax.process_index(),
                          process_count=jax.process_count(), predict=predict,
                          predict_replicated=predict_replicated)


def run_eval(task: base.Task, ctx: base.EvalContext) -> dict[str, float]:
  """Every process predicts its share; process 0 scores all of it; every process returns
  the same metrics. Collective: every process must call it."""
  predictions = multihost.gather_rows(task.predict_dataset(ctx))
  if jax.process_count() == 1:
    return {k: float(v) for k, v in task.score(predictions, ctx).items()}
  result: dict[str, Any] = {}
  if jax.process_index() == 0:
    try:
      result["metrics"] = {k: float(v) for k, v in task.score(predictions, ctx).items()}
    except Exception as e:  # every process must reach the broadcast, then all raise
      logger.exception("scoring failed")
      result["error"] = f"{type(e).__name__}: {e}"
  result = multihost.broadcast_json(result)
  if "error" in result:
    raise RuntimeError(f"evaluation failed on process 0: {result['error']}")
  return result["metrics"]


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains and evaluates; returns the final evaluation metrics (the same on every process)."""
  start = time.time()
  task = validate_config(config, mode="train")
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  _save_config(config, workdir)
  prepare_data(task)
  train_data = task.train_data(global_batch_size=config.train.global_batch_size,
                               process_index=jax.process_index(),
                               process_count=jax.process_count())
  plan = schedule(config, train_data.num_examples)
  mesh = state_lib.make_mesh()

  model = task.init_model()
  compute_dtype = inference.compute_dtype(model)
  train_def, eval_def, state, tx, lr_schedule = _train_state(
      task, model, plan, mesh, config.train.seed)
  del model
  train_steps: dict[Any, Any] = {}  # one jitted step per training phase (task.step_phase)

  def train_step_of(phase):
    if phase not in train_steps:
      loss = task.loss if phase is None else functools.partial(task.loss, phase=phase)
      train_steps[phase] = state_lib.jit_train_step(
          state_lib.make_train_step(train_def, loss, tx, lambda s: task.step_hparams(s, plan)),
          mesh)
    return train_steps[phase]
  predict_fns = make_predict_fns(eval_def, task, mesh, compute_dtype)

  checkpointer = ckpt_lib.TrainCheckpointer(
      workdir, keep=config.train.keep_checkpoints, async_save=config.train.async_checkpoints,
      best_metric=task.best_metric, best_mode=task.best_mode)
  train_iter = train_data.iterator
  state = _resume(checkpointer, state, train_iter, mesh)
  writer = summary.SummaryWriter(os.path.join(workdir, "tensorboard"))

  def evaluate_now(step: int) -> dict[str, float]:
    ctx = eval_context(predict_fns, state.params, state.batch_stats, mesh, step, workdir, writer)
    metrics = run_eval(task, ctx)
    writer.scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
    if jax.process_index() == 0:
      tqdm.write(task.metrics_table(metrics))
    return metrics

  step = int(state.step)
  metrics: dict[str, float] = {}
  train = config.train
  progress = tqdm(total=plan.total_steps, initial=step, desc="train", unit="step",
                  disable=jax.process_index() != 0, dynamic_ncols=True)
  positions = guards.DataPositions(step, train_iter.get_state())
  log = _StepLog(writer, progress, lr_schedule, train.global_batch_size, step)
  try:
    while step < plan.total_steps:
      batch = state_lib.global_batch(next(train_iter), mesh)
      state, step_metrics = train_step_of(task.step_phase(step, plan))(state, batch)
      step += 1
      positions.record(step, train_iter.get_state())
      progress.update(1)
      epoch, epoch_done = step // plan.steps_per_epoch, step % plan.steps_per_epoch == 0
      log_now = step % train.log_every_steps == 0 or step == plan.total_steps or epoch_done
      save_now = step % train.checkpoint_every_steps == 0
      eval_now = (epoch_done and epoch % train.eval_every_epochs == 0) or step == plan.total_steps
      if log_now or save_now or eval_now:  # check points: never save or evaluate a frozen state
        host = jax.device_get({**step_metrics, "first_bad_step": state.first_bad_step})
        _stop_if_not_finite(host, state, checkpointer, positions, step, plan, mesh)
        positions.forget_before(step)
      if log_now:
        log(step, host)
      if save_now or eval_now:
        checkpointer.save(step, state, train_iter.get_state(), {"epoch": epoch})
      if eval_now:
        metrics = evaluate_now(step)
        checkpointer.maybe_save_best(step, state, train_iter.get_state(), {"epoch": epoch}, metrics)
        writer.flush()
    if not metrics:  # resumed a run that had already finished training
      metrics = evaluate_now(step)
  finally:
    progress.close()
    checkpointer.wait()
    checkpointer.close()
    writer.close()
  wall = time.time() - start
  if jax.process_index() == 0:
    _write_json(os.path.join(workdir, "final_metrics.json"),
                {"step": step, "metrics": metrics, "wall_time_s": wall})
    print(f"finished {step} steps in {wall / 60:.1f} min (wall time); workdir {workdir}")
  return metrics


class _StepLog:
  """The train scalars of a log step: TensorBoard (``train/*``), the progress bar and the
  divergence warning (``guards.DivergenceMonitor``, also a TensorBoard text)."""

  def __init__(self, writer: summary.SummaryWriter, progress: tqdm, lr_schedule,
               global_batch_size: int, step: int):
    self.writer, self.progress, self.lr_schedule = writer, progress, lr_schedule
    self.global_batch_size = global_batch_size
    self.divergence = guards.DivergenceMonitor()
    self.last_step, self.last_time = step, time.time()

  def __call__(self, step: int, host: dict[str, Any]) -> None:
    now = time.time()
    images_per_s = ((step - self.last_step) * self.global_batch_size
                    / max(now - self.last_time, 1e-9))
    self.last_step, self.last_time = step, now
    scalars = {f"train/{k}": float(v) for k, v in host.items() if k != "first_bad_step"}
    scalars.update({"train/lr": float(self.lr_schedule(step - 1)),
                    "train/images_per_s": images_per_s})
    self.writer.scalars(step, scalars)
    warning = self.divergence.update(step, scalars["train/loss"])
    if warning:
      self.writer.text(step, "train/warnings", warning)
    self.writer.flush()
    self.progress.set_postfix(loss=f"{scalars['train/loss']:.3g}",
                              lr=f"{scalars['train/lr']:.2g}")


def _replicated_scalar(value, dtype, mesh: Mesh) -> jax.Array:
  return _replicated_input(np.asarray(value, dtype), mesh)


def _resume(checkpointer: ckpt_lib.TrainCheckpointer, state, train_iter, mesh: Mesh):
  """``state`` from the newest intact checkpoint (damaged ones are skipped with a warning
  and moved aside), with the data iterator at its position; ``state`` itself when there
  is none. A non-finite-loss flag in the checkpoint (older jaxpose saved frozen states
  with it) is cleared, so the resumed run trains."""
  found = checkpointer.restore_latest_intact(state, set_aside=True)
  if found is None:
    return state
  state, data_state, meta = found
  train_iter.set_state(data_state)
  bad = int(state.first_bad_step)
  if bad >= 0:
    logger.warning("the checkpoint of step %d was saved after a non-finite loss at update %d; "
                   "resuming from it with the flag cleared", int(state.step), bad)
  state = state.replace(first_bad_step=_replicated_scalar(-1, np.int32, mesh))
  logger.info("resumed from step %d (%s)", int(state.step), meta)
  return state


def _stop_if_not_finite(host: dict, state, checkpointer: ckpt_lib.TrainCheckpointer,
                        positions: guards.DataPositions, step: int, plan: Schedule,
                        mesh: Mesh) -> None:
  """When a loss was not finite: saves the last good state (the step froze it there) with
  the flag cleared and the data position of that step, then raises. Every process sees the
  same replicated ``first_bad_step``, so all save and raise together."""
  bad = int(host["first_bad_step"])
  if bad < 0:
    return
  good = int(state.step)
  clean = state.replace(first_bad_step=_replicated_scalar(-1, np.int32, mesh))
  checkpointer.save(good, clean, positions.at(good),
                    {"epoch": good // plan.steps_per_epoch,
                     "stopped": f"non-finite loss at update {bad}"}, force=True)
  checkpointer.wait()
  raise NonFiniteLossError(
      f"the loss became NaN or inf at step {bad + 1} (update {bad}); stopped at step {step}. "
      f"The last good state (step {good}) is saved in {checkpointer.latest.directory}; "
      "rerunning resumes from it (e.g. with a lower --config.optim.lr)")


def evaluate(config: ml_collections.ConfigDict, workdir: str, checkpoint: str | None = None
             ) -> dict[str, float]:
  """Evaluates a checkpoint: ``checkpoint`` is None or 'latest' (the newest intact one in
  ``workdir``), 'best', a training step number, or a path: a training workdir or
  checkpoint, a ``jaxpose.convert`` directory or an original ``.pth`` file."""
  task = validate_config(config, mode="eval", checkpoint=checkpoint)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  prepare_data(task)
  mesh = state_lib.make_mesh()
  if checkpoint in (None, "", "latest", "best") or str(checkpoint).isdigit():
    model = task.build_model()
    compute_dtype = inference.compute_dtype(model)
    _, eval_def, target, _, _ = _train_state(task, model, Schedule(1, 1), mesh, 0)
    restored = _restore_for_eval(workdir, task, target, checkpoint)
    params, batch_stats = restored.params, restored.batch_stats
  else:
    model = task.load_model(os.path.expanduser(checkpoint))
    compute_dtype = inference.compute_dtype(model)
    _, eval_def, params, batch_stats = state_lib.split_model(model)
  del model
  writer = summary.SummaryWriter(os.path.join(workdir, "tensorboard"), enabled=False)
  ctx = eval_context(make_predict_fns(eval_def, task, mesh, compute_dtype), params, batch_stats,
                     mesh, 0, workdir, writer)
  metrics = run_eval(task, ctx)
  if jax.process_index() == 0:
    print(task.metrics_table(metrics))
    _write_json(os.path.join(workdir, "eval_metrics.json"), metrics)
  return metrics


def _restore_for_eval(workdir: str, task: base.Task, target, checkpoint: str | None):
  """The training state ``checkpoint`` names in ``workdir`` (read only: a damaged latest
  checkpoint is skipped with a warning, a damaged named one is an error)."""
  checkpointer = ckpt_lib.TrainCheckpointer(workdir, best_metric=task.best_metric,
                                            best_mode=task.best_mode)
  try:
    if checkpoint in (None, "", "latest"):
      found = checkpointer.restore_latest_intact(target, set_aside=False)
      if found is None:
        raise ckpt_lib.MissingCheckpointError(
            f"no training checkpoint in {checkpointer.latest.directory}; train first or pass "
            "--checkpoint=PATH (a converted directory or an original .pth)")
      return found[0]
    best = checkpoint == "best"
    restored, _, _ = checkpointer.restore(target, None if best else int(checkpoint), best=best)
    return restored
  finally:
    checkpointer.close()


def _save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    fileio.atomic_write(os.path.join(workdir, "config.json"),
                        lambda f: f.write(config.to_json_best_effort(indent=1)))


def _write_json(path: str, obj: Any) -> None:
  fileio.write_json(path, obj, indent=1, default=float)
