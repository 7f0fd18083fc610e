"""MSPN (``mspn``): model outputs, converter round trips, ImageNet initialisation."""
from __future__ import annotations

import collections
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpose import convert, models
from jaxpose.convert import core
from jaxpose.convert import mspn as mspn_convert
from jaxpose.models import mspn, resnet
from tests.conformance import fixtures

MSPNConfig = mspn.MSPNConfig
REFERENCE_DIR = fixtures.PROJECT_DIR  # the project's copy of the reference fixtures

H, W = 64, 48  # TINY's input; stride-4 features and heatmaps 16x12
TINY = MSPNConfig.tiny()  # 2 stages, 17 joints, 32-wide decoder, (1, 1, 1, 1) blocks
# One stage, heatmap size taken from the input (run on 32x32 -> 8x8): the cheapest model.
ONE = MSPNConfig.tiny(num_stages=1, num_joints=5, upsample_channels=16, output_shape=None,
                      num_blocks=(1, 2, 1, 1))
ONE_INPUT = (32, 32)
# Varied widths, depths, joints and stage counts (weights filled from numpy: cheap). Each
# configuration costs one XLA compilation of its forward pass.
CONFIGS = [
    (TINY, (H, W)),
    (ONE, ONE_INPUT),
    (MSPNConfig.tiny(num_stages=3, num_joints=3, upsample_channels=8), (H, W)),
]


def _images(batch=2, height=H, width=W, channels=3, seed=0) -> np.ndarray:
  return np.random.RandomState(seed).standard_normal((batch, height, width, channels)).astype(
      np.float32)


def _random_model(config: MSPNConfig, seed: int = 0) -> nnx.Module:
  """The model with random numpy weights and non-trivial BatchNorm statistics (no jax init)."""
  rs = np.random.RandomState(seed)

  def fill(path, v):
    leaf = path[-1]
    if leaf == "kernel":
      value = rs.standard_normal(v.shape) / math.sqrt(np.prod(v.shape[:-1]))
    elif leaf in ("scale", "var"):
      value = 0.5 + rs.random_sample(v.shape)
    else:  # bias, mean
      value = 0.1 * rs.standard_normal(v.shape)
    return jnp.asarray(value, jnp.float32)

  graphdef, state = nnx.split(models.abstract_model(config))
  return nnx.merge(graphdef, nnx.map_state(fill, state))


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, x):
  model = nnx.merge(graphdef, state)
  return model(x), nnx.state(model)


def _eval(model, x) -> dict:
  """Eval-mode outputs as numpy (jitted: one compilation per configuration)."""
  model.eval()
  out, _ = _apply(*nnx.split(model), x)
  return jax.tree.map(np.asarray, out)


def _train_forward(model, x) -> dict:
  """Train-mode outputs; the model's BatchNorm statistics are updated."""
  model.train()
  graphdef, state = nnx.split(model)
  out, state = _apply(graphdef, state, x)
  nnx.update(model, state)
  return jax.tree.map(np.asarray, out)


def _flat(model) -> dict[str, np.ndarray]:
  state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
  return {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


@pytest.fixture(scope="module")
def tiny():
  """``(model, exported state dict, eval outputs on _images())`` of TINY."""
  model = _random_model(TINY, seed=1)
  return model, convert.export_state_dict(model, TINY), _eval(model, _images())


# ---------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("config,size", CONFIGS,
                         ids=[f"s{c.num_stages}k{c.num_joints}" for c, _ in CONFIGS])
