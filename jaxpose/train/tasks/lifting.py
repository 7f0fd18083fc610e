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
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpose.data import keypoints as kp

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


@functools.partial(nnx.jit, static_argnames=("flip",))
def _lift_jit(model, keypoints, keypoint_flip, joint_flip, flip):
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
  graphdef, state = nnx.split(model)
  model = nnx.merge(graphdef, state)
  model.eval()
  k = keypoints.shape[1]
  keypoint_flip = jnp.asarray(kp.flip_permutation(k, keypoint_flip_pairs))
  joints_out = jax.eval_shape(lambda: model(jnp.zeros((1, rf, k, 2), jnp.float32)))
  joint_flip = jnp.asarray(kp.flip_permutation(joints_out["poses"].shape[2], joint_flip_pairs))
  padded = pad_sequence(keypoints, rf, shift)
  if whole:
    return np.asarray(_lift_jit(model, padded[None], keypoint_flip, joint_flip, flip_test))[0]
  num = len(keypoints)
  out = []
  for start in range(0, num, window_batch):
    frames = np.minimum(start + np.arange(window_batch), num - 1)  # fixed batch: one compile
    windows = padded[frames[:, None] + np.arange(rf)[None]]
    poses = _lift_jit(model, windows, keypoint_flip, joint_flip, flip_test)
    out.append(np.asarray(poses)[: min(window_batch, num - start), 0])
  return np.concatenate(out)
