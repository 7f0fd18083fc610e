"""Human3.6M pose errors (VideoPose3D ``common/loss.py`` semantics).

All errors are in the units of their inputs (meters in VideoPose3D, whose ``run.py``
reports them x1000 in millimeters). Nothing is root-aligned here: the protocol zeroes the
root joint of the target and the lifters predict root-relative poses before these are
called.

* ``mpjpe`` (protocol 1): mean Euclidean joint error.
* ``weighted_mpjpe``: the same with per-pose weights.
* ``p_mpjpe`` (protocol 2): error after a per-pose similarity (Procrustes) alignment —
  host-side numpy, as ``run.py`` evaluates it, in the precision of its inputs.
* ``n_mpjpe``: error after a per-frame least-squares scale.
* ``mean_velocity_error`` (MPJVE): error of the first time derivative.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _check_same_shape(predicted, target, what: str) -> None:
  if predicted.shape != target.shape:
    raise ValueError(
        f"{what}: predicted {tuple(predicted.shape)} and target {tuple(target.shape)} "
        "must have the same shape")
  if predicted.ndim < 2:
    raise ValueError(f"{what}: expected [..., J, C] poses, got shape {tuple(predicted.shape)}")


@jax.jit
def mpjpe(predicted: Array, target: Array) -> Array:
  """Mean per-joint position error (protocol 1).

  Args:
    predicted: ``[..., J, C]`` poses (C = 3 for 3D).
    target: same shape.

  Returns:
    Scalar mean over all joints of ``||predicted - target||_2``.
  """
  _check_same_shape(predicted, target, "mpjpe")
  return jnp.mean(jnp.linalg.norm(jnp.asarray(predicted) - jnp.asarray(target), axis=-1))


@jax.jit
def weighted_mpjpe(predicted: Array, target: Array, w: Array) -> Array:
  """Weighted MPJPE: ``mean(w * ||predicted - target||)``.

  Args:
    predicted: ``[N, ..., J, C]`` poses.
    target: same shape.
    w: ``[N]`` per-pose weights, or any array broadcasting against the per-joint
      errors ``[N, ..., J]`` with leading dimension ``N`` (the original passes ``w[:, None]``).

  Returns:
    Scalar weighted mean (the mean runs over all entries, not normalised by ``sum(w)``).
  """
  _check_same_shape(predicted, target, "weighted_mpjpe")
  w = jnp.asarray(w)
  if w.ndim == 0 or w.shape[0] != predicted.shape[0]:
    raise ValueError(
        f"weighted_mpjpe: w must have leading dimension N={predicted.shape[0]}, got {w.shape}")
  err = jnp.linalg.norm(jnp.asarray(predicted) - jnp.asarray(target), axis=-1)
  if w.ndim == 1:
    w = w.reshape(w.shape + (1,) * (err.ndim - 1))
  return jnp.mean(w * err)


@jax.jit
def n_mpjpe(predicted: Array, target: Array) -> Array:
  """MPJPE after scaling each predicted pose by its least-squares scale.

  ``scale = mean_j(<t_j, p_j>) / mean_j(<p_j, p_j>)`` per pose (one per frame).

  Args:
    predicted: ``[..., J, C]`` poses.
    target: same shape.

  Returns:
    Scalar ``mpjpe(scale * predicted, target)``.
  """
  _check_same_shape(predicted, target, "n_mpjpe")
  p = jnp.asarray(predicted)
  t = jnp.asarray(target)
  norm_predicted = jnp.mean(jnp.sum(p * p, axis=-1, keepdims=True), axis=-2, keepdims=True)
  norm_target = jnp.mean(jnp.sum(t * p, axis=-1, keepdims=True), axis=-2, keepdims=True)
  return mpjpe(norm_target / norm_predicted * p, t)


@functools.partial(jax.jit, static_argnames=("axis",))
def mean_velocity_error(predicted: Array, target: Array, axis: int = 0) -> Array:
  """Mean per-joint velocity error (MPJVE).

  Args:
    predicted: ``[T, J, C]`` pose sequence (time along ``axis``).
    target: same shape.
    axis: time axis.

  Returns:
    Scalar ``mean ||diff_t predicted - diff_t target||``; NaN for fewer than two frames.
  """
  _check_same_shape(predicted, target, "mean_velocity_error")
  vp = jnp.diff(jnp.asarray(predicted), axis=axis)
  vt = jnp.diff(jnp.asarray(target), axis=axis)
  return jnp.mean(jnp.linalg.norm(vp - vt, axis=-1))


def procrustes_align(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
  """Aligns each predicted pose to its target by the best similarity transform (numpy).

  Per pose, finds scale ``a``, rotation ``R`` (a proper rotation: the reflection an
  unconstrained orthogonal fit may pick is undone by flipping the least singular
  direction) and translation ``t`` minimising ``||a * predicted @ R + t - target||``.
  Runs in the floating dtype of the inputs (float32 stays float32).

  Args:
    predicted: ``[N, J, 3]`` poses.
    target: ``[N, J, 3]`` poses.

  Returns:
    ``[N, J, 3]`` aligned predictions.
  """
  predicted = np.asarray(predicted)
  target = np.asarray(target)
  _check_same_shape(predicted, target, "procrustes_align")
  if predicted.ndim != 3:
    raise ValueError(f"procrustes_align: expected [N, J, 3] poses, got shape {predicted.shape}")

  mu_target = target.mean(axis=1, keepdims=True)
  mu_pred = predicted.mean(axis=1, keepdims=True)
  x0 = target - mu_target
  y0 = predicted - mu_pred
  norm_x = np.sqrt(np.sum(x0 * x0, axis=(1, 2), keepdims=True))
  norm_y = np.sqrt(np.sum(y0 * y0, axis=(1, 2), keepdims=True))
  x0 = x0 / norm_x
  y0 = y0 / norm_y

  # Cross-covariance and its SVD; the optimal rotation (right-multiplied) is V U^T.
  cov = np.matmul(np.swapaxes(x0, 1, 2), y0)
  u, s, vt = np.linalg.svd(cov)
  v = np.swapaxes(vt, 1, 2)
  ut = np.swapaxes(u, 1, 2)
  det_sign = np.sign(np.linalg.det(np.matmul(v, ut)))  # [N]
  # Reflection fix: flip the last singular direction (and its singular value).
  v = v.copy()
  s = s.copy()
  v[:, :, -1] *= det_sign[:, None]
  s[:, -1] *= det_sign
  rot = np.matmul(v, ut)

  scale = np.sum(s, axis=1)[:, None, None] * norm_x / norm_y
  shift = mu_target - scale * np.matmul(mu_pred, rot)
  return scale * np.matmul(predicted, rot) + shift


def p_mpjpe(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
  """MPJPE after per-pose Procrustes alignment (protocol 2), host-side numpy.

  Args:
    predicted: ``[N, J, 3]`` poses (float32 or float64; computed in that precision).
    target: ``[N, J, 3]`` poses.

  Returns:
    Numpy scalar in the inputs' floating dtype.
  """
  predicted = np.asarray(predicted)
  target = np.asarray(target)
  aligned = procrustes_align(predicted, target)
  return np.mean(np.linalg.norm(aligned - target, axis=-1))
