"""The integral and hg3d tasks on the one loop: mixed batches, losses, configs, evaluation of
a checkpoint in the original's layout."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import common, hg3d_h36m, integral_h36m, quickstart_3d_image
from jaxpose import convert, models
from jaxpose.data import builders, pipeline
from jaxpose.data import keypoints as kp
from jaxpose.train import loop, optim, state as state_lib, tasks, validation, weights
from tests import test_builders, test_builders_image3d

REPO = Path(__file__).resolve().parents[1]
IMAGE3D_CONFIGS = ("quickstart_3d_image", "integral_h36m", "integral_h36m:challenge",
                   "integral_h36m:layout=eccv18", "hg3d_h36m:stage=1", "hg3d_h36m:stage=2",
                   "hg3d_h36m:stage=3")
# One train step each (slow): every config file, both crop-box rules, with and without
# the depth head (the other variants differ only in numbers the checks above cover).
TRAIN_STEP_CONFIGS = ("quickstart_3d_image", "integral_h36m", "integral_h36m:challenge",
                      "hg3d_h36m:stage=1", "hg3d_h36m:stage=3")


def _config(spec: str):
  name, _, arg = spec.partition(":")
  return importlib.import_module(f"configs.{name}").get_config(arg or None)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
  """Tiny synthetic 3D people, tiny synthetic 2D people, dummy MPII and challenge data."""
  root = tmp_path_factory.mktemp("image3d")
  builders.build_dataset("synthetic_people3d", root / "tfds", config="tiny")
  builders.build_dataset("synthetic_people", root / "tfds", config="tiny")
  test_builders._write_mpii(root / "mpii", with_gt=True)
  test_builders_image3d.write_eccv18(root / "h36m", sizes=(("Train", 3), ("Val", 3)))
  return {"data_dir": str(root / "tfds"), "mpii": str(root / "mpii"), "h36m": str(root / "h36m")}


def _tiny(config, data: dict, batch: int = 4):
  """A real config at test sizes: ResNet-18 trunk, 96x96 crops, the test data."""
  config.data.data_dir = data["data_dir"]
  for group in (config.data.sources, config.eval.datasets):
    for name in group:
      entry = group[name]
      if entry.dataset == "mpii":
        entry.manual_dir = data["mpii"]
      elif entry.dataset == "h36m_images":
        entry.manual_dir = data["h36m"]
        entry.builder_config = "eccv18"  # the layout of the test's dummy files
      elif entry.dataset == "synthetic_people3d":
        entry.builder_config = "tiny"
  config.model.num_layers = 18
  if config.task == "integral":
    config.model.num_deconv_filters = 32
    config.model.depth_dim = 24
  else:
    config.model.deconv_filters = (32, 32, 32)
  config.data.input_size = (96, 96)
  config.data.heatmap_size = (24, 24)
  config.init.kind = "scratch"
  config.train.global_batch_size = batch
  config.train.log_every_steps = 1
  config.train.async_checkpoints = False
  config.eval.batch_size = 4
  return config


def _loss_fn(task, model):
  train_def, _, params, batch_stats = state_lib.split_model(model)

  def loss(batch):
    m = nnx.merge(train_def, params, batch_stats)
    return task.loss(m, jax.tree_util.tree_map(jnp.asarray, batch), jax.random.key(0), {})[0]
  return loss


def test_mixed_integral_batches_hold_the_ratio_and_2d_rows_carry_no_depth(data):
  """Half synthetic 2D people (COCO -> integral's 18 joints), half 3D people, every batch;
  the loss does not move when the 2D rows' depth targets change, and does for 3D rows."""
  config = _tiny(quickstart_3d_image.get_config("builder=tiny"), data)
  sources = config.data.sources
  sources.people2d = dict(sources.people3d)
  sources.people2d.update(dataset="synthetic_people", builder_config="tiny")
  config.data.mixture = ("people2d", "people3d")
  task = tasks.make_task(config)
  task.prepare_data()
  train = task.train_data(global_batch_size=4, process_index=0, process_count=1)
  people2d = task.table(*task.sources[0][1:])
  assert train.num_examples == 2 * len(people2d)
  for _ in range(3):
    batch = next(train.iterator)
    z_weight = batch["target_weight"][..., 2]
    assert np.count_nonzero(z_weight.sum(1) == 0) == 2  # the two 2D rows
    assert np.count_nonzero(z_weight.sum(1) == 18) == 2  # the two 3D rows
  two_d = z_weight.sum(1) == 0
  loss = _loss_fn(task, task.init_model())
  base = float(loss(batch))
  moved = {k: v.copy() for k, v in batch.items()}
  moved["target"][two_d, :, 2] += 0.3
  assert float(loss(moved)) == pytest.approx(base, rel=1e-6)
  moved = {k: v.copy() for k, v in batch.items()}
  moved["target"][~two_d, :, 2] += 0.3
  assert float(loss(moved)) > base + 0.5


def test_mixed_hg3d_batches_supervise_depth_of_3d_rows_only(data):
  config = _tiny(hg3d_h36m.get_config("stage=3"), data)
  sources = config.data.sources
  sources.h36m.update(dataset="synthetic_people3d", builder_config="tiny")
  task = tasks.make_task(config)
  task.prepare_data()
  train = task.train_data(global_batch_size=4, process_index=0, process_count=1)
  batch = next(train.iterator)
  is_3d = batch["reg_mask"].sum(1) > 0
  assert is_3d.tolist().count(True) == 2
  assert np.all(np.isin(batch["reg_target"][~is_3d], (0.0, 1.0)))  # visibility of MPII rows
  loss = _loss_fn(task, task.init_model())
  base = float(loss(batch))
  moved = {k: v.copy() for k, v in batch.items()}
  moved["reg_target"][is_3d] += 5.0
  assert float(loss(moved)) > base + 0.1


@pytest.mark.slow
@pytest.mark.parametrize("spec", TRAIN_STEP_CONFIGS)
def test_every_image3d_config_runs_one_train_step(spec, data):
  """The config's loss, optimizer and task on a real (tiny-trunk) model and a real batch."""
  config = _tiny(_config(spec), data)
  task = tasks.make_task(config)
  task.prepare_data()
  train = task.train_data(global_batch_size=4, process_index=0, process_count=1)
  mesh = state_lib.make_mesh()
  model = task.init_model()
  train_def, _, params, batch_stats = state_lib.split_model(model)
  tx, _ = task.optimizer(model, loop.Schedule(10, 100))
  state = jax.device_put(state_lib.init_train_state(params, batch_stats, tx, 0),
                         state_lib.replicated(mesh))
  step = state_lib.jit_train_step(state_lib.make_train_step(train_def, task.loss, tx), mesh)
  state, metrics = step(state, state_lib.global_batch(next(train.iterator), mesh))
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))


