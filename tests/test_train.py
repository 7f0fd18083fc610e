"""The training system: optimizers, the sharded step, checkpoints and exact resume, the loop."""
from __future__ import annotations

import glob
import importlib
import json
import subprocess
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

from configs import quickstart
from jaxpose import convert, datasets, models
from jaxpose.data import pipeline
from jaxpose.models import resnet
from jaxpose.train import loop, optim, state as state_lib, tasks, weights

REPO = Path(__file__).resolve().parents[1]
# The top-down 2D configs; tests/test_lifting.py checks the lifter configs.
CONFIG_FILES = sorted(p.stem for p in (REPO / "configs").glob("*.py")
                      if p.stem not in ("__init__", "common")
                      and importlib.import_module(f"configs.{p.stem}").get_config().task
                      in ("heatmap", "mspn"))


# ----------------------------------------------------------------------------------------
# Optimizers and schedules
# ----------------------------------------------------------------------------------------


def _torch_run(name: str, schedule: str, steps: int, steps_per_epoch: int, amsgrad=False):
  torch = pytest.importorskip("torch")
  w0 = np.random.RandomState(0).randn(5).astype(np.float32)
  param = torch.nn.Parameter(torch.tensor(w0))
  if name == "adam":
    opt = torch.optim.Adam([param], lr=1e-2, weight_decay=1e-2, amsgrad=amsgrad)
  elif name == "adamw":
    opt = torch.optim.AdamW([param], lr=1e-2, weight_decay=1e-2, amsgrad=amsgrad)
  else:
    opt = torch.optim.SGD([param], lr=1e-2, momentum=0.9, weight_decay=1e-2)
  lam = lambda it: 0.1 + 0.9 * it / 5 if it < 5 else 1 - (it - 5) / (20 - 5)
  scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lam) if schedule == "warmup_linear" else None
  # Gradients of changing size, so that AMSGrad's running maximum matters.
  grads = [(np.sin(np.arange(5) * (k + 1)) * (3.0 if k % 4 == 0 else 0.5)).astype(np.float32)
           for k in range(steps)]
  for k, g in enumerate(grads):
    if schedule == "multistep":  # torch 1.0 MultiStepLR: epoch e uses lr * 0.1^#(m <= e)
      for group in opt.param_groups:
        group["lr"] = 1e-2 * 0.1 ** sum(k // steps_per_epoch >= m for m in (1, 3))
    if scheduler is not None:
      scheduler.step()  # MSPN steps the scheduler before the optimizer
    opt.zero_grad()
    param.grad = torch.tensor(g)
    opt.step()
    if schedule == "exponential" and (k + 1) % steps_per_epoch == 0:
      for group in opt.param_groups:  # VideoPose3D / RIE run.py: after every epoch
        group["lr"] *= 0.95
  return w0, grads, param.detach().numpy()


@pytest.mark.parametrize("name,schedule,amsgrad", [
    ("adam", "warmup_linear", False), ("adam", "multistep", False), ("sgd", "multistep", False),
    ("adam", "exponential", True), ("adamw", "exponential", True),
    ("adamw", "constant", False)])
def test_optimizers_match_torch(name, schedule, amsgrad):
  steps, steps_per_epoch = 19, 4
  w0, grads, want = _torch_run(name, schedule, steps, steps_per_epoch, amsgrad)
  config = ml_collections.ConfigDict(dict(
      name=name, lr=1e-2, weight_decay=1e-2, momentum=0.9, schedule=schedule, warmup_steps=5,
      warmup_factor=0.1, total_steps=20, milestones=(1, 3), factor=0.1, decay=0.95,
      amsgrad=amsgrad))
  tx, _ = optim.make_optimizer(config, steps_per_epoch)
  params = jnp.asarray(w0)
  opt_state = tx.init(params)
  for g in grads:
    updates, opt_state = tx.update(jnp.asarray(g), opt_state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(np.asarray(params), want, rtol=1e-5, atol=1e-6)


def test_torch_amsgrad_differs_from_optax_amsgrad():
  """The reason for ``scale_by_torch_amsgrad``: optax maximises the corrected moment."""
  grads = [jnp.asarray([3.0]), jnp.asarray([0.1]), jnp.asarray([0.1])]
  ours, theirs = optim.scale_by_torch_amsgrad(), optax.scale_by_amsgrad()
  s1, s2 = ours.init(grads[0]), theirs.init(grads[0])
  for g in grads:
    u1, s1 = ours.update(g, s1)
    u2, s2 = theirs.update(g, s2)
  assert abs(float(u1[0]) - float(u2[0])) > 1e-3


def test_released_schedules():
  from configs import hrnet_coco, mspn_coco
  hr = hrnet_coco.get_config()
  _, schedule = optim.make_optimizer(hr.optim, steps_per_epoch=10)
  assert float(schedule(169 * 10 + 9)) == pytest.approx(1e-3)
  assert float(schedule(170 * 10)) == pytest.approx(1e-4)
  assert float(schedule(200 * 10)) == pytest.approx(1e-5)
  ms = mspn_coco.get_config()
  assert ms.optim.lr == pytest.approx(4e-3) and ms.optim.weight_decay == 1e-5
  _, schedule = optim.make_optimizer(ms.optim, steps_per_epoch=100)
  assert float(schedule(0)) == pytest.approx(4e-3 * (0.1 + 0.9 / 2400))  # lambda(1)
  assert float(schedule(2398)) == pytest.approx(4e-3 * (0.1 + 0.9 * 2399 / 2400))
  assert float(schedule(2399)) == pytest.approx(4e-3)  # lambda(2400) = 1
  assert float(schedule(95999)) == pytest.approx(0.0, abs=1e-12)
  qs = quickstart.get_config("epochs=4,lr=1e-3")  # warm-up and decay given in epochs
  _, schedule = optim.make_optimizer(qs.optim, steps_per_epoch=100)
  assert float(schedule(0)) == pytest.approx(1e-3 * (0.1 + 0.9 / 50))
  assert float(schedule(49)) == pytest.approx(1e-3)
  assert float(schedule(224)) == pytest.approx(0.5e-3)
  assert float(schedule(399)) == pytest.approx(0.0, abs=1e-12)
  with pytest.raises(ValueError, match="unknown optim.schedule"):
    optim.make_schedule(ml_collections.ConfigDict(dict(lr=1.0, schedule="cosine")), 1)


# ----------------------------------------------------------------------------------------
# The train step
# ----------------------------------------------------------------------------------------


def _tiny_step(loss_scale=1.0):
  cfg = resnet.PoseResNetConfig.tiny(num_joints=3)
  train_def, _, params, batch_stats = state_lib.split_model(models.build_model(cfg, seed=0))
  tx, _ = optim.make_optimizer(ml_collections.ConfigDict(dict(name="adam", lr=1e-3)), 1)

  def loss_fn(model, batch, rng, hparams):
    outputs = model(batch["image"])
    loss = jnp.mean((outputs["heatmaps"] - batch["target"]) ** 2) * batch["scale"][0]
    return loss, {"mean_heatmap": jnp.mean(outputs["heatmaps"])}

  step = jax.jit(state_lib.make_train_step(train_def, loss_fn, tx))
  state = state_lib.init_train_state(params, batch_stats, tx, 0)
  rs = np.random.RandomState(0)
  batch = {"image": rs.randn(4, 64, 64, 3).astype(np.float32),
           "target": rs.rand(4, 8, 8, 3).astype(np.float32),
           "scale": np.full(4, loss_scale, np.float32)}
  return step, state, batch


def test_non_finite_loss_freezes_the_state_and_records_the_step():
  step, state, batch = _tiny_step()
  state, metrics = step(state, batch)
  assert int(state.step) == 1 and int(state.first_bad_step) == -1
  assert set(metrics) == {"loss", "mean_heatmap", "grad_norm"}
  good = jax.tree_util.tree_map(np.asarray, state.params)
  bad_batch = dict(batch, scale=np.full(4, np.nan, np.float32))
  state, metrics = step(state, bad_batch)
  assert not np.isfinite(metrics["loss"])
  assert int(state.first_bad_step) == 1 and int(state.step) == 1
  state, _ = step(state, batch)  # later finite steps keep the state frozen
  assert int(state.step) == 1 and int(state.first_bad_step) == 1
  frozen = jax.tree_util.tree_map(np.asarray, state.params)
  for a, b in zip(jax.tree_util.tree_leaves(good), jax.tree_util.tree_leaves(frozen)):
    np.testing.assert_array_equal(a, b)


SHARDED_SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np, ml_collections
    from jaxpose import models
    from jaxpose.models import hrnet
    from jaxpose.train import optim, state as S
    from jaxpose.losses.heatmap import joints_mse_loss
    assert jax.device_count() == 8
    cfg = hrnet.PoseHRNetConfig.small(num_joints=4, dtype="float64")
    tdef, _, params, bs = S.split_model(models.build_model(cfg, seed=0))
    f64 = lambda t: jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), t)
    tx, _ = optim.make_optimizer(ml_collections.ConfigDict(dict(name="adam", lr=1e-3)), 10)
    loss_fn = lambda model, b, rng, hp: (
        joints_mse_loss(model(b["image"])["heatmaps"], b["target"], b["target_weight"]), {})
    step = S.make_train_step(tdef, loss_fn, tx)
    rs = np.random.RandomState(0)
    batch = {"image": rs.randn(16, 64, 64, 3), "target": rs.rand(16, 16, 16, 4),
             "target_weight": (rs.rand(16, 4) > 0.2).astype(np.float64)}
    results = {}
    for n in (1, 8):
      mesh = S.make_mesh(jax.devices()[:n])
      st = jax.device_put(S.init_train_state(f64(params), f64(bs), tx, 0), S.replicated(mesh))
      fn = S.jit_train_step(step, mesh)
      for _ in range(3):
        st, m = fn(st, S.global_batch(batch, mesh))
      results[n] = jax.tree_util.tree_map(np.asarray, (st.params, st.batch_stats, st.opt_state))
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(
        jax.tree_util.tree_leaves(results[1]), jax.tree_util.tree_leaves(results[8])))
    print("MAXDIFF", worst)
