"""The top-down input pipeline: TFDS ``array_record`` data -> grain -> numpy batches.

* ``DatasetRef`` names a prepared TFDS split. Examples are read by random access
  (``builder.as_data_source``) with the JPEG bytes left encoded; OpenCV decodes them in the
  grain workers.
* ``instances`` builds (once, then caches next to the dataset) the per-person
  ``InstanceTable`` of a split with the method's selection rules and the dataset's
  annotation reader (which the caller takes from ``jaxpose.datasets``).
* ``train_iterator`` is a grain pipeline: global shuffle that changes every epoch,
  repeat, per-sample augmentation seeded by (seed, sample index), batching, optional
  worker processes (``prefetch_in_workers``: they end when the training process ends,
  also when it is killed). Its state (``get_state``/``set_state``) is a small dict saved
  with every checkpoint, so a resumed run sees exactly the samples it would have seen. On
  several hosts each host reads every ``process_count``-th sample of the global stream.
* ``eval_batches`` yields un-augmented crops in order, the last batch padded and masked;
  on several hosts each yields its contiguous part of every global batch
  (``ordered_batches``: the same for any source and transform).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np

from jaxpose.data import topdown

logger = logging.getLogger(__name__)

INSTANCE_CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class DatasetRef:
  """A prepared TFDS split: builder ``name`` (+ ``config``) under ``data_dir``."""
  name: str
  data_dir: str
  split: str
  config: str | None = None


@functools.lru_cache(maxsize=8)
def _builder(name: str, data_dir: str, config: str | None):
  from jaxpose.data import builders  # TFDS and TensorFlow are imported on first use only
  kwargs: dict[str, Any] = {"data_dir": data_dir, "file_format": "array_record"}
  if config is not None:
    kwargs["config"] = config
  builder = builders.builder_class(name)(**kwargs)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"dataset {name}{'/' + config if config else ''} is not prepared under {data_dir}; "
        f"build it first: python -m jaxpose.data.builders {name} --data_dir {data_dir}"
        + (f" --config {config}" if config else ""))
  return builder


def prepared_builder(ref: DatasetRef):
  """The TFDS builder of ``ref``; raises ``FileNotFoundError`` (with the build command)
  if the dataset is not prepared under ``ref.data_dir``."""
  return _builder(ref.name, ref.data_dir, ref.config)


@functools.lru_cache(maxsize=8)
def open_source(ref: DatasetRef):
  """Random-access source of ``ref`` whose ``image`` entries are JPEG bytes."""
  import tensorflow_datasets as tfds
  builder = _builder(ref.name, ref.data_dir, ref.config)
  if ref.split not in builder.info.splits:
    raise ValueError(f"{ref.name} has no split {ref.split!r}; splits: {list(builder.info.splits)}")
  return builder.as_data_source(ref.split, decoders={"image": tfds.decode.SkipDecoding()})


def dataset_dir(ref: DatasetRef) -> str:
  return os.fspath(_builder(ref.name, ref.data_dir, ref.config).data_dir)


def _annotation_examples(source) -> Iterator[tuple[int, dict[str, Any]]]:
  for index in range(len(source)):
    yield index, source[index]


def instances(ref: DatasetRef, spec: topdown.SampleSpec, num_keypoints: int, *,
              read: topdown.PersonInstanceReader) -> topdown.InstanceTable:
  """Ground-truth person instances of a split (cached as ``.npz`` beside the data).

  Args:
    ref: the split.
    spec: the method's sample spec (selection rules, aspect ratio, padding).
    num_keypoints: ``K`` of the dataset's keypoint set.
    read: the dataset's annotation reader (``jaxpose.datasets``:
      ``Dataset.person_instances``).
  """
  key = f"{ref.split}_{spec.method}_{spec.aspect_ratio:.6f}_{spec.padding:g}"
  return cached_table(
      ref, f"jaxpose_instances_v{INSTANCE_CACHE_VERSION}_{key}.npz", topdown.InstanceTable,
      lambda: read(_annotation_examples(open_source(ref)), spec.method, num_keypoints,
                   spec.aspect_ratio, spec.padding), "person instances")


def cached_table(ref: DatasetRef, file_name: str, table_type, build, what: str):
  """A table read from a split once and cached as ``file_name`` beside the data.

  Args:
    ref: the split.
    file_name: the cache file (name it after a version and whatever the table depends on).
    table_type: a class with ``load(path)``; its instances have ``save(path)`` and a length.
    build: ``() -> (table, skipped)``, ``skipped`` counting what was left out by reason.
    what: what the table's rows are, for the log line.
  """
  path = os.path.join(dataset_dir(ref), file_name)
  if os.path.exists(path):
    return table_type.load(path)
  table, skipped = build()
  left_out = ", ".join(f"{k} {v}" for k, v in skipped.items() if v)
  logger.info("%s[%s]: %d %s%s", ref.name, ref.split, len(table), what,
              f" (left out: {left_out})" if left_out else "")
  tmp = f"{path}.tmp.{os.getpid()}.npz"
  table.save(tmp)
  os.replace(tmp, path)
  return table


def image_index(ref: DatasetRef) -> dict[int, tuple[int, int, int]]:
  """image id -> (example index, width, height) of a split."""
  source = open_source(ref)
  out = {}
  for index in range(len(source)):
    ex = source[index]
    out[int(ex["image/id"])] = (index, int(ex["image/width"]), int(ex["image/height"]))
  return out


class InstanceSource(grain.sources.RandomAccessDataSource):
  """Grain source: instance ``i`` -> its table row plus the image's JPEG bytes.

  The TFDS source is opened lazily in each process (cheap to pickle into workers).
  """

  def __init__(self, ref: DatasetRef, table: topdown.InstanceTable):
    self._ref = ref
    self._table = table

  def __len__(self) -> int:
    return len(self._table)

  def __getitem__(self, index: int) -> dict[str, Any]:
    row = self._table.row(int(index))
    example = open_source(self._ref)[int(row["example_index"])]
    row["jpeg"] = example["image"]
    return row

  def __repr__(self) -> str:
    return f"InstanceSource({self._ref}, {len(self._table)} instances)"


class _TrainTransform(grain.transforms.RandomMap):
  def __init__(self, spec: topdown.SampleSpec):
    self._spec = spec

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    image = topdown.decode_image(element["jpeg"], self._spec.color, int(element["image_id"]))
    return topdown.train_sample(self._spec, element, image, rng)


class _EvalTransform(grain.transforms.Map):
  def __init__(self, spec: topdown.SampleSpec):
    self._spec = spec

  def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
    image = topdown.decode_image(element["jpeg"], self._spec.color, int(element["image_id"]))
    return topdown.eval_sample(self._spec, element, image)


def _multiprocessing(num_workers: int) -> grain.MultiprocessingOptions:
  """Worker options; grain reads absl flags, which library users may not have parsed."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["jaxpose"], known_only=True)
  return grain.MultiprocessingOptions(num_workers=num_workers)


