"""The task interface and the dataset table: a new method runs through the unchanged loop."""
from __future__ import annotations

import glob
import json
import os
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from jaxpose import datasets
from jaxpose.data import builders
from jaxpose.data import keypoints as kp
from jaxpose.models import resnet
from jaxpose.train import loop, multihost, optim, state as state_lib, tasks
from tests import fake_task, processes

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------
# The dataset table
# ----------------------------------------------------------------------------------------


def test_dataset_table_gives_keypoints_readers_and_evaluators():
  coco, mpii, synthetic = (datasets.dataset(n) for n in ("coco_keypoints", "mpii",
                                                         "synthetic_people"))
  assert coco.keypoints is kp.COCO and synthetic.keypoints is kp.COCO
  assert mpii.keypoints is kp.MPII and mpii.keypoints.num_keypoints == 16
  assert isinstance(coco.evaluator, datasets.CocoKeypointAP)
  assert isinstance(synthetic.evaluator, datasets.CocoKeypointAP)
  assert isinstance(mpii.evaluator, datasets.MPIIPCKh)
  assert (coco.evaluator.default_metric, coco.evaluator.mode) == ("AP", "max")
  assert (mpii.evaluator.default_metric, mpii.evaluator.mode) == ("Mean", "max")
  assert kp.COCO.joints_weight[9] == pytest.approx(1.5) and kp.MPII.joints_weight is None
  with pytest.raises(ValueError, match="unknown dataset 'coco'; valid: coco_keypoints, "
                                       "h36m_images, h36m_poses, mpii, synthetic_mocap, "
                                       "synthetic_people, synthetic_people3d"):
    datasets.dataset("coco")


def test_3d_pose_datasets_use_the_h36m_keypoint_set():
  for name in ("h36m_poses", "synthetic_mocap", "h36m_images", "synthetic_people3d"):
    entry = datasets.dataset(name)
    assert entry.keypoints is kp.H36M and entry.keypoints.num_keypoints == 17
    assert entry.person_instances is None
    assert (entry.evaluator.default_metric, entry.evaluator.mode) == ("MPJPE", "min")
  for name in ("h36m_poses", "synthetic_mocap"):
    assert isinstance(datasets.dataset(name).evaluator, datasets.H36MProtocols)
  for name in ("h36m_images", "synthetic_people3d"):
    entry = datasets.dataset(name)
    assert isinstance(entry.evaluator, datasets.H36MImageErrors)
    assert entry.people is not None
  assert datasets.dataset("mpii").people is not None
  assert datasets.dataset("h36m_poses").people is None


def test_every_builder_has_a_table_entry():
  assert set(builders.BUILDERS) == set(datasets.DATASETS)
  assert all(name == entry.name for name, entry in datasets.DATASETS.items())


def test_mpii_reader_takes_the_common_signature():
  people = {"index": np.array([4]), "center": np.array([[50.0, 40.0]]), "scale": np.array([1.0]),
            "joints": np.full((1, 16, 2), 11.0), "joints_vis": np.ones((1, 16), np.int32)}
  ex = {"image/width": 200, "image/height": 100, "people": people}
  read = datasets.dataset("mpii").person_instances
  table, skipped = read([(0, ex)], "hrnet", 16, 0.75, 1.25)
  assert skipped == {} and table.annotation_id.tolist() == [4]
  with pytest.raises(ValueError, match="16 joints"):
    read([(0, ex)], "hrnet", 17, 0.75, 1.25)


def _quickstart(**data):
  from configs import quickstart
  config = quickstart.get_config()
  config.data.update(data)
  return config


