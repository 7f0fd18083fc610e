"""Several processes: start-up settings, and the quickstart on two processes vs one."""
from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxpose.train import multihost
from tests import processes

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------
# Start-up settings: flags, then JAX_* variables, then auto-detection
# ----------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
               "JAX_LOCAL_DEVICE_IDS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
               "MEGASCALE_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(name, raising=False)
  return monkeypatch


def test_cluster_settings_come_from_flags_then_environment(clean_env):
  assert multihost.cluster_from() == multihost.Cluster()
  clean_env.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  clean_env.setenv("JAX_NUM_PROCESSES", "4")
  clean_env.setenv("JAX_PROCESS_ID", "3")
  clean_env.setenv("JAX_LOCAL_DEVICE_IDS", "0,1")
  assert multihost.cluster_from() == multihost.Cluster("10.0.0.1:1234", 4, 3, (0, 1))
  assert multihost.cluster_from("127.0.0.1:99", 2, 0, "5") == multihost.Cluster(
      "127.0.0.1:99", 2, 0, (5,))


def test_incomplete_cluster_settings_are_one_line_errors(clean_env):
  clean_env.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")  # what jax 0.10 alone reads
  with pytest.raises(ValueError, match=r"missing: process count \(--num_processes / "
                                       r"\$JAX_NUM_PROCESSES\); process id"):
    multihost.cluster_from()
  with pytest.raises(ValueError, match="0 <= process id < process count"):
    multihost.cluster_from(num_processes=2, process_id=2)
  with pytest.raises(ValueError, match=r"\$JAX_NUM_PROCESSES='two': must be an integer"):
    clean_env.setenv("JAX_NUM_PROCESSES", "two")
    multihost.cluster_from()
  clean_env.setenv("SLURM_NTASKS", "2")  # there JAX fills in the rest itself
  clean_env.delenv("JAX_NUM_PROCESSES")
  assert multihost.cluster_from().coordinator_address == "10.0.0.1:1234"


def test_a_single_process_initializes_nothing(clean_env):
  assert not multihost.initialize_distributed(multihost.Cluster())
  assert not multihost.initialize_distributed(multihost.Cluster("127.0.0.1:1", 1, 0))
  assert not jax.distributed.is_initialized()


# ----------------------------------------------------------------------------------------
# The quickstart on two processes (2 CPU devices each) against one process
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
  from jaxpose.data import builders
  path = tmp_path_factory.mktemp("tfds")
  builders.build_dataset("synthetic_people", path, config="tiny")
  return str(path)


QUICKSTART = "configs/quickstart.py:size=64x64,builder=tiny,batch=4"
OVERRIDES = ("--config.train.eval_every_epochs=1", "--config.train.log_every_steps=1",
             "--config.train.num_summary_images=1", "--config.eval.batch_size=4",
             "--config.eval.flip_test=False", "--config.train.dtype=float64")
ENV = {"XLA_FLAGS": "", "JAX_ENABLE_X64": "1"}  # float64 compute: see the test


def _flags(data_dir: str, workdir: Path, total_steps: int) -> list[str]:
  """The tiny quickstart: 11 training persons, global batch 4 -> 2 steps per epoch,
  evaluation (6 persons) after every epoch and at the end; float64 compute."""
  return ["launch.py", f"--config={QUICKSTART}", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}", f"--config.train.total_steps={total_steps}",
          *OVERRIDES]


def _config(data_dir: str):
  from configs import quickstart
  config = quickstart.get_config(QUICKSTART.partition(":")[2])
  config.data.data_dir = data_dir
  config.eval.flip_test = False
  config.train.dtype = "float64"
  return config


def _launch_two(data_dir: str, workdir: Path, total_steps: int, logs: Path) -> list[str]:
  address = f"127.0.0.1:{processes.free_port()}"
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_NUM_CPU_DEVICES="2", **ENV)
  return processes.run_together(
      [[sys.executable, *_flags(data_dir, workdir, total_steps),
        f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}"]
       for i in range(2)], cwd=REPO, env=env, log_dir=logs, timeout_s=900)


