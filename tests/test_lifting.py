"""The 2D -> 3D lifters on the one loop: inference, the Human3.6M protocols, configs,
training steps, stages, resume, sharding and the evaluation of a converted checkpoint."""
from __future__ import annotations

import functools
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
import pytest
from flax import nnx

from jaxpose import checkpoint as ckpt_lib
from jaxpose import convert, datasets, models
from jaxpose.data import builders, sequences
from jaxpose.data import keypoints as kp
from jaxpose.evaluation import h36m
from jaxpose.models import rie, videopose3d
from jaxpose.train import loop, optim, state as state_lib, tasks
from jaxpose.train.tasks import base, lifting

REPO = Path(__file__).resolve().parents[1]
FLIP = kp.flip_permutation(17, kp.H36M_FLIP_PAIRS)


def _config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  return importlib.import_module(f"configs.{name}").get_config(arg)


def _eval_copy(model):
  graphdef, state = nnx.split(model)
  copy = nnx.merge(graphdef, state)
  copy.eval()
  return copy


def _mirror(x: np.ndarray) -> np.ndarray:
  out = x[..., FLIP, :].copy()
  out[..., 0] *= -1
  return out


# ----------------------------------------------------------------------------------------
# Inference without a dataset
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_lift_sequence_is_the_flip_averaged_model_on_the_edge_padded_sequence(causal):
  cfg = videopose3d.VideoPose3DConfig(filter_widths=(3, 3), channels=16, causal=causal)
  model = models.build_model(cfg, seed=3)
  x = np.random.RandomState(0).uniform(-1, 1, (12, 17, 2)).astype(np.float32)
  out = lifting.lift_sequence(model, x)
  # UnchunkedGenerator: pad + causal_shift first frames before, pad - causal_shift after.
  before, after = (8, 0) if causal else (4, 4)
  padded = np.concatenate([np.repeat(x[:1], before, 0), x, np.repeat(x[-1:], after, 0)])
  ref = _eval_copy(model)
  plain = np.asarray(ref(jnp.asarray(padded[None]))["poses"][0])
  mirrored = _mirror(np.asarray(ref(jnp.asarray(_mirror(padded)[None]))["poses"][0]))
  np.testing.assert_allclose(out, (plain + mirrored) / 2, atol=1e-6)
  np.testing.assert_allclose(lifting.lift_sequence(model, x, flip_test=False), plain, atol=1e-6)
  assert out.shape == (12, 17, 3)
  assert not model.expand_bn.use_running_average  # the caller's module is left in train mode


def test_lift_sequence_runs_window_models_and_the_trajectory_model():
  x = np.random.RandomState(1).uniform(-1, 1, (7, 17, 2)).astype(np.float32)
  model = models.build_model(rie.RIEConfig.tiny(), seed=2)
  out = lifting.lift_sequence(model, x, window_batch=3)  # 3 batches, the last one padded
  padded = np.concatenate([np.repeat(x[:1], 4, 0), x, np.repeat(x[-1:], 4, 0)])
  windows = np.stack([padded[t:t + 9] for t in range(7)])
  ref = _eval_copy(model)
  plain = np.asarray(ref(jnp.asarray(windows))["poses"][:, 0])
  mirrored = _mirror(np.asarray(ref(jnp.asarray(_mirror(windows)))["poses"][:, 0]))
  np.testing.assert_allclose(out, (plain + mirrored) / 2, atol=1e-6)
  traj = models.build_model(videopose3d.VideoPose3DConfig.trajectory(
      filter_widths=(3,), channels=8), seed=0)
  path = lifting.lift_sequence(traj, x, joint_flip_pairs=())
  padded = np.concatenate([x[:1], x, x[-1:]])
  ref = _eval_copy(traj)
  plain = np.asarray(ref(jnp.asarray(padded[None]))["poses"][0])
  mirrored = np.asarray(ref(jnp.asarray(_mirror(padded)[None]))["poses"][0]) * [-1, 1, 1]
  np.testing.assert_allclose(path, (plain + mirrored) / 2, atol=1e-6)


def test_lift_sequence_rejects_bad_input():
  model = models.build_model(videopose3d.VideoPose3DConfig(filter_widths=(3,), channels=8))
  x = np.zeros((5, 17, 2), np.float32)
  x[3, 2, 0] = np.nan
  with pytest.raises(ValueError, match=r"1 frame\(s\) have NaN .*first: frame 3"):
    lifting.lift_sequence(model, x)
  with pytest.raises(ValueError, match=r"\[T, K, 2\]"):
    lifting.lift_sequence(model, np.zeros((5, 17, 3), np.float32))
  with pytest.raises(ValueError, match=r"expects 2D keypoints \[B, T, 17, 2\]"):
    lifting.lift_sequence(model, np.zeros((5, 16, 2), np.float32), keypoint_flip_pairs=())
  with pytest.raises(TypeError, match="not a temporal lifter"):
    lifting.lift_sequence(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), np.zeros((5, 17, 2)))


