"""Whole-sequence inference of the temporal lifters (VideoPose3D, Pose3D-RIE).

PROVISIONAL: the lifting task (its own file here, branch ``lift``) owns evaluation on
whole sequences with test-time flip averaging; until it lands this module holds the one
function ``jaxpose predict --lift`` needs, written to be replaced by (or moved into)
that task's ``predict``.

``predict_sequence`` is VideoPose3D's ``evaluate`` on one sequence
(``UnchunkedGenerator`` input, ``jaxpose.data.sequences.eval_sequences``): the full
model over the whole padded sequence; with the flipped copy (test-time augmentation) its
x coordinates are negated back, left and right joints swapped back, and the two views
averaged. RIE predicts one frame from exactly one receptive field, so its sequence is
cut into one window per output frame (the same inputs its ``Evaluate_Generator`` gives).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpose.models import lifters

Array = jax.Array


def _windows(x: Array, receptive_field: int) -> Array:
  """``[V, T + rf - 1, K, 2]`` -> ``[V * T, rf, K, 2]`` sliding windows (stride 1)."""
  v, n = x.shape[:2]
  t = n - receptive_field + 1
  index = jnp.arange(t)[:, None] + jnp.arange(receptive_field)[None, :]
  return x[:, index].reshape(v * t, receptive_field, *x.shape[2:])


def forward_sequence(model: nnx.Module, keypoints_2d: Array) -> Array:
  """*Traced.* ``[V, T + rf - 1, K, 2]`` padded 2D -> ``[V, T, J, 3]`` 3D, eval mode."""
  if isinstance(model, lifters.RIEModel):
    v = keypoints_2d.shape[0]
    out = model(_windows(keypoints_2d, model.receptive_field))["poses"]
    return out.reshape(v, -1, *out.shape[2:])
  return model(keypoints_2d)["poses"]


def flip_average(poses: Array, joint_flip: np.ndarray) -> Array:
  """*Traced.* ``[2, T, J, 3]`` (second view flipped) -> ``[T, J, 3]``: the flipped
  view's x negated, its joints permuted back (``joint_flip``), the two averaged."""
  back = poses[1][:, np.asarray(joint_flip)] * jnp.asarray([-1.0, 1.0, 1.0], poses.dtype)
  return (poses[0] + back) / 2


def predict_sequence(model: nnx.Module, keypoints_2d: Array, joint_flip: np.ndarray | None
                     ) -> Array:
  """*Traced.* One sequence's root-relative 3D poses ``[T, J, 3]``.

  Args:
    model: a lifter in eval mode.
    keypoints_2d: ``[V, T + rf - 1, K, 2]`` normalised screen coordinates, edge-padded by
      the receptive field (``eval_sequences``); ``V = 2`` with the flipped copy second.
    joint_flip: the output joints' flip permutation when ``V = 2`` (None for ``V = 1``).
  """
  poses = forward_sequence(model, keypoints_2d)
  if keypoints_2d.shape[0] == 1:
    return poses[0]
  return flip_average(poses, joint_flip)
