"""HRNet (``pose_hrnet``): model, config, checkpoint conversion and ImageNet initialisation.

The released W32 configuration is checked against the original's outputs by
``tests/test_reference.py``; here small configurations cover the rest of what the original
yaml can express (Bottleneck stages, single-branch stages, several new branches at once, a
last stage without new branches, width-changing transitions, 3x3 final convs).
"""
from __future__ import annotations

import collections
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpose import checkpoint
from jaxpose import convert
from jaxpose import models
from jaxpose.convert import hrnet as hrnet_family
from jaxpose.convert.__main__ import main as convert_main
from jaxpose.models import hrnet
from tests.conformance import fixtures

S = hrnet.HRNetStage
REFERENCE_DIR = fixtures.PROJECT_DIR  # the project's copy of the reference fixtures
IMAGE = (2, 64, 64)  # batch, H, W: ceil(H/4) = 16 is a multiple of 2^(4-1)

CONFIGS = {
    # All four branches, Basic blocks.
    "tiny": hrnet.PoseHRNetConfig.tiny(num_joints=5),
    # The light stem/layer1 of the quickstart model (a jaxpose generalisation).
    "small": hrnet.PoseHRNetConfig.small(num_joints=5),
    # Bottleneck stage, a last-branch width change in transition2, several modules per stage,
    # 3x3 final conv, grey-scale input.
    "mixed": hrnet.PoseHRNetConfig(
        stages=(S(1, "bottleneck", (1, 1), (4, 8)), S(2, "basic", (1, 2, 1), (16, 24, 8)),
                S(1, "basic", (1, 1, 1, 1), (16, 24, 8, 12))),
        num_joints=3, final_conv_kernel=3, in_channels=1),
    # Single-branch stage 2 (no fusion), two new branches at once, last stage without new
    # branches (no transition3 tensors) and with two modules.
    "single_branch": hrnet.PoseHRNetConfig(
        stages=(S(1, "basic", (1,), (8,)), S(1, "basic", (1, 1, 1), (8, 12, 16)),
                S(2, "bottleneck", (1, 1, 1), (2, 3, 4))),
        num_joints=4),
    # Fewer stages than the original's three (a jaxpose generalisation); a 5x5 final conv
    # without padding (as the original pads only 3x3) shrinks the heatmaps by 4.
    "one_stage": hrnet.PoseHRNetConfig(stages=(S(2, "basic", (1, 2), (8, 16)),), num_joints=2,
                                       final_conv_kernel=5),
}


def _images(config, seed=0, shape=IMAGE) -> np.ndarray:
  rng = np.random.RandomState(seed)
  return rng.standard_normal((*shape, config.in_channels)).astype(np.float32)


def _randomise(state_dict: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
  """He-scaled conv weights and non-trivial BatchNorm statistics (outputs of order 1)."""
  rng = np.random.RandomState(seed)
  out = {}
  for key, value in state_dict.items():
    leaf = key.rsplit(".", 1)[1]
    if leaf == "num_batches_tracked":
      out[key] = value
    elif value.ndim == 4:
      out[key] = rng.normal(0, np.sqrt(2 / np.prod(value.shape[1:])), value.shape)
    elif leaf == "running_var":
      out[key] = rng.uniform(0.5, 1.5, value.shape)
    elif leaf == "weight":
      out[key] = rng.uniform(0.3, 0.7, value.shape)
    else:
      out[key] = rng.normal(0, 0.1, value.shape)
    out[key] = np.asarray(out[key], value.dtype)
  return out


@functools.cache
def _cached_state_dict(name: str) -> dict[str, np.ndarray]:
  config = CONFIGS[name]
  # Zero-filled variables from the abstract model: no eager initialisation (which compiles
  # one random kernel per parameter shape); the export gives the PyTorch names and layouts.
  graphdef, state = nnx.split(models.abstract_model(config))
  zeros = nnx.merge(graphdef, nnx.map_state(lambda _, v: np.zeros(v.shape, v.dtype), state))
  return _randomise(convert.export_state_dict(zeros, config), seed=2)


def _state_dict(name: str) -> dict[str, np.ndarray]:
  """A randomised PyTorch-layout state dict for ``CONFIGS[name]`` (a fresh copy)."""
  return {k: v.copy() for k, v in _cached_state_dict(name).items()}


def _converted(name: str, dtype: str | None = None):
  config = CONFIGS[name]
  if dtype is not None:
    config = config.replace(dtype=dtype)
  model, _, report = convert.convert_state_dict(_state_dict(name), config)
  assert report.ok
  model.eval()
  return model


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, images):
  return nnx.merge(graphdef, state)(images)