# ----------------------------------------------------------------------------------------
# The Human3.6M protocols
# ----------------------------------------------------------------------------------------


def _rotation(angle: float) -> np.ndarray:
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _known_sequences():
  """Three sequences with known errors: per-frame offsets along x of ``d`` meters (every
  joint), and one similarity transform of the truth (zero error after alignment)."""
  rs = np.random.RandomState(5)
  out = []
  for action, offsets in (("Walking", [0.01, 0.03, 0.02, 0.06]),
                          ("Walking", [0.05, 0.05, 0.04, 0.02, 0.0, 0.01]),
                          ("Sitting", [0.1, 0.1, 0.2, 0.1, 0.3])):
    target = rs.normal(0, 0.3, (len(offsets), 17, 3))
    target -= target[:, :1]
    predicted = target + np.asarray(offsets)[:, None, None] * [1.0, 0.0, 0.0]
    out.append((action, predicted.astype(np.float32), target.astype(np.float32),
                np.asarray(offsets)))
  target = rs.normal(0, 0.3, (3, 17, 3))
  similar = 1.3 * target @ _rotation(0.4) + [0.2, -0.1, 0.5]
  out.append(("Eating", similar.astype(np.float32), target.astype(np.float32), None))
  return out


def test_protocol_metrics_of_known_offsets():
  seqs = _known_sequences()
  errors = [h36m.sequence_errors(a, p, t, baseline_pose=np.zeros((17, 3))) for a, p, t, _ in seqs]
  metrics = h36m.protocol_metrics(errors)
  (_, _, _, w1), (_, _, _, w2), (_, _, _, s1), _ = seqs
  # Protocol 1: every joint is off by d -> the frame-weighted mean of d over the action.
  assert metrics["MPJPE/Walking"] == pytest.approx(1000 * np.concatenate([w1, w2]).mean(), rel=1e-5)
  assert metrics["MPJPE/Sitting"] == pytest.approx(1000 * s1.mean(), rel=1e-5)
  # MPJVE: per sequence the mean |d_{t+1} - d_t|, weighted by the sequence's frames (not
  # by its frame differences), as run.py accumulates T * mean_velocity_error.
  v1, v2 = np.abs(np.diff(w1)).mean(), np.abs(np.diff(w2)).mean()
  assert metrics["MPJVE/Walking"] == pytest.approx(1000 * (4 * v1 + 6 * v2) / 10, rel=1e-5)
  assert metrics["MPJVE/Walking"] != pytest.approx(
      1000 * np.concatenate([np.abs(np.diff(w1)), np.abs(np.diff(w2))]).mean(), rel=1e-3)
  # Protocol 2 removes a translation and a similarity transform; protocol 3 only scale.
  assert metrics["P-MPJPE/Walking"] == pytest.approx(0.0, abs=1e-3)
  assert metrics["P-MPJPE/Eating"] == pytest.approx(0.0, abs=1e-3)
  assert metrics["MPJPE/Eating"] > 100
  _, p, t, _ = seqs[2]
  p64, t64 = p.astype(np.float64), t.astype(np.float64)
  scale = (t64 * p64).sum(axis=(1, 2)) / (p64 * p64).sum(axis=(1, 2))
  want = np.linalg.norm(scale[:, None, None] * p64 - t64, axis=-1).mean()
  assert metrics["N-MPJPE/Sitting"] == pytest.approx(1000 * want, rel=1e-5)
  # Averages over actions, the baseline (zero pose) and counts.
  for name in ("MPJPE", "P-MPJPE", "N-MPJPE", "MPJVE"):
    assert metrics[name] == pytest.approx(np.mean(
        [metrics[f"{name}/{a}"] for a in ("Eating", "Sitting", "Walking")]))
  norms = lambda t: np.linalg.norm(t.astype(np.float64), axis=-1).mean()
  assert metrics["mean-pose MPJPE/Sitting"] == pytest.approx(1000 * norms(t), rel=1e-5)
  assert (metrics["frames"], metrics["sequences"], metrics["actions"]) == (18, 4, 3)
  report = h36m.protocol_report(metrics, flip_test=True, header="known")
  assert report.startswith("known\n| Action")
  assert "----Sitting----\nTest time augmentation: True\nProtocol #1 Error (MPJPE): " in report
  assert (f"Protocol #1   (MPJPE) action-wise average: {round(metrics['MPJPE'], 1)} mm"
          in report)
  assert f"Velocity      (MPJVE) action-wise average: {round(metrics['MPJVE'], 2)} mm" in report


