"""What the 2D -> 3D lifters share: inference with the flip test, and (below) their task base.

Inference without a dataset (in-the-wild video, ``jaxpose predict``)::

    from jaxpose.data import keypoints
    from jaxpose.geometry.camera import normalize_screen_coordinates
    from jaxpose.train.tasks import lifting
    model, _ = convert.load_converted("out/vp3d_243f")           # or any lifter
    kps = normalize_screen_coordinates(pixels, w=width, h=height)  # [T, 17, 2]
    poses = lifting.lift_sequence(model, kps, keypoint_flip_pairs=keypoints.H36M_FLIP_PAIRS,
                                  joint_flip_pairs=keypoints.H36M_FLIP_PAIRS)  # [T, 17, 3]

``lift_sequence`` reproduces VideoPose3D's ``evaluate()`` on one ``UnchunkedGenerator``
sequence: the 2D sequence is edge-padded by the receptive field (``pad + causal_shift``
frames before, ``pad - causal_shift`` after), lifted whole, and with the flip test also
mirrored (x negated, left/right 2D joints swapped), lifted, mirrored back (x negated,
left/right 3D joints swapped) and averaged with the first. Models that predict one frame
per receptive field (Pose3D-RIE: ``predicts_sequences = False``) are run on every
frame's window instead, ``window_batch`` windows at a time (RIE's ``Evaluate_Generator``).

The traced building blocks (``flip_keypoints``, ``unflip_poses``, ``lift_windows``) are
what the lifting tasks' ``predict`` runs inside ``jax.jit``.

``LiftingTask`` is what the lifter tasks (``videopose3d.VideoPose3DTask``,
``rie.RIETask``) share: the Human3.6M-format data (one 2D source of ``h36m_poses`` or
``synthetic_mocap``, cut into receptive-field windows by ``jaxpose.data.sequences``),
the per-epoch BatchNorm momentum decay, the scoring by the dataset's
``H36MProtocols`` evaluator (protocols #1-#3 and MPJVE per action, as ``run.py``) with
the mean-pose baseline, and the printed table.

Config fields read (``configs/videopose3d_h36m.py`` documents each against the
original's flags): ``model`` (its ``filter_widths`` and ``causal`` give the windows),
``data.{dataset, builder_config, data_dir, manual_dir, train_split, eval_split,
keypoints_2d (-k), subjects_train (-str), subjects_test (-ste), actions (-a), subset,
downsample, stride (-s), augment (not -no-da), num_workers}``, ``train.{seed,
bn_momentum}``, ``eval.{flip_test (not -no-tta), batch_size, original_args}``.
"""
from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxpose import compile_options, convert, datasets
from jaxpose.data import keypoints as kp
from jaxpose.data import mocap_format, pipeline, sequences
from jaxpose.evaluation import h36m as h36m_eval
from jaxpose.geometry import h36m_cameras
from jaxpose.models import temporal
from jaxpose.train import weights
from jaxpose.train.tasks import base

logger = logging.getLogger(__name__)

Array = jax.Array


# ----------------------------------------------------------------------------------------
# Flip test (traced)
# ----------------------------------------------------------------------------------------


def flip_keypoints(keypoints: Array, permutation: Array) -> Array:
  """Mirrors 2D keypoints horizontally in normalised screen coordinates.

  Args:
    keypoints: ``[..., K, 2]`` normalised screen coordinates (x in ``[-1, 1]``).
    permutation: ``[K]`` int flip permutation (``keypoints.flip_permutation``).

  Returns:
    ``[..., K, 2]``: joints permuted (left <-> right), x negated.
  """
  flipped = jnp.take(keypoints, jnp.asarray(permutation), axis=-2)
  return flipped * jnp.asarray([-1.0, 1.0], flipped.dtype)


def unflip_poses(poses: Array, permutation: Array) -> Array:
  """Mirrors 3D poses predicted from flipped input back: x negated, joints permuted.

  Args:
    poses: ``[..., J, 3]`` camera-frame poses.
    permutation: ``[J]`` int flip permutation of the 3D joints (identity for the
      one-joint trajectory model, as ``run.py`` skips the swap for it).

  Returns:
    ``[..., J, 3]``.
  """
  mirrored = jnp.take(poses, jnp.asarray(permutation), axis=-2)
  return mirrored * jnp.asarray([-1.0, 1.0, 1.0], mirrored.dtype)


