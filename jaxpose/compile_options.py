"""XLA compiler options of jaxpose's jitted steps (train step, evaluation, predict, lifting).

jaxlib 0.10's XLA:CPU hands convolutions, matmuls, elementwise chains and reductions to
YNNPACK fusions by default (``xla_cpu_experimental_ynn_fusion_type``). For jaxpose's
workloads XLA's own convolution and dot emitters are as fast or faster, while XLA's own
reductions are not: its tree-reduction rewrite turns every large reduction (BatchNorm's
statistics and their gradients) into a ``reduce-window`` that its loop emitter runs at
~8 ns per element. So on CPUs every jitted step is compiled with YNNPACK fusing the
reductions only (an option of that one compilation: other JAX code in the process is
untouched). Measured on a 2-core AMD EPYC, the same function compiled each way in one
process (alternating calls, medians):

* float32 inference (items/s, prepared path), all YNNPACK fusions -> none: SimpleBaseline-50
  b1 6.6 -> 8.1, b32 8.5 -> 12.6; HRNet-w32 b1 4.7 -> 5.7, b32 6.5 -> 7.7; MSPN-2 b1 3.6 ->
  4.3, b32 4.1 -> 4.4; VideoPose3D-243 b1 95 -> 149, b32 392 -> 408. bfloat16 at b32:
  SimpleBaseline-50 7.5 -> 11.2, HRNet-w32 4.9 -> 7.8. YNNPACK reductions on top: within
  3% (inference folds BatchNorm away; few large reductions are left).
* train step, batch 4 (ms), all YNNPACK fusions / none / reductions only:
  SimpleBaseline-50 1083 / 1272 / 950 (the reduce-windows alone were 25% of its op time),
  HRNet-w32 - / 1585 / 1507, the quickstart model (batch 16) - / 138 / 102, VideoPose3D
  (81 frames, 256 windows) - / 579 / 484. Letting YNNPACK also take the dots, or the
  elementwise fusions, gained nothing for SimpleBaseline-50 (850-1070 ms); its
  convolutions cost 20% (1039 ms).

A computation in bfloat16 (``for_platform(platform, "bfloat16")``) also gives YNNPACK its
dots (``NARROW_CPU_OPTIONS``): XLA's dot emitter has no bfloat16 kernel and widens both
operands to float32 on every call, which made a prepared bfloat16 VideoPose3D-243 5x slower
than float32 at batch 1 (see ``models.inference.store_in_compute_dtype``); for float32 the
dots in YNNPACK measured 0.92-1.05x (items/s, four models at batch 1 and 32), so float32
keeps the reductions-only options.

Outputs agree within float rounding (relative 2e-6 in float32; bfloat16's distance to
float32 unchanged). ``benchmarks/inference.py --compare_xla_default`` and
``benchmarks/train_step.py --xla_default`` rerun the comparison.

A user's own ``XLA_FLAGS`` setting of the same option wins (nothing is overridden), and a
jaxlib that no longer knows the option gets XLA's defaults with one warning.
"""
from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

YNN_FUSION_TYPE = "xla_cpu_experimental_ynn_fusion_type"
# YNNPACK fuses the reductions only: convolutions and dots go to XLA's own emitters.
CPU_OPTIONS = {YNN_FUSION_TYPE: "LIBRARY_FUSION_TYPE_REDUCE"}
# Computations in a narrower float dtype (bfloat16) also give YNNPACK their dots: XLA's own
# dot emitter has no bfloat16 kernel and widens both operands to float32 on every call.
NARROW_CPU_OPTIONS = {
    YNN_FUSION_TYPE: "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def is_narrow(dtype: Any) -> bool:
  """Whether ``dtype`` is a float narrower than float32 (bfloat16, float16)."""
  return (dtype is not None and jnp.issubdtype(dtype, jnp.floating)
          and jnp.finfo(dtype).bits < 32)


def for_platform(platform: str, compute_dtype: Any = None) -> dict[str, str]:
  """Compiler options for a jaxpose step compiled for ``platform`` (``"cpu"``, ``"gpu"``,
  ...) computing in ``compute_dtype`` (None: float32): on CPUs where this jaxlib accepts
  them ``CPU_OPTIONS``, or ``NARROW_CPU_OPTIONS`` for a bfloat16 computation; else ``{}``."""
  if platform != "cpu":
    return {}
  user_flags = os.environ.get("XLA_FLAGS", "")
  options = _supported_cpu_options(is_narrow(compute_dtype))
  return {k: v for k, v in options.items() if k not in user_flags}


@functools.cache
def _supported_cpu_options(narrow: bool = False) -> dict[str, str]:
  """``CPU_OPTIONS`` (``NARROW_CPU_OPTIONS`` if ``narrow``) if this jaxlib's XLA:CPU accepts
  them (one tiny compile), else ``{}``."""
  options = NARROW_CPU_OPTIONS if narrow else CPU_OPTIONS
  probe = jax.device_put(np.zeros((1,), np.float32), jax.devices("cpu")[0])
  try:
    jax.jit(lambda x: x + 1, compiler_options=options).lower(probe).compile()
  except Exception as e:  # pylint: disable=broad-except  (XLA raises JaxRuntimeError)
    warnings.warn(f"jaxpose: this jaxlib's XLA:CPU rejects the compiler options {options} "
                  f"({str(e).splitlines()[0]}); compiling with XLA's defaults (slower "
                  "convolutions on CPUs)", RuntimeWarning, stacklevel=2)
    return {}
  return dict(options)


def narrowest_float(tree: Any) -> Any:
  """The narrowest float dtype among the arrays of ``tree`` (None if it holds no float)."""
  # The distinct dtypes first: called on every ``jit`` call with a whole model state (an
  # issubdtype per leaf took 3.5 ms for HRNet-w32's 1462 leaves, now 0.5 ms).
  distinct = {getattr(leaf, "dtype", None) for leaf in jax.tree_util.tree_leaves(tree)}
  dtypes = [jnp.dtype(d) for d in distinct
            if d is not None and jnp.issubdtype(d, jnp.floating)]
  return min(dtypes, key=lambda d: jnp.finfo(d).bits, default=None)


def jit(fun: Callable, *, platform: str | None = None, **jit_kwargs: Any) -> Callable:
  """``jax.jit(fun, compiler_options=for_platform(platform, dtype), **jit_kwargs)``, built
  at the first call (``platform`` defaults to ``jax.default_backend()`` then), so that it
  can decorate module-level functions without compiling anything at import.

  ``dtype`` is the narrowest float dtype among the call's arguments: a prepared bfloat16
  model's state holds its parameters in bfloat16 (``models.inference.prepare_for_inference``),
  so its calls compile with ``NARROW_CPU_OPTIONS``.
  """
  jitted: dict[bool, Callable] = {}

  @functools.wraps(fun)
  def call(*args, **kwargs):
    narrow = is_narrow(narrowest_float((args, kwargs)))
    if narrow not in jitted:
      options = for_platform(platform or jax.default_backend(), "bfloat16" if narrow else None)
      jitted[narrow] = jax.jit(fun, compiler_options=options, **jit_kwargs)
    return jitted[narrow](*args, **kwargs)

  return call