def test_h36m_evaluator_orders_rows_and_rejects_gaps(tmp_path):
  seqs = _known_sequences()
  rows = {"sequence": [], "frame": [], "action_id": [], "predicted": [], "target": []}
  from jaxpose.data import mocap_format
  for i, (action, p, t, _) in enumerate(seqs):
    rows["sequence"].append(np.full(len(p), i))
    rows["frame"].append(np.arange(len(p)))
    rows["action_id"].append(np.full(len(p), mocap_format.H36M_ACTIONS.index(action)))
    rows["predicted"].append(p)
    rows["target"].append(t)
  columns = {k: np.concatenate(v) for k, v in rows.items()}
  shuffled = np.random.RandomState(0).permutation(len(columns["frame"]))
  evaluator = datasets.H36MProtocols()
  ref = ("synthetic_mocap", "validation")
  got = evaluator(ref, {k: v[shuffled] for k, v in columns.items()}, keypoints=kp.H36M,
                  options={"flip_test": True}, workdir=str(tmp_path))
  want = h36m.protocol_metrics([h36m.sequence_errors(a, p, t) for a, p, t, _ in seqs])
  assert got == pytest.approx(want)
  saved = json.loads((tmp_path / "results" / "h36m_protocols.json").read_text())
  assert saved["per_action"]["Sitting"]["MPJPE"] == pytest.approx(want["MPJPE/Sitting"])
  assert saved["flip_test"] is True and saved["frames"] == 18
  gap = {k: np.delete(v, 2) for k, v in columns.items()}
  with pytest.raises(ValueError, match="sequence 0 has frames missing or repeated"):
    evaluator(ref, gap, keypoints=kp.H36M, options={}, workdir=str(tmp_path))
  odd = dict(columns, action_id=np.full_like(columns["action_id"], -1))
  with pytest.raises(ValueError, match="not one of the 15 Human3.6M actions"):
    evaluator(ref, odd, keypoints=kp.H36M, options={}, workdir=str(tmp_path))


# ----------------------------------------------------------------------------------------
# Configs and recipes
# ----------------------------------------------------------------------------------------

LIFTER_CONFIGS = [("videopose3d_h36m", None), ("videopose3d_h36m", "frames=27,causal=1"),
                  ("videopose3d_h36m", "semi=1"), ("rie_h36m", "stage=1"),
                  ("rie_h36m", "stage=2"), ("rie_h36m", "stage=3,lfd=512"),
                  ("quickstart_3d", None)]


@pytest.mark.parametrize("name,arg", LIFTER_CONFIGS)
def test_every_lifter_config_is_complete(name, arg):
  """Task, model (shapes only), optimizer and the predict path of each lifter config."""
  config = _config(name, arg)
  task = tasks.make_task(config)
  assert isinstance(task, lifting.LiftingTask) and task.best_mode == "min"
  abstract = nnx.eval_shape(task.build_model)
  abstract.eval()
  graphdef, state = nnx.split(abstract)
  batch = task.example_batch(2)
  labeled = batch.get("labeled", batch)
  config.eval.flip_test = False  # the flip permutation of the 2D source comes with the data
  poses = jax.eval_shape(lambda s, x: task.predict(nnx.merge(graphdef, s), {"keypoints_2d": x}),
                         state, labeled["keypoints_2d"])
  assert poses.shape == labeled["positions_3d"].shape
  tx, schedule = task.optimizer(task.build_model(), base.Schedule(10, 100))
  assert callable(schedule) and tx is not None
  assert labeled["keypoints_2d"].shape[1] == task.receptive_field + config.data.stride - 1
  assert "launch.py --config=configs/" in importlib.import_module(f"configs.{name}").__doc__