def test_tasks_validate_the_config_against_the_table():
  with pytest.raises(ValueError, match="unknown dataset 'cocoo'; valid: coco_keypoints"):
    tasks.make_task(_quickstart(dataset="cocoo"))
  config = _quickstart()
  config.data.keypoints = "mpii"  # the old field: accepted only when it agrees
  with pytest.raises(ValueError, match="keypoints='mpii'.*'coco' keypoint set"):
    tasks.make_task(config)
  config = _quickstart(dataset="mpii")  # a 17-joint model on a 16-joint dataset
  with pytest.raises(ValueError, match="num_joints=17.*'mpii' keypoint set has 16"):
    tasks.make_task(config)
  config = _quickstart()
  config.task = "integrall"
  with pytest.raises(ValueError, match=r"unknown task 'integrall'; valid: \['heatmap', 'hg3d', "
                                       r"'integral', 'mspn', 'rie', 'videopose3d'\]"):
    tasks.make_task(config)


def test_inference_only_task_needs_no_dataset():
  config = _quickstart(dataset="no_such_dataset", input_size=(64, 48), heatmap_size=(16, 12))
  config.model = resnet.PoseResNetConfig.tiny(num_joints=17).to_config()
  task = tasks.task_class("heatmap").from_config(config, keypoint_set=kp.COCO)
  model = task.build_model()
  model.eval()
  images = np.random.RandomState(0).randint(0, 255, (2, 64, 48, 3)).astype(np.uint8)
  heatmaps = np.asarray(jax.jit(task.predict)(model, images))
  assert heatmaps.shape[0] == 2 and heatmaps.shape[-1] == 17 and np.isfinite(heatmaps).all()
  keypoints, scores = task.decode(heatmaps, np.array([[48.0, 64.0]] * 2),
                                  np.array([[0.48, 0.64]] * 2))
  assert keypoints.shape == (2, 17, 2) and scores.shape == (2, 17)
  with pytest.raises(ValueError, match="inference only"):
    task.train_data(global_batch_size=2, process_index=0, process_count=1)


# ----------------------------------------------------------------------------------------
# Parameter groups and multi-host helpers
# ----------------------------------------------------------------------------------------


