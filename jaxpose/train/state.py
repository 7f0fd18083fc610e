"""Training state and the pure, sharded train step.

The model is split once (``nnx.split``) into a static ``GraphDef`` and its variables; the
train step is a pure function of ``TrainState`` and a batch (a pytree of arrays whose
leading axis is the example axis), jitted with explicit
shardings over a ``Mesh`` with a ``data`` axis: the batch is sharded along it, the state
is replicated. BatchNorm statistics are means over the (sharded) batch axis, i.e. over the
global batch, with no extra code. The same step runs unchanged on 1 device, N devices and
several hosts.

A non-finite loss or gradient norm freezes the state: the step returns the previous
parameters and records the first bad step, so the caller can save the last good state and
stop (see ``jaxpose.train.loop``). The updates need no check of their own: with a finite
gradient norm every gradient is below ~1.8e19 in magnitude, and the optimizers of
``jaxpose.train.optim`` (Adam, AdamW, AMSGrad, SGD with momentum, weight decay) map finite
gradients and a finite state to a finite update (Adam's ``m / (sqrt(v) + eps)`` is bounded
by a constant times the learning rate), so the state stays finite by induction.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxpose import compile_options

Batch = Any  # a pytree (usually a dict) of arrays, leading axis = examples
Metrics = dict[str, jax.Array]
HParams = dict[str, jax.Array]
LossFn = Callable[[nnx.Module, Batch, jax.Array, HParams], tuple[jax.Array, Metrics]]
HParamsFn = Callable[[jax.Array], HParams]

DATA_AXIS = "data"


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (a pytree; checkpointed whole).

  Attributes:
    step: number of optimizer updates applied (int32 scalar).
    params: ``nnx.Param`` state of the model.
    batch_stats: ``nnx.BatchStat`` state (BatchNorm running statistics).
    opt_state: optax state.
    rng: PRNG key for dropout and other in-step randomness; split every step.
    first_bad_step: -1 while every loss so far was finite, else the step whose loss was
      not (the state then stays frozen at the last good values).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  first_bad_step: jax.Array


def make_mesh(devices: list | None = None) -> Mesh:
  """A 1-D mesh over all (global) devices with axis ``data``."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices.reshape(-1), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``data``; other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.GraphDef, Any, Any]:
  """``(train_graphdef, eval_graphdef, params, batch_stats)`` of a model.

  The two graph definitions differ only in the static BatchNorm/Dropout mode flags.
  """
  model.train()
  train_def, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  model.eval()
  eval_def, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat)
  model.train()
  # Plain arrays (no Variable objects) so that nnx.merge inside traced functions creates
  # fresh Variables at the right trace level.
  return train_def, eval_def, nnx.as_pure(params), nnx.as_pure(batch_stats)


def init_train_state(params, batch_stats, tx: optax.GradientTransformation, seed: int
                     ) -> TrainState:
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=batch_stats,
      opt_state=tx.init(params),
      rng=jax.random.key_data(jax.random.key(seed)),
      first_bad_step=jnp.full((), -1, jnp.int32),
  )


def _commit_if(finite: jax.Array, commit, freeze, operands):
  """``commit(operands)`` if ``finite`` else ``freeze(operands)``, both returning the new
  ``TrainState``.

  On CPUs a ``lax.cond``: only the taken branch runs, so the optimizer writes the donated
  state in place in one pass per leaf. Selecting between the updated and the old state
  instead keeps both alive and adds a pass over every parameter and moment
  (SimpleBaseline-50's CPU train step, batch 4, the same step both ways in one process:
  1334 -> 1251 ms, the same as with no guard at all). Elsewhere the select, which
  fuses into the update kernels (a conditional costs a GPU a device-to-host
  synchronisation).
  """
  if jax.default_backend() == "cpu":
    return jax.lax.cond(finite, commit, freeze, operands)
  committed, frozen = commit(operands), freeze(operands)
  return jax.tree_util.tree_map(lambda c, f: jnp.where(finite, c, f), committed, frozen)