def test_config_recipes_follow_the_originals():
  vp = _config("videopose3d_h36m")
  assert tuple(vp.model.filter_widths) == (3, 3, 3, 3, 3) and vp.model.channels == 1024
  assert (vp.model.dropout, vp.train.num_epochs, vp.train.global_batch_size) == (0.25, 80, 1024)
  assert (vp.optim.name, vp.optim.amsgrad, vp.optim.lr, vp.optim.decay) == ("adam", True, 1e-3,
                                                                             0.95)
  assert vp.data.keypoints_2d == "cpn_ft_h36m_dbb" and vp.train.bn_momentum == (0.1, 0.001)
  assert vp.eval.flip_test and vp.data.augment
  semi = _config("videopose3d_h36m", "semi=1,subset=0.5")  # the README recipe, subset given
  assert (semi.data.subjects_train, semi.data.subjects_unlabeled, semi.data.subset) == (
      "S1", "S5,S6,S7,S8", 0.5)
  assert (semi.data.keypoints_2d, semi.train.num_epochs, semi.optim.decay) == ("gt", 200, 0.98)
  assert (tuple(semi.model.filter_widths), semi.loss.warmup, semi.train.global_batch_size) == (
      (3, 3, 3), 5, 64)
  assert _config("videopose3d_h36m", "stride=4").train.global_batch_size == 256
  r3 = _config("rie_h36m", "stage=3,lfd=512,init=/runs/s2")
  assert (r3.optim.name, r3.optim.lr, r3.optim.weight_decay, r3.optim.amsgrad) == (
      "adamw", 5e-4, 0.01, True)
  assert (r3.init.kind, r3.init.path, r3.model.latent_features) == ("checkpoint", "/runs/s2", 512)
  assert _config("rie_h36m").init.kind == "scratch" and _config("rie_h36m").optim.lr == 1e-3
  with pytest.raises(ValueError, match="3\\^n frames"):
    _config("videopose3d_h36m", "frames=30")
  with pytest.raises(ValueError, match="stage must be 1, 2 or 3"):
    _config("rie_h36m", "stage=4")


def test_momentum_lr_and_warmup_follow_run_py():
  config = _config("videopose3d_h36m", "semi=1,epochs=80")
  task = tasks.make_task(config)
  plan = base.Schedule(steps_per_epoch=10, total_steps=800)
  _, lr = optim.make_optimizer(config.optim, plan.steps_per_epoch)
  for epoch in (0, 1, 5, 79):
    hp = task.step_hparams(jnp.asarray(epoch * 10 + 3, jnp.int32), plan)
    # run.py after epoch e-1: initial * exp(-e / epochs * log(initial / final))
    want = 0.1 * np.exp(-epoch / 80 * np.log(0.1 / 0.001))
    assert float(hp["bn_momentum"]) == pytest.approx(want, rel=1e-5)
    assert float(hp["semi"]) == float(epoch >= 5)  # --warmup 5
    assert float(lr(epoch * 10 + 3)) == pytest.approx(1e-3 * 0.98 ** epoch, rel=1e-5)


# ----------------------------------------------------------------------------------------
# Train steps
# ----------------------------------------------------------------------------------------


def _tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config's model at a 9-frame receptive field and narrow widths."""
  config.model.filter_widths = (3, 3)
  config.model.channels = 8
  if config.model.name == "rie":
    config.model.latent_features, config.model.linear_size = 8, 16
  return config


def _step(task, *, steps_per_epoch=1, total_steps=10):
  """``(initial state, step)``: ``step(state, batch)`` runs the jitted train step of the
  task's loss (in the phase the loop would use), optimizer and hyper-parameters."""
  plan = base.Schedule(steps_per_epoch, total_steps)
  model = task.init_model()
  train_def, _, params, batch_stats = state_lib.split_model(model)
  tx, _ = task.optimizer(model, plan)
  state = state_lib.init_train_state(params, batch_stats, tx, 0)
  compiled = {}

  def step(state, batch):
    phase = task.step_phase(int(state.step), plan)
    if phase not in compiled:
      loss = task.loss if phase is None else functools.partial(task.loss, phase=phase)
      compiled[phase] = jax.jit(state_lib.make_train_step(
          train_def, loss, tx, lambda s: task.step_hparams(s, plan)))
    return compiled[phase](state, batch)

  return state, step


@pytest.mark.slow
@pytest.mark.parametrize("name,arg", [("videopose3d_h36m", "stride=3"), ("rie_h36m", "stage=2"),
                                      ("quickstart_3d", None)])
def test_every_lifter_config_runs_one_train_step(name, arg, tmp_path):
  """The config's real loss and optimizer at a 9-frame receptive field (stride 3: the
  dilated model over 3-frame chunks; RIE stage 2: from a stage-1 file, encoders frozen)."""
  config = _tiny(_config(name, arg))
  if config.init.kind == "checkpoint":
    previous = models.model_config(config.model).replace(stage=1)
    config.init.path = str(_save_original(models.build_model(previous), previous,
                                          tmp_path / "stage_1_epoch_80.bin"))
  task = tasks.make_task(config)
  state, step = _step(task)
  new, metrics = step(state, task.example_batch(8))
  assert int(new.step) == 1 and np.isfinite(float(metrics["loss"]))
  assert float(metrics["hparams/bn_momentum"]) == pytest.approx(0.1)
  for path, old in jax.tree_util.tree_leaves_with_path(state.params):
    now = new.params
    for key in path:
      now = now[key.key]
    frozen = any(getattr(key, "key", None) in getattr(task, "frozen", ()) for key in path)
    assert np.array_equal(np.asarray(old), np.asarray(now)) == frozen, path


