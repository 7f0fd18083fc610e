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

The protocols per action (``protocol_metrics``, ``protocol_report``; ``protocol_table`` and
``summary_lines`` also print the image-based 3D results): per sequence
``frame_errors`` / ``velocity_error`` (``sequence_errors``), grouped by action and
weighted by frames as ``run.py``'s ``evaluate()`` weights them, reported in millimeters
with ``run.py``'s printed lines.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

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


# ----------------------------------------------------------------------------------------
# The Human3.6M protocols per action, as VideoPose3D's run.py evaluates and prints them
# ----------------------------------------------------------------------------------------

# (metric key, the name run.py prints per action, its action-wise-average label)
PROTOCOLS: tuple[tuple[str, str, str], ...] = (
    ("MPJPE", "Protocol #1 Error (MPJPE)", "Protocol #1   (MPJPE) action-wise average"),
    ("P-MPJPE", "Protocol #2 Error (P-MPJPE)", "Protocol #2 (P-MPJPE) action-wise average"),
    ("N-MPJPE", "Protocol #3 Error (N-MPJPE)", "Protocol #3 (N-MPJPE) action-wise average"),
    ("MPJVE", "Velocity Error (MPJVE)", "Velocity      (MPJVE) action-wise average"),
)
BASELINE_METRIC = "mean-pose MPJPE"