def _forward(model, images):
  """The functional pattern: split once, one jitted pure function (cached per structure)."""
  graphdef, state = nnx.split(model)
  return {k: np.asarray(v) for k, v in _apply(graphdef, state, images).items()}


# ----------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------


def _yaml_stage(modules, blocks, channels, block="BASIC"):
  return {"NUM_MODULES": modules, "NUM_BRANCHES": len(blocks), "BLOCK": block,
          "NUM_BLOCKS": list(blocks), "NUM_CHANNELS": list(channels), "FUSE_METHOD": "SUM"}


@pytest.mark.parametrize("width,factory", [(32, hrnet.PoseHRNetConfig.w32),
                                           (48, hrnet.PoseHRNetConfig.w48)])
def test_released_configs_are_the_yaml_values(width, factory):
  c = [width, 2 * width, 4 * width, 8 * width]
  extra = {"FINAL_CONV_KERNEL": 1, "PRETRAINED_LAYERS": list(hrnet.PRETRAINED_LAYERS),
           "STAGE2": _yaml_stage(1, [4, 4], c[:2]), "STAGE3": _yaml_stage(4, [4, 4, 4], c[:3]),
           "STAGE4": _yaml_stage(3, [4, 4, 4, 4], c)}
  assert hrnet.PoseHRNetConfig.from_original(extra, num_joints=16) == factory(num_joints=16)


def test_config_round_trips_through_json():
  for config in CONFIGS.values():
    text = json.dumps(config.to_config().to_dict())
    assert models.model_config(json.loads(text)) == config
    assert hash(config) == hash(models.model_config(json.loads(text)))


@pytest.mark.parametrize("changes,match", [
    (dict(block="BOTTLE"), "block"),
    (dict(num_blocks=(1, 1), num_channels=(8,)), "equal length"),
    (dict(fuse_method="cat"), "fuse_method"),
    (dict(num_modules=0), "num_modules"),
    (dict(num_blocks=(0, 1)), ">= 1"),
])
def test_bad_stage_configs_are_refused(changes, match):
  with pytest.raises(ValueError, match=match):
    S(**{"num_modules": 1, "block": "basic", "num_blocks": (1, 1), "num_channels": (8, 16),
         **changes})


def test_yaml_branch_count_is_checked():
  stage = _yaml_stage(1, [4, 4], [32, 64])
  stage["NUM_BRANCHES"] = 3
  with pytest.raises(ValueError, match=r"NUM_BRANCHES\(3\) <> NUM_BLOCKS\(2\)"):
    S.from_original(stage)