def test_semi_supervised_warmup_ignores_the_unlabeled_half_then_uses_it():
  config = _tiny(_config("videopose3d_h36m", "semi=1,warmup=1"))
  task = tasks.make_task(config)
  state, step = _step(task, steps_per_epoch=1)  # step 0: warm-up epoch; step 1: semi
  batch = task.example_batch(8, seed=1)
  other = dict(batch, unlabeled=task.example_batch(8, seed=2)["unlabeled"])
  leaves = lambda s: jax.tree_util.tree_leaves((s.params, s.batch_stats))
  a, ma = step(state, batch)
  b, mb = step(state, other)
  for x, y in zip(leaves(a), leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert float(ma["loss_2d_unlabeled"]) == 0.0 and float(ma["hparams/semi"]) == 0.0
  c, mc = step(a, batch)
  d, _ = step(a, other)
  assert float(mc["hparams/semi"]) == 1.0 and float(mc["loss_2d_unlabeled"]) > 0
  assert float(mc["bone_length"]) > 0 and float(mc["loss_traj"]) > 0
  assert any(not np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(leaves(c), leaves(d)))
  want = float(mc["loss_3d"] + mc["loss_traj"] + mc["loss_2d_unlabeled"] + mc["bone_length"])
  assert float(mc["loss"]) == pytest.approx(want, rel=1e-6)


# ----------------------------------------------------------------------------------------
# RIE's stages
# ----------------------------------------------------------------------------------------


def _save_original(model, cfg, path: Path) -> Path:
  torch = pytest.importorskip("torch")
  state_dict = convert.export_state_dict(model, cfg)
  torch.save({"epoch": 80, "model_pos": {k: torch.from_numpy(np.array(v))
                                         for k, v in state_dict.items()}}, path)
  return path


def test_rie_stage_2_loads_and_freezes_the_stage_1_encoders(tmp_path):
  config = _tiny(_config("rie_h36m", "stage=2"))
  stage1_cfg = models.model_config(config.model).replace(stage=1)
  stage1 = models.build_model(stage1_cfg, seed=7)
  config.init.path = str(_save_original(stage1, stage1_cfg, tmp_path / "stage_1_epoch_80.bin"))
  task = tasks.make_task(config)
  model = task.init_model()
  loaded, before = ckpt_lib.model_variables(model), ckpt_lib.model_variables(stage1)
  for name in rie.RIE_ENCODERS:
    for a, b in zip(jax.tree_util.tree_leaves(loaded["params"][name]),
                    jax.tree_util.tree_leaves(before["params"][name])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert model.FuseBlocks is not None
  tx, _ = task.optimizer(model, base.Schedule(1, 10))
  params = nnx.as_pure(nnx.state(model, nnx.Param))
  ones = jax.tree_util.tree_map(jnp.ones_like, params)
  updates, _ = tx.update(ones, tx.init(params), params)
  for name, tree in updates.items():
    sizes = [float(jnp.abs(u).max()) for u in jax.tree_util.tree_leaves(tree)]
    assert (max(sizes) == 0.0) == (name in rie.RIE_ENCODERS), name
  # Stage 3 starts from a converted stage-2 file (stages 2 and 3 share one architecture);
  # a stage-1 checkpoint has no FuseBlocks for it.
  stage2 = models.build_model(models.model_config(config.model), seed=8)
  _save_original(stage2, models.model_config(config.model), tmp_path / "s2.bin")
  convert.convert_checkpoint(tmp_path / "s2.bin", tmp_path / "s2", original_args="--stage 2 -arc 3,3 -lfd 8 -ch 8")
  config3 = _tiny(_config("rie_h36m", f"stage=3,init={tmp_path / 's2'}"))
  model3 = tasks.make_task(config3).init_model()
  assert np.array_equal(np.asarray(model3.FuseBlocks[0].fc_1.kernel[...]),
                        np.asarray(stage2.FuseBlocks[0].fc_1.kernel[...]))
  config3.init.path = config.init.path
  with pytest.raises(Exception, match="FuseBlocks|does not fit"):
    tasks.make_task(config3).init_model()
  config3.init.path = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="previous stage's checkpoint"):
    tasks.make_task(config3).init_model()


# ----------------------------------------------------------------------------------------
# Data: bad input, resume, sharding
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mocap_dir(tmp_path_factory) -> str:
  path = tmp_path_factory.mktemp("tfds")
  builders.build_dataset("synthetic_mocap", path, config="tiny")
  return str(path)


def quickstart_tiny(data_dir: str, **train) -> ml_collections.ConfigDict:
  config = _tiny(_config("quickstart_3d", "builder=tiny,batch=8"))
  config.data.data_dir = data_dir
  config.train.update(dict(log_every_steps=1, async_checkpoints=False, **train))
  config.eval.length_multiple = 32
  return config


def test_bad_lifting_input_is_a_clear_error(mocap_dir, monkeypatch):
  def task_of(**data):
    config = quickstart_tiny(mocap_dir)
    config.data.update(data)
    return tasks.make_task(config)

  with pytest.raises(KeyError, match="no 2D source 'cpn_ft_h36m_dbb'; the dataset has gt, detected"):
    task_of(keypoints_2d="cpn_ft_h36m_dbb").train_sequences()
  with pytest.raises(ValueError, match="subjects S5 are not in the split"):
    task_of(subjects_train="S1,S5").train_sequences()
  with pytest.raises(ValueError, match="no sequence of subjects"):
    task_of(actions="Jumping").eval_sequences()
  with pytest.raises(ValueError, match="both labeled .* and unlabeled"):
    task_of(subjects_train="S1", subjects_unlabeled="S1")
  config = quickstart_tiny(mocap_dir)
  config.model.num_joints_in = 16
  with pytest.raises(ValueError, match="'detected' of synthetic_mocap has 17 joints, the model "
                                       "takes 16"):
    tasks.make_task(config).train_sequences()
  config = quickstart_tiny(mocap_dir)
  config.data.dataset = "mpii"
  with pytest.raises(ValueError, match="'mpii' has no 3D pose sequences"):
    tasks.make_task(config)
  config = quickstart_tiny(mocap_dir)
  config.task = "rie"
  with pytest.raises(ValueError, match="task 'rie' trains 'rie' models"):
    tasks.make_task(config)
  # Non-finite values that reached the examples (the builders skip such sequences).
  task = task_of()
  seqs = task.eval_sequences()
  seqs.keypoints[seqs.offsets[1] + 2, 3, 0] = np.nan
  monkeypatch.setattr(sequences, "load_sequences", lambda *args, **kwargs: seqs)
  with pytest.raises(ValueError, match="2D keypoints of S9 .* camera 1 are not finite .*frame 2"):
    task.load(task.eval_ref, None)


class SimulatedCrash(Exception):
  """Stands for a killed job."""


_TRAIN_ITERATOR = sequences.train_iterator


class _Recorder:
  """Wraps ``sequences.train_iterator``: records batch fingerprints, can crash on a batch."""

  def __init__(self, crash_at=None):
    self.seen, self.crash_at = [], crash_at
    self.original = _TRAIN_ITERATOR

  def __call__(self, *args, **kwargs):
    inner, recorder = self.original(*args, **kwargs), self

    class It:
      def __next__(self):
        if recorder.crash_at is not None and len(recorder.seen) + 1 == recorder.crash_at:
          raise SimulatedCrash(f"interrupted before batch {recorder.crash_at}")
        batch = next(inner)
        recorder.seen.append(hash(batch["keypoints_2d"].tobytes()))
        return batch

      def get_state(self):
        return inner.get_state()

      def set_state(self, state):
        inner.set_state(state)

    return It()


def _final_state(workdir: Path, config):
  task = tasks.make_task(config)
  model = task.build_model()
  _, _, params, batch_stats = state_lib.split_model(model)
  tx, _ = task.optimizer(model, base.Schedule(1, 1))
  checkpointer = ckpt_lib.TrainCheckpointer(workdir)
  restored, data_state, _ = checkpointer.restore(
      state_lib.init_train_state(params, batch_stats, tx, 0))
  checkpointer.close()
  return restored, data_state


@pytest.mark.slow
def test_lifter_run_resumes_exactly_and_prints_the_protocols(mocap_dir, tmp_path, monkeypatch,
                                                             capsys):
  """Interrupted + resumed == straight, bit for bit, with the data position."""
  config = quickstart_tiny(mocap_dir, total_steps=4, checkpoint_every_steps=2)
  straight = _Recorder()
  monkeypatch.setattr(sequences, "train_iterator", straight)
  metrics = loop.train_and_evaluate(config, str(tmp_path / "straight"))
  out = capsys.readouterr().out
  assert "Protocol #1   (MPJPE) action-wise average:" in out and "mean-pose baseline" in out
  assert 0 < metrics["MPJPE"] and metrics["mean-pose MPJPE"] > 100
  assert json.loads((tmp_path / "straight" / "results" / "h36m_protocols.json").read_text())[
      "average"]["MPJPE"] == pytest.approx(metrics["MPJPE"])
  first = _Recorder(crash_at=3)
  monkeypatch.setattr(sequences, "train_iterator", first)
  with pytest.raises(SimulatedCrash):
    loop.train_and_evaluate(config, str(tmp_path / "resumed"))
  second = _Recorder()
  monkeypatch.setattr(sequences, "train_iterator", second)
  loop.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert first.seen + second.seen == straight.seen and len(straight.seen) == 4
  a, data_a = _final_state(tmp_path / "straight", config)
  b, data_b = _final_state(tmp_path / "resumed", config)
  assert int(a.step) == int(b.step) == 4 and data_a == data_b
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert loop.evaluate(config, str(tmp_path / "straight"), "best")["MPJPE"] == pytest.approx(
      metrics["MPJPE"])


SHARDED_SCRIPT = textwrap.dedent("""
    import functools
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from configs import videopose3d_h36m
    from jaxpose.train import state as S, tasks
    from jaxpose.train.tasks import base
    assert jax.device_count() == 8
    config = videopose3d_h36m.get_config("semi=1,warmup=1")
    config.model.update(filter_widths=(3, 3), channels=16)
    config.train.dtype = "float64"
    task = tasks.make_task(config)
    plan = base.Schedule(1, 10)  # step 0: warm-up; steps 1, 2: semi-supervised
    tdef, _, params, bs = S.split_model(task.init_model())
    f64 = lambda t: jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), t)
    tx, _ = task.optimizer(task.build_model(), plan)
    steps = {p: S.make_train_step(tdef, functools.partial(task.loss, phase=p), tx,
                                  lambda s: task.step_hparams(s, plan))
             for p in ("warmup", "semi")}
    batch = f64(task.example_batch(16))
    results = {}
    for n in (1, 8):
      mesh = S.make_mesh(jax.devices()[:n])
      st = jax.device_put(S.init_train_state(f64(params), f64(bs), tx, 0), S.replicated(mesh))
      fns = {p: S.jit_train_step(f, mesh) for p, f in steps.items()}
      for k in range(3):
        st, m = fns[task.step_phase(k, plan)](st, S.global_batch(batch, mesh))
      assert float(m["hparams/semi"]) == 1.0
      results[n] = jax.tree_util.tree_map(np.asarray, (st.params, st.batch_stats, st.opt_state))
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(
        jax.tree_util.tree_leaves(results[1]), jax.tree_util.tree_leaves(results[8])))
    print("MAXDIFF", worst)
""")


@pytest.mark.slow
def test_sharded_lifter_step_equals_single_device_step():
  """8 fake CPU devices vs 1 for semi-supervised VideoPose3D (float64; the global-batch
  BatchNorm statistics, the warm-up phase and the semi-supervised phase)."""
  result = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], capture_output=True,
                          text=True, cwd=REPO, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  worst = float(result.stdout.split("MAXDIFF")[1])
  assert worst < 1e-11, worst