def frame_errors(predicted: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
  """Per-frame errors of protocols 1-3 (numpy, host side).

  Args:
    predicted: ``[T, J, 3]`` poses (float32, as the model returns them).
    target: ``[T, J, 3]`` root-relative ground truth (root joint zero).

  Returns:
    ``{"MPJPE", "P-MPJPE", "N-MPJPE": [T] float64}``: each frame's mean joint error, in
    the inputs' units; the Procrustes alignment runs in the inputs' precision (as
    ``run.py``'s numpy ``p_mpjpe`` on float32 arrays), N-MPJPE scales each frame alone.
  """
  predicted = np.asarray(predicted)
  target = np.asarray(target)
  _check_same_shape(predicted, target, "frame_errors")
  p64, t64 = predicted.astype(np.float64), target.astype(np.float64)
  per_joint = lambda a: np.linalg.norm(a - t64, axis=-1).mean(axis=-1)
  scale = (np.sum(t64 * p64, axis=(-1, -2), keepdims=True)
           / np.sum(p64 * p64, axis=(-1, -2), keepdims=True))
  aligned = procrustes_align(predicted, target).astype(np.float64)
  return {"MPJPE": per_joint(p64), "P-MPJPE": per_joint(aligned),
          "N-MPJPE": per_joint(scale * p64)}


def velocity_error(predicted: np.ndarray, target: np.ndarray) -> float:
  """``run.py``'s ``mean_velocity_error`` of one sequence ``[T, J, 3]`` (numpy): the mean
  over the ``T - 1`` frame differences and the joints; NaN for fewer than two frames."""
  _check_same_shape(np.asarray(predicted), np.asarray(target), "velocity_error")
  if len(predicted) < 2:
    return float("nan")
  diff = np.diff(np.asarray(predicted, np.float64), axis=0) - np.diff(
      np.asarray(target, np.float64), axis=0)
  return float(np.mean(np.linalg.norm(diff, axis=-1)))


@dataclasses.dataclass(frozen=True)
class SequenceErrors:
  """What ``run.py``'s ``evaluate()`` accumulates for one sequence (errors in meters).

  Attributes:
    action: the action it counts for (``"Walking"``: the name without its take).
    frames: ``T``, the sequence's weight in every average.
    errors: mean error per protocol (``MPJPE``, ``P-MPJPE``, ``N-MPJPE``, ``MPJVE``;
      MPJVE is NaN for a one-frame sequence and such sequences are left out of it).
    baseline: MPJPE of the mean-pose baseline on this sequence, or None.
  """
  action: str
  frames: int
  errors: Mapping[str, float]
  baseline: float | None = None


def sequence_errors(action: str, predicted: np.ndarray, target: np.ndarray,
                    baseline_pose: np.ndarray | None = None) -> SequenceErrors:
  """The protocol errors of one whole sequence.

  Args:
    action: the sequence's action name (without take number).
    predicted: ``[T, J, 3]`` predicted root-relative poses.
    target: ``[T, J, 3]`` root-relative ground truth.
    baseline_pose: ``[J, 3]`` a fixed pose predicted for every frame (the training set's
      mean root-relative pose), or None.
  """
  per_frame = frame_errors(predicted, target)
  errors = {name: float(np.mean(v)) for name, v in per_frame.items()}
  errors["MPJVE"] = velocity_error(predicted, target)
  baseline = None
  if baseline_pose is not None:
    baseline = float(np.mean(np.linalg.norm(
        np.asarray(target, np.float64) - np.asarray(baseline_pose, np.float64), axis=-1)))
  return SequenceErrors(action, int(len(predicted)), errors, baseline)


def _weighted(items: Sequence[tuple[float, int]]) -> float:
  """``sum(T * e) / sum(T)`` over the finite ``e``; NaN if none."""
  kept = [(e, t) for e, t in items if np.isfinite(e)]
  total = sum(t for _, t in kept)
  return float(sum(e * t for e, t in kept) / total) if total else float("nan")


def _error(sequence: SequenceErrors, name: str) -> float:
  return sequence.baseline if name == BASELINE_METRIC else sequence.errors[name]


def protocol_metrics(sequences: Sequence[SequenceErrors]) -> dict[str, float]:
  """Per-action and action-wise average errors in millimeters, as ``run.py`` computes them.

  Per action, every sequence of that action (all subjects, takes and cameras) weighs by
  its frame count: ``sum_s T_s e_s / sum_s T_s`` (``run.py`` accumulates
  ``T * error`` per ``UnchunkedGenerator`` sequence and divides by the frames). The
  averages are plain means over the actions (``run_evaluation``'s "action-wise
  average").

  Returns:
    ``{"MPJPE", "P-MPJPE", "N-MPJPE", "MPJVE"}`` action-wise averages, ``"<metric>/<action>"``
    per action, ``"mean-pose MPJPE"`` (and per action) when the sequences carry a
    baseline, ``"frames"``, ``"sequences"`` and ``"actions"`` counts.

  Raises:
    ValueError: no sequences.
  """
  if not sequences:
    raise ValueError("protocol_metrics: no sequences to evaluate")
  actions = sorted({s.action for s in sequences})
  names = [name for name, _, _ in PROTOCOLS]
  with_baseline = all(s.baseline is not None for s in sequences)
  if with_baseline:
    names.append(BASELINE_METRIC)
  out: dict[str, float] = {}
  for action in actions:
    mine = [s for s in sequences if s.action == action]
    for name in names:
      out[f"{name}/{action}"] = 1000.0 * _weighted([(_error(s, name), s.frames) for s in mine])
  for name in names:
    out[name] = float(np.mean([out[f"{name}/{a}"] for a in actions]))
  out.update(frames=float(sum(s.frames for s in sequences)), sequences=float(len(sequences)),
             actions=float(len(actions)))
  return out


def protocol_actions(metrics: Mapping[str, float]) -> list[str]:
  """The actions of a ``protocol_metrics`` result, sorted."""
  return sorted(k.split("/", 1)[1] for k in metrics if k.startswith("MPJPE/"))


def protocol_table(metrics: Mapping[str, float], *, header: str = "",
                   average: str = "action-wise average") -> list[str]:
  """The lines of a markdown table of the protocols present in ``metrics`` (per action,
  then ``Average``) and the mean-pose baseline line when ``metrics`` has one.

  Args:
    metrics: ``protocol_metrics``-style results (``"MPJPE"``, ``"MPJPE/<action>"``, ...,
      millimeters); protocols it lacks are left out (the image-based 3D methods report
      protocols #1 and #2 only).
    header: an optional first line.
    average: how the ``Average`` row was taken (said in the baseline line).
  """
  actions = protocol_actions(metrics)
  names = [name for name, _, _ in PROTOCOLS if name in metrics]
  width = max([len(a) for a in actions] + [len("Average")])
  lines = [header] if header else []
  lines.append(f"| {'Action':<{width}} | " + " | ".join(f"{n:>7}" for n in names) + " |")
  lines.append(f"|{'-' * (width + 2)}|" + "|".join("-" * 8 + ":" for _ in names) + "|")
  for row in actions + ["Average"]:
    values = [metrics[f"{n}/{row}"] if row != "Average" else metrics[n] for n in names]
    lines.append(f"| {row:<{width}} | " + " | ".join(
        f"{v:7.2f}" if n == "MPJVE" else f"{v:7.1f}" for n, v in zip(names, values)) + " |")
  if BASELINE_METRIC in metrics:
    lines.append(f"mean-pose baseline (the training set's mean root-relative pose): MPJPE "
                 f"{metrics[BASELINE_METRIC]:.1f} mm ({average})")
  return lines


def summary_lines(metrics: Mapping[str, float]) -> list[str]:
  """``Protocol #1 Error (MPJPE): 64.55 mm`` for each protocol present in ``metrics``
  (values to 0.01 mm): how a 3D result that is one number per protocol ends."""
  return [f"{label}: {metrics[name]:.2f} mm" for name, label, _ in PROTOCOLS if name in metrics]


def protocol_report(metrics: Mapping[str, float], *, flip_test: bool, header: str = "") -> str:
  """A table of ``protocol_metrics`` followed by the lines VideoPose3D's ``run.py`` prints.

  Per action ``----<action>----``, ``Test time augmentation: ...``, the four
  ``Protocol #k Error (...): <value> mm`` lines and ``----------``, then the four
  action-wise averages rounded as ``run.py`` rounds them (0.1 mm, 0.01 mm for MPJVE).
  """
  lines = protocol_table(metrics, header=header)
  for action in protocol_actions(metrics):
    lines.append(f"----{action}----")
    lines.append(f"Test time augmentation: {bool(flip_test)}")
    lines += [f"{label}: {metrics[f'{name}/{action}']!r} mm" for name, label, _ in PROTOCOLS]
    lines.append("----------")
  for name, _, label in PROTOCOLS:
    lines.append(f"{label}: {round(metrics[name], 2 if name == 'MPJVE' else 1)} mm")
  return "\n".join(lines)
