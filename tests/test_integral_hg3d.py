"""Integral regression (``integral``) and weakly-supervised 3D (``hg3d``) models + converters."""
from __future__ import annotations

import collections
import functools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpose import convert, models
from jaxpose.codecs import integral as integral_codec
from jaxpose.convert import core
from jaxpose.convert import integral as integral_family
from jaxpose.convert.__main__ import main as convert_main
from jaxpose.models import hg3d, integral, resnet
from tests.conformance import fixtures

IntegralConfig = integral.IntegralConfig
HG3DConfig = hg3d.HG3DConfig

REFERENCE_DIR = fixtures.PROJECT_DIR  # the project's copy of the reference fixtures
SIZE = 64  # input side: ResNet stride 32 -> 2x2, two deconvolutions -> 8x8


def _images(batch=2, size=SIZE, channels=3, seed=0):
  return np.random.RandomState(seed).standard_normal((batch, size, size, channels)).astype(
      np.float32)


def _build(config, seed=0):
  """The model with the original's initialisation (compiles the init ops: use sparingly)."""
  return models.build_model(config, seed=seed)


def _random_model(config, seed=0):
  """The model with numpy-random weights and statistics (no JAX compilation, fast)."""
  graphdef, state = nnx.split(models.abstract_model(config))
  rng = np.random.RandomState(seed)

  def fill(path, value):
    shape, leaf = value.shape, path[-1]
    if leaf == "var":
      array = rng.uniform(0.5, 1.5, shape)
    elif leaf == "scale":
      array = rng.uniform(0.5, 1.5, shape)
    elif len(shape) > 1:
      array = rng.standard_normal(shape) / math.sqrt(np.prod(shape[:-1]))
    else:
      array = 0.1 * rng.standard_normal(shape)
    return jnp.asarray(array, jnp.float32)

  return nnx.merge(graphdef, nnx.map_state(fill, state))


def _zero_state_dict(config) -> dict[str, np.ndarray]:
  """The PyTorch state dict of ``config`` filled with zeros (only names and shapes matter)."""
  graphdef, state = nnx.split(models.abstract_model(config))
  zeros = nnx.map_state(lambda _, v: np.zeros(v.shape, np.float32), state)
  return convert.export_state_dict(nnx.merge(graphdef, zeros), config)


def _export(config, seed=0):
  model = _random_model(config, seed)
  return model, convert.export_state_dict(model, config)


def _config_id(config) -> str:
  """``integral-num_joints=2-depth_dim=5``: the fields that differ from ``tiny()``."""
  base = type(config).tiny().to_config()
  changed = [f"{k}={v}" for k, v in config.to_config().items() if base[k] != v]
  return "-".join([config.name, *changed]).replace(" ", "")


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, x):
  return nnx.merge(graphdef, state)(x)


def _eval_outputs(model, x):
  """Eval-mode outputs as numpy (jitted: one compile per architecture, cheaper than eager)."""
  model.eval()
  graphdef, state = nnx.split(model)
  return {k: np.asarray(v) for k, v in _forward(graphdef, state, x).items()}


# ---------------------------------------------------------------------------------------
# Output names and shapes; export -> convert round trips
# ---------------------------------------------------------------------------------------

CONFIGS = [
    IntegralConfig.tiny(),
    IntegralConfig.tiny(num_deconv_kernel=3, final_conv_kernel=3, num_joints=2, depth_dim=5),
    IntegralConfig.tiny(num_deconv_kernel=2, with_bias_end=False, in_channels=1),
    IntegralConfig.tiny(num_layers=34, num_deconv_layers=3, num_deconv_filters=16, depth_dim=1,
                        num_joints=6),
    IntegralConfig.tiny(num_deconv_layers=0, num_deconv_filters=512),
    HG3DConfig.tiny(),
    HG3DConfig.tiny(with_depth=False, num_joints=17),
    HG3DConfig.tiny(deconv_filters=(24, 16, 8), deconv_kernels=(4, 3, 2), deconv_with_bias=True),
    HG3DConfig.tiny(num_layers=34, in_channels=1, num_joints=2),
]