""")


def test_sharded_step_equals_single_device_step():
  """8 fake CPU devices vs 1 on the same global batch (float64 so rounding cannot hide)."""
  result = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], capture_output=True,
                          text=True, cwd=REPO, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  worst = float(result.stdout.split("MAXDIFF")[1])
  assert worst < 1e-11, worst


# ----------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------


def _config(name: str, arg: str | None = None):
  return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_is_complete(name):
  """Model, data spec, task and optimizer of each config build (shapes only, no compile)."""
  config = _config(name)
  assert config.task in ("heatmap", "mspn")
  cfg = weights.model_config(config)
  graphdef, state = nnx.split(models.abstract_model(cfg))
  keypoint_set = datasets.dataset(config.data.dataset).keypoints
  task = tasks.task_class(config.task).from_config(config, keypoint_set=keypoint_set)
  spec = task.spec
  h, w = spec.input_size
  out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                       jax.ShapeDtypeStruct((2, h, w, 3), jnp.float32))
  assert out["heatmaps"].shape[1:3] == tuple(config.data.heatmap_size)
  assert out["heatmaps"].shape[-1] == len(keypoint_set.names)
  optim.make_optimizer(config.optim, 100)
  assert (module_doc := importlib.import_module(f"configs.{name}").__doc__)
  assert "launch.py --config=configs/" in module_doc


def test_config_arguments():
  assert _config("hrnet_coco", "w=48,size=384x288").data.input_size == (384, 288)
  assert _config("hrnet_coco", "w=48,size=384x288").train.global_batch_size == 96
  assert _config("simplebaseline_coco", "depth=152").model.num_layers == 152
  assert _config("mspn_coco", "stages=4").model.num_stages == 4
  with pytest.raises(ValueError, match="unknown config argument"):
    _config("hrnet_coco", "width=48")


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_runs_one_train_step(name):
  """The config's real model, loss and optimizer, at a tiny input size and batch."""
  from benchmarks import train_step as bench
  config = _config(name)
  config.unlock()
  config.init.kind = "scratch"
  config.data.input_size = (64, 64)
  config.data.heatmap_size = (16, 16)
  if config.model.name == "mspn":
    config.model.output_shape = (16, 16)
  mesh = state_lib.make_mesh()
  task = tasks.task_class(config.task).from_config(
      config, keypoint_set=datasets.dataset(config.data.dataset).keypoints)
  train_def, _, params, batch_stats = state_lib.split_model(task.init_model())
  tx, _ = optim.make_optimizer(config.optim, 10)
  state = jax.device_put(state_lib.init_train_state(params, batch_stats, tx, 0),
                         state_lib.replicated(mesh))
  step = state_lib.jit_train_step(state_lib.make_train_step(train_def, task.loss, tx), mesh)
  batch = state_lib.global_batch(bench.random_batch(config, 2), mesh)
  state, metrics = step(state, batch)
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))