def test_outputs_and_export_convert_round_trip(config, size):
  model = _random_model(config, seed=2)
  x = _images(height=size[0], width=size[1])
  out = _eval(model, x)
  assert set(out) == {"heatmaps", "stages"}
  assert len(out["stages"]) == config.num_stages
  for stage in out["stages"]:
    assert len(stage) == 4
    for heatmaps in stage:
      assert heatmaps.shape == (2, size[0] // 4, size[1] // 4, config.num_joints)
      assert heatmaps.dtype == np.float32
  np.testing.assert_array_equal(out["heatmaps"], out["stages"][-1][-1])
  # Coarse units are resized up: their heatmaps are not all equal to the finest one.
  assert not np.allclose(out["stages"][-1][0], out["stages"][-1][3])

  sd = convert.export_state_dict(model, config)
  assert sum(k.endswith("cross_conv.conv.weight") for k in sd) == config.num_stages - 1
  assert sum(k.endswith("skip1.conv.weight") for k in sd) == 4 * (config.num_stages - 1)
  assert f"stage{config.num_stages - 1}.upsample.up4.cross_conv.conv.weight" not in sd
  assert core.shape_table(sd) == mspn_convert.torch_key_shapes(config)
  assert convert.infer_model_config(sd) == config.replace(output_shape=None)
  # (The explicit config keeps the jitted forward's compilation cache warm.)
  converted, _, report = convert.convert_state_dict(sd, config)
  assert report.ok
  got = _flat(converted)
  for key, value in _flat(model).items():
    np.testing.assert_array_equal(got[key], value, err_msg=key)
  again = _eval(converted, x)
  np.testing.assert_array_equal(again["heatmaps"], out["heatmaps"])
  for ours, want in zip(jax.tree.leaves(again["stages"]), jax.tree.leaves(out["stages"])):
    np.testing.assert_array_equal(ours, want)


def test_stage_outputs_depend_on_earlier_stages_only():
  """Stage 0 ignores stage 1's weights; stage 1 reads stage 0 (cross conv + skips)."""
  model = _random_model(TINY, seed=3)
  x = _images(batch=1)
  before = _eval(model, x)
  stage1 = model.stage1.downsample.layer1[0].conv_bn_relu1.conv
  stage1.kernel[...] = stage1.kernel[...] * 2.0
  after = _eval(model, x)
  for j in range(4):
    np.testing.assert_array_equal(after["stages"][0][j], before["stages"][0][j])
    assert not np.allclose(after["stages"][1][j], before["stages"][1][j])
  cross = model.stage0.upsample.up4.cross_conv.conv
  cross.bias[...] = cross.bias[...] + 1.0
  assert not np.allclose(_eval(model, x)["heatmaps"], after["heatmaps"])


def test_heatmaps_come_out_of_a_batchnorm(tiny):
  """res_conv2's BN bias shifts the (eval) heatmaps of that unit by exactly that amount."""
  model, _, out = tiny
  bn = model.stage1.upsample.up4.res_conv2.bn
  original = np.array(bn.bias[...])
  try:
    bn.bias[...] = original + 3.0
    shifted = _eval(model, _images())["heatmaps"]
  finally:
    bn.bias[...] = original
  np.testing.assert_allclose(shifted - out["heatmaps"], 3.0, atol=1e-5)


@pytest.mark.slow  # op-by-op compilation of ~150 operations
def test_eager_matches_jit():
  """The other tests run jitted; eager (op by op) gives the same numbers."""
  model = _random_model(ONE, seed=6)
  x = _images(height=ONE_INPUT[0], width=ONE_INPUT[1])
  jitted = _eval(model, x)
  eager = jax.tree.map(np.asarray, model(x))
  for ours, want in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_bfloat16_runs_close_to_float32():
  model = _random_model(ONE, seed=7)
  x = _images(height=ONE_INPUT[0], width=ONE_INPUT[1])
  out = _eval(model, x)
  sd = convert.export_state_dict(model, ONE)
  model, _, _ = convert.convert_state_dict(sd, ONE.replace(dtype="bfloat16"))
  low = _eval(model, x)
  assert low["heatmaps"].dtype == np.float32
  assert jax.tree.leaves(nnx.state(model, nnx.Param))[0].dtype == jnp.float32
  for ours, want in zip(jax.tree.leaves(low["stages"]), jax.tree.leaves(out["stages"])):
    scale = float(np.abs(want).max())
    assert np.abs(ours - want).max() <= 0.1 * scale  # bf16: 8 mantissa bits, ~60 layers


def test_train_mode_updates_batch_statistics():
  model = _random_model(ONE, seed=8)
  x = _images(height=ONE_INPUT[0], width=ONE_INPUT[1])
  out = _eval(model, x)
  head_bn = model.stage0.upsample.up4.res_conv2.bn
  watched = {
      "top": model.top.conv.bn,
      "encoder": model.stage0.downsample.layer2[1].conv_bn_relu2.bn,
      "coarse head": model.stage0.upsample.up1.res_conv1.bn,
      "fine head": head_bn,
  }
  before = {k: (np.array(bn.mean[...]), np.array(bn.var[...])) for k, bn in watched.items()}
  trained = _train_forward(model, x)
  for name, bn in watched.items():
    assert not np.allclose(np.asarray(bn.mean[...]), before[name][0]), name
    assert not np.allclose(np.asarray(bn.var[...]), before[name][1]), name
  assert not np.allclose(trained["heatmaps"], out["heatmaps"])
  # A training-mode head normalises with batch statistics: per-channel mean ~ BN bias.
  np.testing.assert_allclose(trained["heatmaps"].mean(axis=(0, 1, 2)),
                             np.asarray(head_bn.bias[...]), atol=1e-4)


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,match", [
    ((2, 3, H, W), r"\[B, H, W, 3\].*NCHW"),
    ((2, H, W, 1), r"\[B, H, W, 3\]"),
    ((H, W, 3), r"\[B, H, W, 3\]"),
    ((2, 64, 64, 3), r"output_shape \(16, 12\).*64x48.*gives 16x16"),
])
def test_bad_input_is_refused(tiny, shape, match):
  model, _, _ = tiny
  with pytest.raises(ValueError, match=match):
    model(np.zeros(shape, np.float32))


