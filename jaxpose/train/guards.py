"""Training health checks: where the last good step's data was, and divergence.

**Non-finite loss.** The train step (``state.make_train_step``) freezes the state at the
first update whose loss or gradient norm is not finite and records that update's
index in ``TrainState.first_bad_step``; the loop reads the flag only at *check points*
(every ``train.log_every_steps``, at the end of an epoch, and before every save and
evaluation), so the device pipeline never waits for the host between them. A frozen state
is never saved or evaluated: before each save the flag is read. When it is set, the state
(frozen at the last good values) is saved with the flag cleared, under the step of the
last good update, with the data-iterator position *of that step*. That position is known
because ``DataPositions`` keeps the iterator state after every step since the last check
point (a few small dicts: at most ``log_every_steps`` of them). Resuming from that
checkpoint (e.g. with a lower learning rate) continues with exactly the batches that
followed the last good update.

**Divergence.** ``DivergenceMonitor`` watches the loss the loop logs and warns once (log
and TensorBoard) when the run is diverging without (yet) producing NaN, e.g. a learning
rate a million times too high. The rule: ``smoothed`` is an exponential moving average of
the logged losses (``smoothed = (1 - a) * smoothed + a * loss``, ``a = 0.3``, started at
the first logged loss) and ``floor`` the smallest ``smoothed`` so far; the run is
diverging when ``smoothed > 100 * floor`` (a loss grown by two orders of magnitude from
its minimum, which noise and schedule bumps do not reach). Only positive floors count
(the rule does not apply to losses that can be zero or negative). The monitor restarts
with a resumed run.
"""
from __future__ import annotations

import logging
import math

logger = logging.getLogger(__name__)


class DataPositions:
  """The data iterator's position after each step since the last check point.

  ``record(step, position)`` after fetching the batch of ``step`` (the iterator state
  then holds every batch up to that step); ``at(step)`` returns it; ``forget_before(step)``
  drops what a check point has made unnecessary (steps before the checked one).
  """

  def __init__(self, step: int, position: dict):
    self._positions: dict[int, dict] = {int(step): position}

  def record(self, step: int, position: dict) -> None:
    self._positions[int(step)] = position

  def at(self, step: int) -> dict:
    """The position after ``step``; ``KeyError`` if it was forgotten or never recorded."""
    if step not in self._positions:
      raise KeyError(f"no data position recorded for step {step} (recorded: "
                     f"{sorted(self._positions)})")
    return self._positions[step]

  def forget_before(self, step: int) -> None:
    self._positions = {s: p for s, p in self._positions.items() if s >= step}

  def __len__(self) -> int:
    return len(self._positions)


class DivergenceMonitor:
  """Warns once when the smoothed loss exceeds ``factor`` times its minimum (module
  docstring: the rule)."""

  def __init__(self, factor: float = 100.0, smoothing: float = 0.3):
    self.factor = factor
    self.smoothing = smoothing
    self.smoothed: float | None = None
    self.floor: float | None = None
    self.warned = False

  def update(self, step: int, loss: float) -> str | None:
    """Feeds one logged loss; returns the warning message the first time the rule fires
    (it is also logged), else None. Non-finite losses are the NaN guard's, not this."""
    loss = float(loss)
    if not math.isfinite(loss):
      return None
    a = self.smoothing
    self.smoothed = loss if self.smoothed is None else (1 - a) * self.smoothed + a * loss
    self.floor = self.smoothed if self.floor is None else min(self.floor, self.smoothed)
    if self.warned or self.floor <= 0 or self.smoothed <= self.factor * self.floor:
      return None
    self.warned = True
    message = (f"the training loss is diverging: at step {step} its moving average is "
               f"{self.smoothed:.3g}, {self.smoothed / self.floor:.3g} times its minimum "
               f"{self.floor:.3g} (warned once when above {self.factor:g}x); the learning rate "
               "(optim.lr) is probably too high")
    logger.warning(message)
    return message
