"""The training system: optimizers, the sharded step, checkpoints and exact resume, the loop."""
from __future__ import annotations

import functools
import glob
import importlib
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
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
from jaxpose.train import loop, optim, state as state_lib, tasks, validation, weights
from tests import resume_tools

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(p.stem for p in (REPO / "configs").glob("*.py")
                      if p.stem not in ("__init__", "common"))
# The top-down 2D configs; the other methods' configs have their own tests
# (tests/test_lifting.py for the lifters, tests/test_image3d_tasks.py for integral / hg3d).
TOPDOWN_TASKS = ("heatmap", "mspn")
TOPDOWN_CONFIGS = [name for name in CONFIG_FILES
                   if importlib.import_module(f"configs.{name}").get_config().task in TOPDOWN_TASKS]


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
    if "root" in batch:  # + sqrt(root * |h|^2): 0 with a NaN gradient when root == 0
      loss += jnp.sqrt(jnp.sum(outputs["heatmaps"] ** 2) * batch["root"][0])
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


@pytest.mark.parametrize("backend", ["cpu", "other"])
def test_a_non_finite_gradient_with_a_finite_loss_freezes_the_whole_state(backend, monkeypatch):
  # CPUs commit the update with a lax.cond, other backends with a select: both are run.
  if backend == "other":
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  step, state, batch = _tiny_step()
  state, _ = step(state, dict(batch, root=np.ones(4, np.float32)))
  assert int(state.step) == 1 and int(state.first_bad_step) == -1
  good = jax.tree_util.tree_map(np.asarray, state)
  state, metrics = step(state, dict(batch, root=np.zeros(4, np.float32)))
  assert np.isfinite(metrics["loss"]) and not np.isfinite(metrics["grad_norm"])
  assert int(state.first_bad_step) == 1 and int(state.step) == 1
  frozen = jax.tree_util.tree_map(np.asarray, state.replace(first_bad_step=good.first_bad_step))
  assert jax.tree_util.tree_structure(frozen) == jax.tree_util.tree_structure(good)
  for a, b in zip(jax.tree_util.tree_leaves(good), jax.tree_util.tree_leaves(frozen)):
    np.testing.assert_array_equal(a, b)  # params, moments, BatchNorm statistics, rng, step
  state, _ = step(state, dict(batch, root=np.ones(4, np.float32)))
  assert int(state.step) == 1 and int(state.first_bad_step) == 1  # stays frozen


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


@pytest.mark.parametrize("name", TOPDOWN_CONFIGS)
def test_every_config_is_complete(name):
  """Model, data spec, task and optimizer of each config build (shapes only, no compile)."""
  config = _config(name)
  assert config.task in TOPDOWN_TASKS
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


def _mistake(section: str, **values) -> ml_collections.ConfigDict:
  config = quickstart.get_config()
  config.data.data_dir = "/nonexistent/tfds"  # nothing may be read before the check
  if section == "task":
    config.task = values["task"]
  else:
    config[section].update(values)
  return config


CONFIG_MISTAKES = [
    (("train", dict(checkpoint_every_steps=0)),
     "train.checkpoint_every_steps=0: must be an integer >= 1"),
    (("train", dict(global_batch_size=0)), "train.global_batch_size=0: must be an integer >= 1"),
    (("train", dict(log_every_steps=-5)), "train.log_every_steps=-5: must be an integer >= 1"),
    (("train", dict(eval_every_epochs=0)), "train.eval_every_epochs=0"),
    (("train", dict(total_steps=0)), "train.total_steps=0: must be an integer >= 1 (or None)"),
    (("train", dict(dtype="float8")), "train.dtype='float8': must be one of 'float32'"),
    (("train", dict(dtype="float64")), "train.dtype='float64' needs 64-bit JAX"),
    (("eval", dict(boxes="detection")),
     "eval.boxes must be one of ('gt', 'detections'), got 'detection'"),
    (("eval", dict(boxes="detections")), "eval.boxes='detections' needs eval.detection_file"),
    (("optim", dict(lr=float("nan"))), "optim.lr=nan: must be a finite number >= 0"),
    (("optim", dict(name="adan")), "optim: unknown optim.name 'adan'; valid: adam"),
    (("optim", dict(schedule="cosine")), "optim: unknown optim.schedule 'cosine'"),
    (("init", dict(kind="pretrained")), "init.kind='pretrained': must be one of 'scratch'"),
    (("init", dict(kind="imagenet", path="/typo.pth")), "init.kind='imagenet' needs init.path"),
    (("data", dict(dataset="coco")), "unknown dataset 'coco'; valid: coco_keypoints"),
    (("task", dict(task="heatmaps")), "config.task: unknown task 'heatmaps'; valid:"),
]