# ----------------------------------------------------------------------------------------
# The loop: quickstart, resume, bad input
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
  from jaxpose.data import builders
  path = tmp_path_factory.mktemp("tfds")
  builders.build_dataset("synthetic_people", path, config="tiny")
  return str(path)


def tiny_config(data_dir: str, **train) -> ml_collections.ConfigDict:
  config = quickstart.get_config("size=64x64,builder=tiny")
  config.data.data_dir = data_dir
  config.train.global_batch_size = 2
  config.train.log_every_steps = 1
  config.train.async_checkpoints = False
  config.train.num_summary_images = 1
  config.eval.batch_size = 4
  config.train.update(train)
  return config


def test_quickstart_trains_checkpoints_evaluates_and_logs(data_dir, tmp_path):
  config = tiny_config(data_dir, total_steps=3, checkpoint_every_steps=2)
  metrics = loop.train_and_evaluate(config, str(tmp_path))
  assert set(metrics) >= {"AP", "Ap .5", "AR"} and 0.0 <= metrics["AP"] <= 1.0
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [2, 3]
  assert any((tmp_path / "best").iterdir())
  final = json.loads((tmp_path / "final_metrics.json").read_text())
  assert final["step"] == 3 and final["metrics"]["AP"] == metrics["AP"]
  results = glob.glob(str(tmp_path / "results" / "*.json"))
  assert results and json.loads(Path(results[0]).read_text())
  tags = _event_tags(tmp_path / "tensorboard")
  assert {"train/loss", "train/lr", "train/images_per_s", "eval/AP", "val/predictions"} <= tags
  # Evaluation of the saved run, by the latest and by the best checkpoint.
  assert loop.evaluate(config, str(tmp_path))["AP"] == pytest.approx(metrics["AP"])
  assert loop.evaluate(config, str(tmp_path), "best")["AP"] == pytest.approx(metrics["AP"])