def test_input_size_the_original_cannot_run_is_refused():
  model = _random_model(ONE)  # output_shape None
  # 72 -> stride-4 18, stride-8 9 (= 18 // 2), stride-16 5 (!= 18 // 4).
  with pytest.raises(ValueError, match=r"72x48.*divisible by 16"):
    model(np.zeros((1, 72, 48, 3), np.float32))


@pytest.mark.parametrize("change,match", [
    (dict(num_stages=0), "num_stages"),
    (dict(num_blocks=(1, 1, 1)), "num_blocks"),
    (dict(output_shape=(16,)), "output_shape"),
    (dict(num_joints=0), "num_joints"),
])
def test_bad_config_is_refused(change, match):
  with pytest.raises(ValueError, match=match):
    models.abstract_model(TINY.replace(**change))


# ---------------------------------------------------------------------------------------
# Converter
# ---------------------------------------------------------------------------------------


def test_bad_checkpoints_are_refused_with_every_name(tiny):
  _, sd, _ = tiny
  bad = dict(sd)
  del bad["stage1.upsample.up3.up_conv.conv.bias"]
  bad["stage1.upsample.up4.cross_conv.conv.weight"] = np.zeros((64, 32, 1, 1), np.float32)
  bad["stage0.upsample.up2.skip2.bn.running_var"] = np.ones(7, np.float32)
  with pytest.raises(convert.CheckpointError) as err:
    convert.convert_state_dict(bad, source="bad.pth")
  message = str(err.value)
  for name in ("bad.pth", "stage1/upsample/up3/up_conv/conv/bias",
               "stage1.upsample.up4.cross_conv.conv.weight",
               "stage0.upsample.up2.skip2.bn.running_var"):
    assert name in message, message


def test_inconsistent_stages_are_refused(tiny):
  _, sd, _ = tiny
  shapes = core.shape_table(sd)
  shapes["stage1.downsample.layer3.1.conv_bn_relu1.conv.weight"] = (256, 1024, 1, 1)
  with pytest.raises(convert.CheckpointError, match="stages differ"):
    mspn_convert.MSPN.infer_config(shapes)
  shapes = core.shape_table(sd)
  shapes = {k.replace("stage1.", "stage2."): v for k, v in shapes.items()}
  with pytest.raises(convert.CheckpointError, match="non-contiguous"):
    mspn_convert.MSPN.infer_config(shapes)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_saved_checkpoints_convert_identically(tiny, tmp_path, legacy):
  torch = pytest.importorskip("torch")
  model, sd, _ = tiny
  state = collections.OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in sd.items())
  path = tmp_path / "mspn.pth"
  # cvpack's Engine.save_checkpoint layout.
  torch.save({"model": state, "iteration": 96000}, path,
             _use_new_zipfile_serialization=not legacy)
  unwrapped = convert.load_state_dict(path)
  assert unwrapped.wrapper_key == "model" and unwrapped.extra == {"iteration": 96000}
  converted, config, report = convert.convert_file(path)
  assert report.ok and config == TINY.replace(output_shape=None)
  want = _flat(model)
  for key, value in _flat(converted).items():
    np.testing.assert_array_equal(value, want[key], err_msg=key)


def _fixture_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
  found = {}
  for path in sorted((REFERENCE_DIR / "models").glob("*.json")):
    manifest = json.loads(path.read_text())
    found[manifest["family"]] = {k: tuple(s) for k, s, _ in manifest["tensors"]}
  assert "mspn" in found, f"no MSPN model fixture under {REFERENCE_DIR / 'models'}"
  return found


def test_family_is_recognised_by_its_keys_only(tiny):
  shapes = _fixture_shapes()
  for family, table in shapes.items():
    inferred = mspn_convert.MSPN.infer_config(table)
    if family == "mspn":
      assert inferred == MSPNConfig.coco_2xstg(output_shape=None)
    else:
      assert inferred is None, family
  other = resnet.PoseResNetConfig.tiny()
  pose_resnet = convert.export_state_dict(_random_model(other), other)
  assert mspn_convert.MSPN.infer_config(core.shape_table(pose_resnet)) is None
  _, sd, _ = tiny
  assert convert.infer_model_config(sd) == TINY.replace(output_shape=None)