def _expected_outputs(config) -> tuple[dict[str, int], int]:
  """Output names -> channels, and the output side for a SIZE x SIZE input."""
  if config.name == "integral":
    return ({"heatmaps": config.num_joints * config.depth_dim},
            SIZE * 2 ** config.num_deconv_layers // 32)
  names = {"heatmaps": config.num_joints}
  if config.with_depth:
    names["depth"] = config.num_joints
  return names, SIZE * 2 ** len(config.deconv_filters) // 32


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_outputs_and_export_convert_round_trip(config):
  model, sd = _export(config, seed=5)
  x = _images(channels=config.in_channels)
  theirs = _eval_outputs(model, x)
  channels, side = _expected_outputs(config)
  assert {k: v.shape for k, v in theirs.items()} == {
      k: (2, side, side, c) for k, c in channels.items()}
  assert all(v.dtype == np.float32 for v in theirs.values())
  if config.name == "integral" and not config.with_bias_end:  # ends with BatchNorm + ReLU
    assert theirs["heatmaps"].min() >= 0.0 and theirs["heatmaps"].max() > 0.0

  if config.name == "integral":
    # The J x D split is not in the weights: resolve it by either number.
    inferred = integral_family.infer_integral_config(core.shape_table(sd),
                                                     depth_dim=config.depth_dim)
    assert integral_family.infer_integral_config(
        core.shape_table(sd), num_joints=config.num_joints) == inferred
  else:
    inferred = convert.infer_model_config(sd)
  assert inferred == config
  converted, _, report = convert.convert_state_dict(sd, inferred)
  assert report.ok
  ours = _eval_outputs(converted, x)
  for name in theirs:
    np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
  again = convert.export_state_dict(converted, inferred)
  assert sorted(again) == sorted(sd)
  for key in sd:
    np.testing.assert_array_equal(again[key], sd[key], err_msg=key)


@pytest.mark.parametrize("num_layers", [18, 34, 50, 101, 152])
def test_every_resnet_depth_is_inferred(num_layers):
  for config in (IntegralConfig.tiny(num_layers=num_layers, depth_dim=64, num_joints=1),
                 HG3DConfig.tiny(num_layers=num_layers)):
    assert convert.infer_model_config(_zero_state_dict(config)) == config


def test_released_configs_are_the_yaml_and_opts_values():
  r50 = IntegralConfig.res50_hm36()
  assert (r50.num_layers, r50.num_joints, r50.depth_dim, r50.num_deconv_layers,
          r50.num_deconv_filters, r50.num_deconv_kernel, r50.final_conv_kernel) == (
              50, 18, 64, 3, 256, 4, 1)
  assert IntegralConfig.res152_hm36_challenge().depth_dim == 72
  fusion = HG3DConfig.fusion_3d()
  assert (fusion.num_layers, fusion.num_joints, fusion.with_depth, fusion.deconv_filters,
          fusion.deconv_kernels, fusion.deconv_with_bias) == (50, 16, True, (256,) * 3, (4,) * 3,
                                                             False)
  assert not HG3DConfig.human2d(num_joints=17).with_depth
  for config in (r50, fusion, IntegralConfig.tiny(), HG3DConfig.tiny()):
    assert models.model_config(config.to_config()) == config


# What a user passes for the released models: the integral yaml's relevant keys, hg3d's options.
HM36_YAML = {"network": {"num_layers": 50, "depth_dim": 64}, "dataset": {"name": ["mpii", "hm36"]},
             "dataiter": {"target_id": 1}}
FUSION_OPTS = "--exp_id test --task human3d --dataset fusion_3d --arch msra_50 --test"


@pytest.mark.parametrize("fixture,config,user", [
    ("integral_resnet50_256_hm36", IntegralConfig.res50_hm36(), {"original_config": HM36_YAML}),
    ("hg3d_msra_resnet50", HG3DConfig.fusion_3d(), {"original_args": FUSION_OPTS}),
])
def test_released_configs_export_the_original_state_dict(fixture, config, user):
  """Names and shapes equal the original's state dict as recorded in the reference fixture."""
  path = REFERENCE_DIR / "models" / f"{fixture}.json"
  assert path.exists(), f"reference fixture {path} is missing from the project's copy"
  manifest = json.loads(path.read_text())
  original = {name: tuple(shape) for name, shape, _ in manifest["tensors"]}
  ours = _zero_state_dict(config)
  assert core.shape_table(ours) == original
  assert convert.infer_model_config(ours, **user) == config
  if config.name == "integral":  # 1152 = 18 x 64 = 16 x 72: the yaml (or a flag) decides
    with pytest.raises(convert.CheckpointError, match="num_joints=16 .MPII. x depth_dim=72"):
      convert.infer_model_config(ours)


def test_integral_torch_key_layout():
  config = IntegralConfig.tiny(with_bias_end=False)
  _, sd = _export(config)
  head = sorted(k for k in sd if k.startswith("head."))
  assert head == sorted(
      [f"head.features.{i}.weight" for i in (0, 3, 6)]
      + [f"head.features.{i}.{leaf}" for i in (1, 4, 7)
         for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")])
  assert sd["head.features.0.weight"].shape == (512, 32, 4, 4)  # ConvTranspose2d (in, out, k, k)
  assert sd["head.features.6.weight"].shape == (12, 32, 1, 1)  # Conv2d (J*D, in, k, k)
  assert all(k.startswith(("backbone.", "head.")) for k in sd)


def test_hg3d_torch_key_layout():
  _, sd = _export(HG3DConfig.tiny())
  top = {k.split(".")[0] for k in sd}
  assert top == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "deconv_layers",
                 "hm", "depth"}
  assert sd["hm.weight"].shape == sd["depth.weight"].shape == (4, 32, 1, 1)
  assert "hm.bias" in sd and "depth.bias" in sd


def test_integral_channel_is_joint_times_depth_plus_bin():
  """A torch-layout bias peaking at channel j*D + d_j decodes to depth bin d_j for joint j."""
  config = IntegralConfig.tiny(num_joints=3, depth_dim=4)
  _, sd = _export(config)
  sd["head.features.6.weight"] = np.zeros_like(sd["head.features.6.weight"])
  bins = [2, 0, 3]
  bias = np.zeros(12, np.float32)
  for j, d in enumerate(bins):
    bias[j * config.depth_dim + d] = 60.0  # softmax mass ~1 on that depth slice
  sd["head.features.6.bias"] = bias
  model, _, _ = convert.convert_state_dict(sd, config)
  model.eval()
  raw = model(_images())["heatmaps"]
  coords = np.asarray(integral_codec.softmax_integral(raw, num_joints=3, depth=4))
  coords = coords.reshape(2, 3, 3)
  np.testing.assert_allclose(coords[..., 2], np.broadcast_to(np.array(bins) / 4 - 0.5, (2, 3)),
                             atol=1e-5)
  side = raw.shape[1]
  np.testing.assert_allclose(coords[..., :2], (side - 1) / 2 / side - 0.5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Telling the families apart; the integral J x D ambiguity
# ---------------------------------------------------------------------------------------


def test_families_tell_their_checkpoints_apart():
  integral_cfg = IntegralConfig.tiny(num_joints=2, depth_dim=64)
  hg3d_cfg = HG3DConfig.tiny()
  hg3d_2d_cfg = HG3DConfig.tiny(with_depth=False)
  pose_cfg = resnet.PoseResNetConfig.tiny(num_joints=4)
  for config in (integral_cfg, hg3d_cfg, hg3d_2d_cfg, pose_cfg):
    _, sd = _export(config)
    shapes = core.shape_table(sd)
    matches = {name: fam.infer_config(shapes) for name, fam in convert.FAMILIES.items()
               if name in ("integral", "hg3d", "pose_resnet")}
    assert {n for n, c in matches.items() if c is not None} == {config.name}, config
    assert convert.infer_model_config(sd) == config
  # An ImageNet classifier's trunk fits two families equally and neither completely.
  _, sd = _export(pose_cfg)
  classifier = {k: v for k, v in sd.items() if not k.startswith(("deconv", "final"))}
  classifier["fc.weight"] = np.zeros((10, 512), np.float32)
  with pytest.raises(convert.CheckpointError, match="fit the families pose_resnet, hg3d equally"):
    convert.infer_model_config(classifier)


def test_integral_default_depth_is_the_released_64():
  """192 channels: no split with a known joint count, so depth 64 is assumed, loudly."""
  config = IntegralConfig.tiny(num_joints=3, depth_dim=64)
  _, sd = _export(config)
  with pytest.warns(convert.AssumptionWarning, match="assumed depth_dim=64"):
    assert convert.infer_model_config(sd) == config
  # 192 channels = 3 x 64 = 12 x 16: an explicit depth_dim overrides the default.
  other = integral_family.infer_integral_config(core.shape_table(sd), depth_dim=16)
  assert (other.num_joints, other.depth_dim) == (12, 16)


def test_integral_ambiguous_channels_need_the_config():
  config = IntegralConfig.tiny(num_joints=3, depth_dim=4)  # 12 channels, not a multiple of 64
  model, sd = _export(config)
  with pytest.raises(convert.CheckpointError) as info:
    convert.convert_state_dict(sd)
  message = str(info.value)
  for fragment in ("12 channels", "num_joints * depth_dim", "depth_dim=64", "J=3 x D=4",
                   "--model-config depth_dim=D", "--cfg", "overrides={'depth_dim': D}"):
    assert fragment in message, (fragment, message)
  with pytest.raises(convert.CheckpointError, match="depth_dim=5"):
    integral_family.infer_integral_config(core.shape_table(sd), depth_dim=5)
  converted, got, _ = convert.convert_state_dict(sd, config)  # the explicit way
  assert got == config
  x = _images()
  np.testing.assert_array_equal(_eval_outputs(converted, x)["heatmaps"],
                                _eval_outputs(model, x)["heatmaps"])


def test_cli_model_config_resolves_the_integral_split(tmp_path):
  torch = pytest.importorskip("torch")
  config = IntegralConfig.tiny(num_joints=3, depth_dim=4)
  _, sd = _export(config)
  ckpt = tmp_path / "integral.pth"
  torch.save({"epoch": 3, "network": collections.OrderedDict(
      (f"module.{k}", torch.from_numpy(np.array(v))) for k, v in sd.items())}, ckpt)
  assert convert_main([str(ckpt), str(tmp_path / "fails")]) == 1
  partial = {"name": "integral", "num_layers": 18, "num_joints": 3, "depth_dim": 4,
             "num_deconv_layers": 2, "num_deconv_filters": 32}
  (tmp_path / "cfg.json").write_text(json.dumps(partial))
  assert convert_main([str(ckpt), str(tmp_path / "out"), "--model-config",
                       str(tmp_path / "cfg.json")]) == 0
  _, loaded = convert.load_converted(tmp_path / "out")
  assert loaded == config


# ---------------------------------------------------------------------------------------
# Refusing inconsistent checkpoints
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [IntegralConfig.tiny(), HG3DConfig.tiny()],
                         ids=lambda c: c.name)
def test_missing_extra_and_misshaped_tensors_are_named(config):
  _, sd = _export(config)
  head = "head.features.3.weight" if config.name == "integral" else "deconv_layers.3.weight"
  final = "head.features.6.bias" if config.name == "integral" else "hm.bias"
  bad = dict(sd)
  del bad["layer2.0.bn1.running_var" if config.name == "hg3d"
          else "backbone.layer2.0.bn1.running_var"]
  bad["extra.weight"] = np.zeros((3,), np.float32)
  bad[head] = np.zeros((32, 32, 3, 3), np.float32)
  with pytest.raises(convert.CheckpointError) as info:
    convert.convert_state_dict(bad, config)
  message = str(info.value)
  assert "layer2/0/bn1/var" in message and "extra.weight" in message and head in message
  bad = dict(sd)
  bad[final] = np.zeros((5,), np.float32)
  with pytest.raises(convert.CheckpointError, match=final.replace(".", r"\.")):
    convert.convert_state_dict(bad, config)


def test_inconsistent_heads_are_refused():
  _, sd = _export(HG3DConfig.tiny())
  bad = dict(sd, **{"depth.weight": np.zeros((3, 32, 1, 1), np.float32),
                    "depth.bias": np.zeros((3,), np.float32)})
  with pytest.raises(convert.CheckpointError, match="depth.weight"):
    convert.infer_model_config(bad)
  bad = dict(sd, **{"hm.weight": np.zeros((4, 32, 3, 3), np.float32)})
  with pytest.raises(convert.CheckpointError, match="1x1"):
    convert.infer_model_config(bad)
  _, sd = _export(IntegralConfig.tiny(depth_dim=64))
  bad = dict(sd, **{"head.features.3.weight": np.zeros((32, 16, 4, 4), np.float32)})
  with pytest.raises(convert.CheckpointError, match="one filter count"):
    convert.infer_model_config(bad)
  bad = {k: v for k, v in sd.items() if not k.startswith("head.features.3.")}
  with pytest.raises(convert.CheckpointError, match="expected indices"):
    convert.infer_model_config(bad)


# ---------------------------------------------------------------------------------------
# Inputs and configs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [IntegralConfig.tiny(), HG3DConfig.tiny()],
                         ids=lambda c: c.name)
def test_bad_inputs_are_refused(config):
  model = _random_model(config)
  with pytest.raises(ValueError, match=r"\[B, H, W, 3\].*NCHW"):
    model(np.zeros((1, 3, 64, 64), np.float32))
  with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
    model(np.zeros((64, 64, 3), np.float32))


@pytest.mark.parametrize("make,match", [
    (lambda: IntegralConfig(num_layers=20), "unsupported ResNet depth 20"),
    (lambda: IntegralConfig(final_conv_kernel=5), "final_conv_kernel"),
    (lambda: IntegralConfig(num_deconv_kernel=5), "deconvolution kernel 5"),
    (lambda: IntegralConfig(depth_dim=0), "depth_dim"),
    (lambda: models.abstract_model(IntegralConfig.tiny(num_deconv_layers=0)), "must be 512"),
    (lambda: models.abstract_model(IntegralConfig(num_deconv_layers=0)), "must be 2048"),
    (lambda: HG3DConfig(num_layers=26), "unsupported ResNet depth 26"),
    (lambda: HG3DConfig(deconv_filters=(8,), deconv_kernels=(4, 4)), "differ in length"),
    (lambda: HG3DConfig(deconv_kernels=(4, 4, 1)), "deconvolution kernel 1"),
    (lambda: models.model_config({"name": "hg3d", "heads": 3}), "no field"),
])
def test_bad_configs_are_refused(make, match):
  with pytest.raises(ValueError, match=match):
    make()


# ---------------------------------------------------------------------------------------
# Initialisation as the originals; ImageNet backbones
# ---------------------------------------------------------------------------------------


def _std(x):
  return float(np.std(np.asarray(x)))


def test_integral_init_follows_resnet_pose():
  model = _build(IntegralConfig.tiny(num_layers=18))
  # ResNetBackbone and DeconvHead: every conv ~ N(0, 0.001), BN 1/0, final bias 0.
  for conv in (model.backbone.conv1, model.backbone.layer3[0].conv1,
               model.backbone.layer2[0].downsample[0], model.deconv_layers.layers[0],
               model.final_layer):
    assert 0.0008 < _std(conv.kernel[...]) < 0.0012
  np.testing.assert_array_equal(model.final_layer.bias[...], 0.0)
  np.testing.assert_array_equal(model.backbone.bn1.scale[...], 1.0)
  np.testing.assert_array_equal(model.deconv_layers.layers[1].bias[...], 0.0)
  assert model.deconv_layers.layers[0].bias is None


def test_hg3d_init_follows_msra_resnet():
  model = _build(HG3DConfig.tiny())
  # Backbone: PyTorch's default conv init U(+-1/sqrt(fan_in)) (ImageNet weights go on top).
  kernel = np.asarray(model.backbone.layer3[0].conv1.kernel[...])
  bound = 1 / math.sqrt(np.prod(kernel.shape[:-1]))
  assert np.abs(kernel).max() <= bound
  assert abs(_std(kernel) - bound / math.sqrt(3)) < 0.05 * bound
  for conv in (model.deconv_layers.layers[0], model.hm, model.depth):
    assert 0.0008 < _std(conv.kernel[...]) < 0.0012
  np.testing.assert_array_equal(model.hm.bias[...], 0.0)
  np.testing.assert_array_equal(model.depth.bias[...], 0.0)


def _torchvision_state_dict(num_layers: int) -> dict[str, np.ndarray]:
  """A torchvision-style ResNet state dict (trunk + ``fc``), made from a jaxpose ResNet."""
  config = resnet.PoseResNetConfig(num_layers=num_layers, deconv_filters=(8,),
                                   deconv_kernels=(4,))
  _, sd = _export(config, seed=11)
  sd = {k: v for k, v in sd.items() if not k.startswith(("deconv_layers.", "final_layer."))}
  width = 512 if num_layers < 50 else 2048
  sd["fc.weight"] = np.full((1000, width), 0.5, np.float32)
  sd["fc.bias"] = np.zeros((1000,), np.float32)
  return sd


@pytest.mark.parametrize("config", [IntegralConfig.tiny(), HG3DConfig.tiny()],
                         ids=lambda c: c.name)
def test_imagenet_backbone_loads_partially(config):
  imagenet = _torchvision_state_dict(config.num_layers)
  model, got, report = convert.convert_state_dict(imagenet, config, allow_partial=True, seed=2)
  assert got == config
  assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]
  assert report.missing and all(not p.startswith("backbone/") for p in report.missing)
  trunk = {k: v for k, v in imagenet.items() if not k.startswith("fc.")}
  exported = convert.export_state_dict(model, config)
  prefix = "backbone." if config.name == "integral" else ""
  for key, value in trunk.items():
    np.testing.assert_array_equal(exported[prefix + key], value, err_msg=key)
  # The head keeps the original's fresh initialisation.
  head = model.final_layer if config.name == "integral" else model.hm
  np.testing.assert_array_equal(head.bias[...], 0.0)
  assert 0.0008 < _std(head.kernel[...]) < 0.0012
  # Shape mismatches stay fatal (a ResNet-34 trunk into a ResNet-18 model).
  with pytest.raises(convert.CheckpointError, match="mis-shaped|unexpected"):
    convert.convert_state_dict(_torchvision_state_dict(50), config, allow_partial=True)