def make_train_step(train_def: nnx.GraphDef, loss_fn: LossFn, tx: optax.GradientTransformation,
                    hparams_fn: HParamsFn | None = None,
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """The pure train step ``(state, batch) -> (state, metrics)``.

  Args:
    train_def: graph definition of the model in training mode.
    loss_fn: ``(model, batch, rng, hparams) -> (scalar loss, metrics)``; ``model`` is the
      merged training-mode module (the loss calls it, e.g. ``model(x)`` or
      ``model.single_frame(x)``; its BatchNorm statistics updates are kept), ``rng`` a
      fresh key per step (dropout), ``hparams`` the step's hyper-parameters.
    tx: optax transformation.
    hparams_fn: ``step (int32 scalar, traced) -> {name: scalar}``: per-step
      hyper-parameters computed inside the jitted step (no recompilation when they
      change); None for none. They are returned in the metrics as ``hparams/<name>``.
  """

  def step_fn(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    rng, step_key = jax.random.split(jax.random.wrap_key_data(state.rng))
    hparams = dict(hparams_fn(state.step)) if hparams_fn is not None else {}

    def compute_loss(params):
      model = nnx.merge(train_def, params, state.batch_stats)
      loss, metrics = loss_fn(model, batch, step_key, hparams)
      return loss, (metrics, nnx.as_pure(nnx.state(model, nnx.BatchStat)))

    (loss, (metrics, batch_stats)), grads = jax.value_and_grad(compute_loss, has_aux=True)(
        state.params)
    # The state keeps its dtypes (float32 statistics even when computed in float64), so
    # the next step neither recompiles nor writes checkpoints of another layout.
    batch_stats = jax.tree_util.tree_map(lambda new, old: new.astype(old.dtype), batch_stats,
                                         state.batch_stats)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & (state.first_bad_step < 0)

    def commit(operands):
      state, grads, batch_stats = operands
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      return TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state,
                        rng=jax.random.key_data(rng), first_bad_step=state.first_bad_step)

    def freeze(operands):
      state, _, _ = operands
      return state.replace(first_bad_step=jnp.where(state.first_bad_step >= 0,
                                                    state.first_bad_step, state.step))

    new_state = _commit_if(finite, commit, freeze, (state, grads, batch_stats))
    metrics = {"loss": loss, **metrics, "grad_norm": grad_norm,
               **{f"hparams/{k}": v for k, v in hparams.items()}}
    return new_state, metrics

  return step_fn


def call_model(model: nnx.Module, inputs: jax.Array, key: jax.Array):
  """``model(inputs, rngs=nnx.Rngs(dropout=key))`` when the model takes ``rngs``
  (dropout), else ``model(inputs)``."""
  if "rngs" in inspect.signature(type(model).__call__).parameters:
    return model(inputs, rngs=nnx.Rngs(dropout=key))
  return model(inputs)


def jit_train_step(step_fn, mesh: Mesh, state_sharding=None, donate: bool = True,
                   compiler_options: dict[str, str] | None = None):
  """``jax.jit`` of the train step with explicit shardings, a donated state (unless
  ``donate=False``: to call it on one state repeatedly, as the profiler does) and XLA compiler options
  (default: the mesh platform's ``compile_options``; ``{}``: XLA's defaults)."""
  state_sharding = state_sharding if state_sharding is not None else replicated(mesh)
  if compiler_options is None:
    compiler_options = compile_options.for_platform(mesh_platform(mesh))
  return jax.jit(step_fn,
                 in_shardings=(state_sharding, batch_sharding(mesh)),
                 out_shardings=(state_sharding, replicated(mesh)),
                 donate_argnums=(0,) if donate else (),
                 compiler_options=compiler_options)


def mesh_platform(mesh: Mesh) -> str:
  """The platform (``"cpu"``, ``"gpu"``, ``"tpu"``) of the mesh's devices."""
  return mesh.devices.flat[0].platform


def global_batch(batch: Batch, mesh: Mesh) -> Batch:
  """Makes each host's local batch part of one global, data-sharded array per leaf.

  ``batch`` is a pytree of numpy arrays (this process's rows); every leaf's leading axis
  is split over the mesh's ``data`` axis, so its global size must divide by the number of
  devices.
  """
  sharding = batch_sharding(mesh)
  return jax.tree_util.tree_map(
      lambda v: jax.make_array_from_process_local_data(sharding, np.asarray(v)), batch)


def host_local(array: jax.Array) -> np.ndarray:
  """This process's rows of a global array sharded along its leading axis (numpy).

  The inverse of ``global_batch`` for one leaf; with one process, the whole array.
  """
  if jax.process_count() == 1:
    return np.asarray(array)
  shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
  seen, parts = set(), []
  for shard in shards:  # replicas of one row block appear once
    start = shard.index[0].start or 0
    if start not in seen:
      seen.add(start)
      parts.append(np.asarray(shard.data))
  return np.concatenate(parts)
