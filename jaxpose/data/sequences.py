"""The 2D -> 3D lifting input pipeline: pose sequences -> receptive-field windows -> batches.

The semantics are VideoPose3D's (``run.py`` ``fetch``, ``common/generators.py``), shared
by Pose3D-RIE:

* ``load_sequences`` reads one 2D source of a prepared ``h36m_poses``/``synthetic_mocap``
  split into memory (``PoseSequences``): keypoints in normalised screen coordinates
  (``normalize_screen_coordinates`` by the camera's width and height), 3D poses in the
  camera frame (meters), the camera intrinsics; optionally only some subjects or actions
  (actions match by prefix, as ``--actions``), downsampled (``--downsample``) or cut to a
  deterministic part of each sequence (``--subset``, training only).
* ``chunk_pairs`` is ``ChunkedGenerator``'s list of chunks: every sequence is split into
  chunks of ``chunk_length`` output frames (centred, so the outer chunks may stick out),
  each listed once unflipped and, with augmentation, once flipped.
* ``gather_windows`` cuts a batch of chunks: the 2D input of a chunk covering output
  frames ``[start, end)`` is frames ``[start - pad - causal_shift, end + pad -
  causal_shift)``, repeating the first/last frame beyond the sequence (edge padding); the
  3D targets are the output frames (edge padded likewise). A flipped chunk negates x of
  the 2D keypoints and the camera-frame 3D poses and swaps left/right joints (the 2D
  source's own symmetry for 2D, Human3.6M's for 3D), and negates the camera's ``cx`` and
  ``p1``.
* ``train_iterator`` is an endless grain pipeline of fixed-size batches over the chunks
  (``ChunkStream``: epoch ``e`` is the chunk list in a permutation drawn from ``(seed,
  e)``, so the order changes every epoch); ``get_state``/``set_state`` checkpoint it for
  an exact resume. On several hosts each host reads every ``process_count``-th chunk of
  the global stream, so the data does not depend on the host count (there is no other
  randomness: flips are enumerated, as in the original). With sequences loaded without
  3D (other subjects), it is the unlabeled stream of semi-supervised training.
  Differences from ``ChunkedGenerator``: the shuffle is numpy's ``default_rng`` instead of
  a ``RandomState`` and batches run across epoch ends instead of ending each epoch with a
  smaller batch.
* ``eval_sequences`` yields whole sequences (``UnchunkedGenerator``): the 2D input padded
  by the receptive field, plus the flipped copy for test-time augmentation.
* ``eval_batches`` yields fixed-size batches of chunks in order (Pose3D-RIE's
  ``Evaluate_Generator``), each with its flipped copy, the last batch padded and masked.

Units: 2D in normalised screen coordinates (``[0, w]`` pixels -> ``[-1, 1]``); 3D in
meters in the camera frame. Targets are root-relative (the root joint is zero, as
``run.py`` sets it) with the root's camera-frame position as the separate ``trajectory``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from jaxpose.data import keypoints, mocap_format
from jaxpose.data.pipeline import DatasetRef, prefetch_in_workers, prepared_builder
from jaxpose.geometry.camera import normalize_screen_coordinates

logger = logging.getLogger(__name__)

# Intrinsics entries that change sign under a horizontal flip: cx and p1.
_FLIPPED_INTRINSICS = (2, 7)


@dataclasses.dataclass(frozen=True)
class WindowSpec:
  """How inputs and targets are cut from a sequence.

  Attributes:
    receptive_field: input frames per output frame of the model (VideoPose3D:
      ``prod(filter_widths)``).
    chunk_length: output frames per training example (1 for the single-frame
      optimised model, ``--stride`` otherwise).
    causal: causal convolutions: the window ends at the output frame instead of being
      centred on it.
  """
  receptive_field: int = 1
  chunk_length: int = 1
  causal: bool = False

  def __post_init__(self):
    if self.receptive_field < 1 or self.chunk_length < 1:
      raise ValueError(f"receptive_field and chunk_length must be >= 1, got {self}")

  @property
  def pad(self) -> int:
    """Input frames on each side of the output frames: ``(receptive_field - 1) // 2``."""
    return (self.receptive_field - 1) // 2

  @property
  def causal_shift(self) -> int:
    return self.pad if self.causal else 0

  @property
  def input_length(self) -> int:
    return self.chunk_length + 2 * self.pad