# ----------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_export_convert_round_trip(name):
  """Shapes -> the same config; converted variables and outputs identical to the source."""
  config = CONFIGS[name]
  source = _converted(name)
  state_dict = convert.export_state_dict(source, config)
  assert set(state_dict) == set(_state_dict(name))
  assert convert.infer_model_config(state_dict) == config
  model, inferred, report = convert.convert_state_dict(state_dict)
  assert inferred == config and report.ok
  flat = lambda m: jax.tree_util.tree_leaves_with_path(checkpoint.model_variables(m))
  for (path, a), (_, b) in zip(flat(source), flat(model), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
  model.eval()
  images = _images(config)
  out = _forward(source, images)
  assert set(out) == {"heatmaps"}
  size = 16 - (config.final_conv_kernel - 1 if config.final_conv_kernel != 3 else 0)
  assert out["heatmaps"].shape == (2, size, size, config.num_joints)
  assert out["heatmaps"].dtype == np.float32 and np.isfinite(out["heatmaps"]).all()
  assert np.abs(out["heatmaps"]).max() > 0.1  # non-degenerate, so the comparisons mean something
  np.testing.assert_array_equal(_forward(model, images)["heatmaps"], out["heatmaps"])


def test_jit_matches_eager():
  model = _converted("tiny")
  images = _images(CONFIGS["tiny"])
  eager = np.asarray(model(images)["heatmaps"])
  jitted = _forward(model, images)["heatmaps"]
  # XLA may fuse/reassociate float32 sums under jit: allow a few float32 ulps of the magnitude.
  np.testing.assert_allclose(jitted, eager, rtol=0, atol=16 * np.finfo(np.float32).eps
                             * np.abs(eager).max())


def test_init_follows_init_weights():
  config = CONFIGS["tiny"]
  model = models.build_model(config, seed=0)
  sd = convert.export_state_dict(model, config)
  kernels = np.concatenate([v.ravel() for k, v in sd.items() if v.ndim == 4])
  assert abs(kernels.std() - 0.001) < 0.00005 and abs(kernels.mean()) < 0.00005
  np.testing.assert_array_equal(sd["final_layer.bias"], 0)
  for key, value in sd.items():
    if key.endswith(("running_mean", "bias")):
      np.testing.assert_array_equal(value, 0, err_msg=key)
    elif key.endswith(("running_var",)) or (key.endswith("weight") and value.ndim == 1):
      np.testing.assert_array_equal(value, 1, err_msg=key)


def test_w32_has_the_layout_of_the_original():
  """Every tensor of the original W32 (names and shapes, from the fixture) has its variable."""
  manifest = REFERENCE_DIR / "models" / "pose_hrnet_w32_256x192.json"
  assert manifest.exists(), f"reference fixture {manifest} is missing from the project's copy"
  meta = json.loads(manifest.read_text())
  sd = {name: np.zeros(shape, np.float32) for name, shape, _ in meta["tensors"]}
  config = hrnet_family.infer_pose_hrnet(convert.core.shape_table(sd))
  assert config == hrnet.PoseHRNetConfig.w32()
  model = models.abstract_model(config)
  report = convert.core.map_state_dict(model, sd)
  assert report.ok, report.problems(limit=5)
  shapes = convert.core.variable_paths(model)
  params = sum(int(np.prod(s)) for p, s in shapes.items() if not p.endswith(("/mean", "/var")))
  assert params == meta["num_params"]


def test_bad_inputs_are_refused():
  model = _converted("tiny")
  images = _images(CONFIGS["tiny"])
  with pytest.raises(ValueError, match="NCHW"):
    model(images.transpose(0, 3, 1, 2))
  with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
    model(images[..., :2])
  with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
    model(images[0])
  with pytest.raises(ValueError, match="multiples of 8"):
    model(_images(CONFIGS["tiny"], shape=(1, 64, 48)))  # ceil(48/4) = 12


def test_sizes_the_original_accepts_are_accepted():
  """ceil(H/4) (not H) must be a multiple of 8: 61 x 93 gives 16 x 24 heatmaps."""
  model = _converted("tiny")
  out = _forward(model, _images(CONFIGS["tiny"], shape=(1, 61, 93)))
  assert out["heatmaps"].shape == (1, 16, 24, 5)


def test_bfloat16_stays_close_to_float32():
  images = _images(CONFIGS["tiny"])
  ref = _forward(_converted("tiny"), images)["heatmaps"]
  model = _converted("tiny", dtype="bfloat16")
  assert model.conv1.kernel[...].dtype == jnp.float32  # params stay float32
  out = _forward(model, images)["heatmaps"]
  assert out.dtype == np.float32
  # bfloat16 keeps 8 significant bits (relative step 2^-8 = 0.4%) through ~40 layers.
  err = np.abs(out - ref).max() / np.abs(ref).max()
  assert err < 0.1, err
  assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.99


def test_train_mode_updates_batch_statistics():
  model = _converted("tiny")
  before = jax.tree_util.tree_map(np.array, checkpoint.model_variables(model)["batch_stats"])
  model.train()
  model(_images(CONFIGS["tiny"]))
  after = jax.tree_util.tree_map(np.array, checkpoint.model_variables(model)["batch_stats"])
  for path in (("bn1",), ("stage4", 0, "fuse_layers", 0, 3, 1),
               ("stage3", 0, "fuse_layers", 2, 0, 1, 1), ("transition3", 3, 0, 1)):
    a, b = before, after
    for p in path:
      a, b = a[p], b[p]
    assert not np.allclose(a["mean"], b["mean"]), path
    assert not np.allclose(a["var"], b["var"]), path
  model.eval()
  model(_images(CONFIGS["tiny"]))
  final = checkpoint.model_variables(model)["batch_stats"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, after, final)


def test_train_step_under_jit_has_gradients_everywhere():
  config = CONFIGS["one_stage"]
  model = _converted("one_stage")
  model.train()
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  # Plain arrays, so that nnx.merge inside the traced function makes Variables at its level.
  params, stats = nnx.as_pure(params), nnx.as_pure(stats)

  @jax.jit
  def loss_grad(params, stats, x):
    def loss(p):
      m = nnx.merge(graphdef, p, stats)
      value = jnp.mean(jnp.square(m(x)["heatmaps"]))
      return value, nnx.as_pure(nnx.state(m, nnx.BatchStat))
    return jax.value_and_grad(loss, has_aux=True)(params)

  (value, new_stats), grads = loss_grad(params, stats, _images(config))
  assert np.isfinite(value)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.abs(np.asarray(g)).max() > 0, jax.tree_util.keystr(path)
  changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), stats, new_stats)
  assert all(jax.tree_util.tree_leaves(changed))


