"""Training batches mixed from several datasets with a fixed ratio per batch (grain).

Both image-based 3D originals train on MPII (2D) together with Human3.6M (3D): every
epoch is one pass over MPII plus as many Human3.6M samples, drawn anew each epoch
(integral-human-pose's ``mpii_hm36_Dataset``: ``2 x #MPII`` samples;
pytorch-pose-hg-3d's ``Fusion3D``: ``#MPII + min(#H36M, ratio_3d x #MPII)``), shuffled
together, so each batch holds the two in the epoch's proportion on average.

``mixed_train_iterator`` builds this as one general feature: each part is a
random-access source with its own sample transform and an integer weight; each part is
shuffled (a new permutation every epoch) and repeated on its own, augmented with a
generator seeded by the position in the part's stream, and the parts are interleaved by
``grain.MapDataset.mix`` with the weights as proportions. The interleave is
deterministic with period ``sum(weights)``, so with a global batch that divides by it,
every batch holds exactly ``batch * w_i / sum(w)`` samples of part ``i`` (the originals'
average ratio, without the per-batch spread). An epoch is one pass over the first part
(``epoch_examples``). On several hosts each host takes every ``process_count``-th element
of the mixed stream: the global batch keeps the exact ratio (each host's share need
not). The iterator is grain's: ``get_state``/``set_state`` checkpoint the position of
the whole mixture.

A part's samples must have the same keys, shapes and dtypes as the others' (e.g. 2D
samples carry zero depth targets with weight 0).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import grain

from jaxpose.data import pipeline


@dataclasses.dataclass(frozen=True)
class MixPart:
  """One dataset of a mixture.

  Attributes:
    source: random-access source of its elements (e.g. ``pipeline.InstanceSource``).
    transform: makes a training sample of an element with a per-sample generator.
    weight: positive integer share of every batch.
    name: for messages.
  """
  source: grain.sources.RandomAccessDataSource
  transform: grain.transforms.RandomMap
  weight: int = 1
  name: str = ""


def check_weights(weights: Sequence[int], batch_size: int) -> list[int]:
  """Samples of each part in a batch of ``batch_size``.

  Raises:
    ValueError: a weight is not a positive integer, or ``batch_size`` does not divide by
      ``sum(weights)`` (the ratio could not hold in every batch).
  """
  if not weights or any(int(w) != w or w < 1 for w in weights):
    raise ValueError(f"mixture weights must be positive integers, got {list(weights)}")
  period = int(sum(weights))
  if batch_size % period:
    raise ValueError(f"global batch {batch_size} does not divide by the mixture period "
                     f"sum(weights)={period} (weights {list(weights)}); every batch must hold "
                     "the configured ratio")
  return [batch_size // period * int(w) for w in weights]


def epoch_examples(parts: Sequence[MixPart]) -> int:
  """Samples of one epoch: one pass over the first part plus the others in proportion."""
  first = parts[0]
  return int(math.ceil(len(first.source) * sum(p.weight for p in parts) / first.weight))


def mixed_train_iterator(parts: Sequence[MixPart], *, batch_size: int, seed: int,
                         global_batch_size: int | None = None, num_workers: int = 0,
                         process_index: int = 0, process_count: int = 1
                         ) -> grain.DatasetIterator:
  """Endless, checkpointable iterator of this host's mixed training batches.

  Args:
    parts: the datasets and their weights.
    batch_size: this host's batch (global batch / process_count).
    seed: shuffling and augmentation seed (part ``i`` uses ``seed + i``).
    global_batch_size: checked against the weights (default ``batch_size *
      process_count``).
    num_workers: grain worker processes (0: in this process).
    process_index, process_count: this host's slice of the mixed stream.

  Returns:
    A grain iterator of dicts of stacked numpy arrays.
  """
  if not parts:
    raise ValueError("a mixture needs at least one part")
  check_weights([p.weight for p in parts], global_batch_size or batch_size * process_count)
  streams = []
  for i, part in enumerate(parts):
    if len(part.source) == 0:
      raise ValueError(f"mixture part {part.name or i} has no training samples")
    ds = grain.MapDataset.source(part.source).shuffle(seed=seed + i).repeat(None)
    streams.append(ds.random_map(part.transform, seed=seed + i))
  ds = streams[0] if len(streams) == 1 else grain.MapDataset.mix(
      streams, weights=[p.weight for p in parts])
  if process_count > 1:
    ds = ds[process_index::process_count]
  ds = ds.batch(batch_size, drop_remainder=True)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  if num_workers > 0:
    it_ds = it_ds.mp_prefetch(pipeline._multiprocessing(num_workers))  # noqa: SLF001
  return iter(it_ds)