@dataclasses.dataclass(frozen=True)
class PoseSequences:
  """Sequences of one 2D source, concatenated in memory.

  Attributes:
    keypoints: ``[N, K, 2]`` float32 normalised screen coordinates (all frames).
    scores: ``[N, K]`` float32 confidences, or ``None`` if the source has none.
    positions: ``[N, J, 3]`` float32 camera-frame positions in meters, or ``None``
      (unlabeled sequences).
    offsets: ``[S + 1]`` int64; sequence ``i`` is frames ``offsets[i]:offsets[i + 1]``.
    cameras: ``[S, 9]`` float32 normalised intrinsics per sequence.
    subjects, actions: per sequence.
    camera_index: ``[S]`` int32 Human3.6M camera 0-3.
    keypoint_flip: ``[K]`` flip permutation of the 2D joints.
    joint_flip: ``[J]`` flip permutation of the 3D joints.
    source: the 2D source's name.
  """
  keypoints: np.ndarray
  scores: np.ndarray | None
  positions: np.ndarray | None
  offsets: np.ndarray
  cameras: np.ndarray
  subjects: tuple[str, ...]
  actions: tuple[str, ...]
  camera_index: np.ndarray
  keypoint_flip: np.ndarray
  joint_flip: np.ndarray
  source: str = ""

  def __len__(self) -> int:
    return len(self.offsets) - 1

  @property
  def lengths(self) -> np.ndarray:
    """``[S]`` int64 frames per sequence."""
    return np.diff(self.offsets)

  @property
  def num_frames(self) -> int:
    return int(self.offsets[-1])


def from_arrays(keypoints_2d: Sequence[np.ndarray], cameras: np.ndarray, *,
                positions_3d: Sequence[np.ndarray] | None = None,
                scores: Sequence[np.ndarray] | None = None,
                keypoint_flip: np.ndarray, joint_flip: np.ndarray | None = None,
                subjects: Sequence[str] | None = None, actions: Sequence[str] | None = None,
                camera_index: Sequence[int] | None = None, source: str = "") -> PoseSequences:
  """``PoseSequences`` from per-sequence arrays (``[T_i, K, 2]`` normalised 2D, ``[T_i, J,
  3]`` camera-frame 3D, ``[S, 9]`` intrinsics); the lists must line up. ``joint_flip``
  defaults to Human3.6M's 17-joint symmetry."""
  n = len(keypoints_2d)
  lengths = [len(k) for k in keypoints_2d]
  if joint_flip is None:
    joint_flip = keypoints.flip_permutation(keypoints.H36M_NUM_JOINTS, keypoints.H36M_FLIP_PAIRS)
  if positions_3d is not None and [len(p) for p in positions_3d] != lengths:
    raise ValueError("positions_3d and keypoints_2d must have the same sequence lengths")
  cat = lambda arrays, shape: (np.concatenate(arrays).astype(np.float32) if n  # noqa: E731
                               else np.zeros(shape, np.float32))
  k = keypoint_flip.shape[0]
  return PoseSequences(
      keypoints=cat(keypoints_2d, (0, k, 2)),
      scores=None if scores is None else cat(scores, (0, k)),
      positions=None if positions_3d is None else cat(positions_3d, (0, len(joint_flip), 3)),
      offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
      cameras=np.asarray(cameras, np.float32).reshape(n, 9),
      subjects=tuple(subjects or [""] * n), actions=tuple(actions or [""] * n),
      camera_index=np.asarray(camera_index if camera_index is not None else [0] * n, np.int32),
      keypoint_flip=np.asarray(keypoint_flip, np.int64),
      joint_flip=np.asarray(joint_flip, np.int64),
      source=source)


# ----------------------------------------------------------------------------------------
# Loading (run.py's fetch)
# ----------------------------------------------------------------------------------------