# ----------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------


def test_missing_extra_and_misshaped_tensors_are_named():
  sd = dict(_state_dict("tiny"))
  del sd["stage3.0.fuse_layers.2.0.0.0.weight"]
  sd["stage3.0.fuse_layers.0.0.weight"] = np.zeros((16, 16, 1, 1), np.float32)  # j == i: none
  sd["stage2.0.branches.1.1.bn2.running_var"] = np.ones((31,), np.float32)
  with pytest.raises(convert.CheckpointError) as err:
    convert.convert_state_dict(sd, CONFIGS["tiny"])
  message = str(err.value)
  assert "stage3/0/fuse_layers/2/0/0/0/kernel" in message
  assert "stage3.0.fuse_layers.0.0.weight" in message
  assert "stage2.0.branches.1.1.bn2.running_var" in message


def test_inconsistent_modules_are_refused():
  """Module 1 of a stage with one block fewer than module 0: named, not silently inferred."""
  config = CONFIGS["mixed"]
  sd = {k: v for k, v in _state_dict("mixed").items()
        if not k.startswith("stage3.1.branches.1.1.")}
  with pytest.raises(convert.CheckpointError, match=r"stage3/1/branches/1/1/conv1/kernel"):
    convert.convert_state_dict(sd)
  assert convert.infer_model_config(sd) == config  # inferred from module 0