def test_every_image3d_config_passes_the_config_validation(tmp_path):
  """main's whole-config check before any work, for training (from scratch: the ImageNet
  and previous-stage files are the user's) and for ``--mode=eval``; a config missing the
  image-3D sections fails in one line naming them."""
  for spec in IMAGE3D_CONFIGS:
    config = _config(spec)
    config.init.kind = "scratch"
    task = validation.validate_config(config, mode="train", device_count=1)
    assert type(task) is tasks.task_class(config.task)
    validation.validate_config(_config(spec), mode="eval", checkpoint="best")
  config = _config("hg3d_h36m:stage=2")
  with pytest.raises(validation.ConfigError, match="init.kind='checkpoint' needs init.path"):
    validation.validate_config(config, mode="train")
  del config.data["mixture"]
  with pytest.raises(validation.ConfigError, match="needs data.mixture") as error:
    validation.validate_config(config, mode="eval", checkpoint="best")
  assert "\n" not in str(error.value)


def test_configs_follow_the_released_recipes():
  c = integral_h36m.get_config()
  assert (c.model.num_layers, c.model.depth_dim, c.model.num_joints) == (50, 64, 18)
  assert c.optim.milestones == (269, 289) and c.train.num_epochs == 300
  assert c.data.mixture == ("mpii", "h36m") and c.eval.protocol == "backproject"
  assert c.init.kind == "imagenet" and c.init.path.startswith("resnet50")
  c = integral_h36m.get_config("challenge")
  assert c.model.num_layers == 152 and c.eval.protocol == "bone_length"
  assert c.data.sources.h36m.box == "joints" and c.train.global_batch_size == 96
  assert integral_h36m.get_config("schedule=x140").optim.milestones == (89, 119)
  s1, s2, s3 = (hg3d_h36m.get_config(f"stage={s}") for s in (1, 2, 3))
  assert not s1.model.with_depth and s1.data.mixture == ("mpii",) and s1.eval.sets == ("mpii",)
  assert (s2.loss.weight_3d, s2.loss.weight_var, s2.train.num_epochs, s2.optim.milestones) == (
      0.1, 0.0, 60, (45,))
  assert s2.init.kind == "checkpoint" and s2.init.partial
  assert (s3.loss.weight_var, s3.optim.lr, s3.train.num_epochs) == (0.01, 1e-4, 10)
  assert s3.eval.datasets.h36m.every == 10
  assert hg3d_h36m.get_config("stage=3,full_test").eval.datasets.h36m.every == 1
  for spec in IMAGE3D_CONFIGS:
    config = _config(spec)
    module = importlib.import_module(f"configs.{spec.partition(':')[0]}")
    assert "launch.py --config=configs/" in module.__doc__
    task = tasks.make_task(config)
    cfg = weights.model_config(config)
    graphdef, state = nnx.split(models.abstract_model(cfg))
    h, w = config.data.input_size
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                         jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32))
    assert out["heatmaps"].shape[-1] % task.keypoint_set.num_keypoints == 0
    optim.make_optimizer(config.optim, 10)
  with pytest.raises(ValueError, match="data.sources has no entry 'nope'"):
    config = integral_h36m.get_config()
    config.data.mixture = ("nope",)
    tasks.make_task(config)
  with pytest.raises(ValueError, match="eval.protocol must be one of"):
    config = integral_h36m.get_config()
    config.eval.protocol = "magic"
    tasks.make_task(config)