def deterministic_random(min_value: int, max_value: int, data: str) -> int:
  """VideoPose3D's ``deterministic_random``: an int in ``[min, max)`` from sha256(data)."""
  raw = int.from_bytes(hashlib.sha256(data.encode()).digest()[:4], "little", signed=False)
  return int(raw / (2**32 - 1) * (max_value - min_value)) + min_value


def frame_selection(num_frames: int, downsample: int = 1, subset: float = 1.0) -> slice:
  """The frames ``run.py``'s ``fetch`` keeps of a sequence.

  With ``subset < 1`` a contiguous part of ``round(T // downsample * subset) *
  downsample`` frames starting at a position derived from ``T`` alone (so equal-length
  sequences are cut alike), then every ``downsample``-th frame; otherwise every
  ``downsample``-th frame.
  """
  if downsample < 1 or not 0 < subset <= 1:
    raise ValueError(f"downsample must be >= 1 and subset in (0, 1], got {downsample}, {subset}")
  if subset < 1:
    count = int(round(num_frames // downsample * subset) * downsample)
    start = deterministic_random(0, num_frames - count + 1, str(num_frames))
    return slice(start, start + count, downsample)
  return slice(0, num_frames, downsample)


def _text(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _select(examples: Sequence[dict[str, Any]], subjects: Sequence[str] | None,
            actions: Sequence[str] | None) -> list[dict[str, Any]]:
  """Examples of the wanted subjects (in that order) and actions (by prefix)."""
  by_subject: dict[str, list[dict[str, Any]]] = {}
  for ex in examples:
    by_subject.setdefault(_text(ex["subject"]), []).append(ex)
  if subjects is None:
    subjects = sorted(by_subject, key=mocap_format.subject_id)
  missing = [s for s in subjects if s not in by_subject]
  if missing:
    raise ValueError(f"subjects {', '.join(missing)} are not in the split (it has "
                     f"{', '.join(sorted(by_subject, key=mocap_format.subject_id))})")
  out = []
  for subject in subjects:
    chosen = [ex for ex in by_subject[subject]
              if actions is None or any(_text(ex["action"]).startswith(a) for a in actions)]
    out += sorted(chosen, key=lambda ex: (_text(ex["action"]), int(ex["camera"]["index"])))
  return out


def sequences_from_examples(examples: Sequence[dict[str, Any]], source: str, *,
                            subjects: Sequence[str] | None = None,
                            actions: Sequence[str] | None = None, with_3d: bool = True,
                            with_scores: bool = False, downsample: int = 1,
                            subset: float = 1.0) -> PoseSequences:
  """``PoseSequences`` of one 2D source from examples of the ``mocap_format`` layout.

  Args:
    examples: decoded examples (e.g. of ``builder.as_data_source(split)``).
    source: the 2D source's name (a ``keypoints_2d`` source of the dataset).
    subjects: subjects to keep, in this order (``None``: all, by subject number).
    actions: action prefixes to keep (``None``: all), as ``run.py --actions``.
    with_3d: keep the 3D poses (``False`` for the unlabeled stream).
    with_scores: keep the source's per-joint scores (batches then carry ``scores_2d``);
      an error if the source has none.
    downsample, subset: see ``frame_selection`` (``subset`` is for training data only).

  Returns:
    The sequences ordered by subject, action, camera.

  Raises:
    KeyError: unknown source (listing the dataset's sources).
    ValueError: a subject that is not in the examples; no example left; scores asked of
      a source without them.
  """
  chosen = _select(examples, subjects, actions)
  if not chosen:
    raise ValueError(f"no sequence of subjects {subjects} matches actions {actions}")
  kps, scores, pos, cams, flip = [], [], [], [], None
  for ex in chosen:
    xy, score, src = mocap_format.source_keypoints(ex["keypoints_2d"], source)
    if with_scores and score is None:
      raise ValueError(f"the 2D source {source!r} has no scores")
    frames = frame_selection(len(xy), downsample, subset)
    cam = ex["camera"]
    w, h = int(cam["res_w"]), int(cam["res_h"])
    # in float64, then rounded, as run.py normalises into its float32 arrays
    kps.append(normalize_screen_coordinates(xy[frames].astype(np.float64), w, h).astype(np.float32))
    scores.append(None if score is None else score[frames])
    pos.append(np.asarray(ex["positions_3d_camera"], np.float32)[frames])
    cams.append(np.asarray(cam["intrinsic"], np.float32))
    flip = src.flip_permutation
  return from_arrays(
      kps, np.stack(cams), positions_3d=pos if with_3d else None,
      scores=scores if with_scores else None, keypoint_flip=flip,
      subjects=[_text(ex["subject"]) for ex in chosen],
      actions=[_text(ex["action"]) for ex in chosen],
      camera_index=[int(ex["camera"]["index"]) for ex in chosen], source=source)


def load_sequences(ref: DatasetRef, source: str, **kwargs) -> PoseSequences:
  """``sequences_from_examples`` on a prepared split (``h36m_poses``, ``synthetic_mocap``).

  Args:
    ref: the split (``DatasetRef(name, data_dir, split, config)``).
    source: 2D source name (``'cpn_ft_h36m_dbb'``, ``'gt'``, ``'detected'``, ...).
    **kwargs: ``subjects``, ``actions``, ``with_3d``, ``with_scores``, ``downsample``,
      ``subset``.
  """
  builder = prepared_builder(ref)
  if ref.split not in builder.info.splits:
    raise ValueError(f"{ref.name} has no split {ref.split!r}; splits: {list(builder.info.splits)}")
  data = builder.as_data_source(ref.split)
  seqs = sequences_from_examples([data[i] for i in range(len(data))], source, **kwargs)
  logger.info("%s[%s] %s: %d sequences, %d frames", ref.name, ref.split, source, len(seqs),
              seqs.num_frames)
  return seqs


# ----------------------------------------------------------------------------------------
# Chunks and windows (ChunkedGenerator)
# ----------------------------------------------------------------------------------------


def chunk_pairs(lengths: Sequence[int], chunk_length: int, augment: bool) -> np.ndarray:
  """``ChunkedGenerator``'s chunk list.

  Sequence ``i`` of ``T`` frames gets ``n = ceil(T / chunk_length)`` chunks
  ``[b_k, b_{k+1})`` with ``b_k = k * chunk_length - (n * chunk_length - T) // 2``; its
  unflipped chunks are listed first, then (with ``augment``) the same chunks flipped.

  Returns:
    int64 ``[P, 4]`` rows ``(sequence, start, end, flip)``.
  """
  rows = []
  for i, num in enumerate(lengths):
    n = (int(num) + chunk_length - 1) // chunk_length
    offset = (n * chunk_length - int(num)) // 2
    bounds = np.arange(n + 1) * chunk_length - offset
    for flip in ((0, 1) if augment else (0,)):
      rows.append(np.stack([np.full(n, i), bounds[:-1], bounds[1:], np.full(n, flip)], axis=1))
  return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 4), np.int64)


def _frames(seqs: PoseSequences, seq: np.ndarray, first: np.ndarray,
            count: int) -> tuple[np.ndarray, np.ndarray]:
  """Global frame indices of ``count`` frames from ``first`` on (clipped to the sequence:
  edge padding), and which of them lie inside their sequence."""
  t = first[:, None] + np.arange(count)[None]
  length = seqs.lengths[seq][:, None]
  return seqs.offsets[seq][:, None] + np.clip(t, 0, length - 1), (t >= 0) & (t < length)


def _flipped(x: np.ndarray, permutation: np.ndarray, negate_x: bool) -> np.ndarray:
  """``x`` ``[N, K, ...]`` mirrored: joints permuted, the x coordinate negated."""
  out = x[:, permutation]
  if negate_x:
    out[..., 0] *= -1
  return out


def flip_cameras(cameras: np.ndarray, flip: np.ndarray) -> np.ndarray:
  """``[B, 9]`` intrinsics with ``cx`` and ``p1`` negated where ``flip``."""
  out = np.array(cameras, np.float32)
  for i in _FLIPPED_INTRINSICS:
    out[flip, i] *= -1
  return out


class WindowGatherer:
  """Cuts batches of chunks out of ``seqs`` (``ChunkedGenerator``'s windows).

  A flipped chunk is read from mirrored copies of the frame arrays (x negated, left and
  right joints swapped), made on first use and kept: one gather per array, nothing to
  post-process. The copies are not pickled (worker processes make their own).
  """

  def __init__(self, seqs: PoseSequences, spec: WindowSpec):
    self.seqs = seqs
    self.spec = spec
    self._doubled: dict[str, np.ndarray] | None = None

  def __getstate__(self):
    return {"seqs": self.seqs, "spec": self.spec, "_doubled": None}

  def _arrays(self, with_flips: bool) -> dict[str, np.ndarray]:
    seqs = self.seqs
    plain = {"keypoints": seqs.keypoints, "scores": seqs.scores, "positions": seqs.positions}
    plain = {k: v for k, v in plain.items() if v is not None}
    if not with_flips:
      return plain
    if self._doubled is None:
      mirror = {"keypoints": (seqs.keypoint_flip, True), "scores": (seqs.keypoint_flip, False),
                "positions": (seqs.joint_flip, True)}
      self._doubled = {k: np.concatenate([v, _flipped(v, *mirror[k])]) for k, v in plain.items()}
    return self._doubled

  def __call__(self, pairs: np.ndarray) -> dict[str, np.ndarray]:
    """The batch of chunks ``pairs`` (rows ``(sequence, start, end, flip)``).

    Returns:
      ``keypoints_2d`` ``[B, L + 2 pad, K, 2]``, ``scores_2d`` ``[B, L + 2 pad, K]`` (if
      the source has scores), ``positions_3d`` ``[B, L, J, 3]`` root-relative with a zero
      root and ``trajectory`` ``[B, L, 1, 3]`` (if 3D is loaded), ``camera`` ``[B, 9]``
      (all float32), ``flip`` bool ``[B]``, ``sequence``/``start`` int32 ``[B]``,
      ``valid`` bool ``[B, L]`` (output frames inside the sequence); ``L =
      spec.chunk_length``.
    """
    spec, seqs = self.spec, self.seqs
    pairs = np.asarray(pairs, np.int64).reshape(-1, 4)
    seq, start, flip = pairs[:, 0], pairs[:, 1], pairs[:, 3].astype(bool)
    if np.any(pairs[:, 2] - start != spec.chunk_length):
      raise ValueError(f"chunks must be {spec.chunk_length} frames long")
    arrays = self._arrays(bool(flip.any()))
    shift = flip.astype(np.int64)[:, None] * seqs.num_frames  # rows of the mirrored copy
    index_2d, _ = _frames(seqs, seq, start - spec.pad - spec.causal_shift, spec.input_length)
    batch = {"keypoints_2d": arrays["keypoints"][index_2d + shift]}
    if "scores" in arrays:
      batch["scores_2d"] = arrays["scores"][index_2d + shift]
    index_3d, valid = _frames(seqs, seq, start, spec.chunk_length)
    if "positions" in arrays:
      pos = arrays["positions"][index_3d + shift]
      batch["trajectory"] = pos[:, :, :1].copy()
      batch["positions_3d"] = pos - batch["trajectory"]
    batch.update(camera=flip_cameras(seqs.cameras[seq], flip), flip=flip,
                 sequence=seq.astype(np.int32), start=start.astype(np.int32), valid=valid)
    return batch


def gather_windows(seqs: PoseSequences, pairs: np.ndarray, spec: WindowSpec
                   ) -> dict[str, np.ndarray]:
  """``WindowGatherer(seqs, spec)(pairs)``, for one-off use (the mirrored copies are not
  kept)."""
  return WindowGatherer(seqs, spec)(pairs)


# ----------------------------------------------------------------------------------------
# Training stream
# ----------------------------------------------------------------------------------------


class _Steps(grain.sources.RandomAccessDataSource):
  """The endless index sequence 0, 1, 2, ... (batch numbers)."""

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, index: int) -> int:
    return int(index)


