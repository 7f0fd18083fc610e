"""Camera transforms and projection in VideoPose3D's conventions (Human3.6M cameras).

Units and frames:

* world and camera points are ``[..., 3]`` in meters (Human3.6M millimeters / 1000);
* a camera's extrinsics are its orientation ``R`` as a unit quaternion ``(w, x, y, z)``
  rotating camera axes into the world and its position ``t`` in world coordinates, so
  ``X_cam = R^-1 (X_world - t)`` and ``X_world = R X_cam + t``;
* 2D points are in *normalised screen coordinates*: pixel ``[0, res_w]`` maps to
  ``[-1, 1]`` horizontally, keeping the aspect ratio (``v`` in ``[-h/w, h/w]``);
* intrinsics are a 9-vector ``(fx, fy, cx, cy, k1, k2, k3, p1, p2)``: focal lengths
  ``f_pixels / res_w * 2`` and the principal point in normalised screen coordinates,
  radial distortion ``k1..k3`` and tangential distortion ``p1, p2``
  (see ``intrinsic_vector``).

``normalize_screen_coordinates`` and ``image_coordinates`` accept numpy arrays (host-side
data pipeline; numpy result) or JAX arrays (jnp result); both keep the input's float dtype.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxpose.geometry.quaternion import qinverse, qrot

Array = jax.Array


def _xp(x):
  return np if isinstance(x, (np.ndarray, np.generic)) else jnp


def _check_points(x, last: int, what: str) -> None:
  if x.shape[-1:] != (last,):
    raise ValueError(f"{what}: expected [..., {last}] points, got shape {tuple(x.shape)}")


def _float_dtype(x):
  return x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32


def normalize_screen_coordinates(x, w: float, h: float):
  """Pixels to normalised screen coordinates: ``x / w * 2 - (1, h / w)``.

  Args:
    x: ``[..., 2]`` pixel coordinates ``(u, v)`` (numpy or JAX array).
    w: image width in pixels.
    h: image height in pixels.

  Returns:
    ``[..., 2]`` with ``[0, w]`` mapped to ``[-1, 1]`` and ``v`` scaled alike; the float
    dtype of ``x`` (float32 for integer input), numpy for numpy input.
  """
  xp = _xp(x)
  x = xp.asarray(x)
  w, h = float(w), float(h)  # Python scalars keep the dtype of x
  _check_points(x, 2, "normalize_screen_coordinates")
  dtype = _float_dtype(x)
  x = x.astype(dtype)
  offset = xp.asarray([1.0, h / w], dtype=dtype)
  return x / w * 2 - offset


def image_coordinates(x, w: float, h: float):
  """Normalised screen coordinates back to pixels: ``(x + (1, h / w)) * w / 2``.

  Args:
    x: ``[..., 2]`` normalised screen coordinates (numpy or JAX array).
    w: image width in pixels.
    h: image height in pixels.

  Returns:
    ``[..., 2]`` pixel coordinates, float dtype of ``x``; numpy for numpy input.
  """
  xp = _xp(x)
  x = xp.asarray(x)
  w, h = float(w), float(h)  # Python scalars keep the dtype of x
  _check_points(x, 2, "image_coordinates")
  dtype = _float_dtype(x)
  x = x.astype(dtype)
  offset = xp.asarray([1.0, h / w], dtype=dtype)
  return (x + offset) * w / 2


@jax.jit
def world_to_camera(x: Array, r: Array, t: Array) -> Array:
  """World points to camera coordinates: ``qrot(qinverse(R), X - t)``.

  Args:
    x: ``[..., 3]`` world points (meters).
    r: ``[4]`` (or ``[..., 4]``, broadcasting) camera orientation quaternion ``(w, x, y, z)``.
    t: ``[3]`` (or broadcasting) camera position in world coordinates (meters).

  Returns:
    ``[..., 3]`` camera-space points.
  """
  x = jnp.asarray(x)
  _check_points(x, 3, "world_to_camera")
  return qrot(qinverse(r), x - jnp.asarray(t))


@jax.jit
def camera_to_world(x: Array, r: Array, t: Array) -> Array:
  """Camera points to world coordinates: ``qrot(R, X) + t`` (inverse of ``world_to_camera``).

  Args:
    x: ``[..., 3]`` camera-space points (meters).
    r: ``[4]`` (or broadcasting) camera orientation quaternion ``(w, x, y, z)``.
    t: ``[3]`` (or broadcasting) camera position (meters).

  Returns:
    ``[..., 3]`` world points.
  """
  x = jnp.asarray(x)
  _check_points(x, 3, "camera_to_world")
  return qrot(r, x) + jnp.asarray(t)


def _per_point_intrinsics(x: Array, camera_params: Array, what: str) -> Array:
  """Checks shapes and reshapes ``[N, 9]`` intrinsics to broadcast against ``[N, ..., 3]``."""
  _check_points(x, 3, what)
  camera_params = jnp.asarray(camera_params)
  if camera_params.shape == (9,):
    return camera_params
  if camera_params.ndim != 2 or camera_params.shape[-1] != 9:
    raise ValueError(f"{what}: camera_params must be [N, 9] (or [9]), got {camera_params.shape}")
  if x.ndim < 2 or camera_params.shape[0] != x.shape[0]:
    raise ValueError(
        f"{what}: camera_params {camera_params.shape} must have one row per leading entry "
        f"of the points {x.shape}")
  return camera_params.reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (9,))


def _clamped_ratio(x: Array) -> Array:
  return jnp.clip(x[..., :2] / x[..., 2:], -1, 1)


@jax.jit
def project_to_2d(x: Array, camera_params: Array) -> Array:
  """Projects camera-space points with the Human3.6M camera model (with distortion).

  With ``m = clip((X/Z, Y/Z), -1, 1)`` and ``r2 = |m|^2``::

    radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3
    tan = p1 m_x + p2 m_y
    out = f * (m * (radial + tan) + (p1, p2) * r2) + c

  Args:
    x: ``[N, ..., 3]`` points in camera space (meters, ``Z > 0`` in front).
    camera_params: ``[N, 9]`` intrinsics ``(f, c, k, p)`` per leading entry (or ``[9]``
      for all points), normalised as ``intrinsic_vector`` builds them.

  Returns:
    ``[N, ..., 2]`` in normalised screen coordinates.
  """
  x = jnp.asarray(x)
  params = _per_point_intrinsics(x, camera_params, "project_to_2d")
  f = params[..., 0:2]
  c = params[..., 2:4]
  k = params[..., 4:7]
  p = params[..., 7:9]
  m = _clamped_ratio(x)
  r2 = jnp.sum(m * m, axis=-1, keepdims=True)
  powers = jnp.concatenate([r2, r2**2, r2**3], axis=-1)
  radial = 1 + jnp.sum(k * powers, axis=-1, keepdims=True)
  tan = jnp.sum(p * m, axis=-1, keepdims=True)
  return f * (m * (radial + tan) + p * r2) + c


@jax.jit
def project_to_2d_linear(x: Array, camera_params: Array) -> Array:
  """Pinhole projection without distortion: ``f * clip((X/Z, Y/Z), -1, 1) + c``.

  Args:
    x: ``[N, ..., 3]`` points in camera space.
    camera_params: ``[N, 9]`` (or ``[9]``) intrinsics; only ``f`` and ``c`` are used.

  Returns:
    ``[N, ..., 2]`` normalised screen coordinates.
  """
  x = jnp.asarray(x)
  params = _per_point_intrinsics(x, camera_params, "project_to_2d_linear")
  return params[..., 0:2] * _clamped_ratio(x) + params[..., 2:4]


def intrinsic_vector(focal_length: Sequence[float], center: Sequence[float],
                     radial_distortion: Sequence[float],
                     tangential_distortion: Sequence[float], res_w: int,
                     res_h: int) -> np.ndarray:
  """Builds the normalised 9-vector of intrinsics exactly as ``Human36mDataset`` does.

  All values are first rounded to float32; the focal length becomes
  ``f / res_w * 2`` (float32 arithmetic), the centre ``c / res_w * 2 - (1, res_h / res_w)``
  (the subtraction in float64, as the original's list constant promotes, then float32).

  Args:
    focal_length: ``(fx, fy)`` in pixels.
    center: ``(cx, cy)`` principal point in pixels.
    radial_distortion: ``(k1, k2, k3)``.
    tangential_distortion: ``(p1, p2)``.
    res_w: image width in pixels.
    res_h: image height in pixels.

  Returns:
    ``[9]`` float32 ``(fx, fy, cx, cy, k1, k2, k3, p1, p2)``.
  """
  res_w, res_h = int(res_w), int(res_h)  # Python ints keep float32 arithmetic in float32
  parts = {
      "focal_length": (focal_length, 2), "center": (center, 2),
      "radial_distortion": (radial_distortion, 3),
      "tangential_distortion": (tangential_distortion, 2),
  }
  arrays = {}
  for name, (value, size) in parts.items():
    arr = np.asarray(value, dtype=np.float32)
    if arr.shape != (size,):
      raise ValueError(f"intrinsic_vector: {name} must have {size} values, got shape {arr.shape}")
    arrays[name] = arr
  scaled_center = arrays["center"] / res_w * 2  # float32
  center_n = (scaled_center - np.array([1.0, res_h / res_w])).astype(np.float32)
  focal_n = arrays["focal_length"] / res_w * 2
  return np.concatenate([focal_n, center_n, arrays["radial_distortion"],
                         arrays["tangential_distortion"]]).astype(np.float32)
