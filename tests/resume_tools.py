"""Shared by the resume tests: a train iterator that records (and can break) its batches,
and the restore of a finished run's training state."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import ml_collections
import numpy as np

from jaxpose import checkpoint as ckpt_lib
from jaxpose.train import state as state_lib
from jaxpose.train import tasks
from jaxpose.train.tasks import base


class SimulatedCrash(Exception):
  """Stands for a killed job (KeyboardInterrupt would also stop the pytest-xdist worker)."""


class BatchRecorder:
  """Stands in for a ``train_iterator`` function (monkeypatched): wraps the iterators that
  ``original`` makes, records a fingerprint of each batch's ``key`` array in ``seen``,
  raises ``SimulatedCrash`` when batch ``crash_at`` (1-based) is fetched and gives batch
  ``nan_at`` (0-based) NaN values in ``nan_key``."""

  def __init__(self, original: Callable[..., Any], key: str, *, crash_at: int | None = None,
               nan_at: int | None = None, nan_key: str = "target"):
    self.original, self.key, self.nan_key = original, key, nan_key
    self.crash_at, self.nan_at = crash_at, nan_at
    self.seen: list[int] = []

  def __call__(self, *args, **kwargs):
    return _Recording(self, self.original(*args, **kwargs))


class _Recording:
  """One recorded iterator (keeps the wrapped one's checkpointable state)."""

  def __init__(self, recorder: BatchRecorder, inner):
    self.recorder, self.inner = recorder, inner

  def __next__(self) -> dict:
    r = self.recorder
    if r.crash_at is not None and len(r.seen) + 1 == r.crash_at:
      raise SimulatedCrash(f"interrupted before batch {r.crash_at}")
    batch = next(self.inner)
    if len(r.seen) == r.nan_at:
      batch = dict(batch, **{r.nan_key: np.full_like(batch[r.nan_key], np.nan)})
    r.seen.append(hash(np.asarray(batch[r.key]).tobytes()))
    return batch

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state) -> None:
    self.inner.set_state(state)


def restore_run(workdir: str | Path, config: ml_collections.ConfigDict, *,
                task: base.Task | None = None, step: int | None = None, best: bool = False,
                from_init: bool = False):
  """``(initial state, (state, data position, meta))`` of a run's checkpoint (latest, a
  step or the best). The initial state gives the structure: the task's fresh architecture,
  or with ``from_init`` the weights the run started from (``Task.init_model``)."""
  task = task or tasks.make_task(config)
  model = task.init_model() if from_init else task.build_model()
  _, _, params, batch_stats = state_lib.split_model(model)
  tx, _ = task.optimizer(model, base.Schedule(1, 1))
  initial = state_lib.init_train_state(params, batch_stats, tx, 0)
  checkpointer = ckpt_lib.TrainCheckpointer(workdir)
  try:
    return initial, checkpointer.restore(initial, step, best=best)
  finally:
    checkpointer.close()