def test_other_families_and_hrnet_variants_are_not_pose_hrnet():
  resnet_shapes = {"conv1.weight": (64, 3, 7, 7), "layer1.0.conv1.weight": (64, 64, 1, 1),
                   "deconv_layers.0.weight": (2048, 256, 4, 4),
                   "final_layer.weight": (17, 256, 1, 1)}
  assert hrnet_family.infer_pose_hrnet(resnet_shapes) is None
  shapes = convert.core.shape_table(_state_dict("tiny"))
  higher = {k.replace("final_layer.", "final_layers.0."): v for k, v in shapes.items()}
  assert hrnet_family.infer_pose_hrnet(higher) is None
  assert hrnet_family.infer_pose_hrnet(shapes) == CONFIGS["tiny"]


def test_a_missing_head_tensor_is_named_not_an_unknown_family(tmp_path, capsys):
  """Without ``final_layer.weight`` the file is still recognised as pose_hrnet; the error
  names the missing tensor, and a given head shape converts it with --allow-partial."""
  sd = _state_dict("tiny")
  del sd["final_layer.weight"]
  sd["aux_head.weight"] = np.zeros((3, 3), np.float32)
  with pytest.raises(convert.CheckpointError) as info:
    convert.convert_state_dict(sd, source="damaged.pth")
  message = str(info.value)
  assert "match no jaxpose model family" not in message
  assert "looks like a pose_hrnet checkpoint" in message
  assert "lacks final_layer.weight" in message and "aux_head.weight" in message
  with pytest.raises(convert.CheckpointError, match=r"final_layer/kernel \(final_layer.weight\)"):
    convert.convert_state_dict(sd, overrides={"num_joints": 5, "final_conv_kernel": 1})
  path = tmp_path / "damaged.pth"
  torch = pytest.importorskip("torch")
  torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, path)
  assert convert_main([str(path), str(tmp_path / "out"), "--allow-partial",
                       "--model-config", "MODEL.NUM_JOINTS=5"]) == 0
  captured = capsys.readouterr()
  assert "assumed final_conv_kernel=1" in captured.err
  out = captured.out
  assert "partial load: 1 variables keep their initial value: final_layer/kernel " \
         "(final_layer.weight)" in out
  assert "partial load: 1 checkpoint tensors ignored (no place in the model): aux_head.weight" \
      in out
  _, config = convert.load_converted(tmp_path / "out")
  assert config == CONFIGS["tiny"]


def test_inconsistent_stage_layout_is_refused():
  shapes = convert.core.shape_table(_state_dict("tiny"))
  gap = {k.replace("stage3.", "stage5."): v for k, v in shapes.items()}
  with pytest.raises(convert.CheckpointError, match="not consecutive"):
    hrnet_family.infer_pose_hrnet(gap)
  stem = dict(shapes, **{"conv2.weight": (32, 64, 3, 3)})
  with pytest.raises(convert.CheckpointError, match="conv2.weight"):
    hrnet_family.infer_pose_hrnet(stem)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_saved_files_convert_like_the_state_dict(tmp_path, legacy):
  torch = pytest.importorskip("torch")
  sd = _state_dict("mixed")
  path = tmp_path / "hrnet.pth"
  torch.save(collections.OrderedDict((k, torch.from_numpy(v)) for k, v in sd.items()), path,
             _use_new_zipfile_serialization=not legacy)
  model, config, report = convert.convert_file(path)
  assert config == CONFIGS["mixed"] and report.ok
  model.eval()
  images = _images(config)
  np.testing.assert_array_equal(_forward(model, images)["heatmaps"],
                                _forward(_converted("mixed"), images)["heatmaps"])


# ----------------------------------------------------------------------------------------
# ImageNet initialisation (MODEL.PRETRAINED + PRETRAINED_LAYERS)
# ----------------------------------------------------------------------------------------