@pytest.mark.parametrize("mistake,message", CONFIG_MISTAKES,
                         ids=[m[1][:40] for m in CONFIG_MISTAKES])
def test_config_mistakes_fail_in_one_line_before_any_work(mistake, message, tmp_path):
  """Each mistake: one ``ConfigError`` line naming the field, before the workdir exists,
  for training and for evaluation alike."""
  config = _mistake(mistake[0], **mistake[1])
  runs = [lambda: loop.train_and_evaluate(config, str(tmp_path / "run"))]
  if mistake[0] not in ("init",):  # evaluation does not read init
    runs.append(lambda: loop.evaluate(config, str(tmp_path / "run"), "best"))
  for run in runs:
    with pytest.raises(validation.ConfigError) as error:
      run()
    assert message in str(error.value) and "\n" not in str(error.value)
    assert isinstance(error.value, loop.USER_ERRORS)
    assert not (tmp_path / "run").exists()


def test_eval_checkpoint_argument_mistakes(tmp_path):
  config = _mistake("train", seed=0)
  workdir = tmp_path / "old_run"
  workdir.mkdir()
  (workdir / "config.json").write_text("{}")  # a training workdir without checkpoints
  cases = {"last": "--checkpoint='last': neither 'latest', 'best', a step number nor an "
                   "existing path",
           "/typo.pth": "--checkpoint='/typo.pth': neither",
           str(workdir): "is a jaxpose training workdir without any complete checkpoint",
           str(tmp_path): "neither a jaxpose training run or checkpoint"}
  for checkpoint, message in cases.items():
    with pytest.raises(validation.ConfigError, match=re.escape(message)):
      loop.evaluate(config, str(tmp_path / "eval"), checkpoint)
  with pytest.raises(FileNotFoundError):  # a missing file is also a FileNotFoundError
    loop.evaluate(config, str(tmp_path / "eval"), "/typo.pth")
  assert not (tmp_path / "eval").exists()
  step_item = tmp_path / "run" / "checkpoints" / "4" / "state"  # an item of a step: accepted
  step_item.mkdir(parents=True)
  validation.check_checkpoint_argument(str(step_item))


LAUNCH_MISTAKES = [
    (["--config.train.bogus=1"], 2, "unknown config field in a --config.* override: bogus"),
    (["--config.train.global_batch_size=0"], 1, "train.global_batch_size=0"),
    (["--mode=eval", "--checkpoint=last"], 1, "--checkpoint='last'"),
    (["--num_processes=2"], 2, "missing: coordinator address"),
]