def test_parameter_groups_freeze_and_label():
  model = resnet.PoseResNet(resnet.PoseResNetConfig.tiny(num_joints=3), rngs=nnx.Rngs(0))
  labels = optim.param_labels(model, {"head": nnx.PathContains("final_layer")}, "body")
  _, _, params, _ = state_lib.split_model(model)
  flat = jax.tree_util.tree_leaves_with_path(labels)
  assert {v for _, v in flat} == {"head", "body"}
  assert all((v == "head") == ("final_layer" in jax.tree_util.keystr(p)) for p, v in flat)
  adam = ml_collections.ConfigDict(dict(name="adam", lr=1e-2))
  tx, _ = optim.make_partitioned_optimizer({"head": adam, "body": None}, labels, 10)
  grads = jax.tree_util.tree_map(np.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  for (path, u), (_, label) in zip(jax.tree_util.tree_leaves_with_path(updates), flat):
    assert np.any(np.asarray(u) != 0) == (label == "head"), jax.tree_util.keystr(path)
  with pytest.raises(ValueError, match="matches no parameter"):
    optim.param_labels(model, {"x": nnx.PathContains("no_such_layer")}, "rest")
  with pytest.raises(ValueError, match="is in groups 'a' and 'b'"):
    optim.param_labels(model, {"a": nnx.PathContains("final_layer"),
                               "b": nnx.PathContains("final_layer")}, "rest")
  with pytest.raises(ValueError, match=r"groups \['body'\] have no optimizer"):
    optim.make_partitioned_optimizer({"head": adam}, labels, 10)


def test_a_stage_starts_from_the_previous_stages_training_checkpoint(tmp_path):
  """``init.kind='checkpoint'`` with a training workdir (Pose3D-RIE's stages): weights
  only, whatever optimizer the previous stage used."""
  from configs import quickstart
  from jaxpose import checkpoint as ckpt_lib, models
  from jaxpose.train import weights
  cfg = resnet.PoseResNetConfig.tiny(num_joints=17)
  previous = models.build_model(cfg, seed=5)
  _, _, params, batch_stats = state_lib.split_model(previous)
  batch_stats = jax.tree_util.tree_map(lambda a: a + 0.5, batch_stats)
  sgd = optax.sgd(0.1, momentum=0.9)  # not the optimizer of the next stage
  state = state_lib.init_train_state(params, batch_stats, sgd, 0)
  checkpointer = ckpt_lib.TrainCheckpointer(tmp_path / "stage1", async_save=False)
  checkpointer.save(7, state, {}, {})
  checkpointer.best.save(6, args=checkpointer._save_args(state, {}, {}), force=True)
  checkpointer.wait()
  checkpointer.close()
  config = quickstart.get_config()
  config.model = cfg.to_config()
  config.init = ml_collections.ConfigDict(dict(kind="checkpoint", path=str(tmp_path / "stage1"),
                                                pretrained_layers=("*",)))
  assert ckpt_lib.training_checkpoint(tmp_path / "stage1") == (str(tmp_path / "stage1" / "best"), 6)
  for path in (tmp_path / "stage1", tmp_path / "stage1" / "checkpoints" / "7"):
    config.init.path = str(path)
    loaded = weights.initial_model(config)
    _, _, got_params, got_stats = state_lib.split_model(loaded)
    for a, b in zip(jax.tree_util.tree_leaves((params, batch_stats)),
                    jax.tree_util.tree_leaves((got_params, got_stats))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  config.model = resnet.PoseResNetConfig.tiny(num_joints=16).to_config()
  with pytest.raises(ValueError, match="does not match the model's variables"):
    weights.initial_model(config)


def test_multihost_helpers_on_one_process_pass_values_through():
  cols = {"a": np.arange(3.0), "b": np.zeros((3, 2), np.int64)}
  out = multihost.gather_rows(cols)
  assert out.keys() == cols.keys() and all(np.array_equal(out[k], cols[k]) for k in cols)
  assert multihost.broadcast_json({"AP": 0.25}) == {"AP": 0.25}


# ----------------------------------------------------------------------------------------
# A new method through the unchanged loop
# ----------------------------------------------------------------------------------------


@pytest.fixture
def fake(monkeypatch):
  monkeypatch.setitem(tasks.TASKS, "fake", fake_task.FakeTask)
  fake_task.FakeTask.traces = 0
  return fake_task


def _scalars(logdir: Path, prefix: str) -> dict[str, dict[int, float]]:
  import tensorflow as tf
  out: dict[str, dict[int, float]] = {}
  for path in glob.glob(str(logdir / "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        if v.tag.startswith(prefix):
          out.setdefault(v.tag, {})[int(event.step)] = float(tf.make_ndarray(v.tensor))
  return out


def _restore(workdir: Path, config, best: bool = False):
  return fake_task.restore(workdir, config, best=best)


def test_a_new_task_trains_evaluates_and_keeps_the_lowest_error(fake, tmp_path):
  config = fake.config()
  metrics = loop.train_and_evaluate(config, str(tmp_path))
  assert fake.FakeTask.traces == 1  # the per-step hyper-parameter never recompiles
  assert set(metrics) == {"MPJPE", "MPJPE (batched)"}
  assert metrics["MPJPE"] == pytest.approx(metrics["MPJPE (batched)"], rel=1e-5)
  final = json.loads((tmp_path / "final_metrics.json").read_text())
  assert final["step"] == 9 and final["metrics"] == metrics
  # BatchNorm momentum decayed per epoch (3 steps), logged from inside the step.
  momentum = _scalars(tmp_path / "tensorboard", "train/hparams/")["train/hparams/bn_momentum"]
  assert [round(momentum[s], 6) for s in range(1, 10)] == \
      [0.9] * 3 + [0.95] * 3 + [0.975] * 3
  # Evaluated after every epoch; best/ holds the lowest error (mode 'min').
  evals = _scalars(tmp_path / "tensorboard", "eval/")["eval/MPJPE"]
  assert sorted(evals) == [3, 6, 9]
  _, _, best_meta = _restore(tmp_path, config, best=True)
  assert best_meta["metrics"]["MPJPE"] == pytest.approx(min(evals.values()), rel=1e-6)
  # The frozen group did not move; the rest did.
  state, data, _ = _restore(tmp_path, config)
  init = nnx.state(fake.FakeTask(config).init_model(), nnx.Param)
  trained = state.params
  np.testing.assert_array_equal(np.asarray(trained["traj"]["kernel"]),
                                np.asarray(init["traj"]["kernel"][...]))
  assert not np.allclose(np.asarray(trained["pose_out"]["kernel"]),
                         np.asarray(init["pose_out"]["kernel"][...]))
  assert data == {"position": 9}
  # --mode=eval of the best checkpoint gives its metrics back.
  assert loop.evaluate(config, str(tmp_path), "best") == pytest.approx(best_meta["metrics"])


class PhasedTask(fake_task.FakeTask):
  """Epoch 0 is a warm-up whose loss leaves out the unlabeled term (a static change)."""
  phases_traced: list = []

  def step_phase(self, step, schedule):
    return "warmup" if step < schedule.steps_per_epoch else "main"

  def loss(self, model, batch, rng, hparams, phase=None):
    PhasedTask.phases_traced.append(phase)
    loss, metrics = super().loss(model, batch, rng, hparams)
    if phase == "warmup":
      return loss - 0.1 * jnp.mean(model.traj(batch["unlabeled"]["x"]) ** 2), metrics
    return loss, metrics


def test_a_task_with_static_phases_gets_one_compiled_step_per_phase(monkeypatch, tmp_path):
  monkeypatch.setitem(tasks.TASKS, "fake", PhasedTask)
  PhasedTask.phases_traced = []
  loop.train_and_evaluate(fake_task.config(), str(tmp_path))
  assert PhasedTask.phases_traced == ["warmup", "main"]  # each phase compiled once


def test_a_new_task_resumes_exactly(fake, tmp_path):
  straight = fake.config()
  loop.train_and_evaluate(straight, str(tmp_path / "straight"))
  crashing = fake.config()
  crashing.fake.crash_at = 5  # fetching batch 5 fails, after the step-4 checkpoint
  with pytest.raises(fake.SimulatedCrash):
    loop.train_and_evaluate(crashing, str(tmp_path / "resumed"))
  loop.train_and_evaluate(fake.config(), str(tmp_path / "resumed"))
  a, data_a, _ = _restore(tmp_path / "straight", straight)
  b, data_b, _ = _restore(tmp_path / "resumed", straight)
  assert int(a.step) == int(b.step) == 9 and data_a == data_b == {"position": 9}
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


TWO_PROCESS_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2,
                               process_id=int(sys.argv[2]))
    from jaxpose.train import loop, tasks
    from tests import fake_task, processes
    tasks.TASKS["fake"] = fake_task.FakeTask
    workdir, out = sys.argv[3], sys.argv[4]
    first = loop.train_and_evaluate(fake_task.config(total_steps=6), workdir)
    resumed = loop.train_and_evaluate(fake_task.config(), workdir)  # restores step 6
    best = loop.evaluate(fake_task.config(), workdir, "best")
    with open(out, "w") as f:
      json.dump({"first": first, "resumed": resumed, "best": best,
                 "devices": jax.device_count()}, f)
""")


@pytest.mark.slow
def test_two_processes_train_evaluate_and_agree(tmp_path):
  """Two CPU processes (one device each): collective checkpoint saves (best included),
  restores, the predictions gather and the metrics broadcast all complete, and both
  processes return the same metrics."""
  address = f"127.0.0.1:{processes.free_port()}"
  env = dict(os.environ, PYTHONPATH=str(REPO), XLA_FLAGS="")
  processes.run_together(
      [[sys.executable, "-c", TWO_PROCESS_SCRIPT, address, str(i), str(tmp_path / "run"),
        str(tmp_path / f"out{i}.json")] for i in range(2)],
      cwd=REPO, env=env, log_dir=tmp_path / "logs", timeout_s=600)
  out = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
  assert out[0] == out[1] and out[0]["devices"] == 2
  assert set(out[0]["resumed"]) == {"MPJPE", "MPJPE (batched)"}
  final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
  assert final["step"] == 9 and final["metrics"] == out[0]["resumed"]