class ExitWithParent:
  """A grain ``worker_init_fn``: the worker ends itself when the process that started it
  dies, even by ``kill -9`` (grain's workers would otherwise wait forever on a full queue,
  a few hundred MB each).

  A daemon thread in the worker compares ``os.getppid()`` with the parent's pid every
  ``interval`` seconds (an orphan is re-parented). ``prctl(PR_SET_PDEATHSIG)`` would be
  immediate, but it fires when the *thread* that started the worker ends, and grain starts
  workers from short-lived threads.
  """

  def __init__(self, parent_pid: int, interval: float = 0.5):
    self.parent_pid = parent_pid
    self.interval = interval

  def __call__(self, worker_index: int, worker_count: int) -> None:
    del worker_index, worker_count
    threading.Thread(target=self._watch, name="jaxpose-exit-with-parent", daemon=True).start()

  def _watch(self) -> None:
    while os.getppid() == self.parent_pid:
      time.sleep(self.interval)
    os._exit(1)  # no cleanup: the parent that would read our results is gone


def prefetch_in_workers(ds: grain.IterDataset, num_workers: int) -> grain.IterDataset:
  """``ds`` computed in ``num_workers`` grain worker processes (0: unchanged) that end
  with this process (``ExitWithParent``)."""
  if num_workers <= 0:
    return ds
  return ds.mp_prefetch(_multiprocessing(num_workers), worker_init_fn=ExitWithParent(os.getpid()))