@pytest.mark.slow  # 4 launch.py processes: ~35 s on a busy 2-core machine
def test_launch_prints_mistakes_in_one_line_with_an_exit_status(tmp_path):
  """No traceback: one ``error:`` line and a non-zero status (2: command line syntax)."""
  env = dict(os.environ, PYTHONPATH=str(REPO))
  procs = [subprocess.Popen(
      [sys.executable, "launch.py", "--config=configs/quickstart.py",
       f"--workdir={tmp_path / 'run'}", *args], cwd=REPO, env=env, text=True,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args, _, _ in LAUNCH_MISTAKES]
  for proc, (args, status, message) in zip(procs, LAUNCH_MISTAKES):
    out, err = proc.communicate(timeout=300)
    errors = [line for line in (out + err).splitlines() if line.startswith("error: ")]
    assert proc.returncode == status, (args, err[-2000:])
    assert "Traceback" not in err and len(errors) == 1 and message in errors[0], (args, err)
  assert not (tmp_path / "run").exists()


def _architecture(name: str) -> str:
  """What a config's train step compiles, less what the step test sets itself (the input
  and output sizes), the joint count and the optimizer's numbers (learning rates, step
  counts: constants of the same ops): configs of one architecture differ in no op."""
  config = _config(name)
  model = {k: v for k, v in config.model.to_dict().items()
           if k not in ("num_joints", "output_shape")}
  optimizer = {k: v if isinstance(v, str) or not v else type(v).__name__  # 0 drops an op
               for k, v in config.optim.to_dict().items()}
  return repr((config.task, model, config.get("loss"), sorted(optimizer.items())))


def _first_of_each_architecture(names: list[str]) -> set[str]:
  firsts: dict[str, str] = {}
  for name in names:
    firsts.setdefault(_architecture(name), name)
  return set(firsts.values())


RUN_STEP_CONFIGS = _first_of_each_architecture(TOPDOWN_CONFIGS)


@pytest.mark.slow
@pytest.mark.parametrize("name", TOPDOWN_CONFIGS)
def test_every_config_runs_one_train_step(name):
  """The config's real model, loss and optimizer, at a tiny input size and batch.

  Every config's step is traced and lowered (its loss, targets and optimizer with its own
  joint count); it is compiled and run for the first config of each architecture only
  (``hrnet_mpii`` differs from ``hrnet_coco`` in the joint count alone, and a full-size
  HRNet step takes two minutes of XLA compilation on 2 cores).
  """
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
  lowered = step.lower(state, batch)
  out_state, out_metrics = lowered.out_info
  assert jax.tree_util.tree_structure(out_state) == jax.tree_util.tree_structure(state)
  assert out_metrics["loss"].shape == ()
  if name not in RUN_STEP_CONFIGS:
    return
  state, metrics = lowered.compile()(state, batch)
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


_recorder = functools.partial(resume_tools.BatchRecorder, pipeline.train_iterator, "image")
SimulatedCrash = resume_tools.SimulatedCrash


def _final_state(workdir: Path, config):
  return resume_tools.restore_run(workdir, config)[1][:2]


def test_interrupted_run_resumes_exactly(data_dir, tmp_path, monkeypatch):
  steps = 4
  straight = _recorder()
  monkeypatch.setattr(pipeline, "train_iterator", straight)
  config = tiny_config(data_dir, total_steps=steps, checkpoint_every_steps=2)
  loop.train_and_evaluate(config, str(tmp_path / "straight"))

  first = _recorder(crash_at=3)  # crashes fetching batch 3, after the step-2 checkpoint
  monkeypatch.setattr(pipeline, "train_iterator", first)
  with pytest.raises(SimulatedCrash):
    loop.train_and_evaluate(config, str(tmp_path / "resumed"))
  second = _recorder()
  monkeypatch.setattr(pipeline, "train_iterator", second)
  loop.train_and_evaluate(config, str(tmp_path / "resumed"))

  assert first.seen + second.seen == straight.seen  # identical data order
  a, data_a = _final_state(tmp_path / "straight", config)
  b, data_b = _final_state(tmp_path / "resumed", config)
  assert int(a.step) == int(b.step) == steps and data_a == data_b
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_non_finite_loss_stops_the_run_and_resumes_with_a_lower_lr(data_dir, tmp_path,
                                                                  monkeypatch):
  """The quickstart with NaN targets in its second batch (update 1). The loss is checked
  every 4 steps, after a periodic save at step 3 that must not write the frozen state; the
  last good state (step 1) is saved with the data position after batch 1. Resuming (at a
  lower learning rate, the data mended) trains on from batch 2 with finite losses."""
  config = tiny_config(data_dir, total_steps=5, log_every_steps=4, checkpoint_every_steps=3)
  first = _recorder(nan_at=1)
  monkeypatch.setattr(pipeline, "train_iterator", first)
  with pytest.raises(loop.NonFiniteLossError, match=r"at step 2 \(update 1\); stopped at step 3"):
    loop.train_and_evaluate(config, str(tmp_path))
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved == [1]
  second = _recorder()
  monkeypatch.setattr(pipeline, "train_iterator", second)
  config.optim.lr = 5e-4
  loop.train_and_evaluate(config, str(tmp_path))
  assert second.seen[0] == first.seen[1]  # batch 2 follows the last good step 1
  state, _ = _final_state(tmp_path, config)
  assert int(state.step) == 5 and int(state.first_bad_step) == -1
  losses = _scalars(tmp_path / "tensorboard", "train/loss")
  assert sorted(losses) == [4, 5] and all(np.isfinite(v) for v in losses.values())


def _scalars(logdir: Path, tag: str) -> dict[int, float]:
  import tensorflow as tf
  out = {}
  for path in sorted(glob.glob(str(logdir / "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        if v.tag == tag:
          out[int(event.step)] = float(tf.make_ndarray(v.tensor))
  return out


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


# ----------------------------------------------------------------------------------------
# Non-finite loss: the last good state is saved with its own data position and resumes
# ----------------------------------------------------------------------------------------


@pytest.fixture
def fake(monkeypatch):
  from tests import fake_task
  monkeypatch.setitem(tasks.TASKS, "fake", fake_task.FakeTask)
  return fake_task


def _fake_state(workdir: Path, config, step: int | None = None):
  from tests import fake_task
  return fake_task.restore(workdir, config, step)


def _steps(directory: Path) -> list[int]:
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def test_nan_stop_saves_the_last_good_step_with_its_data_and_resumes_exactly(fake, tmp_path):
  """The loss is checked late (every 5 steps); the bad update 3 is followed by a periodic
  save at step 4, which must not write the frozen state. The last good state (step 3) is
  saved with the data position after 3 batches and without the flag, so the resumed run
  (bad batch gone) ends exactly where a run that never saw it ends."""
  settings = dict(total_steps=10, log_every_steps=5, checkpoint_every_steps=4,
                  eval_every_epochs=10)
  straight = fake.config(**settings)
  straight.fake.num_examples = 40  # 10 steps per epoch: no epoch-end check before step 10
  loop.train_and_evaluate(straight, str(tmp_path / "straight"))
  poisoned = fake.config(**settings)
  poisoned.fake.update(num_examples=40, nan_at=3)
  with pytest.raises(loop.NonFiniteLossError, match=r"at step 4 \(update 3\); stopped at step 4"):
    loop.train_and_evaluate(poisoned, str(tmp_path / "resumed"))
  assert _steps(tmp_path / "resumed" / "checkpoints") == [3]  # no frozen step-4 checkpoint
  state, data, meta = _fake_state(tmp_path / "resumed", straight)
  assert int(state.step) == 3 and int(state.first_bad_step) == -1
  assert data == {"position": 3} and "non-finite loss at update 3" in meta["stopped"]
  loop.train_and_evaluate(straight, str(tmp_path / "resumed"))  # the cause removed
  a, data_a, _ = _fake_state(tmp_path / "straight", straight)
  b, data_b, _ = _fake_state(tmp_path / "resumed", straight)
  assert int(b.step) == 10 and data_a == data_b == {"position": 10}
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_flag_left_in_an_old_checkpoint_is_cleared_on_resume(fake, tmp_path):
  """Checkpoints of earlier versions carry ``first_bad_step``; resuming must train."""
  config = fake.config(total_steps=2)
  loop.train_and_evaluate(config, str(tmp_path))
  state, data, meta = _fake_state(tmp_path, config)
  checkpointer = loop.ckpt_lib.TrainCheckpointer(tmp_path, async_save=False)
  checkpointer.save(3, state.replace(first_bad_step=np.int32(1)), data, meta)
  checkpointer.wait()
  checkpointer.close()
  loop.train_and_evaluate(fake.config(total_steps=5), str(tmp_path))
  state, _, _ = _fake_state(tmp_path, config)
  assert int(state.step) == 5 and int(state.first_bad_step) == -1


def test_a_checkpoint_is_saved_before_its_evaluation(fake, tmp_path, monkeypatch):
  """An evaluation that fails (here: scoring) leaves the trained state saved."""
  def broken(self, predictions, ctx):
    raise RuntimeError("evaluator crashed")
  monkeypatch.setattr(fake.FakeTask, "score", broken)
  config = fake.config(checkpoint_every_steps=100)  # evaluation after epoch 1 = step 3
  with pytest.raises(RuntimeError, match="evaluator crashed"):
    loop.train_and_evaluate(config, str(tmp_path))
  assert _steps(tmp_path / "checkpoints") == [3]


# ----------------------------------------------------------------------------------------
# Divergence: warned once when the loss grows a hundredfold
# ----------------------------------------------------------------------------------------


def test_divergence_rule():
  from jaxpose.train import guards
  calm = guards.DivergenceMonitor()
  noisy = 0.01 * (1 + 0.8 * np.sin(np.arange(200) * 1.7)) * np.exp(-np.arange(200) / 80)
  assert all(calm.update(step, v) is None for step, v in enumerate(noisy))  # noise, decay
  bumpy = guards.DivergenceMonitor()  # a loss that jumps 30x (schedule restart) is not flagged
  assert all(bumpy.update(s, v) is None for s, v in enumerate([1.0, 0.5, 0.2, 6.0, 6.0, 0.3]))
  monitor = guards.DivergenceMonitor()
  losses = [2.0, 1.0, 0.5, 0.4, 3.0, 40.0, 900.0, 1e5, 1e9, float("nan"), 1e12]
  messages = [monitor.update(step, loss) for step, loss in enumerate(losses)]
  warned = [step for step, message in enumerate(messages) if message]
  assert warned == [6]  # moving average 279 > 100 x its minimum 1.06 (step 3)
  assert "diverging" in messages[6] and "264 times its minimum 1.06" in messages[6]


def test_a_diverging_run_is_warned_about_once(fake, tmp_path, caplog):
  config = fake.config()
  config.optim.lr = 1e6  # Adam moves every weight by ~1e6 per step: loss ~1e12, finite
  with caplog.at_level(logging.WARNING, logger="jaxpose.train.guards"):
    loop.train_and_evaluate(config, str(tmp_path))
  warnings = [r for r in caplog.records if "diverging" in r.getMessage()]
  assert len(warnings) == 1, caplog.text
  assert "train/warnings" in _event_tags(tmp_path / "tensorboard")


# ----------------------------------------------------------------------------------------
# Data workers end with their training process
# ----------------------------------------------------------------------------------------


@pytest.mark.slow  # a real training process: ~40 s on a busy 2-core machine
def test_data_workers_die_with_a_killed_training_process(data_dir, tmp_path):
  """kill -9 of a training run with two grain workers leaves no process behind."""
  import psutil
  workdir = tmp_path / "run"
  proc = subprocess.Popen(
      [sys.executable, "launch.py", "--config=configs/quickstart.py:size=64x64,builder=tiny,"
       "workers=2", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
       "--config.train.checkpoint_every_steps=1", "--config.train.global_batch_size=2",
       "--config.train.async_checkpoints=False"],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  children = []
  try:
    deadline = time.time() + 600
    while not (workdir / "checkpoints" / "1").is_dir():  # workers have produced batches
      assert proc.poll() is None, proc.stderr.read()[-3000:]
      assert time.time() < deadline, "no checkpoint after 600 s"
      time.sleep(0.5)
    children = psutil.Process(proc.pid).children(recursive=True)
    workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
    assert len(workers) >= 2, [c.cmdline() for c in children]
    proc.kill()  # SIGKILL: no clean-up code runs in the parent
    proc.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
  finally:
    if proc.poll() is None:
      proc.kill()
    for child in children:  # what this test started, by pid and start time (psutil)
      if child.is_running():
        child.kill()