def lift_windows(model: nnx.Module, keypoints: Array, keypoint_flip: Array | None,
                 joint_flip: Array | None) -> Array:
  """*Traced.* The model's poses, averaged with the flip test when permutations are given.

  Args:
    model: a lifter in eval mode (``VideoPose3D``, ``RIEModel``): ``model(x)["poses"]``.
    keypoints: ``[B, T_in, K, 2]`` normalised 2D keypoints, already padded by the
      receptive field (``T_in = T + receptive_field - 1``; ``T_in = receptive_field`` for
      models that predict one frame per window).
    keypoint_flip: ``[K]`` flip permutation of the 2D joints, or None: no flip test.
    joint_flip: ``[J]`` flip permutation of the 3D joints (used with ``keypoint_flip``).

  Returns:
    ``[B, T, J, 3]`` float32 poses: ``(model(x) + unflip(model(flip(x)))) / 2`` with the
    flip test (one model call on the stacked views), else ``model(x)``.
  """
  if keypoint_flip is None:
    return model(keypoints)["poses"]
  b = keypoints.shape[0]
  both = jnp.concatenate([keypoints, flip_keypoints(keypoints, keypoint_flip)], axis=0)
  poses = model(both)["poses"]
  return (poses[:b] + unflip_poses(poses[b:], joint_flip)) / 2


# ----------------------------------------------------------------------------------------
# Whole sequences on the host (no dataset needed)
# ----------------------------------------------------------------------------------------


def pad_sequence(keypoints: np.ndarray, receptive_field: int, causal_shift: int = 0
                 ) -> np.ndarray:
  """Edge-pads a sequence for a temporal model, as ``UnchunkedGenerator`` does.

  Args:
    keypoints: ``[T, ...]`` (frames first).
    receptive_field: the model's input frames per output frame.
    causal_shift: ``(receptive_field - 1) // 2`` for causal models, else 0.

  Returns:
    ``[T + receptive_field - 1, ...]``: ``pad + causal_shift`` copies of the first frame
    before and ``pad - causal_shift`` copies of the last after (``pad = (rf - 1) // 2``).
  """
  pad = (receptive_field - 1) // 2
  widths = [(pad + causal_shift, pad - causal_shift)] + [(0, 0)] * (keypoints.ndim - 1)
  return np.pad(keypoints, widths, mode="edge")


def _model_facts(model: nnx.Module) -> tuple[int, int, bool]:
  """``(receptive_field, causal_shift, predicts_sequences)`` of a lifter."""
  try:
    rf, shift = int(model.receptive_field), int(model.total_causal_shift)
  except AttributeError:
    raise TypeError(f"{type(model).__name__} is not a temporal lifter (it has no "
                    "receptive_field / total_causal_shift)") from None
  return rf, shift, bool(getattr(model, "predicts_sequences", True))


def _check_keypoints(keypoints: np.ndarray) -> np.ndarray:
  keypoints = np.asarray(keypoints, np.float32)
  if keypoints.ndim != 3 or keypoints.shape[-1] != 2 or len(keypoints) == 0:
    raise ValueError(f"lift_sequence expects 2D keypoints [T, K, 2] with T >= 1, got shape "
                     f"{keypoints.shape}")
  bad = ~np.isfinite(keypoints).all(axis=(1, 2))
  if bad.any():
    frames = np.flatnonzero(bad)
    raise ValueError(f"lift_sequence: {len(frames)} frame(s) have NaN or infinite keypoints "
                     f"(first: frame {frames[0]}); fill or drop them before lifting")
  return keypoints


@functools.partial(compile_options.jit, static_argnames=("graphdef", "flip"))
def _lift_jit(graphdef, state, keypoints, keypoint_flip, joint_flip, flip):
  model = nnx.merge(graphdef, state)
  if not flip:
    return lift_windows(model, keypoints, None, None)
  return lift_windows(model, keypoints, keypoint_flip, joint_flip)