def test_released_layout_matches_the_original_state_dict():
  """The 2-stage COCO model has exactly the original MSPN's tensors (all placed, all filled)."""
  want = _fixture_shapes()["mspn"]
  arrays = {k: np.broadcast_to(np.float32(0), s) for k, s in want.items()}
  report = core.map_state_dict(models.abstract_model(MSPNConfig.coco_2xstg()), arrays)
  assert report.ok, report.problems()


def test_released_configs():
  assert MSPNConfig.coco_2xstg() == MSPNConfig()
  four = MSPNConfig.coco_4xstg()
  assert (four.num_stages, four.num_joints, four.output_shape) == (4, 17, (64, 48))
  assert MSPNConfig.coco_4xstg_384x288().output_shape == (96, 72)
  mpii = MSPNConfig.mpii_2xstg()
  assert (mpii.num_stages, mpii.num_joints, mpii.output_shape) == (2, 16, (64, 64))
  assert MSPNConfig.mpii_4xstg().num_stages == 4
  assert MSPNConfig.coco_3xstg().num_stages == 3
  shapes = mspn_convert.torch_key_shapes(MSPNConfig.tiny(num_stages=4))
  for s in range(4):
    has_cross = f"stage{s}.upsample.up4.cross_conv.conv.weight" in shapes
    has_skip = f"stage{s}.upsample.up1.skip1.conv.weight" in shapes
    assert has_cross == has_skip == (s < 3), s
  for config in (four, MSPNConfig.mpii_2xstg(), TINY):
    assert MSPNConfig.from_config(config.to_config()) == config


# ---------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------


def test_initialisation_follows_the_original():
  """MSPN builds these modules; their fresh values follow the original's init."""
  rngs = nnx.Rngs(0)
  # ResNet_downsample_module: kaiming_normal_(fan_out, relu) weights; default biases.
  block = mspn.Bottleneck(1024, 512, 2, rngs=rngs)
  conv = block.conv_bn_relu3.conv  # 1x1, 512 -> 2048
  kernel = np.asarray(conv.kernel[...])
  np.testing.assert_allclose(kernel.std(), math.sqrt(2.0 / 2048), rtol=0.02)
  assert np.abs(np.asarray(conv.bias[...])).max() <= 1.0 / math.sqrt(512)
  assert block.downsample.conv.kernel.shape == (1, 1, 1024, 2048)
  # top and decoder: PyTorch defaults, U(+-1/sqrt(fan_in)) for weights and biases.
  top = mspn.ResNetTop(3, rngs=rngs)
  unit = mspn.UpsampleUnit(0, 2048, 32, 17, gen_skip=False, gen_cross_conv=False, rngs=rngs)
  for conv, fan_in in ((top.conv.conv, 3 * 49), (unit.u_skip.conv, 2048)):
    kernel = np.asarray(conv.kernel[...])
    bound = 1.0 / math.sqrt(fan_in)
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.95 * bound
    np.testing.assert_allclose(kernel.std(), bound / math.sqrt(3.0), rtol=0.1)
    assert np.abs(np.asarray(conv.bias[...])).max() <= bound
  bn = unit.res_conv2.bn
  np.testing.assert_array_equal(np.asarray(bn.scale[...]), 1.0)
  np.testing.assert_array_equal(np.asarray(bn.bias[...]), 0.0)
  assert unit.up_conv is None and unit.skip1 is None and unit.cross_conv is None


# ---------------------------------------------------------------------------------------
# ImageNet ResNet-50 initialisation
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_resnet50():
  """A torchvision-named ResNet-50 state dict (jaxpose's pose_resnet trunk) and its model."""
  config = resnet.PoseResNetConfig.res50(deconv_filters=(8,), deconv_kernels=(4,), num_joints=1)
  pose = _random_model(config, seed=4)
  sd = convert.export_state_dict(pose, config)
  trunk = {k: v for k, v in sd.items() if k.startswith(("conv1.", "bn1.", "layer"))}
  trunk["fc.weight"] = np.zeros((1000, 2048), np.float32)
  trunk["fc.bias"] = np.zeros(1000, np.float32)
  return pose, trunk


def _stem_and_stage0_encoder(paths) -> set[str]:
  return {p for p in paths if p.startswith(("top/", "stage0/downsample/"))}


