"""Checkers for the 2D pre/post-processing function fixtures.

``CHECKERS[name](fixture, arrays, case)`` runs jaxpose's function on the ``case{case}_*``
arguments of ``functions/<name>.npz`` and asserts every ``case{case}_*`` result array.
Fixtures are NCHW (the original layout); jaxpose is channels-last, so the checkers
transpose. An array a checker does not know fails the check (nothing goes unchecked).

Tolerances:

* exact: integer/selection results (argmax values, visibilities, weights, flips, the
  1/4-grid flip averages) and float32 arithmetic that jaxpose performs in the same order;
* ``n`` ulps of the operation's magnitude where the original's result depends on a
  library's summation order or transcendental implementation: OpenCV's affine solve and
  separable blur, BLAS dot products (float64), numpy's float32 ``exp``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxpose.codecs import heatmap as heatmap_codec
from jaxpose.codecs import mspn as mspn_codec
from jaxpose.data import targets, transforms

Checker = Callable[[dict, Mapping[str, np.ndarray], int], None]


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


class _Case:
  """The ``case{i}_*`` arrays of one case; tracks which results were asserted."""

  def __init__(self, fixture: dict, arrays: Mapping[str, np.ndarray], case: int,
               args: set[str], results: set[str]):
    prefix = f"case{case}_"
    self.name = f"{fixture.get('name', '?')}[case {case}]"
    self.values = {k[len(prefix):]: np.asarray(v) for k, v in arrays.items()
                   if k.startswith(prefix)}
    if not self.values:
      raise AssertionError(f"{self.name}: no arrays with prefix {prefix!r}")
    unknown = set(self.values) - args - results
    if unknown:
      raise AssertionError(
          f"{self.name}: arrays {sorted(unknown)} are neither known arguments {sorted(args)} "
          f"nor known results {sorted(results)}")
    self.results = {k for k in self.values if k in results}
    if not self.results:
      raise AssertionError(f"{self.name}: no result arrays to check")
    self.checked: set[str] = set()

  def arg(self, key: str, default=None):
    if key in self.values:
      return self.values[key]
    if default is None:
      raise AssertionError(f"{self.name}: missing argument array {key!r}")
    return default

  def scalar(self, key: str, default=None):
    value = self.arg(key, None if default is None else np.asarray(default))
    if value.size != 1:
      raise AssertionError(f"{self.name}: {key!r} must be a scalar, got shape {value.shape}")
    return value.reshape(()).item()

  def has(self, key: str) -> bool:
    return key in self.results

  def expect(self, key: str, got, *, ulps: float = 0, dtype=np.float64, magnitude=None) -> None:
    """Asserts result ``key``: exact, or within ``ulps`` of ``dtype`` times ``magnitude``."""
    if key not in self.results:
      return
    want = self.values[key]
    got = np.asarray(got)
    if got.shape != want.shape:
      raise AssertionError(f"{self.name}: {key} shape {got.shape} != reference {want.shape}")
    if ulps == 0:
      np.testing.assert_array_equal(got, want, err_msg=f"{self.name}: {key} (exact)")
    else:
      mag = np.abs(want) if magnitude is None else np.broadcast_to(magnitude, want.shape)
      tol = ulps * np.finfo(dtype).eps * mag
      err = np.abs(got.astype(np.float64) - want.astype(np.float64))
      bad = ~(err <= tol)
      if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{self.name}: {key} differs by more than {ulps} {np.dtype(dtype).name} ulps at "
            f"{bad.sum()} entries; first {i}: got {got[i]!r}, reference {want[i]!r}, "
            f"tolerance {tol[i]:.3g}")
    self.checked.add(key)

  def done(self) -> None:
    missed = self.results - self.checked
    if missed:
      raise AssertionError(f"{self.name}: results {sorted(missed)} were not checked")


def _affine_magnitude(points: np.ndarray, trans: np.ndarray) -> np.ndarray:
  """``|t0 x| + |t1 y| + |t2|`` per output coordinate: the scale of its rounding error."""
  points = np.asarray(points, np.float64)
  return np.abs(points) @ np.abs(trans[:, :2]).T + np.abs(trans[:, 2])


def _nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1))


def _nhwc_to_nchw(x) -> np.ndarray:
  return np.asarray(x).transpose(0, 3, 1, 2)


# ----------------------------------------------------------------------------------------
# checkers
# ----------------------------------------------------------------------------------------


def check_affine_transform(fixture: dict, arrays: Mapping[str, np.ndarray], case: int) -> None:
  """``get_affine_transform`` (both directions) and ``affine_transform`` of points."""
  c = _Case(fixture, arrays, case,
            args={"center", "scale", "rot", "output_size", "shift", "points"},
            results={"trans", "trans_inv", "points_fwd", "points_fwd_then_inv"})
  center, scale = c.arg("center"), c.arg("scale")
  rot, size = c.scalar("rot"), c.arg("output_size")
  shift = c.arg("shift", np.zeros(2, np.float32))
  trans = transforms.get_affine_transform(center, scale, rot, size, shift=shift, inv=False)
  trans_inv = transforms.get_affine_transform(center, scale, rot, size, shift=shift, inv=True)
  # OpenCV solves a float64 linear system from the same float32 points.
  c.expect("trans", trans, ulps=8, magnitude=np.abs(trans).max(axis=1, keepdims=True))
  c.expect("trans_inv", trans_inv, ulps=8,
           magnitude=np.abs(trans_inv).max(axis=1, keepdims=True))
  if c.has("points_fwd") or c.has("points_fwd_then_inv"):
    points = c.arg("points")
    fwd = transforms.affine_transform_points(points, trans)
    # The original's np.dot may sum the three terms in another order (BLAS).
    c.expect("points_fwd", fwd, ulps=4, magnitude=_affine_magnitude(points, trans))
    if c.has("points_fwd_then_inv"):
      q = c.values.get("points_fwd", fwd)
      back = transforms.affine_transform_points(q, trans_inv)
      c.expect("points_fwd_then_inv", back, ulps=4, magnitude=_affine_magnitude(q, trans_inv))
  c.done()


def check_generate_target(fixture: dict, arrays: Mapping[str, np.ndarray], case: int) -> None:
  """HRNet ``JointsDataset.generate_target``: Gaussian targets and target weights."""
  c = _Case(fixture, arrays, case,
            args={"joints", "joints_vis", "image_size", "heatmap_size", "sigma",
                  "use_different_joints_weight", "joints_weight"},
            results={"target", "target_weight"})
  joints_weight = None
  if c.scalar("use_different_joints_weight", 0):
    joints_weight = c.arg("joints_weight")
  target, weight = targets.gaussian_targets(
      c.arg("joints"), c.arg("joints_vis"), c.arg("image_size"), c.arg("heatmap_size"),
      sigma=c.scalar("sigma"), joints_weight=joints_weight)
  got = target.transpose(2, 0, 1)
  if c.has("target"):
    want = c.values["target"]
    # Where the Gaussian is pasted is integer logic: the zero pattern must match exactly.
    np.testing.assert_array_equal(got == 0, want == 0, err_msg=f"{c.name}: target support")
  # Values come from numpy's float32 exp (implementation-dependent in the last ulp).
  c.expect("target", got, ulps=2, dtype=np.float32)
  c.expect("target_weight", weight)
  c.done()


def check_get_final_preds(fixture: dict, arrays: Mapping[str, np.ndarray], case: int) -> None:
  """HRNet ``get_final_preds``: argmax, quarter-pixel step, back-projection."""
  c = _Case(fixture, arrays, case,
            args={"batch_heatmaps", "center", "scale"}, results={"preds", "maxvals"})
  post_process = bool(fixture.get("config", {}).get("TEST.POST_PROCESS", True))
  heatmaps = _nchw_to_nhwc(c.arg("batch_heatmaps"))
  center, scale = c.arg("center"), c.arg("scale")
  preds, maxvals = heatmap_codec.get_final_preds(heatmaps, center, scale,
                                                 post_process=post_process)
  c.expect("maxvals", maxvals)
  # A float64 affine map (BLAS summation order) rounded to float32: one float32 ulp of
  # its terms, |x * s| + |center - box / 2| <= |pred| + |center| + box.
  box = np.asarray(scale, np.float64)[:, None, :1] * 200
  mag = np.abs(preds) + np.abs(np.asarray(center, np.float64))[:, None, :] + box
  c.expect("preds", preds, ulps=1, dtype=np.float32, magnitude=mag)
  c.done()


def check_flip_back(fixture: dict, arrays: Mapping[str, np.ndarray], case: int) -> None:
  """``flip_back`` and the flip-test average (numpy and the jitted jnp version)."""
  c = _Case(fixture, arrays, case,
            args={"output", "output_flipped", "matched_parts", "shift_heatmap"},
            results={"flipped_back", "averaged"})
  pairs = [tuple(int(v) for v in p) for p in np.asarray(c.arg("matched_parts")).reshape(-1, 2)]
  shift = bool(c.scalar("shift_heatmap", 1))
  flipped = _nchw_to_nhwc(c.arg("output_flipped"))
  back = heatmap_codec.flip_back(flipped, pairs)
  back_jax = jax.jit(lambda x: heatmap_codec.flip_back_jax(x, pairs))(jnp.asarray(flipped))
  c.expect("flipped_back", _nhwc_to_nchw(back))
  c.expect("flipped_back", _nhwc_to_nchw(back_jax))
  if c.has("averaged"):
    output = _nchw_to_nhwc(c.arg("output"))
    avg = heatmap_codec.flip_test_average(output, flipped, pairs, shift_heatmap=shift)
    avg_jax = jax.jit(lambda a, b: heatmap_codec.flip_test_average_jax(
        a, b, pairs, shift_heatmap=shift))(jnp.asarray(output), jnp.asarray(flipped))
    c.expect("averaged", _nhwc_to_nchw(avg))
    c.expect("averaged", _nhwc_to_nchw(avg_jax))
  c.done()


def check_mspn_generate_target(fixture: dict, arrays: Mapping[str, np.ndarray],
                               case: int) -> None:
  """MSPN ``generate_heatmap`` for every kernel after the in-crop visibility rule."""
  c = _Case(fixture, arrays, case,
            args={"joints", "joints_vis", "input_shape", "output_shape", "kernels"},
            results={"valid", "labels"})
  kernels = [tuple(int(v) for v in np.atleast_1d(k)) for k in c.arg("kernels")]
  kernels = [k * 2 if len(k) == 1 else k for k in kernels]
  labels, valid = targets.mspn_targets(c.arg("joints"), c.arg("joints_vis"),
                                       c.arg("input_shape"), c.arg("output_shape"), kernels)
  c.expect("valid", valid)
  got = labels.transpose(0, 3, 1, 2)
  if c.has("labels"):
    want = c.values["labels"]
    # The pasted pixel and the kernel support are integer logic.
    np.testing.assert_array_equal(got == 0, want == 0, err_msg=f"{c.name}: labels support")
  # OpenCV's float32 separable blur may accumulate in another order: ulps of the peak 255.
  c.expect("labels", got, ulps=4, dtype=np.float32, magnitude=255.0)
  c.done()


def check_mspn_decode(fixture: dict, arrays: Mapping[str, np.ndarray], case: int) -> None:
  """MSPN ``get_results``: blur, step toward the second maximum, score, back-projection."""
  c = _Case(fixture, arrays, case,
            args={"outputs", "centers", "scales", "kernel", "shifts", "num_keypoints",
                  "input_shape", "output_shape"},
            results={"preds", "maxvals"})
  heatmaps = _nchw_to_nhwc(c.arg("outputs"))
  n, h, w, k = heatmaps.shape
  if "output_shape" in c.values:
    assert tuple(c.arg("output_shape")) == (h, w), f"{c.name}: output_shape != heatmap size"
  if "num_keypoints" in c.values:
    assert c.scalar("num_keypoints") == k, f"{c.name}: num_keypoints != heatmap channels"
  centers, scales = c.arg("centers"), c.arg("scales")
  input_shape = c.arg("input_shape")
  shifts = [float(s) for s in np.atleast_1d(c.arg("shifts", np.array([0.25])))]
  preds, maxvals = mspn_codec.decode(heatmaps, centers, scales, input_shape,
                                     kernel=int(c.scalar("kernel", 11)), shifts=shifts)
  c.expect("maxvals", maxvals)
  # Elementwise float64 in the original's order; allow 4 ulps of the terms.
  box = np.asarray(scales, np.float64) * 200
  mag = (np.abs(preds) + np.abs(np.asarray(centers, np.float64))[:, None, :]
         + 2 * box[:, None, :])
  c.expect("preds", preds, ulps=4, magnitude=mag)
  c.done()


CHECKERS: dict[str, Checker] = {
    "hrnet_get_affine_transform": check_affine_transform,
    "hrnet_generate_target": check_generate_target,
    "hrnet_get_final_preds": check_get_final_preds,
    "hrnet_flip_back": check_flip_back,
    "mspn_generate_target": check_mspn_generate_target,
    "mspn_decode": check_mspn_decode,
}
