"""Optimizers and learning-rate schedules matching the original training scripts.

* HRNet / SimpleBaseline (``lib/core`` + ``tools/train.py``): Adam (lr 1e-3, no weight
  decay: the yaml's ``WD`` only reaches the SGD branch of ``get_optimizer``), MultiStepLR
  stepped once per epoch (x0.1 at epochs 170 and 200 for HRNet, 90 and 120 for
  SimpleBaseline). The schedule is the one of the torch 1.0 the projects were written for:
  epoch ``e`` trains at ``lr * factor ** #{milestones <= e}``.
* MSPN (``lib/utils/solver.py``): Adam with PyTorch's L2 weight decay (added to the
  gradient before the moments, 1e-5), lr ``5e-4`` per 32 images, LambdaLR stepped *before*
  each optimizer step, so update ``k`` (1-based) uses ``lambda(k)``: linear warm-up from
  0.1 over 2400 iterations, then linear decay to 0 at ``MAX_ITER``.
* VideoPose3D (``run.py``): ``torch.optim.Adam(amsgrad=True)``, lr 1e-3 multiplied by
  ``--lr-decay`` 0.95 after every epoch. Pose3D-RIE: the same with ``torch.optim.AdamW``
  (decoupled weight decay, PyTorch's default 0.01 scaled by the current lr).
  ``amsgrad=True`` is PyTorch's AMSGrad: the running maximum is taken of the raw second
  moment, then bias-corrected with the current step (``optax.scale_by_amsgrad`` takes the
  maximum of the corrected moments, which differs while the correction changes).

Config fields (``config.optim``): ``name`` ('adam' | 'sgd' | 'adamw'), ``lr``,
``weight_decay``, ``momentum``, ``nesterov``, ``b1``, ``b2``, ``eps``, ``amsgrad``
(adam/adamw) and ``schedule`` ('multistep' with ``milestones`` (epochs) and ``factor``;
'warmup_linear' with ``warmup_steps`` (or ``warmup_epochs``), ``warmup_factor`` and
``total_steps`` (or ``total_epochs``); 'exponential' with ``decay`` per epoch;
'constant').

Parameter groups (frozen parts, per-group learning rates; e.g. Pose3D-RIE's stages):
``param_labels(model, {label: nnx filter}, default)`` labels every parameter and
``make_partitioned_optimizer({label: optim config or None}, labels, steps_per_epoch)``
builds one ``optax.multi_transform`` (None = frozen). A task returns it from
``Task.optimizer``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx


def make_schedule(optim: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """Learning rate as a function of the optimizer update count (0 for the first update)."""
  lr = float(optim.lr)
  kind = optim.get("schedule", "constant")
  if kind == "constant":
    return optax.constant_schedule(lr)
  if kind == "multistep":
    boundaries = {int(m) * steps_per_epoch: float(optim.factor) for m in optim.milestones}
    return optax.piecewise_constant_schedule(lr, boundaries)
  if kind == "warmup_linear":
    in_steps = lambda name: (int(optim[f"{name}_steps"]) if optim.get(f"{name}_steps")
                             else int(round(float(optim[f"{name}_epochs"]) * steps_per_epoch)))
    warmup, total = in_steps("warmup"), in_steps("total")
    w_fac = float(optim.warmup_factor)
    if total <= warmup:
      raise ValueError(f"optim.total_steps ({total}) must exceed warmup_steps ({warmup})")

    def schedule(count):
      iteration = jnp.asarray(count, jnp.float32) + 1.0  # LambdaLR stepped before the update
      warm = w_fac + (1.0 - w_fac) * iteration / warmup
      decay = 1.0 - (iteration - warmup) / (total - warmup)
      return lr * jnp.where(iteration < warmup, warm, jnp.maximum(decay, 0.0))

    return schedule
  if kind == "exponential":  # lr * decay ** epoch, the multiplier applied after each epoch
    return optax.exponential_decay(lr, transition_steps=steps_per_epoch,
                                   decay_rate=float(optim.decay), staircase=True)
  raise ValueError(f"unknown optim.schedule {kind!r}; valid: constant, exponential, multistep, "
                   "warmup_linear")


class TorchAmsgradState(NamedTuple):
  """``count`` of updates, first moment ``mu``, second moment ``nu`` and the running
  maximum ``nu_max`` of the raw (uncorrected) second moment."""
  count: jax.Array
  mu: Any
  nu: Any
  nu_max: Any


def scale_by_torch_amsgrad(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
                           ) -> optax.GradientTransformation:
  """``torch.optim.Adam(amsgrad=True)``'s direction (without the learning rate).

  ``m_t = b1 m + (1 - b1) g``, ``v_t = b2 v + (1 - b2) g^2``, ``vmax_t = max(vmax, v_t)``;
  the update is ``(m_t / (1 - b1^t)) / (sqrt(vmax_t / (1 - b2^t)) + eps)``.
  """

  def init(params):
    zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)
    return TorchAmsgradState(jnp.zeros([], jnp.int32), zeros(), zeros(), zeros())

  def update(updates, state, params=None):
    del params
    count = state.count + 1
    mu = jax.tree_util.tree_map(lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
    nu = jax.tree_util.tree_map(lambda g, v: b2 * v + (1 - b2) * g * g, updates, state.nu)
    nu_max = jax.tree_util.tree_map(jnp.maximum, state.nu_max, nu)
    t = count.astype(jnp.float32)
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    out = jax.tree_util.tree_map(lambda m, v: (m / bc1) / (jnp.sqrt(v / bc2) + eps), mu, nu_max)
    return out, TorchAmsgradState(count, mu, nu, nu_max)

  return optax.GradientTransformation(init, update)


def _adam_direction(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
  b1, b2, eps = optim.get("b1", 0.9), optim.get("b2", 0.999), optim.get("eps", 1e-8)
  if optim.get("amsgrad", False):
    return scale_by_torch_amsgrad(b1=b1, b2=b2, eps=eps)
  return optax.scale_by_adam(b1=b1, b2=b2, eps=eps)


def make_optimizer(optim: ml_collections.ConfigDict, steps_per_epoch: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optax transformation and its schedule (for logging) described by ``config.optim``."""
  schedule = make_schedule(optim, steps_per_epoch)
  name = optim.get("name", "adam")
  wd = float(optim.get("weight_decay", 0.0))
  if name == "adam":  # torch.optim.Adam: L2 term added to the gradient
    parts = [optax.add_decayed_weights(wd)] if wd else []
    parts += [_adam_direction(optim), optax.scale_by_learning_rate(schedule)]
    return optax.chain(*parts), schedule
  if name == "adamw":  # torch.optim.AdamW: p -= lr * (adam direction + wd * p)
    return optax.chain(_adam_direction(optim), optax.add_decayed_weights(wd),
                       optax.scale_by_learning_rate(schedule)), schedule
  if name == "sgd":  # torch.optim.SGD: L2 term added before momentum
    parts = [optax.add_decayed_weights(wd)] if wd else []
    parts += [optax.sgd(schedule, momentum=optim.get("momentum", 0.9) or None,
                        nesterov=bool(optim.get("nesterov", False)))]
    return optax.chain(*parts), schedule
  raise ValueError(f"unknown optim.name {name!r}; valid: adam, adamw, sgd")