def test_torchvision_resnet50_maps_onto_the_first_stage(torchvision_resnet50):
  _, trunk = torchvision_resnet50
  renamed = mspn_convert.torchvision_resnet_to_mspn(trunk)
  assert "top.conv.conv.weight" in renamed and not any(k.startswith("fc") for k in renamed)
  target = models.abstract_model(MSPNConfig.coco_2xstg(upsample_channels=8, num_joints=2))
  report = core.map_state_dict(target, renamed)
  assert not report.unexpected and not report.mismatched
  # Everything but the convolution biases of the stem and of stage 0's encoder.
  encoder = _stem_and_stage0_encoder(core.variable_paths(target))
  assert set(report.assigned) == {p for p in encoder if not p.endswith("conv/bias")}
  assert report.sources["stage0/downsample/layer3/0/downsample/bn/mean"] == (
      "stage0.downsample.layer3.0.downsample.bn.running_mean")


@pytest.mark.slow
def test_torchvision_resnet50_initialises_the_first_stage(torchvision_resnet50):
  """Partial load through convert_state_dict; the loaded encoder computes ResNet-50."""
  pose, trunk = torchvision_resnet50
  config = MSPNConfig.coco_2xstg(upsample_channels=8, num_joints=2)
  renamed = mspn_convert.torchvision_resnet_to_mspn(trunk)
  model, _, report = convert.convert_state_dict(renamed, config, allow_partial=True, seed=5)
  encoder = _stem_and_stage0_encoder(core.variable_paths(model))
  assert set(report.missing) == set(core.variable_paths(model)) - set(report.assigned)
  fresh = _flat(models.build_model(config, seed=5))
  for path, value in _flat(model).items():
    if path not in report.assigned:  # fresh initialisation, as build_model(seed) gives
      np.testing.assert_array_equal(value, fresh[path], err_msg=path)

  # With zero conv biases, MSPN's stem + stage-0 encoder is the torchvision ResNet-50.
  for path, module in core.layer_modules(model).items():
    if f"{path}/bias" in encoder and isinstance(module, mspn.layers.Conv):
      module.bias[...] = jnp.zeros_like(module.bias[...])
  model.eval()
  pose.eval()
  x = _images(batch=1, height=32, width=32)
  features = nnx.jit(lambda m, x: m.stage0.downsample(m.top(x)))(model, x)
  want = nnx.jit(lambda p, x: p.backbone.stages(x))(pose, x)
  for ours, ref in zip(features[::-1], want):
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-4,
                               atol=1e-4 * float(np.abs(ref).max()))


def test_torchvision_resnet50_into_every_stage(torchvision_resnet50):
  _, trunk = torchvision_resnet50
  renamed = mspn_convert.torchvision_resnet_to_mspn(trunk, stages=(0, 1))
  key = "layer3.5.bn2.running_var"
  for s in (0, 1):
    np.testing.assert_array_equal(
        renamed[f"stage{s}.downsample.layer3.5.conv_bn_relu2.bn.running_var"], trunk[key])
  np.testing.assert_array_equal(renamed["stage1.downsample.layer2.0.downsample.conv.weight"],
                                trunk["layer2.0.downsample.0.weight"])
  with pytest.raises(ValueError, match="deconv_layers.0.weight"):
    mspn_convert.torchvision_resnet_to_mspn({**trunk, "deconv_layers.0.weight": np.zeros(1)})


def test_suffix_matching_loader(tiny):
  """cvpack's rule: each model key takes the longest checkpoint key that ends it."""
  _, sd, _ = tiny
  encoder = {k[len("stage0."):]: v for k, v in sd.items() if k.startswith("stage0.downsample.")}
  encoder.update({k: v for k, v in sd.items() if k.startswith("top.")})
  encoder["unrelated.weight"] = np.zeros(3, np.float32)
  one_stage = MSPNConfig.tiny(num_stages=1)
  aligned = mspn_convert.align_by_suffix(encoder, one_stage)
  for key, value in sd.items():
    if key.startswith(("top.", "stage0.downsample.")):
      np.testing.assert_array_equal(aligned[key], value, err_msg=key)
  assert "unrelated.weight" in aligned
  report = core.map_state_dict(models.abstract_model(one_stage), aligned)
  assert report.unexpected == ["unrelated.weight"] and not report.mismatched
  assert not any(p.startswith(("top/", "stage0/downsample/")) for p in report.missing)
  # Full names load as themselves; a name two stages share fails as in the original.
  assert mspn_convert.align_by_suffix(sd, TINY).keys() == sd.keys()
  with pytest.raises(ValueError, match="suffix match of both"):
    mspn_convert.align_by_suffix(encoder, TINY)