def _imagenet_state_dict() -> dict[str, np.ndarray]:
  """What HRNet-Image-Classification saves for the tiny trunk.

  The trunk is the pose model's; the last module of stage 4 fuses into every branch; the
  classification head (incre_modules, downsamp_modules, final_layer Sequential, classifier)
  replaces the pose head. ``final_layer.0.*`` is deliberately given the pose ``final_layer``
  shapes: a converter that dropped the ``.0`` would load it silently.
  """
  config = CONFIGS["tiny"]
  sd = {k: v for k, v in _state_dict("tiny").items() if not k.startswith("final_layer.")}
  rng = np.random.RandomState(7)
  conv = lambda o, i, k: rng.normal(0, 0.1, (o, i, k, k)).astype(np.float32)

  def bn(prefix, c):
    sd.update({f"{prefix}.weight": np.ones(c, np.float32),
               f"{prefix}.bias": np.zeros(c, np.float32),
               f"{prefix}.running_mean": np.zeros(c, np.float32),
               f"{prefix}.running_var": np.ones(c, np.float32),
               f"{prefix}.num_batches_tracked": np.zeros((), np.int64)})

  widths = config.stages[-1].out_channels
  last = f"stage4.{config.stages[-1].num_modules - 1}.fuse_layers"
  for i in range(1, 4):
    for j in range(4):
      if j > i:
        sd[f"{last}.{i}.{j}.0.weight"] = conv(widths[i], widths[j], 1)
        bn(f"{last}.{i}.{j}.1", widths[i])
      elif j < i:
        for k in range(i - j):
          out = widths[i] if k == i - j - 1 else widths[j]
          sd[f"{last}.{i}.{j}.{k}.0.weight"] = conv(out, widths[j], 3)
          bn(f"{last}.{i}.{j}.{k}.1", out)
  head = (32, 64, 128, 256)
  for i, c in enumerate(widths):
    sd[f"incre_modules.{i}.0.conv1.weight"] = conv(head[i], c, 1)
    bn(f"incre_modules.{i}.0.bn1", head[i])
  for i in range(3):
    sd[f"downsamp_modules.{i}.0.weight"] = conv(head[i + 1] * 4, head[i] * 4, 3)
    sd[f"downsamp_modules.{i}.0.bias"] = np.zeros(head[i + 1] * 4, np.float32)
    bn(f"downsamp_modules.{i}.1", head[i + 1] * 4)
  sd["final_layer.0.weight"] = conv(config.num_joints, widths[0], 1)
  sd["final_layer.0.bias"] = np.full(config.num_joints, 3.0, np.float32)
  bn("final_layer.1", config.num_joints)
  sd["classifier.weight"] = rng.normal(0, 0.1, (1000, 2048)).astype(np.float32)
  sd["classifier.bias"] = np.zeros(1000, np.float32)
  return sd


def test_imagenet_classification_hrnet_is_not_a_pose_model():
  with pytest.raises(convert.CheckpointError, match="ImageNet classification HRNet") as err:
    convert.infer_model_config(_imagenet_state_dict())
  assert "allow_partial" in str(err.value) and "--pretrained-layers" in str(err.value)
  # A trunk whose last module keeps every resolution (e.g. the head already stripped).
  trunk = {k: v for k, v in _imagenet_state_dict().items()
           if k.split(".")[0] not in ("incre_modules", "downsamp_modules", "classifier")}
  with pytest.raises(convert.CheckpointError, match="highest-resolution"):
    convert.infer_model_config(trunk)


def _assert_trunk_loaded(model, report, sd):
  loaded = convert.export_state_dict(model, CONFIGS["tiny"])
  for key in loaded:
    if key.split(".")[0] in hrnet.PRETRAINED_LAYERS and not key.endswith("num_batches_tracked"):
      np.testing.assert_array_equal(loaded[key], sd[key], err_msg=key)
  # The pose head keeps its init_weights initialisation: N(0, 0.001^2), zero bias.
  assert sorted(report.missing) == ["final_layer/bias", "final_layer/kernel"]
  np.testing.assert_array_equal(loaded["final_layer.bias"], 0)
  assert np.abs(loaded["final_layer.weight"]).max() < 0.01
  assert not np.array_equal(loaded["final_layer.weight"], sd["final_layer.0.weight"])


