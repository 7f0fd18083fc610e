"""A minimal task for the loop's tests, shaped like the 3D methods that come next.

``FakeTask`` registers as ``TASKS["fake"]`` (the tests add the entry) and runs through the
unchanged ``jaxpose.train.loop``. It exercises what VideoPose3D, Pose3D-RIE and the
image-based 3D methods need from the interface, on a toy regression problem
(``y = x @ W``, 4 -> 3 numbers per frame):

* its own model: two networks in one module (``pose`` with BatchNorm, ``traj``); training
  calls ``model.single_frame`` and evaluation the whole-sequence ``model(...)``;
* its own data: a numpy iterator (not grain) with its own checkpoint state, yielding a
  nested batch with an extra unlabelled part;
* a per-step traced hyper-parameter (BatchNorm momentum decayed per epoch, set on the
  module inside the step);
* parameter groups: ``traj`` frozen although the loss has gradients for it, the rest
  trained (``optax.multi_transform``);
* evaluation on whole sequences of different lengths (``ctx.predict_replicated``) and on
  fixed-size batch-sharded frames (``ctx.predict``), each process reporting its share;
  an error metric where lower is better (``best_mode = 'min'``).
"""
from __future__ import annotations

import ml_collections
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpose.models import layers
from jaxpose.train import optim
from jaxpose.train.tasks import base

W = np.random.RandomState(123).randn(4, 3).astype(np.float32)
EVAL_LENGTHS = (5, 9, 13)


class SimulatedCrash(Exception):
  """Stands for a killed job."""


class TwoNets(nnx.Module):
  """``pose``: Linear + BatchNorm + Linear per frame; ``traj``: one Linear."""

  def __init__(self, rngs: nnx.Rngs):
    self.pose_in = nnx.Linear(4, 8, rngs=rngs)
    self.bn = layers.BatchNorm(8)
    self.pose_out = nnx.Linear(8, 3, rngs=rngs)
    self.traj = nnx.Linear(4, 3, rngs=rngs)

  def single_frame(self, x: jax.Array) -> jax.Array:
    """``[B, 4] -> [B, 3]`` (the training path)."""
    return self.pose_out(nnx.relu(self.bn(self.pose_in(x))))

  def __call__(self, sequence: jax.Array) -> jax.Array:
    """``[T, 4] -> [T, 3]`` (the evaluation path)."""
    return self.single_frame(sequence) + self.traj(sequence)


class ArrayIterator:
  """This process's batches: batch ``k`` drawn from ``RandomState([seed, k, process])``;
  batch ``nan_at`` (if given) has NaN inputs."""

  def __init__(self, seed: int, batch: int, process_index: int, crash_at: int | None,
               nan_at: int | None = None):
    self.seed, self.batch, self.process_index = seed, batch, process_index
    self.position = 0
    self.crash_at = crash_at
    self.nan_at = nan_at

  def __next__(self) -> dict:
    if self.crash_at is not None and self.position == self.crash_at:
      raise SimulatedCrash(f"interrupted before batch {self.position}")
    rs = np.random.RandomState([self.seed, self.position, self.process_index])
    x = rs.randn(self.batch, 4).astype(np.float32)
    if self.position == self.nan_at:
      x[0, 0] = np.nan
    self.position += 1
    return {"x": x, "y": x @ W, "unlabeled": {"x": rs.randn(self.batch, 4).astype(np.float32)}}

  def get_state(self) -> dict:
    return {"position": self.position}

  def set_state(self, state: dict) -> None:
    self.position = int(state["position"])


