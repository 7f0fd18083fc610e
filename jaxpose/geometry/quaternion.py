"""Unit quaternions ``(w, x, y, z)`` (scalar first), VideoPose3D conventions."""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


@jax.jit
def qrot(q: Array, v: Array) -> Array:
  """Rotates vectors ``v`` by unit quaternions ``q``.

  Uses ``v' = v + 2 * (w * (u x v) + u x (u x v))`` with ``u = (x, y, z)``, which
  equals ``q v q^-1`` for a unit quaternion.

  Args:
    q: ``[..., 4]`` unit quaternions ``(w, x, y, z)``.
    v: ``[..., 3]`` vectors; leading dimensions broadcast against those of ``q``.

  Returns:
    ``[..., 3]`` rotated vectors (broadcast leading shape).
  """
  q = jnp.asarray(q)
  v = jnp.asarray(v)
  if q.shape[-1:] != (4,):
    raise ValueError(f"qrot: q must be [..., 4] quaternions (w, x, y, z), got {q.shape}")
  if v.shape[-1:] != (3,):
    raise ValueError(f"qrot: v must be [..., 3] vectors, got {v.shape}")
  u = q[..., 1:]
  uv = jnp.cross(u, v)
  uuv = jnp.cross(u, uv)
  return v + 2 * (q[..., :1] * uv + uuv)


@jax.jit
def qinverse(q: Array) -> Array:
  """Inverse of unit quaternions (the conjugate ``(w, -x, -y, -z)``); ``[..., 4]``."""
  q = jnp.asarray(q)
  if q.shape[-1:] != (4,):
    raise ValueError(f"qinverse: q must be [..., 4] quaternions (w, x, y, z), got {q.shape}")
  return jnp.concatenate([q[..., :1], -q[..., 1:]], axis=-1)