def test_imagenet_initialisation_with_pretrained_layers():
  sd = _imagenet_state_dict()
  model, config, report = convert.convert_state_dict(
      sd, CONFIGS["tiny"], allow_partial=True,
      select=convert.pretrained_layers_filter(hrnet.PRETRAINED_LAYERS))
  assert config == CONFIGS["tiny"]
  _assert_trunk_loaded(model, report, sd)
  skipped = set(report.skipped)
  assert {"final_layer.0.weight", "final_layer.0.bias", "classifier.weight",
          "incre_modules.0.0.conv1.weight", "downsamp_modules.0.0.weight"} <= skipped
  # PRETRAINED_LAYERS includes stage4, but the pose model has no lower-resolution outputs in
  # its last module: those fuse layers are reported, as PyTorch's strict=False would ignore them.
  assert report.unexpected and all(k.startswith("stage4.0.fuse_layers.") and
                                   k.split(".")[3] != "0" for k in report.unexpected)


def test_imagenet_initialisation_without_a_filter_places_nothing_wrongly():
  sd = _imagenet_state_dict()
  model, _, report = convert.convert_state_dict(sd, CONFIGS["tiny"], allow_partial=True)
  _assert_trunk_loaded(model, report, sd)
  assert {"final_layer.0.weight", "final_layer.0.bias", "final_layer.1.running_mean",
          "classifier.weight"} <= set(report.unexpected)


def test_imagenet_initialisation_of_a_different_width_fails():
  other = hrnet.PoseHRNetConfig(stages=tuple(
      S(s.num_modules, s.block, s.num_blocks, tuple(2 * c for c in s.num_channels))
      for s in CONFIGS["tiny"].stages), num_joints=5)
  with pytest.raises(convert.CheckpointError, match="mis-shaped"):
    convert.convert_state_dict(_imagenet_state_dict(), other, allow_partial=True,
                               select=convert.pretrained_layers_filter(hrnet.PRETRAINED_LAYERS))


def test_imagenet_initialisation_from_the_command_line(tmp_path, capsys):
  torch = pytest.importorskip("torch")
  sd = _imagenet_state_dict()
  path = tmp_path / "hrnet_tiny_imagenet.pth"
  torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, path)
  config_file = tmp_path / "pose.json"
  config_file.write_text(json.dumps(CONFIGS["tiny"].to_config().to_dict()))
  assert convert_main([str(path), str(tmp_path / "plain")]) == 1
  assert "ImageNet classification HRNet" in capsys.readouterr().err
  out = tmp_path / "out"
  assert convert_main([str(path), str(out), "--allow-partial", "--model-config", str(config_file),
                       "--pretrained-layers", *hrnet.PRETRAINED_LAYERS]) == 0
  model, config = convert.load_converted(out)
  assert config == CONFIGS["tiny"]
  report = json.loads((out / convert.REPORT_FILE).read_text())
  _assert_trunk_loaded(model, convert.MappingReport(missing=report["missing"]), sd)
  printed = capsys.readouterr().out
  assert ("partial load: 2 variables keep their initial value: final_layer/bias "
          "(final_layer.bias), final_layer/kernel (final_layer.weight)") in printed
  ignored = [line for line in printed.splitlines() if "tensors ignored" in line]
  assert len(ignored) == 1 and ignored[0].endswith(f"and {len(report['unexpected']) - 10} more")
  assert f"{len(report['unexpected'])} checkpoint tensors ignored" in ignored[0]
  filtered = [k for k in report["skipped"] if not k.endswith("num_batches_tracked")]
  assert "final_layer.0.weight" in filtered
  assert f"{len(filtered)} checkpoint tensors skipped by the layer filter: {filtered[0]}, " \
      in printed
