"""The task interface: everything one training method owns, in one object.

The loop (``jaxpose.train.loop``) owns the mechanics every method shares: the mesh, the
jitted and sharded train step with its donated state, the optimizer state, checkpoints and
exact resume, the NaN/inf guard, when to evaluate, the best checkpoint, TensorBoard
scalars, progress bars, ``final_metrics.json``. A ``Task`` owns the rest: its data, how
the model is called and what the loss is, prediction with test-time augmentation,
decoding, metrics and their direction, the metrics table and its evaluation summaries.
A new method subclasses ``Task`` in its own file and adds one entry to
``jaxpose.train.tasks.TASKS``; it never changes the loop.

Processes: on several hosts every process builds the same task and calls the same methods
in the same order; where a method runs on process 0 only, or is a collective, its
docstring says so. Methods marked *traced* run inside ``jax.jit`` (pure functions of
their array arguments; Python control flow on static shapes only).

Why ``jaxpose/train/tasks/``: a task is built on the training mechanics below it
(``state.call_model``, ``optim``, ``weights``, ``summary``) and is used by the loop above
it, so it lives in the training package between the two. Inference on users' images
(``jaxpose predict``) uses a task's ``predict`` + ``decode`` and ``weights.load_weights``
and imports nothing of the loop.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from jaxpose import models
from jaxpose.train import optim, summary, weights

Batch = Any  # a pytree of arrays whose leading axis is the example axis
Columns = dict[str, np.ndarray]  # predictions: name -> [N, ...], one row per example


@dataclasses.dataclass(frozen=True)
class Schedule:
  """How long training runs.

  Attributes:
    steps_per_epoch: optimizer updates per pass over the training data
      (``TrainData.num_examples // train.global_batch_size``).
    total_steps: updates of the whole run (``train.total_steps`` or
      ``train.num_epochs * steps_per_epoch``).
  """
  steps_per_epoch: int
  total_steps: int


class CheckpointableIterator(Protocol):
  """An endless iterator of this host's training batches whose position is saved with
  every checkpoint (a grain ``DatasetIterator`` is one)."""

  def __next__(self) -> Batch:
    ...

  def get_state(self) -> dict:
    """A JSON-serialisable position."""
    ...

  def set_state(self, state: dict) -> None:
    ...


@dataclasses.dataclass
class TrainData:
  """What ``Task.train_data`` returns.

  Attributes:
    iterator: this host's batches: a pytree (usually a dict) of numpy arrays whose
      leading axis is ``global_batch_size // process_count`` (each leaf is sharded over
      the devices along it, so its global size must divide by the device count).
    num_examples: training examples in one epoch, over all hosts; the loop derives
      ``Schedule.steps_per_epoch`` from it.
  """
  iterator: CheckpointableIterator
  num_examples: int


@dataclasses.dataclass
class EvalContext:
  """What the loop hands to ``Task.predict_dataset`` and ``Task.score``.

  Attributes:
    mesh: the device mesh (one ``data`` axis over all devices of all processes).
    step: the training step being evaluated (TensorBoard x-axis).
    workdir: the run's directory (result files).
    writer: TensorBoard writer; a no-op on processes other than 0.
    process_index, process_count: this process and how many there are.
    predict: *collective*. ``inputs -> outputs`` through the jitted ``Task.predict`` of
      the evaluated weights, batch-sharded: ``inputs`` is this process's rows of one
      global batch (a pytree of numpy arrays, every process passing the same number of
      rows; the global row count must divide by the device count) and the result is this
      process's rows of the outputs, numpy (every output leaf must have the batch as its
      leading axis). Every process must call it the same number of times with the same
      shapes; pad the last batch and drop the padding rows after decoding.
    predict_replicated: *collective*. The same function on inputs that every process
      holds whole (e.g. one complete sequence, of any length), computed without sharding
      the batch; every process gets the whole output. Each new input shape compiles once.
  """
  mesh: Mesh
  step: int
  workdir: str
  writer: summary.SummaryWriter
  process_index: int
  process_count: int
  predict: Callable[[Batch], Any]
  predict_replicated: Callable[[Batch], Any]

  def global_batch_size(self, requested: int) -> int:
    """``requested`` rounded up to a multiple of the device count."""
    n = self.mesh.size
    return int(math.ceil(requested / n) * n)

  def local_batch_size(self, global_batch_size: int) -> int:
    """This process's rows of a global batch of ``global_batch_size``."""
    return global_batch_size // self.process_count