class ChunkStream:
  """The global stream of chunks: epoch ``e`` is ``chunk_pairs`` in the order of
  ``np.random.default_rng([seed, e]).permutation``.

  Global position ``i`` is chunk ``permutation_{i // P}[i % P]`` of the ``P`` chunks; batch
  ``k`` of host ``h`` of ``H`` is positions ``k * B * H + h + H * j`` for ``j < B``. The
  stream depends on neither the host count nor the worker count.
  """

  def __init__(self, pairs: np.ndarray, seed: int, batch_size: int, process_index: int = 0,
               process_count: int = 1):
    self.pairs = pairs
    self.seed = seed
    self.batch_size = batch_size
    self.process_index = process_index
    self.process_count = process_count
    self._orders: dict[int, np.ndarray] = {}

  def __getstate__(self):
    return {**self.__dict__, "_orders": {}}

  def _order(self, epoch: int) -> np.ndarray:
    if epoch not in self._orders:
      if len(self._orders) >= 2:
        self._orders.pop(min(self._orders))
      self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.pairs))
    return self._orders[epoch]

  def positions(self, step: int) -> np.ndarray:
    """``[B]`` global stream positions of this host's batch ``step``."""
    first = step * self.batch_size * self.process_count + self.process_index
    return first + self.process_count * np.arange(self.batch_size, dtype=np.int64)

  def chunks(self, positions: np.ndarray) -> np.ndarray:
    """``[n, 4]`` chunk rows at global stream positions."""
    epoch, index = np.divmod(positions, len(self.pairs))
    rows = np.empty((len(positions), 4), np.int64)
    for e in np.unique(epoch):
      at = epoch == e
      rows[at] = self.pairs[self._order(int(e))[index[at]]]
    return rows