def _eval_scalars(workdir: Path) -> dict[int, dict[str, float]]:
  import tensorflow as tf
  out: dict[int, dict[str, float]] = {}
  for path in sorted(glob.glob(str(workdir / "tensorboard" / "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        if v.tag.startswith("eval/"):
          out.setdefault(int(event.step), {})[v.tag[5:]] = float(tf.make_ndarray(v.tensor))
  return out


def _final_state(workdir: Path, config):
  from jaxpose import checkpoint as ckpt_lib
  from jaxpose.train import state as state_lib, tasks
  task = tasks.make_task(config)
  model = task.init_model()
  _, _, params, batch_stats = state_lib.split_model(model)
  tx, _ = task.optimizer(model, tasks.base.Schedule(1, 1))
  initial = state_lib.init_train_state(params, batch_stats, tx, 0)
  checkpointer = ckpt_lib.TrainCheckpointer(workdir)
  try:
    return initial, checkpointer.restore(initial)
  finally:
    checkpointer.close()


def _keypoints(workdir: Path) -> np.ndarray:
  """The last evaluation's keypoints (COCO results file), in annotation order."""
  path = max(glob.glob(str(workdir / "results" / "*.json")), key=os.path.getmtime)
  rows = json.loads(Path(path).read_text())
  rows.sort(key=lambda r: (r["image_id"], r["keypoints"][0], r["keypoints"][1]))
  return np.asarray([r["keypoints"] for r in rows], np.float64)


@pytest.mark.slow  # three launches of the quickstart: a few minutes on a busy 2-core CPU
def test_two_processes_train_like_one(data_dir, tmp_path):
  """Two processes (gloo collectives, 2 CPU devices each, started with launch.py's
  flags): two evaluations, a best checkpoint, a resume and a third evaluation -- the same
  metrics, predictions and parameters as one process training straight through.

  Why float64 compute (parameters stay float32): each host reads every other sample of
  the global stream (``pipeline.train_iterator``), so a global batch holds the same 4
  persons in the order (0, 2, 1, 3) instead of (0, 1, 2, 3), on 4 devices instead of 1,
  and the loss mean, the BatchNorm statistics and the gradient all-reduce sum in another
  order. In float32 this freshly initialised HRNet amplifies that rounding: merely
  permuting the rows of each batch on one device moves the parameters after 5 steps by up
  to 9% of what training moved them (measured), and its nearly flat heatmaps (top-2 gaps
  of 4e-10) flip arg-maxes. In float64 the same permutations change nothing measurable
  (the float32 gradients come out identical), so the two runs must agree tightly.
  """
  one, two = tmp_path / "one", tmp_path / "two"
  processes.run_together([[sys.executable, *_flags(data_dir, one, 5)]], cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=str(REPO), **ENV),
                         log_dir=tmp_path / "logs_one", timeout_s=900)
  _launch_two(data_dir, two, 4, tmp_path / "logs_two")  # evaluations at steps 2 and 4
  assert os.listdir(two / "best") and (two / "final_metrics.json").exists()
  logs = _launch_two(data_dir, two, 5, tmp_path / "logs_resume")  # resumes from step 4
  assert "resumed from step 4" in logs[0] + logs[1]

  evals_one, evals_two = _eval_scalars(one), _eval_scalars(two)
  assert sorted(evals_one) == sorted(evals_two) == [2, 4, 5]
  for step in (2, 4, 5):
    assert evals_two[step] == pytest.approx(evals_one[step], abs=1e-6), step
  final = [json.loads((d / "final_metrics.json").read_text()) for d in (one, two)]
  assert final[0]["step"] == final[1]["step"] == 5
  assert final[1]["metrics"] == pytest.approx(final[0]["metrics"], abs=1e-6)
  np.testing.assert_allclose(_keypoints(two), _keypoints(one), atol=1e-3)  # all 6 persons
  assert os.listdir(one / "best") == os.listdir(two / "best")

  initial, (a, data_a, _) = _final_state(one, _config(data_dir))
  _, (b, data_b, _) = _final_state(two, _config(data_dir))
  assert int(a.step) == int(b.step) == 5 and data_a == data_b
  for (path, x), y, x0 in zip(jax.tree_util.tree_leaves_with_path(a),
                              jax.tree_util.tree_leaves(b), jax.tree_util.tree_leaves(initial)):
    x, y, x0 = np.asarray(x), np.asarray(y), np.asarray(x0)
    if x.dtype.kind != "f":  # step, RNG
      np.testing.assert_array_equal(y, x, err_msg=jax.tree_util.keystr(path))
      continue
    # A few float32 ulps of the array's scale (measured: at most 1), plus 1e-4 of what
    # training moved it (measured: 3e-5; Adam divides rounding-level gradients by
    # rounding-level moments for weights that barely learn).
    ulp = float(np.spacing(np.float32(np.abs(x).max())))
    moved = float(np.abs(x - x0).max())
    assert np.abs(y - x).max() <= 4 * ulp + 1e-4 * moved, jax.tree_util.keystr(path)