def lift_sequence(model: nnx.Module, keypoints: np.ndarray, *,
                  keypoint_flip_pairs: Sequence[Sequence[int]] = kp.H36M_FLIP_PAIRS,
                  joint_flip_pairs: Sequence[Sequence[int]] = kp.H36M_FLIP_PAIRS,
                  flip_test: bool = True, window_batch: int = 1024) -> np.ndarray:
  """Lifts one whole 2D keypoint sequence to 3D (VideoPose3D's evaluation of a sequence).

  Args:
    model: a lifter (``VideoPose3D``, its trajectory model, ``RIEModel``) with its
      weights; run in eval mode (BatchNorm running statistics, no dropout) on a view of
      its variables, leaving the caller's module as it was.
    keypoints: ``[T, K, 2]`` 2D keypoints in normalised screen coordinates
      (``geometry.camera.normalize_screen_coordinates(pixels, w, h)``: x in ``[-1, 1]``
      across the image width, y scaled alike), ``K`` = the model's input joints.
    keypoint_flip_pairs: ``(left, right)`` joint pairs of the 2D layout (the
      ``keypoints_symmetry`` of the 2D source; Human3.6M's for ``gt`` / CPN / Detectron
      keypoints in Human3.6M order, ``keypoints.H36M_FLIP_PAIRS``).
    joint_flip_pairs: the pairs of the 3D output joints (Human3.6M's; ``()`` for the
      one-joint trajectory model).
    flip_test: average with the mirrored sequence's poses (``run.py``'s default
      test-time augmentation).
    window_batch: windows per model call for one-frame-per-window models (RIE).

  Returns:
    ``[T, J, 3]`` float32: per frame the model's output (root-relative camera-frame
    joint positions in meters for the pose models -- the root is not forced to 0 --, the
    root's camera-frame position for the trajectory model).

  Raises:
    ValueError: a malformed sequence, NaN/inf keypoints (naming the first bad frame), or
      a joint count the model does not take.
    TypeError: ``model`` is not a temporal lifter.
  """
  keypoints = _check_keypoints(keypoints)
  rf, shift, whole = _model_facts(model)
  model = nnx.merge(*nnx.split(model))  # a view: eval() leaves the caller's module as it was
  model.eval()
  graphdef, state = nnx.split(model)
  k = keypoints.shape[1]
  keypoint_flip = jnp.asarray(kp.flip_permutation(k, keypoint_flip_pairs))
  joints_out = jax.eval_shape(lambda: model(jnp.zeros((1, rf, k, 2), jnp.float32)))
  joint_flip = jnp.asarray(kp.flip_permutation(joints_out["poses"].shape[2], joint_flip_pairs))
  padded = pad_sequence(keypoints, rf, shift)
  if whole:
    return np.asarray(_lift_jit(graphdef, state, padded[None], keypoint_flip, joint_flip,
                                flip_test))[0]
  num = len(keypoints)
  out = []
  for start in range(0, num, window_batch):
    frames = np.minimum(start + np.arange(window_batch), num - 1)  # fixed batch: one compile
    windows = padded[frames[:, None] + np.arange(rf)[None]]
    poses = _lift_jit(graphdef, state, windows, keypoint_flip, joint_flip, flip_test)
    out.append(np.asarray(poses)[: min(window_batch, num - start), 0])
  return np.concatenate(out)


# ----------------------------------------------------------------------------------------
# The task base of the lifters
# ----------------------------------------------------------------------------------------


def bn_momentum(epoch: jax.Array, epochs: float, initial: float, final: float) -> jax.Array:
  """*Traced.* ``run.py``'s BatchNorm momentum (PyTorch convention) during ``epoch``.

  ``initial * exp(-epoch / epochs * ln(initial / final))``: ``initial`` in the first
  epoch, ``final`` after the last (``run.py`` sets it after every epoch with the new epoch
  count).
  """
  return initial * jnp.exp(-epoch / epochs * math.log(initial / final))