def _event_tags(logdir: Path) -> set[str]:
  import tensorflow as tf
  tags = set()
  for path in glob.glob(str(logdir / "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(v.tag for v in event.summary.value)
  return tags


_TRAIN_ITERATOR = pipeline.train_iterator


class SimulatedCrash(Exception):
  """Stands for a killed job (KeyboardInterrupt would also stop the pytest-xdist worker)."""


class _Recorder:
  """Wraps ``pipeline.train_iterator``: records batch fingerprints, can crash on a batch."""

  def __init__(self, crash_at: int | None = None):
    self.seen: list[str] = []
    self.crash_at = crash_at
    self._original = _TRAIN_ITERATOR

  def __call__(self, *args, **kwargs):
    inner = self._original(*args, **kwargs)
    recorder = self

    class It:
      def __next__(self):
        if recorder.crash_at is not None and len(recorder.seen) + 1 == recorder.crash_at:
          raise SimulatedCrash(f"interrupted before batch {recorder.crash_at}")
        batch = next(inner)
        recorder.seen.append(str(hash(batch["image"].tobytes())))
        return batch

      def get_state(self):
        return inner.get_state()

      def set_state(self, state):
        inner.set_state(state)

    return It()


def _final_state(workdir: Path, config):
  model = models.build_model(weights.model_config(config))
  _, _, params, batch_stats = state_lib.split_model(model)
  tx, _ = optim.make_optimizer(config.optim, 1)
  target = state_lib.init_train_state(params, batch_stats, tx, 0)
  checkpointer = loop.ckpt_lib.TrainCheckpointer(workdir)
  restored, data_state, _ = checkpointer.restore(target)
  checkpointer.close()
  return restored, data_state


def test_interrupted_run_resumes_exactly(data_dir, tmp_path, monkeypatch):
  steps = 4
  straight = _Recorder()
  monkeypatch.setattr(pipeline, "train_iterator", straight)
  config = tiny_config(data_dir, total_steps=steps, checkpoint_every_steps=2)
  loop.train_and_evaluate(config, str(tmp_path / "straight"))

  first = _Recorder(crash_at=3)  # crashes fetching batch 3, after the step-2 checkpoint
  monkeypatch.setattr(pipeline, "train_iterator", first)
  with pytest.raises(SimulatedCrash):
    loop.train_and_evaluate(config, str(tmp_path / "resumed"))
  second = _Recorder()
  monkeypatch.setattr(pipeline, "train_iterator", second)
  loop.train_and_evaluate(config, str(tmp_path / "resumed"))

  assert first.seen + second.seen == straight.seen  # identical data order
  a, data_a = _final_state(tmp_path / "straight", config)
  b, data_b = _final_state(tmp_path / "resumed", config)
  assert int(a.step) == int(b.step) == steps and data_a == data_b
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_non_finite_loss_stops_the_run_keeping_the_last_good_checkpoint(data_dir, tmp_path):
  config = tiny_config(data_dir, total_steps=5)
  config.optim.lr = float("nan")
  with pytest.raises(loop.NonFiniteLossError, match=r"at step 1 \(update 0\)"):
    loop.train_and_evaluate(config, str(tmp_path))
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved == [0]


def test_missing_pretrained_weights_and_detections_are_clear_errors(data_dir, tmp_path):
  config = tiny_config(data_dir, total_steps=1)
  config.init.kind = "imagenet"
  config.init.path = str(tmp_path / "hrnet_w32.pth")
  with pytest.raises(FileNotFoundError, match="init.path.*--config.init.kind=scratch"):
    loop.train_and_evaluate(config, str(tmp_path / "a"))
  config = tiny_config(data_dir, total_steps=1)
  config.eval.boxes = "detections"
  with pytest.raises(FileNotFoundError, match="eval.detection_file"):
    loop.evaluate(config, str(tmp_path / "b"), "best")


def test_evaluate_a_converted_checkpoint(data_dir, tmp_path):
  """--mode=eval on a jaxpose.convert directory (here: a SimpleBaseline export)."""
  config = tiny_config(data_dir)
  config.model = resnet.PoseResNetConfig.tiny(num_joints=17).to_config()
  model = models.build_model(config.model, seed=1)
  torch = pytest.importorskip("torch")
  state_dict = convert.export_state_dict(model, config.model)
  torch.save({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()},
             tmp_path / "m.pth", _use_new_zipfile_serialization=False)
  convert.convert_checkpoint(tmp_path / "m.pth", tmp_path / "converted")
  from_dir = loop.evaluate(config, str(tmp_path / "eval"), str(tmp_path / "converted"))
  from_pth = loop.evaluate(config, str(tmp_path / "eval2"), str(tmp_path / "m.pth"))
  assert from_dir == from_pth and 0.0 <= from_dir["AP"] <= 1.0
  assert (tmp_path / "eval" / "eval_metrics.json").exists()
