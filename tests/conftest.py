"""Session-wide test settings.

One persistent XLA compilation cache per test session. Many tests compile the same programs
(the quickstart's train and predict steps in every training, resume and multi-process test;
the same fixture model through several entry points), each in a new ``jax.jit`` or a new
process. With the cache every distinct program is compiled once per session, by whichever
test needs it first; the rest load it (the cache key is the program, the compile options and
the devices, so a hit is the same executable). The folder is created by the controlling
pytest process before any worker starts, passed on in the environment (to xdist workers
and to the ``launch.py`` processes tests start) and removed at the end. Programs that
compile in 0.1 s or more are kept (JAX's default keeps those over 1 s): a fresh process
spends ~12 s compiling the ~50 random-initialiser shapes of an HRNet at 0.25 s each, which
every test that starts ``launch.py`` or builds a model in a subprocess would pay again.

``JAX_COMPILATION_CACHE_DIR`` set by the user wins (with the user's own size threshold,
and is left alone at the end);
``JAXPOSE_TEST_COMPILATION_CACHE=0`` turns the cache off.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_OWNED = "_JAXPOSE_TEST_OWNS_COMPILATION_CACHE"
_MIN_TIME_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


def pytest_configure(config: pytest.Config) -> None:
  if os.environ.get("JAXPOSE_TEST_COMPILATION_CACHE", "1") == "0":
    return
  if not hasattr(config, "workerinput") and not os.environ.get(_CACHE_ENV):
    os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="jaxpose-test-xla-cache-")
    os.environ[_OWNED] = "1"
    os.environ.setdefault(_MIN_TIME_ENV, "0.1")  # not in a cache the user gave
  if "jax" in sys.modules and os.environ.get(_CACHE_ENV):  # JAX imported before this ran
    jax_config = sys.modules["jax"].config
    jax_config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    if _MIN_TIME_ENV in os.environ:
      jax_config.update("jax_persistent_cache_min_compile_time_secs",
                        float(os.environ[_MIN_TIME_ENV]))


def pytest_unconfigure(config: pytest.Config) -> None:
  if not hasattr(config, "workerinput") and os.environ.pop(_OWNED, None):
    shutil.rmtree(os.environ.pop(_CACHE_ENV), ignore_errors=True)
