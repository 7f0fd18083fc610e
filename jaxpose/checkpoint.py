"""The one place that talks to Orbax.

Model variables are stored as a pure pytree ``{"params": ..., "batch_stats": ...}``
(nested dicts mirroring the NNX module tree). Orbax writes into a temporary directory
and renames it on success, so an interrupted save never leaves a half-written checkpoint.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

VARIABLE_COLLECTIONS = {"params": nnx.Param, "batch_stats": nnx.BatchStat}


def model_variables(model: nnx.Module) -> dict[str, Any]:
  """``{"params": pure dict, "batch_stats": pure dict}`` of ``model``'s variables."""
  return {name: nnx.to_pure_dict(nnx.state(model, kind))
          for name, kind in VARIABLE_COLLECTIONS.items()}


def set_model_variables(model: nnx.Module, variables: dict[str, Any]) -> None:
  """Writes a ``model_variables``-style pytree back into ``model`` (in place)."""
  for name, kind in VARIABLE_COLLECTIONS.items():
    state = nnx.state(model, kind)
    nnx.replace_by_pure_dict(state, variables.get(name, {}))
    nnx.update(model, state)


def save_variables(path: str | os.PathLike, variables: dict[str, Any]) -> None:
  """Saves a pytree of arrays to ``path`` (a new directory), atomically."""
  path = os.path.abspath(os.fspath(path))
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, jax.tree_util.tree_map(np.asarray, variables))
    checkpointer.wait_until_finished()


def restore_variables(path: str | os.PathLike, model: nnx.Module) -> None:
  """Restores variables saved by ``save_variables`` into ``model`` (shapes must match).

  Raises:
    ValueError: the checkpoint does not exist or does not fit the model's variables.
  """
  path = os.path.abspath(os.fspath(path))
  if not os.path.isdir(path):
    raise ValueError(f"{path}: no Orbax checkpoint directory here")
  target = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), model_variables(model))
  with ocp.StandardCheckpointer() as checkpointer:
    try:
      restored = checkpointer.restore(path, target)
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{path}: checkpoint does not match the model's variables: {e}") from e
  set_model_variables(model, restored)