# ----------------------------------------------------------------------------------------
# --mode=eval of a converted checkpoint == the original evaluate() on the same predictions
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def h36m_dir(tmp_path_factory) -> str:
  from tests.test_builders_3d import _write_manual  # VideoPose3D's files, with their quirks
  manual = tmp_path_factory.mktemp("h36m_manual")
  _write_manual(manual)
  path = tmp_path_factory.mktemp("h36m_tfds")
  builders.build_dataset("h36m_poses", path, manual_dir=manual)
  return str(path)


def _original_checkpoint(cfg, path: Path) -> Path:
  """A ``run.py`` checkpoint (``{'epoch', 'model_pos'}``) of synthetic weights
  (``tests/conformance/synth_weights.py`` rules), BatchNorm counters included."""
  from tests.conformance import synth_weights
  names = convert.export_state_dict(models.build_model(cfg), cfg)
  tensors = [[k, list(np.shape(v)), "float32"] for k, v in names.items()]
  tensors += [[k.rsplit(".", 1)[0] + ".num_batches_tracked", [], "int64"]
              for k in names if k.endswith("running_mean")]
  manifest = {"tensors": tensors, "checkpoint": {"prefix": "", "wrap": "model_pos",
                                                 "extra": {"epoch": 80}}}
  return synth_weights.write_checkpoint(manifest, path)