class FakeTask(base.Task):
  """See the module docstring."""
  traces = 0  # how often ``loss`` was traced (jit compilations of the train step)
  best_metric = "MPJPE"
  best_mode = "min"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "FakeTask":
    return cls(config)

  def train_data(self, *, global_batch_size: int, process_index: int, process_count: int
                 ) -> base.TrainData:
    iterator = ArrayIterator(self.config.train.seed, global_batch_size // process_count,
                             process_index, self.config.fake.get("crash_at"),
                             self.config.fake.get("nan_at"))
    return base.TrainData(iterator, self.config.fake.num_examples)

  def build_model(self) -> nnx.Module:
    return TwoNets(nnx.Rngs(0))

  def init_model(self) -> nnx.Module:
    return TwoNets(nnx.Rngs(self.config.train.seed))

  def optimizer(self, model, schedule):
    labels = optim.param_labels(model, {"trajectory": nnx.PathContains("traj")}, "pose")
    return optim.make_partitioned_optimizer({"pose": self.config.optim, "trajectory": None},
                                            labels, schedule.steps_per_epoch)

  def step_hparams(self, step, schedule):
    epoch = step // schedule.steps_per_epoch
    return {"bn_momentum": 1.0 - 0.1 * 0.5 ** epoch.astype(jnp.float32)}

  def loss(self, model, batch, rng, hparams):
    FakeTask.traces += 1
    model.bn.momentum = hparams["bn_momentum"]
    pred = model.single_frame(batch["x"]) + model.traj(batch["x"])
    mse = jnp.mean((pred - batch["y"]) ** 2)
    unlabeled = jnp.mean(model.traj(batch["unlabeled"]["x"]) ** 2)  # traj is frozen
    return mse + 0.1 * unlabeled, {"mse": mse}

  def predict(self, model, inputs):
    return model(inputs)

  def sequences(self) -> list[tuple[np.ndarray, np.ndarray]]:
    rs = np.random.RandomState(7)
    out = []
    for length in EVAL_LENGTHS:
      x = rs.randn(length, 4).astype(np.float32)
      out.append((x, x @ W))
    return out

  def predict_dataset(self, ctx: base.EvalContext) -> base.Columns:
    p, n = ctx.process_index, ctx.process_count
    sequences = self.sequences()
    rows = []
    first_frame = np.cumsum([0] + [len(x) for x, _ in sequences])
    for k, (x, y) in enumerate(sequences):  # whole sequences, every process, same order
      out = ctx.predict_replicated(x)
      if k % n == p:  # each process reports its share
        rows.append((np.zeros(len(x), np.int32), first_frame[k] + np.arange(len(x)),
                     np.linalg.norm(out - y, axis=-1)))
    frames = np.concatenate([x for x, _ in sequences])
    targets = np.concatenate([y for _, y in sequences])
    batch = ctx.global_batch_size(4)
    local = ctx.local_batch_size(batch)
    for start in range(0, len(frames), batch):  # fixed-size batch-sharded frames
      ids = start + p * local + np.arange(local)
      real = ids < len(frames)
      out = ctx.predict(frames[np.minimum(ids, len(frames) - 1)])
      err = np.linalg.norm(out - targets[np.minimum(ids, len(frames) - 1)], axis=-1)
      rows.append((np.ones(real.sum(), np.int32), ids[real], err[real]))
    return {"source": np.concatenate([r[0] for r in rows]),
            "frame": np.concatenate([r[1] for r in rows]).astype(np.int64),
            "error": np.concatenate([r[2] for r in rows]).astype(np.float64)}

  def score(self, predictions, ctx):
    total = sum(EVAL_LENGTHS)
    metrics = {}
    for source, name in ((0, "MPJPE"), (1, "MPJPE (batched)")):
      chosen = predictions["source"] == source
      if sorted(predictions["frame"][chosen].tolist()) != list(range(total)):
        raise ValueError(f"{name}: frames missing or repeated")
      metrics[name] = float(np.mean(predictions["error"][chosen]))
    return metrics


def config(**train) -> ml_collections.ConfigDict:
  """12 examples, global batch 4: 3 steps per epoch, 3 epochs, evaluation every epoch."""
  c = ml_collections.ConfigDict()
  c.task = "fake"
  c.optim = ml_collections.ConfigDict(dict(name="adam", lr=3e-2))
  c.train = ml_collections.ConfigDict(dict(
      global_batch_size=4, num_epochs=3, total_steps=None, log_every_steps=1,
      checkpoint_every_steps=2, keep_checkpoints=20, async_checkpoints=False,
      eval_every_epochs=1, seed=0))
  c.train.update(train)
  c.fake = ml_collections.ConfigDict(dict(num_examples=12, crash_at=None, nan_at=None))
  return c


def restore(workdir, config: ml_collections.ConfigDict, step: int | None = None,
            best: bool = False):
  """``(state, data, meta)`` of a run's checkpoint (``TrainCheckpointer.restore``)."""
  from jaxpose import checkpoint as ckpt_lib
  from jaxpose.train import state as state_lib
  task = FakeTask(config)
  model = task.build_model()
  _, _, params, batch_stats = state_lib.split_model(model)
  tx, _ = task.optimizer(model, base.Schedule(1, 1))
  checkpointer = ckpt_lib.TrainCheckpointer(workdir)
  try:
    return checkpointer.restore(state_lib.init_train_state(params, batch_stats, tx, 0), step,
                                best=best)
  finally:
    checkpointer.close()
