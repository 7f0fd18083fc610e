"""The host allocator policy (``jaxpose.host_memory``)."""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jaxpose import host_memory

REPO = Path(__file__).resolve().parents[1]

needs_glibc = pytest.mark.skipif(host_memory._glibc() is None, reason="glibc's mallopt only")


def test_runs_on_cpu_reads_the_platform_setting_then_the_installed_plugins(monkeypatch):
  assert host_memory.runs_on_cpu("cpu", environ={})
  assert not host_memory.runs_on_cpu("cuda", environ={})
  assert host_memory.runs_on_cpu(None, environ={"JAX_PLATFORMS": "cpu"})
  assert not host_memory.runs_on_cpu(None, environ={"JAX_PLATFORMS": "tpu,cpu"})

  installed = set()

  def distribution(name):
    if name not in installed:
      raise importlib.metadata.PackageNotFoundError(name)
    return object()

  monkeypatch.setattr(importlib.metadata, "distribution", distribution)
  assert host_memory.runs_on_cpu(None, environ={})
  installed.add("jax-cuda12-plugin")
  assert not host_memory.runs_on_cpu(None, environ={})
  assert host_memory.runs_on_cpu("cpu", environ={})  # an explicit choice wins


# A fresh process: the policy (or not) before JAX starts, then a jitted function that, like
# a train step, needs ~100 MB of temporary buffers; its result must not change.
_RUN = textwrap.dedent("""
    import json, sys
    from jaxpose import host_memory
    applied = host_memory.configure()
    if sys.argv[1:] == ["configure_only"]:
      print(json.dumps({"applied": applied})); sys.exit()
    import jax, jax.numpy as jnp
    x = jnp.linspace(0.0, 1.0, 8 << 20, dtype=jnp.float32)
    f = jax.jit(lambda x: jnp.cumsum(x * 2.0)[::1 << 20] + jnp.sum(jnp.sin(x)))
    print(json.dumps({"applied": applied, "out": [f(x).tolist() for _ in range(3)]}))
""")


def _run(*args, **env):
  out = subprocess.run([sys.executable, "-c", _RUN, *args], capture_output=True, text=True,
                       env={**os.environ, "XLA_FLAGS": "", **env}, check=True, timeout=300)
  return json.loads(out.stdout.strip().splitlines()[-1])


@needs_glibc
def test_the_policy_applies_on_cpu_only_and_can_be_opted_out_of():
  policy = _run(JAXPOSE_HOST_MALLOC="", JAX_PLATFORMS="cpu")
  default = _run(JAXPOSE_HOST_MALLOC="default", JAX_PLATFORMS="cpu")
  assert policy["applied"] and not default["applied"]
  assert policy["out"][0] == policy["out"][1] == policy["out"][2] == default["out"][0]
  # An accelerator platform leaves glibc's defaults (decided without starting JAX).
  assert not _run("configure_only", JAXPOSE_HOST_MALLOC="", JAX_PLATFORMS="cuda")["applied"]


# launch.py in a fresh process (absl's flags are global), its ``main`` replaced: which
# modes set the policy, and that JAX's backend has not started when they do (the arena
# limit would not bind its threads). The config file is parsed, so its imports have run.
_LAUNCH = textwrap.dedent("""
    import json, sys
    import launch
    from jax._src import xla_bridge
    from jaxpose import host_memory
    calls = []
    host_memory.configure = lambda *args: calls.append(xla_bridge.backends_are_initialized())
    launch.main = lambda argv: print(json.dumps({"configured": calls}))
    launch.run(["launch.py", "--config=configs/quickstart.py", "--workdir=unused"] + sys.argv[1:])
""")


@pytest.mark.parametrize("mode, configured", [("train", [False]), ("eval", [])])
def test_launch_sets_the_policy_for_training_only(mode, configured):
  out = subprocess.run([sys.executable, "-c", _LAUNCH, f"--mode={mode}"], capture_output=True,
                       text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                       check=True, timeout=300)
  assert json.loads(out.stdout.strip().splitlines()[-1]) == {"configured": configured}


def test_inference_entry_points_keep_glibcs_defaults(monkeypatch):
  """``jaxpose predict`` / ``export`` and the inference benchmark leave the policy off (it
  slows batch-32 inference); the training benchmarks set it."""
  from benchmarks import _timing
  from jaxpose import cli
  calls = []
  monkeypatch.setattr(host_memory, "configure", lambda *args: calls.append(args) or True)
  for command in cli.COMMANDS:
    with pytest.raises(SystemExit):
      cli.main([command, "--help"])
  assert calls == []
  parser = argparse.ArgumentParser()
  _timing.add_comparison_args(parser, rounds=1)
  _timing.parse_comparison_args(parser, [], training=False)
  assert calls == []
  _timing.parse_comparison_args(parser, [], training=True)
  assert calls == [(None,)]