# ---------------------------------------------------------------------------------------
# Numerics: dtype, training mode, jit; checkpoint formats
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [IntegralConfig.tiny(), HG3DConfig.tiny()],
                         ids=lambda c: c.name)
def test_bfloat16_compute_stays_close(config):
  model32 = _random_model(config, seed=4)
  model16 = _random_model(config.replace(dtype="bfloat16"), seed=4)
  x = _images()
  out32, out16 = _eval_outputs(model32, x), _eval_outputs(model16, x)
  for name in out32:
    assert out16[name].dtype == np.float32
    scale = np.abs(out32[name]).max()
    assert np.abs(out16[name] - out32[name]).max() <= 0.05 * scale, name
  params = nnx.state(model16, nnx.Param)
  assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize("config", [IntegralConfig.tiny(with_bias_end=False), HG3DConfig.tiny()],
                         ids=lambda c: c.name)
def test_train_mode_updates_batch_statistics(config):
  model = _random_model(config)
  bns = [model.backbone.bn1, model.deconv_layers.layers[1]]
  if config.name == "integral":
    bns.append(model.final_bn)
  before = [np.asarray(bn.mean[...]).copy() for bn in bns]
  model.train()
  model(_images())
  for bn, old in zip(bns, before):
    assert not np.allclose(np.asarray(bn.mean[...]), old)
  model.eval()
  frozen = [np.asarray(bn.mean[...]).copy() for bn in bns]
  model(_images(seed=1))
  for bn, old in zip(bns, frozen):
    np.testing.assert_array_equal(np.asarray(bn.mean[...]), old)