def train_iterator(ref: DatasetRef, table: topdown.InstanceTable, spec: topdown.SampleSpec, *,
                   batch_size: int, seed: int, num_workers: int = 0,
                   process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
  """Endless, checkpointable iterator of this host's training batches.

  Args:
    ref, table, spec: the split, its instances and how to make a sample.
    batch_size: this host's batch (global batch / process_count).
    seed: shuffling and augmentation seed.
    num_workers: grain worker processes (0: in this process).
    process_index, process_count: this host's slice of the global sample stream.

  Returns:
    A grain iterator of dicts of stacked numpy arrays (``image`` uint8 ``[b, h, w, 3]``,
    targets as ``topdown.train_sample``); ``get_state``/``set_state`` checkpoint it.
  """
  if len(table) == 0:
    raise ValueError(f"{ref.name}[{ref.split}]: no training instances")
  ds = grain.MapDataset.source(InstanceSource(ref, table)).shuffle(seed=seed).repeat(None)
  # Augmentation is seeded by the position in the global stream, so a sample is the same
  # whichever host (or worker) makes it; the slice is lazy: hosts compute only their own.
  ds = ds.random_map(_TrainTransform(spec), seed=seed)
  if process_count > 1:
    ds = ds[process_index::process_count]
  ds = ds.batch(batch_size, drop_remainder=True)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  return iter(prefetch_in_workers(it_ds, num_workers))


def eval_batches(ref: DatasetRef, table: topdown.InstanceTable, spec: topdown.SampleSpec, *,
                 batch_size: int, num_workers: int = 0, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """This process's part of each evaluation batch, un-augmented crops in table order
  (``ordered_batches`` of the instances)."""
  return ordered_batches(InstanceSource(ref, table), _EvalTransform(spec),
                         batch_size=batch_size, num_workers=num_workers,
                         process_index=process_index, process_count=process_count)


def ordered_batches(source: grain.sources.RandomAccessDataSource, transform: grain.transforms.Map,
                    *, batch_size: int, num_workers: int = 0, process_index: int = 0,
                    process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """This process's part of each batch of ``transform`` over ``source``, in order.

  The global batch ``i`` holds source rows ``[i * batch_size, (i + 1) * batch_size)``; this
  process gets the contiguous ``batch_size // process_count`` rows from
  ``process_index * batch_size // process_count``, the layout
  ``jax.make_array_from_process_local_data`` expects. Every process yields the same
  number of batches, ``ceil(len(source) / batch_size)``: rows past the end repeat a real
  row and have ``mask`` False. ``index`` (int64) is each row's position in ``source``.
  """
  n = len(source)
  if n == 0:
    return
  if batch_size % process_count:
    raise ValueError(f"eval batch {batch_size} is not divisible by {process_count} processes")
  local = batch_size // process_count
  num_batches = -(-n // batch_size)
  rows = (np.arange(num_batches)[:, None] * batch_size + process_index * local
          + np.arange(local)[None, :]).reshape(-1)
  mask = rows < n
  last_real = np.maximum.accumulate(np.where(mask, rows, -1))  # pad with the last real row
  rows = np.where(mask, rows, np.where(last_real >= 0, last_real, n - 1))
  ds = grain.MapDataset.source(_Rows(source, rows)).map(transform)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  it_ds = prefetch_in_workers(it_ds, num_workers)
  for i, batch in enumerate(it_ds.batch(local, drop_remainder=False)):
    rows_i = rows[i * local:(i + 1) * local]
    yield {**batch, "mask": mask[i * local:(i + 1) * local], "index": rows_i.astype(np.int64)}


class _Rows(grain.sources.RandomAccessDataSource):
  """The rows ``rows`` of another random-access source, in that order."""

  def __init__(self, source: grain.sources.RandomAccessDataSource, rows: np.ndarray):
    self._source = source
    self._rows = np.asarray(rows, np.int64)

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self._source[int(self._rows[int(index)])]

  def __repr__(self) -> str:
    return f"_Rows({self._source!r}, {len(self._rows)} rows)"