class Task:
  """One training method (subclass it; the methods without a default must be defined).

  Construction: ``TASKS[config.task].from_config(config)`` on every process; it validates
  the configuration (unknown dataset, missing files it can check cheaply) so that every
  process fails at once with the same one-line error, before any collective.

  Attributes:
    config: the run's ``ml_collections.ConfigDict``.
    predict_unsupported: None when ``jaxpose predict`` / ``jaxpose export`` can run the
      method on users' images, else the one-line reason they refuse its models.
  """
  config: ml_collections.ConfigDict
  predict_unsupported: str | None = None

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Task":
    """The task of a run (every process)."""
    raise NotImplementedError

  # -- what "better" means ------------------------------------------------------------

  @property
  def best_metric(self) -> str:
    """Key of ``score``'s dict that selects the best checkpoint (e.g. 'AP', 'MPJPE')."""
    raise NotImplementedError

  @property
  def best_mode(self) -> str:
    """'max' when a higher ``best_metric`` is better (AP, PCKh), 'min' for errors (MPJPE)."""
    raise NotImplementedError

  # -- data -----------------------------------------------------------------------------

  def prepare_data(self) -> None:
    """Builds or checks the datasets on disk. Process 0 only; every other process waits
    at a barrier until it returns. No collectives. Default: nothing."""

  def train_data(self, *, global_batch_size: int, process_index: int, process_count: int
                 ) -> TrainData:
    """This host's checkpointable training iterator (every process).

    Args:
      global_batch_size: ``train.global_batch_size`` (divisible by the device count).
      process_index, process_count: this host's share: it yields
        ``global_batch_size // process_count`` examples per batch, a different slice of
        the global stream on every host.
    """
    raise NotImplementedError

  # -- model and optimizer --------------------------------------------------------------

  def build_model(self) -> nnx.Module:
    """The architecture with fresh weights (every process; structure for restores).
    Default: ``config.model`` at the run's dtype."""
    return models.build_model(weights.model_config(self.config), seed=0)

  def init_model(self) -> nnx.Module:
    """The model with the weights training starts from (every process, deterministic).
    Default: ``config.init`` (scratch / imagenet / checkpoint) for ``config.model``. A task
    with several networks (e.g. pose + trajectory) returns one ``nnx.Module`` holding them."""
    return weights.initial_model(self.config)

  def load_model(self, path: str) -> nnx.Module:
    """Every weight from a ``jaxpose.convert`` directory or an original ``.pth`` (every
    process; ``--mode=eval --checkpoint=PATH``)."""
    return weights.load_weights(path, weights.model_config(self.config))

  def optimizer(self, model: nnx.Module, schedule: Schedule
                ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(transformation, learning rate schedule)`` (every process; the schedule is only
    logged as ``train/lr``). The structure of the optimizer state must not depend on
    ``schedule`` (restores build it with a dummy one). Default: ``config.optim``.
    Parameter groups (frozen parts, per-group rates): return
    ``optim.make_partitioned_optimizer(groups, optim.param_labels(model, filters, default),
    schedule.steps_per_epoch)``."""
    del model
    return optim.make_optimizer(self.config.optim, schedule.steps_per_epoch)

  # -- the train step (traced) ----------------------------------------------------------

  def step_hparams(self, step: jax.Array, schedule: Schedule) -> dict[str, jax.Array]:
    """*Traced.* Per-step hyper-parameters from the int32 ``step`` (updates done so far),
    e.g. a BatchNorm momentum decayed per epoch; passed to ``loss`` and logged as
    ``train/hparams/<name>``. Changing values never recompile. Default: none."""
    del step, schedule
    return {}

  def step_phase(self, step: int, schedule: Schedule) -> Hashable:
    """Host side, every process: the static training phase of the update after ``step``
    updates, for losses whose computation (not just a value) changes during training,
    e.g. VideoPose3D's supervised-only warm-up epochs before its semi-supervised terms.
    The loop compiles the train step once per distinct phase and calls ``loss`` with
    ``phase=<phase>`` (a task that returns phases other than None takes that keyword).
    Default: None, one phase (``loss`` is called without ``phase``). Prefer
    ``step_hparams`` for values: a traced ``jax.lax.cond`` would also work, but its
    gradient runs convolutions far below speed on XLA:CPU."""
    del step, schedule
    return None

  def loss(self, model: nnx.Module, batch: Batch, rng: jax.Array,
           hparams: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """*Traced.* ``(scalar loss, {name: scalar metric})`` of one global batch.

    Args:
      model: the training-mode model (``init_model``'s structure); the task calls it as it
        needs (``state.call_model(model, x, rng)``, ``model.single_frame(x)``, two
        sub-networks, ...). BatchNorm statistics it updates are kept.
      batch: the device batch (``train_data``'s pytree, sharded over ``data``).
      rng: a fresh PRNG key of this step (dropout, in-step augmentation).
      hparams: ``step_hparams`` of this step.
    """
    raise NotImplementedError

  # -- evaluation -----------------------------------------------------------------------

  def predict(self, model: nnx.Module, inputs: Batch) -> Any:
    """*Traced.* The eval-mode model's test-time output for ``inputs`` (preprocessing and
    test-time augmentation such as the flip test included); ``EvalContext.predict`` runs
    it. Also the inference entry point of ``jaxpose predict`` (with ``decode``)."""
    raise NotImplementedError

  def predict_dataset(self, ctx: EvalContext) -> Columns:
    """Predicts this process's share of the evaluation data and decodes it (every
    process; calls the collectives ``ctx.predict`` / ``ctx.predict_replicated`` the same
    number of times on every process).

    Returns:
      Columns of equal length (this process's rows, any count; the loop gathers every
      process's rows in process order, so include an index column if ``score`` needs the
      data order). Numeric dtypes only. Evaluation summaries (e.g. crops with the
      predicted skeleton) go to ``ctx.writer``.
    """
    raise NotImplementedError

  def score(self, predictions: Columns, ctx: EvalContext) -> dict[str, float]:
    """Metrics of every process's predictions (process 0 only; no collectives). The loop
    sends the result to every process, so decisions such as "is this the best
    checkpoint" are the same everywhere."""
    raise NotImplementedError

  def metrics_table(self, metrics: Mapping[str, float]) -> str:
    """The metrics as the original prints them, with what was evaluated."""
    return "\n".join(f"{k}: {v:.4f}" for k, v in metrics.items())