@pytest.mark.parametrize("config", [IntegralConfig.tiny(), HG3DConfig.tiny()],
                         ids=lambda c: c.name)
def test_jit_matches_eager(config):
  model = _random_model(config)
  model.eval()
  graphdef, state = nnx.split(model)

  @jax.jit
  def forward(state, x):
    return nnx.merge(graphdef, state)(x)

  x = _images()
  jitted, eager = forward(state, x), model(x)
  for name in eager:
    np.testing.assert_allclose(np.asarray(jitted[name]), np.asarray(eager[name]),
                               rtol=1e-5, atol=1e-6 * float(jnp.abs(eager[name]).max()))


@pytest.mark.parametrize("config,wrap,prefix", [
    (IntegralConfig.tiny(depth_dim=64), "network", "module."),  # train.py's save
    (HG3DConfig.tiny(), "state_dict", ""),  # model.py save_model
], ids=["integral", "hg3d"])
def test_zip_and_legacy_checkpoints_convert_identically(tmp_path: Path, config, wrap, prefix):
  torch = pytest.importorskip("torch")
  model, sd = _export(config, seed=7)
  tensors = collections.OrderedDict(
      (prefix + k, torch.from_numpy(np.array(v))) for k, v in sd.items())
  results = []
  for legacy in (False, True):
    path = tmp_path / f"ck_{legacy}.pth"
    torch.save({"epoch": 10, wrap: tensors}, path, _use_new_zipfile_serialization=not legacy)
    converted, got, _ = convert.convert_file(path)
    assert got == config
    results.append(convert.export_state_dict(converted, got))
  for key in sd:
    np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)
    np.testing.assert_array_equal(results[0][key], sd[key], err_msg=key)