def _path_names(path) -> tuple:
  return tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)


def param_labels(model: nnx.Module, groups: Mapping[str, Any], default: str) -> Any:
  """A label per parameter, the pytree structure of the train state's ``params``.

  Args:
    model: the model (its ``nnx.Param`` variables are labelled).
    groups: label -> NNX filter (e.g. ``lifters.rie_trainable(2)``,
      ``nnx.PathContains('final_layer')``); a parameter may match one group only.
    default: the label of parameters no group matches.

  Raises:
    ValueError: a parameter matches two groups, or a group matches no parameter.
  """
  owner: dict[tuple, str] = {}
  for label, filt in groups.items():
    paths = [tuple(p) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.All(nnx.Param, filt)))]
    if not paths:
      raise ValueError(f"parameter group {label!r} matches no parameter")
    for path in paths:
      if path in owner:
        raise ValueError(f"parameter {'/'.join(map(str, path))} is in groups "
                         f"{owner[path]!r} and {label!r}")
      owner[path] = label
  params = nnx.as_pure(nnx.state(model, nnx.Param))
  return jax.tree_util.tree_map_with_path(
      lambda path, _: owner.get(_path_names(path), default), params)


def make_partitioned_optimizer(groups: Mapping[str, ml_collections.ConfigDict | None],
                               labels: Any, steps_per_epoch: int,
                               ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """One optimizer per parameter group (``param_labels``); None freezes a group.

  Returns:
    The ``optax.multi_transform`` and the schedule of the first trained group (logged as
    ``train/lr``).
  """
  used = set(jax.tree_util.tree_leaves(labels))
  missing = sorted(used - set(groups))
  if missing:
    raise ValueError(f"parameter groups {missing} have no optimizer; given: {sorted(groups)}")
  transforms, schedule = {}, None
  for label, optim_config in groups.items():
    if optim_config is None:
      transforms[label] = optax.set_to_zero()
      continue
    transforms[label], group_schedule = make_optimizer(optim_config, steps_per_epoch)
    schedule = schedule or group_schedule
  return (optax.multi_transform(transforms, labels),
          schedule or optax.constant_schedule(0.0))