@pytest.mark.slow  # ~30 s on the busy 2-core machine: training, two evaluation sets, predict
def test_quickstart_trains_evaluates_and_prints_the_protocol_line(data, tmp_path, capsys):
  config = quickstart_3d_image.get_config("builder=tiny,trunk=8,width=16")
  config.eval.datasets.mpii = common.image3d_set("mpii", "validation")  # + PCKh, as the
  config.eval.sets = ("people3d", "mpii")                               # mixed configs
  config = _tiny(config, data)
  config.train.total_steps = 2
  metrics = loop.train_and_evaluate(config, str(tmp_path))
  assert {"MPJPE", "P-MPJPE", "mean-pose MPJPE", "mpii/Mean"} <= set(metrics)
  assert 0.0 <= metrics["mpii/Mean"] <= 100.0
  assert any(k.startswith("MPJPE/") for k in metrics)
  captured = capsys.readouterr()
  out = captured.out + captured.err
  assert f"Protocol #1 Error (MPJPE): {metrics['MPJPE']:.2f} mm" in out
  assert f"Protocol #2 Error (P-MPJPE): {metrics['P-MPJPE']:.2f} mm" in out
  assert (f"mean-pose baseline (the training set's mean root-relative pose): MPJPE "
          f"{metrics['mean-pose MPJPE']:.1f} mm (mean over the evaluated people)") in out
  assert out.index("| Average ") < out.index("Protocol #1 Error (MPJPE)")  # after the table
  final = json.loads((tmp_path / "final_metrics.json").read_text())
  assert final["metrics"]["MPJPE"] == pytest.approx(metrics["MPJPE"])
  # jaxpose predict refuses image-3D models in one line, before reading any weights.
  from jaxpose import predict
  from jaxpose.inference import loading
  with pytest.raises(loading.ModelSpecError, match="do not run image-based 3D models"):
    loading.load_model(str(tmp_path))
  image = tmp_path / "person.png"
  cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
  assert predict.main([str(image), "--model", str(tmp_path), "--output",
                       str(tmp_path / "out"), "--boxes", "whole"]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "do not run image-based 3D models" in err[0], err


def test_a_stage_adding_a_head_starts_from_the_previous_stage(tmp_path):
  """hg3d stage 2 from stage 1's workdir: every stage-1 weight is loaded, the depth head it
  lacks keeps its fresh initialisation (``init.partial``); without it, a clear error."""
  from jaxpose import checkpoint as ckpt_lib
  stage1 = hg3d_h36m.get_config("stage=1")
  stage1.model.update(num_layers=18, deconv_filters=(16, 16), deconv_kernels=(4, 4))
  model1 = models.build_model(weights.model_config(stage1), seed=5)
  _, _, params, batch_stats = state_lib.split_model(model1)
  tx, _ = optim.make_optimizer(stage1.optim, 10)
  checkpointer = ckpt_lib.TrainCheckpointer(tmp_path / "stage1", async_save=False)
  checkpointer.save(3, state_lib.init_train_state(params, batch_stats, tx, 0), {}, {})
  checkpointer.close()
  stage2 = hg3d_h36m.get_config("stage=2")
  stage2.model.update(num_layers=18, deconv_filters=(16, 16), deconv_kernels=(4, 4))
  stage2.init.path = str(tmp_path / "stage1")
  model2 = weights.initial_model(stage2)
  np.testing.assert_array_equal(model2.backbone.conv1.kernel[...],
                                model1.backbone.conv1.kernel[...])
  np.testing.assert_array_equal(model2.hm.kernel[...], model1.hm.kernel[...])
  fresh = models.build_model(weights.model_config(stage2), seed=stage2.train.seed)
  np.testing.assert_array_equal(model2.depth.kernel[...], fresh.depth.kernel[...])
  stage2.init.partial = False
  with pytest.raises(ValueError, match="missing params/depth/kernel"):
    weights.initial_model(stage2)


def _independent_hg3d(model, table, images, input_size=128, output=32) -> np.ndarray:
  """pytorch-pose-hg-3d's evaluation written out again: square crop of max(box), flip-averaged
  maps, argmax / 32 + depth at the argmax relative to the pelvis, MPII -> H36M with the
  spine and nose recomputed, total bone length 4000 over its edges."""
  from jaxpose.data import transforms
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  poses = []
  for row, image in zip(table, images):
    s = min(float(np.max(row["box_size"])), float(max(image.shape[:2])))
    trans = transforms.get_affine_transform(row["box_center"], np.array([s, s]), 0,
                                            (input_size, input_size), pixel_std=1.0)
    crop = cv2.warpAffine(image, trans, (input_size, input_size), flags=cv2.INTER_LINEAR)
    x = ((crop.astype(np.float32) / 256.0 - mean) / std).astype(np.float32)[None]
    out = model(jnp.asarray(x))
    flip = model(jnp.asarray(x[:, :, ::-1].copy()))
    perm = kp.flip_permutation(16, kp.MPII_FLIP_PAIRS)
    hm = (np.asarray(out["heatmaps"])[0] + np.asarray(flip["heatmaps"])[0][:, ::-1][..., perm]) / 2
    dm = (np.asarray(out["depth"])[0] + np.asarray(flip["depth"])[0][:, ::-1][..., perm]) / 2
    pose = np.zeros((16, 3))
    for j in range(16):
      y, xx = np.unravel_index(np.argmax(hm[..., j]), hm.shape[:2])
      pose[j] = (xx / output, y / output, dm[y, xx, j])
    pose -= pose[6]
    h36m = pose[[6, 2, 1, 0, 3, 4, 5, 6, 8, 9, 9, 13, 14, 15, 12, 11, 10]]
    h36m[7] = (h36m[0] + h36m[8]) / 2
    h36m[9] = (h36m[8] + h36m[10]) / 2
    ext = np.concatenate([h36m, (h36m[14:15] + h36m[11:12]) / 2])
    edges = [(3, 2), (2, 1), (1, 0), (0, 4), (4, 5), (5, 6), (0, 7), (7, 8), (8, 10), (16, 15),
             (15, 14), (14, 8), (8, 11), (11, 12), (12, 13)]
    total = sum(np.linalg.norm(ext[a] - ext[b]) for a, b in edges)
    poses.append(h36m * 4000.0 / total)
  return np.stack(poses)


@pytest.mark.slow
def test_evaluating_a_converted_fusion_3d_var_runs_the_benchmark_protocol(data, tmp_path):
  """``--mode=eval --checkpoint=`` a file in fusion_3d_var.pth's layout (the fixture weight
  generator's) and its converter output: the same metrics, equal to the protocol computed
  independently here on the same model's outputs."""
  torch = pytest.importorskip("torch")  # noqa: F841  (writes the original's file format)
  from tests.conformance import synth_weights
  manifest = json.loads((REPO / "tests/reference/models/hg3d_msra_resnet50.json").read_text())
  pth = synth_weights.write_checkpoint(manifest, tmp_path / "fusion_3d_var.pth")
  convert.convert_checkpoint(pth, tmp_path / "converted")
  config = hg3d_h36m.get_config("stage=3,full_test")
  config.data.data_dir = data["data_dir"]
  for group in (config.data.sources, config.eval.datasets):
    group.mpii.manual_dir = data["mpii"]
    group.h36m.manual_dir = data["h36m"]
  config.data.input_size, config.data.heatmap_size = (128, 128), (32, 32)
  config.eval.batch_size = 2
  from_dir = loop.evaluate(config, str(tmp_path / "e1"), str(tmp_path / "converted"))
  from_pth = loop.evaluate(config, str(tmp_path / "e2"), str(pth))
  assert from_dir == pytest.approx(from_pth)
  assert {"MPJPE", "mpii/Mean"} <= set(from_dir) and "P-MPJPE" not in from_dir
  task = tasks.make_task(config)
  _, entry, cfg = task.eval_sets[0]
  table = task.eval_table(entry, cfg)
  source = pipeline.open_source(task._ref(cfg))  # noqa: SLF001
  examples = [source[int(i)] for i in table.example_index]
  images = [cv2.imdecode(np.frombuffer(ex["image"], np.uint8), cv2.IMREAD_COLOR)
            if isinstance(ex["image"], bytes) else ex["image"][..., ::-1] for ex in examples]
  model = weights.load_weights(str(tmp_path / "converted"), weights.model_config(config))
  model.eval()
  rows = [table.row(i) for i in range(len(table))]
  pred = _independent_hg3d(model, rows, images)
  gt = np.stack([ex["positions_3d"] for ex in examples]) * 1000.0
  gt = gt - gt[:, :1]
  expected = np.linalg.norm(pred - gt, axis=-1).mean(axis=-1).mean()
  assert from_dir["MPJPE"] == pytest.approx(expected, rel=1e-4)


def test_integral_starts_from_a_torchvision_imagenet_file(tmp_path):
  """``init.kind='imagenet'``: the trunk of a torchvision-format ResNet file (``fc`` and all)
  is loaded through the converter's partial mode; the head keeps integral's N(0, 0.001)."""
  torch = pytest.importorskip("torch")
  from jaxpose.models import resnet
  donor_cfg = resnet.PoseResNetConfig(num_layers=18, num_joints=3, deconv_filters=(8,),
                                      deconv_kernels=(4,))
  donor = models.build_model(donor_cfg, seed=3)
  trunk = {k: v for k, v in convert.export_state_dict(donor, donor_cfg).items()
           if not k.startswith(("deconv_layers", "final_layer"))}
  trunk["fc.weight"] = np.zeros((1000, 512), np.float32)
  trunk["fc.bias"] = np.zeros(1000, np.float32)
  trunk["bn1.running_mean"] = np.random.RandomState(0).rand(64).astype(np.float32)
  torch.save({k: torch.from_numpy(np.array(v)) for k, v in trunk.items()}, tmp_path / "r18.pth")
  config = integral_h36m.get_config()
  config.model.update(num_layers=18, num_deconv_filters=16, depth_dim=8)
  config.init.path = str(tmp_path / "r18.pth")
  model = weights.initial_model(config)
  np.testing.assert_array_equal(model.backbone.layer4[1].conv2.kernel[...],
                                donor.backbone.layer4[1].conv2.kernel[...])
  np.testing.assert_array_equal(model.backbone.bn1.mean[...], trunk["bn1.running_mean"])
  head = np.asarray(model.final_layer.kernel[...])
  assert 0.0005 < head.std() < 0.002  # fresh N(0, 0.001)