class _TrainBatch(grain.transforms.Map):
  def __init__(self, stream: ChunkStream, gatherer: WindowGatherer):
    self._stream = stream
    self._gatherer = gatherer

  def map(self, step: int) -> dict[str, np.ndarray]:
    return self._gatherer(self._stream.chunks(self._stream.positions(step)))


def train_iterator(seqs: PoseSequences, spec: WindowSpec, *, batch_size: int, seed: int,
                   augment: bool = True, num_workers: int = 0, process_index: int = 0,
                   process_count: int = 1) -> grain.DatasetIterator:
  """Endless, checkpointable iterator of this host's training batches.

  Args:
    seqs: the training sequences (without 3D for the unlabeled stream of semi-supervised
      training; give it its own seed).
    spec: receptive field, chunk length, causality.
    batch_size: chunks per batch on this host (global batch / process_count); VideoPose3D
      uses ``--batch-size // chunk_length`` chunks.
    seed: shuffling seed (the order changes every epoch; see ``ChunkStream``).
    augment: list every chunk a second time flipped (train-time flip augmentation).
    num_workers: grain worker processes (0: in this process); each gets a copy of the
      sequences. The work is a memory gather: shipping the batches back from workers costs
      more than it saves (``benchmarks/input_pipeline.py --pipeline lifting``), so 0 is
      the fast choice.
    process_index, process_count: this host's slice of the global chunk stream.

  Returns:
    A grain iterator of ``WindowGatherer`` batches; ``get_state``/``set_state``
    checkpoint it. An epoch is ``len(chunk_pairs(...))`` chunks.
  """
  pairs = chunk_pairs(seqs.lengths, spec.chunk_length, augment)
  if len(pairs) == 0:
    raise ValueError("no training chunks: every sequence is empty")
  if not 0 <= process_index < process_count or batch_size < 1:
    raise ValueError(f"need batch_size >= 1 and 0 <= process_index < process_count, got "
                     f"{batch_size}, {process_index}, {process_count}")
  stream = ChunkStream(pairs, seed, batch_size, process_index, process_count)
  ds = grain.MapDataset.source(_Steps()).map(_TrainBatch(stream, WindowGatherer(seqs, spec)))
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  return iter(prefetch_in_workers(it_ds, num_workers))