def set_bn_momentum(batch_norms: Sequence[Any], momentum: jax.Array) -> None:
  """Sets PyTorch-convention ``momentum`` on jaxpose BatchNorms (``1 - momentum`` in
  Flax's convention); inside the traced loss, so the decay never recompiles."""
  for bn in batch_norms:
    bn.momentum = 1.0 - momentum


def subject_list(value) -> tuple[str, ...] | None:
  """A config's subject list (``"S1,S5"`` or a sequence) -> tuple; empty -> None (all)."""
  if value is None:
    return None
  items = value.split(",") if isinstance(value, str) else list(value)
  items = tuple(s.strip() for s in items if s and s.strip())
  return items or None


def action_prefixes(value) -> tuple[str, ...] | None:
  """``data.actions``: ``'*'``/None/empty for all, else prefixes (``"Walk,Sit"``)."""
  if value in (None, "", "*"):
    return None
  return subject_list(value)


class LiftingTask(base.Task):
  """The data, BatchNorm decay, evaluation data and scoring of the 2D -> 3D lifters.

  Subclasses define ``model_name`` (the ``config.model.name`` they take),
  ``input_joints`` / ``output_joints``, ``train_data``, ``loss`` (which sets the decayed
  ``bn_momentum`` on the BatchNorms their original decays, ``set_bn_momentum``),
  ``predict`` (``lift_windows`` of their pose network) and ``predict_windows`` (how the
  evaluation data is cut and predicted: whole sequences, or fixed-size batches of
  windows).
  """
  model_name: str = ""
  best_metric = "MPJPE"
  best_mode = "min"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    if config.model.name != self.model_name:
      raise ValueError(f"task {config.task!r} trains {self.model_name!r} models, the config's "
                       f"model is {config.model.name!r}")
    self.model_config = weights.model_config(config)
    d = config.data
    self.dataset = datasets.dataset(d.dataset)
    if not isinstance(self.dataset.evaluator, datasets.H36MProtocols):
      lifting = sorted(n for n, e in datasets.DATASETS.items()
                       if isinstance(e.evaluator, datasets.H36MProtocols))
      raise ValueError(f"dataset {d.dataset!r} has no 3D pose sequences; the lifters train on "
                       f"one of {lifting}")
    if self.output_joints != self.dataset.keypoints.num_keypoints:
      raise ValueError(f"the model predicts {self.output_joints} joints, {d.dataset} has the "
                       f"{self.dataset.keypoints.num_keypoints} joints of "
                       f"{self.dataset.keypoints.name!r}")
    if int(d.stride) < 1:
      raise ValueError(f"data.stride (run.py -s) must be >= 1, got {d.stride}")
    self.receptive_field = temporal.receptive_field(self.model_config.filter_widths)
    self.causal = bool(self.model_config.causal)
    data_dir = os.path.expanduser(d.data_dir)
    self.train_ref = pipeline.DatasetRef(d.dataset, data_dir, d.train_split, d.builder_config)
    self.eval_ref = pipeline.DatasetRef(d.dataset, data_dir, d.eval_split, d.builder_config)
    self._train_seqs: sequences.PoseSequences | None = None
    self._eval_seqs: sequences.PoseSequences | None = None
    self._mean_pose: np.ndarray | None = None

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "LiftingTask":
    return cls(config)

  # -- what subclasses say about their model ----------------------------------------------

  @property
  def input_joints(self) -> int:
    """2D joints per frame the model takes."""
    raise NotImplementedError

  @property
  def output_joints(self) -> int:
    """3D joints per frame the (pose) model predicts."""
    raise NotImplementedError

  # -- data -------------------------------------------------------------------------------

  def window_spec(self, chunk_length: int = 1) -> sequences.WindowSpec:
    """Receptive field and causality of the model, ``chunk_length`` output frames."""
    return sequences.WindowSpec(self.receptive_field, chunk_length, self.causal)

  def prepare_data(self) -> None:
    """Builds ``synthetic_mocap`` if missing (``h36m_poses`` needs ``data.manual_dir``)."""
    from jaxpose.data import builders
    d = self.config.data
    builders.build_dataset(self.dataset.name, os.path.expanduser(d.data_dir),
                           manual_dir=d.manual_dir, config=d.builder_config)

  def load(self, ref: pipeline.DatasetRef, subjects, **kwargs) -> sequences.PoseSequences:
    """One split's sequences of ``data.keypoints_2d``, checked for this model.

    Raises:
      KeyError: the 2D source is not in the dataset (listing its sources).
      ValueError: subjects not in the split, no sequence of ``data.actions``, a 2D source
        with another joint count than the model takes, non-finite values.
    """
    d = self.config.data
    seqs = sequences.load_sequences(ref, d.keypoints_2d, subjects=subject_list(subjects),
                                    actions=action_prefixes(d.get("actions")),
                                    downsample=int(d.downsample), **kwargs)
    if seqs.keypoints.shape[1] != self.input_joints:
      raise ValueError(f"the 2D source {d.keypoints_2d!r} of {ref.name} has "
                       f"{seqs.keypoints.shape[1]} joints, the model takes {self.input_joints}; "
                       "pick a source with the model's joints (data.keypoints_2d) or a model "
                       "for this source")
    for what, array in (("2D keypoints", seqs.keypoints), ("3D poses", seqs.positions)):
      if array is not None and not np.isfinite(array).all():
        frame = int(np.flatnonzero(~np.isfinite(array).reshape(len(array), -1).all(1))[0])
        seq = int(np.searchsorted(seqs.offsets, frame, side="right") - 1)
        raise ValueError(f"{ref}: {what} of {seqs.subjects[seq]} {seqs.actions[seq]!r} camera "
                         f"{seqs.camera_index[seq]} are not finite (frame "
                         f"{frame - seqs.offsets[seq]}); rebuild the dataset (the builders skip "
                         "such sequences)")
    return seqs

  def train_sequences(self) -> sequences.PoseSequences:
    """The labeled training sequences (``data.subjects_train``, ``data.subset``), cached."""
    if self._train_seqs is None:
      d = self.config.data
      self._train_seqs = self.load(self.train_ref, d.subjects_train, subset=float(d.subset))
    return self._train_seqs

  def eval_sequences(self) -> sequences.PoseSequences:
    """The evaluation sequences (``data.subjects_test``), cached."""
    if self._eval_seqs is None:
      self._eval_seqs = self.load(self.eval_ref, self.config.data.subjects_test)
    return self._eval_seqs

  def mean_pose(self) -> np.ndarray:
    """``[J, 3]`` the training set's mean root-relative pose (the baseline), float64."""
    if self._mean_pose is None:
      pos = self.train_sequences().positions.astype(np.float64)
      self._mean_pose = np.mean(pos - pos[:, :1], axis=0)
    return self._mean_pose

  def labeled_iterator(self, batch_size: int, process_index: int, process_count: int
                       ) -> tuple[Any, int]:
    """``(iterator, chunks per epoch)`` of the labeled training windows."""
    d = self.config.data
    seqs = self.train_sequences()
    spec = self.window_spec(int(d.stride))
    iterator = sequences.train_iterator(
        seqs, spec, batch_size=batch_size, seed=self.config.train.seed,
        augment=bool(d.augment), num_workers=int(d.num_workers), process_index=process_index,
        process_count=process_count)
    return iterator, len(sequences.chunk_pairs(seqs.lengths, spec.chunk_length, bool(d.augment)))

  def example_batch(self, batch_size: int, seed: int = 0) -> dict[str, Any]:
    """A random batch with the structure, shapes and dtypes of ``train_data``'s (for
    benchmarks and tests): 2D keypoints in ``[-1, 1]``, root-relative poses of about
    0.2 m, trajectories 3-6 m in front of a Human3.6M camera."""
    rs = np.random.RandomState(seed)
    stride = int(self.config.data.stride)
    frames = self.receptive_field + stride - 1
    keypoints = lambda: rs.uniform(-1, 1, (batch_size, frames, self.input_joints, 2))
    poses = rs.normal(0, 0.2, (batch_size, stride, self.output_joints, 3))
    labeled = {"keypoints_2d": keypoints().astype(np.float32),
               "positions_3d": (poses - poses[:, :, :1]).astype(np.float32)}
    if not self.unlabeled_subjects:
      return labeled
    trajectory = rs.uniform([-1, -1, 3], [1, 1, 6], (batch_size, stride, 1, 3))
    camera = mocap_format.camera_values("S1", 0)["intrinsic"]
    return {"labeled": {**labeled, "trajectory": trajectory.astype(np.float32)},
            "unlabeled": {"keypoints_2d": keypoints().astype(np.float32),
                          "camera": np.tile(camera, (batch_size, 1)).astype(np.float32)}}

  @property
  def unlabeled_subjects(self) -> tuple[str, ...] | None:
    """``data.subjects_unlabeled`` (semi-supervised training when set)."""
    return subject_list(self.config.data.get("subjects_unlabeled"))

  # -- the train step (traced) ------------------------------------------------------------

  def step_hparams(self, step: jax.Array, schedule: base.Schedule) -> dict[str, jax.Array]:
    """``epoch`` (float) and ``bn_momentum`` (PyTorch convention, ``train.bn_momentum`` =
    (initial, final) decayed over ``total_steps / steps_per_epoch`` epochs)."""
    epoch = (step // schedule.steps_per_epoch).astype(jnp.float32)
    initial, final = self.config.train.bn_momentum
    epochs = schedule.total_steps / schedule.steps_per_epoch
    return {"epoch": epoch, "bn_momentum": bn_momentum(epoch, epochs, initial, final)}

  # -- evaluation -------------------------------------------------------------------------

  def flip_permutations(self) -> tuple[np.ndarray, np.ndarray]:
    """``(2D, 3D)`` flip permutations of the evaluated source and of the 3D joints."""
    seqs = self.eval_sequences()
    return seqs.keypoint_flip, seqs.joint_flip

  def predict_windows(self, ctx: base.EvalContext, seqs: sequences.PoseSequences
                      ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """This process's predictions as ``(sequence [n], frame [n], poses [n, J, 3])``
    parts (every process calls the collectives the same number of times)."""
    raise NotImplementedError

  def predict_dataset(self, ctx: base.EvalContext) -> base.Columns:
    """Columns ``sequence``, ``frame``, ``predicted`` ``[n, J, 3]`` (this process's rows)."""
    seqs = self.eval_sequences()
    if len(seqs) == 0:
      raise ValueError(f"no evaluation sequences in {self.eval_ref}")
    parts = self.predict_windows(ctx, seqs)
    j = self.output_joints
    return {"sequence": np.concatenate([np.zeros(0, np.int64)] + [p[0] for p in parts]
                                       ).astype(np.int64),
            "frame": np.concatenate([np.zeros(0, np.int64)] + [p[1] for p in parts]
                                    ).astype(np.int64),
            "predicted": np.concatenate([np.zeros((0, j, 3), np.float32)] + [p[2] for p in parts]
                                        ).astype(np.float32)}

  def missing_cameras(self) -> int:
    """Camera sequences the evaluated recordings lack (skipped when the dataset was built:
    a missing camera or NaN in one of its files)."""
    seqs = self.eval_sequences()
    counts: dict[tuple[str, str], int] = {}
    for subject, action in zip(seqs.subjects, seqs.actions):
      counts[(subject, action)] = counts.get((subject, action), 0) + 1
    cameras = len(h36m_cameras.H36M_INTRINSICS)
    return sum(max(cameras - n, 0) for n in counts.values())

  def score(self, predictions: base.Columns, ctx: base.EvalContext) -> dict[str, float]:
    """The dataset's ``H36MProtocols`` on every process's predictions (process 0)."""
    seqs = self.eval_sequences()
    seq, frame = predictions["sequence"], predictions["frame"]
    if len(seq) != seqs.num_frames:
      raise ValueError(f"{len(seq)} predicted frames for the {seqs.num_frames} frames of "
                       f"{self.eval_ref}")
    index = seqs.offsets[seq] + frame
    target = seqs.positions[index] - seqs.positions[index, :1]
    action_id = np.asarray([mocap_format.action_id(a) for a in seqs.actions], np.int64)[seq]
    baseline = np.linalg.norm(target - self.mean_pose(), axis=-1).mean(axis=-1)
    metrics = self.dataset.evaluator(
        self.eval_ref, {"sequence": seq, "frame": frame, "action_id": action_id,
                        "predicted": predictions["predicted"], "target": target,
                        "baseline_error": baseline},
        keypoints=self.dataset.keypoints, options=self.config.eval, workdir=ctx.workdir)
    missing = self.missing_cameras()
    if missing:
      logger.warning("%s: %d camera sequences of the evaluated recordings are missing (skipped "
                     "when the dataset was built); the protocols average the others", self.eval_ref,
                     missing)
    return {**metrics, "missing camera sequences": float(missing)}

  def metrics_table(self, metrics: Mapping[str, float]) -> str:
    """The protocol table and VideoPose3D's printed lines, after what was evaluated."""
    c, d = self.config, self.config.data
    subjects = ",".join(subject_list(d.subjects_test) or ("all",))
    header = (f"{c.model.name} (receptive field {self.receptive_field}"
              f"{', causal' if self.causal else ''}) on {d.dataset}/{d.eval_split} "
              f"[{subjects}], 2D source {d.keypoints_2d!r}, test-time flip "
              f"{'on' if c.eval.flip_test else 'off'}: {int(metrics.get('sequences', 0))} "
              f"sequences, {int(metrics.get('frames', 0))} frames")
    missing = int(metrics.get("missing camera sequences", 0))
    if missing:
      header += f" ({missing} camera sequences missing from the dataset)"
    return h36m_eval.protocol_report(metrics, flip_test=bool(c.eval.flip_test), header=header)

  # -- loading weights --------------------------------------------------------------------

  def load_pose_model(self, path: str) -> nnx.Module:
    """The pose model of ``path`` (``--mode=eval --checkpoint``): a jaxpose run, a
    ``jaxpose.convert`` directory, or an original ``.bin``; with ``eval.original_args``
    (the ``run.py`` flags it was trained with, e.g. ``"-arc 3,3,3,3,3 --causal"``) a
    ``.bin`` is read with those flags and must describe ``config.model``.

    Raises:
      ValueError: the checkpoint's architecture differs from ``config.model`` (naming
        the fields).
    """
    cfg = self.model_config
    args = self.config.eval.get("original_args") or ""
    if args and os.path.isfile(path):
      model, found, _ = convert.convert_file(path, original_args=args)
      found = found.replace(dtype=cfg.dtype)
      if found != cfg:
        fields = [f"{f}: file {getattr(found, f)!r}, config {getattr(cfg, f)!r}"
                  for f in cfg.__dataclass_fields__ if getattr(found, f) != getattr(cfg, f)]
        raise ValueError(f"{path} read with {args!r} is not the config's model: "
                         + "; ".join(fields))
      return model if cfg.dtype == "float32" else weights.load_weights(path, cfg)
    return weights.load_weights(path, cfg)

  def load_model(self, path: str) -> nnx.Module:
    return self.load_pose_model(path)


class KeyedIterator:
  """A checkpointable iterator of dicts keeping only ``keys`` (what the loss reads)."""

  def __init__(self, inner: Any, keys: Sequence[str]):
    self.inner, self.keys = inner, tuple(keys)

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self.inner)
    return {k: batch[k] for k in self.keys}

  def get_state(self) -> dict:
    return self.inner.get_state()

  def set_state(self, state: dict) -> None:
    self.inner.set_state(state)


class PairedIterator:
  """Labeled and unlabeled batches side by side (``run.py`` zips its generators); the
  checkpoint holds both positions."""

  def __init__(self, labeled: Any, unlabeled: Any):
    self.labeled, self.unlabeled = labeled, unlabeled

  def __next__(self) -> dict[str, dict[str, np.ndarray]]:
    return {"labeled": next(self.labeled), "unlabeled": next(self.unlabeled)}

  def get_state(self) -> dict:
    return {"labeled": self.labeled.get_state(), "unlabeled": self.unlabeled.get_state()}

  def set_state(self, state: dict) -> None:
    self.labeled.set_state(state["labeled"])
    self.unlabeled.set_state(state["unlabeled"])
