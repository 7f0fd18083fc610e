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

Config fields (``config.optim``): ``name`` ('adam' | 'sgd' | 'adamw'), ``lr``,
``weight_decay``, ``momentum``, ``nesterov``, ``b1``, ``b2``, ``eps`` and ``schedule``
('multistep' with ``milestones`` (epochs) and ``factor``; 'warmup_linear' with
``warmup_steps`` (or ``warmup_epochs``), ``warmup_factor`` and ``total_steps`` (or
``total_epochs``); 'constant').

Parameter groups (frozen parts, per-group learning rates; e.g. Pose3D-RIE's stages):
``param_labels(model, {label: nnx filter}, default)`` labels every parameter and
``make_partitioned_optimizer({label: optim config or None}, labels, steps_per_epoch)``
builds one ``optax.multi_transform`` (None = frozen). A task returns it from
``Task.optimizer``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
  raise ValueError(f"unknown optim.schedule {kind!r}; valid: constant, multistep, warmup_linear")


def make_optimizer(optim: ml_collections.ConfigDict, steps_per_epoch: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optax transformation and its schedule (for logging) described by ``config.optim``."""
  schedule = make_schedule(optim, steps_per_epoch)
  name = optim.get("name", "adam")
  wd = float(optim.get("weight_decay", 0.0))
  if name == "adam":  # torch.optim.Adam: L2 term added to the gradient
    parts = [optax.add_decayed_weights(wd)] if wd else []
    parts += [optax.scale_by_adam(b1=optim.get("b1", 0.9), b2=optim.get("b2", 0.999),
                                  eps=optim.get("eps", 1e-8)),
              optax.scale_by_learning_rate(schedule)]
    return optax.chain(*parts), schedule
  if name == "adamw":
    return optax.adamw(schedule, b1=optim.get("b1", 0.9), b2=optim.get("b2", 0.999),
                       eps=optim.get("eps", 1e-8), weight_decay=wd), schedule
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