# ----------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------


def _views(x: np.ndarray, flip_test: bool, permutation: np.ndarray, negate_x: bool
           ) -> np.ndarray:
  """``[1 or 2, ...]``: the array and, for test-time augmentation, its mirrored copy."""
  return np.stack([x, _flipped(x, permutation, negate_x)] if flip_test else [x])


def eval_sequences(seqs: PoseSequences, spec: WindowSpec, *, flip_test: bool = False,
                   length_multiple: int = 1) -> Iterator[dict[str, Any]]:
  """Whole sequences, one at a time (``UnchunkedGenerator``); empty sequences are skipped.

  Args:
    seqs: the sequences.
    spec: receptive field and causality (``chunk_length`` is not used).
    flip_test: add the flipped copy (test-time augmentation).
    length_multiple: pad the output length up to a multiple of this (repeating the last
      frame) so that a jitted model sees few distinct shapes; predictions past
      ``num_frames`` are to be dropped.

  Yields:
    dicts with ``keypoints_2d`` ``[V, T' + 2 pad, K, 2]`` (``V = 2`` with ``flip_test``,
    the second flipped; ``T' = T`` rounded up to ``length_multiple``), ``scores_2d``
    ``[V, T' + 2 pad, K]`` (if any), ``camera`` ``[V, 9]``, ``positions_3d`` ``[T, J, 3]``
    root-relative with a zero root and ``trajectory`` ``[T, 1, 3]`` (if 3D is loaded; not
    flipped), and ``sequence``, ``subject``, ``action``, ``camera_index``,
    ``num_frames``.
  """
  for i in range(len(seqs)):
    lo, hi = int(seqs.offsets[i]), int(seqs.offsets[i + 1])
    num = hi - lo
    if num == 0:
      continue
    padded = -(-num // length_multiple) * length_multiple
    frames = lo + np.clip(np.arange(-spec.pad - spec.causal_shift,
                                    padded + spec.pad - spec.causal_shift), 0, num - 1)
    out: dict[str, Any] = {
        "keypoints_2d": _views(seqs.keypoints[frames], flip_test, seqs.keypoint_flip, True),
        "camera": flip_cameras(np.stack([seqs.cameras[i]] * (2 if flip_test else 1)),
                               np.array([False, True][:2 if flip_test else 1])),
        "sequence": i, "subject": seqs.subjects[i], "action": seqs.actions[i],
        "camera_index": int(seqs.camera_index[i]), "num_frames": num,
    }
    if seqs.scores is not None:
      out["scores_2d"] = _views(seqs.scores[frames], flip_test, seqs.keypoint_flip, False)
    if seqs.positions is not None:
      pos = seqs.positions[lo:hi]
      out["trajectory"] = pos[:, :1].copy()
      out["positions_3d"] = pos - out["trajectory"]
    yield out


def eval_batches(seqs: PoseSequences, spec: WindowSpec, *, batch_size: int,
                 flip_test: bool = False, process_index: int = 0, process_count: int = 1
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Chunks of every sequence in order, in fixed-size batches (Pose3D-RIE's evaluation).

  The global stream of chunks (``chunk_pairs(..., augment=False)``) is padded to a
  multiple of ``batch_size * process_count``; global batch ``b`` is chunks ``[b * G, (b +
  1) * G)`` with ``G = batch_size * process_count``, of which this host takes every
  ``process_count``-th from ``process_index``.

  Yields:
    ``gather_windows`` batches plus ``mask`` bool ``[B]`` (real chunks) and, with
    ``flip_test``, ``keypoints_2d_flipped`` (and ``scores_2d_flipped``,
    ``camera_flipped``) of the same chunks flipped.
  """
  pairs = chunk_pairs(seqs.lengths, spec.chunk_length, augment=False)
  if len(pairs) == 0:
    return
  per_step = batch_size * process_count
  total = -(-len(pairs) // per_step) * per_step
  mask = np.arange(total) < len(pairs)
  pairs = np.concatenate([pairs, np.repeat(pairs[-1:], total - len(pairs), axis=0)])
  gather = WindowGatherer(seqs, spec)
  for step in range(total // per_step):
    take = slice(step * per_step + process_index, (step + 1) * per_step, process_count)
    batch = gather(pairs[take])
    batch["mask"] = mask[take]
    if flip_test:
      flipped = gather(pairs[take] | np.array([0, 0, 0, 1]))
      for key in ("keypoints_2d", "scores_2d", "camera"):
        if key in flipped:
          batch[f"{key}_flipped"] = flipped[key]
    yield batch