def _procrustes_error(p: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Per-frame error after the best similarity transform (scale, proper rotation, shift)."""
  out = []
  for a, b in zip(p.astype(np.float64), t.astype(np.float64)):
    a0, b0 = a - a.mean(0), b - b.mean(0)
    u, s, vt = np.linalg.svd(a0.T @ b0)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1, 1, d]) @ vt
    scale = (s * [1, 1, d]).sum() / (a0 ** 2).sum()
    out.append(np.linalg.norm(scale * a0 @ rot + b.mean(0) - b, axis=-1).mean())
  return np.asarray(out)


def _run_py_evaluate(predictions, targets, actions) -> dict[str, float]:
  """run.py's evaluate() arithmetic per action: sums of T * error per whole sequence over
  the action's frames; action-wise averages; millimeters."""
  table = {}
  for action in sorted(set(actions)):
    sums, frames = np.zeros(4), 0
    for p, t, a in zip(predictions, targets, actions):
      if a != action:
        continue
      p, t = p.astype(np.float64), t.astype(np.float64)
      e1 = np.linalg.norm(p - t, axis=-1).mean()
      scale = (t * p).sum(axis=(1, 2), keepdims=True) / (p * p).sum(axis=(1, 2), keepdims=True)
      e3 = np.linalg.norm(scale * p - t, axis=-1).mean()
      ev = np.linalg.norm(np.diff(p, axis=0) - np.diff(t, axis=0), axis=-1).mean()
      sums += len(p) * np.array([e1, _procrustes_error(p, t).mean(), e3, ev])
      frames += len(p)
    table[action] = 1000 * sums / frames
  return table


def test_eval_of_a_converted_checkpoint_reproduces_run_py_evaluate(h36m_dir, tmp_path, capsys):
  config = _config("videopose3d_h36m", "frames=27,channels=32,train=S1")
  config.data.data_dir = h36m_dir
  cfg = models.model_config(config.model)
  original = _original_checkpoint(cfg, tmp_path / "pretrained_h36m_cpn.bin")
  convert.convert_checkpoint(original, tmp_path / "converted", original_args="-arc 3,3,3 -ch 32")
  metrics = loop.evaluate(config, str(tmp_path / "eval"), str(tmp_path / "converted"))
  out = capsys.readouterr().out
  config.eval.original_args = "-arc 3,3,3 -ch 32"
  assert loop.evaluate(config, str(tmp_path / "eval_bin"), str(original)) == pytest.approx(metrics)

  # The same predictions, scored with run.py's arithmetic written out here.
  model, _ = convert.load_converted(tmp_path / "converted")
  ref = sequences.DatasetRef("h36m_poses", h36m_dir, "validation")
  seqs = sequences.load_sequences(ref, "cpn_ft_h36m_dbb", subjects=("S9", "S11"))
  predictions, targets, actions = [], [], []
  for i in range(len(seqs)):
    lo, hi = seqs.offsets[i], seqs.offsets[i + 1]
    predictions.append(lifting.lift_sequence(model, seqs.keypoints[lo:hi]))
    targets.append(seqs.positions[lo:hi] - seqs.positions[lo:hi, :1])
    actions.append(seqs.actions[i].split(" ")[0])
  want = _run_py_evaluate(predictions, targets, actions)
  assert sorted(want) == h36m.protocol_actions(metrics) == [
      "Directions", "Eating", "Sitting", "Walking"]  # S11 'Directions' is dropped, 'Directions 1' not
  for action, values in want.items():
    got = [metrics[f"{n}/{action}"] for n in ("MPJPE", "P-MPJPE", "N-MPJPE", "MPJVE")]
    np.testing.assert_allclose(got, values, rtol=1e-5, err_msg=action)
  assert metrics["MPJPE"] == pytest.approx(np.mean([v[0] for v in want.values()]), rel=1e-5)
  # S9 'Walking 1' camera 1 (2D shorter than 3D) and S9 'Sitting' camera 2 (NaN) were
  # skipped by the builder: counted and shown, not silently averaged away.
  assert metrics["missing camera sequences"] == 2 and metrics["sequences"] == len(seqs) == 14
  assert "(2 camera sequences missing from the dataset)" in out
  assert "Protocol #3 (N-MPJPE) action-wise average:" in out and "----Eating----" in out
  assert json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())["MPJPE"] == (
      pytest.approx(metrics["MPJPE"]))
  config.eval.original_args = "-arc 3,3,3 -ch 32 --causal"
  with pytest.raises(ValueError, match="causal: file True, config False"):
    loop.evaluate(config, str(tmp_path / "eval_causal"), str(original))
