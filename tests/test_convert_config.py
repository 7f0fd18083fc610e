"""Configuration the weights cannot reveal: taken from the user as the originals took it.

Checkpoints are written with the hand assembler of ``test_checkpoint_reader`` (no torch).
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpose import convert, models
from jaxpose.convert.__main__ import main as convert_main
from jaxpose.models import hrnet, integral, mspn, rie, videopose3d
from tests import test_checkpoint_reader as pk

VP3D_CAUSAL = videopose3d.VideoPose3DConfig.tiny(filter_widths=(3, 3), causal=True, dropout=0.1)


def _model(config, seed: int = 0):
  """``config``'s model with random weights (set from numpy), in eval mode."""
  graphdef, state = nnx.split(models.abstract_model(config))
  rng = np.random.RandomState(seed)

  def value(path, var):
    if path[-1] == "var":
      return rng.uniform(0.5, 1.5, var.shape).astype(np.float32)
    return (0.3 * rng.standard_normal(var.shape)).astype(np.float32)

  model = nnx.merge(graphdef, nnx.map_state(value, state))
  model.eval()
  return model


def _state_dict(config, seed: int = 0) -> dict[str, np.ndarray]:
  return convert.export_state_dict(_model(config, seed), config)


def _shapes(config) -> dict[str, np.ndarray]:
  """A zero state dict of ``config`` (what the resolution reads: names and shapes)."""
  graphdef, state = nnx.split(models.abstract_model(config))
  model = nnx.merge(graphdef, nnx.map_state(lambda _, v: np.zeros(v.shape, v.dtype), state))
  return convert.export_state_dict(model, config)


def _write(path: Path, state_dict: dict, wrap: str | None = None, extra: bytes = b"") -> Path:
  """A zip checkpoint; ``wrap``: the state dict under that key, beside ``extra`` items."""
  specs, storages = {}, {}
  for i, (name, array) in enumerate(state_dict.items()):
    array = np.ascontiguousarray(array)
    specs[name] = {"key": str(i), "numel": array.size, "size": array.shape,
                   "stride": tuple(s // array.itemsize for s in array.strides),
                   "type": "LongStorage" if array.dtype == np.int64 else "FloatStorage"}
    storages[str(i)] = array.tobytes()
  pkl = pk.state_dict_pickle(specs)
  if wrap:
    pkl = pk.pickle_of(pk.EMPTY_DICT + pk.MARK + pk.p_str(wrap) + pkl[2:-1] + pk.p_str("epoch")
                       + pk.p_int(80) + extra + pk.SETITEMS)
  return pk.write_zip(path, pkl, storages)


def _namespace(**values) -> bytes:
  """Pickle opcodes of ``argparse.Namespace(**values)`` (ints, floats, bools, strings)."""
  items = b""
  for key, value in values.items():
    if isinstance(value, bool):
      op = b"\x88" if value else b"\x89"
    elif isinstance(value, int):
      op = pk.p_int(value)
    elif isinstance(value, float):
      op = pk.p_float(value)
    else:
      op = pk.p_str(value)
    items += pk.p_str(key) + op
  return (pk.p_global("argparse", "Namespace") + pk.EMPTY_TUPLE + b"\x81" + pk.EMPTY_DICT
          + pk.MARK + items + pk.SETITEMS + b"b")


def _poses(model, x) -> np.ndarray:
  return np.asarray(model(jnp.asarray(x))["poses"])


@contextlib.contextmanager
def _no_assumptions():
  with warnings.catch_warnings():
    warnings.simplefilter("error", convert.AssumptionWarning)
    yield


# ---------------------------------------------------------------------------------------
# VideoPose3D: causal is invisible in the weights
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def causal_vp3d(tmp_path_factory):
  model = _model(VP3D_CAUSAL, seed=4)
  sd = convert.export_state_dict(model, VP3D_CAUSAL)
  path = _write(tmp_path_factory.mktemp("vp3d") / "epoch_80.bin", sd, wrap="model_pos")
  x = np.random.RandomState(0).standard_normal((1, 20, 5, 2)).astype(np.float32)
  return path, x, _poses(model, x)


def test_causal_videopose3d_needs_its_flag_and_says_so(causal_vp3d):
  path, x, want = causal_vp3d
  with pytest.warns(convert.AssumptionWarning) as caught:
    model, config, report = convert.convert_file(path)
  messages = [str(w.message) for w in caught]
  assert any(m.startswith("assumed causal=False: causal and symmetric convolutions") for m in
             messages), messages
  assert any(m.startswith("assumed dropout=0.25") for m in messages), messages
  assert set(report.config_report.assumed) == {"causal", "dropout"}
  model.eval()
  assert np.abs(_poses(model, x) - want).max() > 0.1  # silently wrong without the flag


def test_causal_videopose3d_from_the_original_arguments(causal_vp3d):
  path, x, want = causal_vp3d
  with _no_assumptions():
    model, config, report = convert.convert_file(
        path, original_args="-d h36m -k cpn_ft_h36m_dbb -arc 3,3 --causal --dropout=0.1 -ch 32 "
                            "--evaluate epoch_80.bin")
  assert config == VP3D_CAUSAL
  given = report.config_report.given
  assert given["causal"] == {"value": True, "from": "VideoPose3D run.py argument --causal"}
  assert given["channels"]["from"] == "VideoPose3D run.py argument -ch 32"
  assert given["dropout"]["from"] == "VideoPose3D run.py argument --dropout 0.1"
  assert given["dense"]["from"] == "VideoPose3D run.py default of --dense (False)"
  model.eval()
  np.testing.assert_array_equal(_poses(model, x), want)


def test_causal_videopose3d_on_the_command_line(causal_vp3d, tmp_path, capsys):
  path, _, _ = causal_vp3d
  out = tmp_path / "out"
  assert convert_main([str(path), str(out), "--", "-arc", "3,3", "--causal", "-ch", "32"]) == 0
  captured = capsys.readouterr()
  assert "warning" not in captured.err
  assert "causal=True (VideoPose3D run.py argument --causal)" in captured.out
  assert json.loads((out / "model_config.json").read_text())["causal"] is True
  configuration = json.loads((out / "conversion.json").read_text())["configuration"]
  assert configuration["given"]["dropout"]["from"] == "VideoPose3D run.py default of -drop (0.25)"
  assert configuration["inferred"]["num_joints_out"]["from"] == "read from the tensors"
  assert configuration["assumed"] == {}


def test_assumptions_are_warned_on_the_console_and_recorded(causal_vp3d, tmp_path, capsys):
  path, _, _ = causal_vp3d
  out = tmp_path / "out"
  assert convert_main([str(path), str(out)]) == 0
  err = [line for line in capsys.readouterr().err.splitlines()
         if line.startswith("jaxpose-convert")]
  assert [line.split(":")[1].strip() for line in err] == ["warning", "warning"]
  assert err[0].startswith("jaxpose-convert: warning: assumed causal=False: ")
  assert err[1].startswith("jaxpose-convert: warning: assumed dropout=0.25: ")
  assumed = json.loads((out / "conversion.json").read_text())["configuration"]["assumed"]
  assert assumed["causal"]["value"] is False and "--causal" in assumed["causal"]["why"]


def test_saved_arguments_in_the_checkpoint_are_used(tmp_path):
  model = _model(VP3D_CAUSAL, seed=4)
  sd = convert.export_state_dict(model, VP3D_CAUSAL)
  args = _namespace(architecture="3,3", causal=True, dropout=0.1, channels=32, lr=0.001)
  path = _write(tmp_path / "with_args.bin", sd, wrap="model_pos", extra=pk.p_str("args") + args)
  with _no_assumptions():
    _, config, report = convert.convert_file(path)
  assert config == VP3D_CAUSAL
  assert report.config_report.inferred["causal"]["from"] == "the checkpoint's saved args.causal"
  # What the user says wins over the saved arguments.
  _, config, _ = convert.convert_file(path, overrides=["causal=false"])
  assert not config.causal


def test_given_values_that_contradict_the_tensors_are_refused(causal_vp3d):
  path, _, _ = causal_vp3d
  with pytest.raises(convert.CheckpointError) as info:
    convert.convert_file(path, original_args="-arc 3,3 --causal")  # -ch defaults to 1024
  message = str(info.value)
  assert message.startswith(f"{path}: the configuration contradicts the tensors")
  assert ("channels=1024 (VideoPose3D run.py default of -ch (1024)) but the tensors give 32"
          in message)
  with pytest.raises(convert.CheckpointError,
                     match="kernel sizes 3,3 do not fit the given filter widths 3,3,3"):
    convert.convert_file(path, original_args="-arc 3,3,3 --causal -ch 32")


# ---------------------------------------------------------------------------------------
# Integral: joints x depth bins
# ---------------------------------------------------------------------------------------

INTEGRAL_18x72 = integral.IntegralConfig.tiny(num_joints=18, depth_dim=72)
CHALLENGE_YAML = """\
pytorch:
  block: resnet_pose
  loss: 'integral'
dataset:
  name:
   - 'mpii'
   - 'coco'
   - 'hm36_eccv_challenge'
dataiter:
    target_id: 2
train:
  patch_width: 288
  patch_height: 384
network:
  from_model_zoo: true
  num_layers: {layers}
  num_deconv_layers: 2
  num_deconv_filters: 32
  num_deconv_kernel: 4
  final_conv_kernel: 1

  depth_dim: 72
"""


@pytest.fixture(scope="module")
def integral_18x72():
  return _shapes(INTEGRAL_18x72)


def test_integral_1296_channels_are_18_joints_by_72_bins(integral_18x72):
  """1296 = 18 x 72 is the only split with a known joint count and a plausible depth."""
  with _no_assumptions():
    config, report = convert.resolve_model_config(integral_18x72)
  assert config == INTEGRAL_18x72
  assert "the only split with a known joint count" in report.inferred["depth_dim"]["from"]


@pytest.mark.parametrize("how", ["yaml", "model_config", "original_key", "joints"])
def test_integral_split_given_by_the_user(integral_18x72, tmp_path, how):
  if how == "yaml":
    (tmp_path / "challenge.yaml").write_text(CHALLENGE_YAML.format(layers=18))
    user = {"original_config": tmp_path / "challenge.yaml"}
    source = "challenge.yaml: network.depth_dim"
  elif how == "model_config":
    user, source = {"overrides": ["depth_dim=72"]}, "--model-config depth_dim"
  elif how == "original_key":
    user, source = {"overrides": {"network.depth_dim": 72}}, "--model-config network.depth_dim"
  else:
    user, source = {"overrides": ["num_joints=18"]}, "--model-config num_joints"
  with _no_assumptions():
    config, report = convert.resolve_model_config(integral_18x72, **user)
  assert config == INTEGRAL_18x72
  field = "num_joints" if how == "joints" else "depth_dim"
  assert report.given[field]["from"] == source
  if how == "yaml":  # hm36_eccv_challenge (dataset.name[2]) has 18 joints
    assert report.given["num_joints"] == {"value": 18, "from": "challenge.yaml: dataset.name"}


def test_integral_yaml_contradicting_the_tensors(integral_18x72, tmp_path):
  (tmp_path / "r152.yaml").write_text(CHALLENGE_YAML.format(layers=152))
  with pytest.raises(convert.CheckpointError,
                     match=r"num_layers=152 \(r152.yaml: network.num_layers\) but the tensors "
                           r"give 18"):
    convert.resolve_model_config(integral_18x72, original_config=tmp_path / "r152.yaml")


def test_integral_ambiguous_split_fails_with_the_candidates():
  shapes = _shapes(integral.IntegralConfig.tiny(num_joints=18, depth_dim=64))  # 1152 channels
  with pytest.raises(convert.CheckpointError) as info:
    convert.resolve_model_config(shapes, source="released.pth")
  message = str(info.value)
  assert message.startswith("released.pth: ")
  assert ("Candidates: num_joints=16 (MPII) x depth_dim=72 or num_joints=18 (Human3.6M + "
          "thorax) x depth_dim=64") in message
  assert "--model-config depth_dim=D" in message and "--cfg" in message
  config, _ = convert.resolve_model_config(shapes, overrides={"depth_dim": 64})
  assert (config.num_joints, config.depth_dim) == (18, 64)


def test_integral_cli_converts_the_challenge_split(tmp_path, capsys):
  model = _model(INTEGRAL_18x72, seed=2)
  sd = {f"module.{k}": v for k, v in convert.export_state_dict(model, INTEGRAL_18x72).items()}
  path = _write(tmp_path / "challenge.pth", sd, wrap="network")
  assert convert_main([str(path), str(tmp_path / "out"), "--model-config", "depth_dim=72"]) == 0
  _, config = convert.load_converted(tmp_path / "out")
  assert config == INTEGRAL_18x72
  assert "depth_dim=72 (--model-config depth_dim)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# RIE stage, MSPN output shape, HRNet yaml, hg3d options
# ---------------------------------------------------------------------------------------

RIE_TINY = rie.RIEConfig.tiny()
RIE_ARGS = "-arc 3,3 -ch 16 -lfd 8 --stage 2"


def test_rie_stage_from_args_file_name_or_assumed(tmp_path):
  shapes = _shapes(RIE_TINY)
  with _no_assumptions():
    config, report = convert.resolve_model_config(shapes, original_args=RIE_ARGS)
  assert config == RIE_TINY.replace(stage=2)
  assert report.given["stage"]["from"] == "Pose3D-RIE run.py argument --stage 2"
  assert report.given["dropout"]["from"] == "Pose3D-RIE run.py default of -drop (0.2)"
  config, report = convert.resolve_model_config(shapes, file_name="stage_2_epoch_40.bin",
                                                overrides=["causal=false", "dropout=0.2"])
  assert config.stage == 2
  assert report.inferred["stage"]["from"] == "checkpoint file name stage_2_epoch_40.bin"
  with pytest.warns(convert.AssumptionWarning, match="assumed stage=3"):
    config, _ = convert.resolve_model_config(shapes, overrides=["causal=false", "dropout=0.2"])
  assert config.stage == 3
  with pytest.raises(convert.CheckpointError, match="FuseBlocks .stage 2 or 3. but stage 1"):
    convert.resolve_model_config(shapes, original_args="-arc 3,3 -ch 16 -lfd 8")  # default 1


def test_mspn_output_shape_from_the_config(tmp_path):
  tiny = mspn.MSPNConfig.tiny()
  shapes = _shapes(tiny)
  (tmp_path / "mspn.yaml").write_text(
      "MODEL.STAGE_NUM: 2\nMODEL.UPSAMPLE_CHANNEL_NUM: 32\nDATASET:\n  KEYPOINT:\n    NUM: "
      f"{tiny.num_joints}\nOUTPUT_SHAPE: [16, 12]\nINPUT_SHAPE: [64, 48]\n")
  with _no_assumptions():
    config, report = convert.resolve_model_config(shapes, original_config=tmp_path / "mspn.yaml")
  assert config == tiny and report.given["output_shape"]["value"] == [16, 12]
  with pytest.warns(convert.AssumptionWarning, match="assumed output_shape=None"):
    config, _ = convert.resolve_model_config(shapes)
  assert config == tiny.replace(output_shape=None)


def _hrnet_yaml(config: hrnet.PoseHRNetConfig, name: str = "pose_hrnet") -> dict:
  stages = {f"STAGE{k}": {"NUM_MODULES": s.num_modules, "NUM_BRANCHES": s.num_branches,
                          "BLOCK": s.block.upper(), "NUM_BLOCKS": list(s.num_blocks),
                          "NUM_CHANNELS": list(s.num_channels), "FUSE_METHOD": "SUM"}
            for k, s in zip((2, 3, 4), config.stages)}
  return {"MODEL": {"NAME": name, "NUM_JOINTS": config.num_joints,
                    "EXTRA": {"FINAL_CONV_KERNEL": config.final_conv_kernel, **stages}},
          "TRAIN": {"LR": 0.001}}


def test_hrnet_yaml_is_checked_against_the_tensors(tmp_path):
  import yaml
  tiny = hrnet.PoseHRNetConfig.tiny(num_joints=5)
  shapes = _shapes(tiny)
  (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(_hrnet_yaml(tiny)))
  with _no_assumptions():
    config, report = convert.resolve_model_config(shapes, original_config=tmp_path / "tiny.yaml")
  assert config == tiny and report.given["num_joints"]["from"] == "tiny.yaml: MODEL.NUM_JOINTS"
  w32 = _hrnet_yaml(hrnet.PoseHRNetConfig.w32(num_joints=17))
  with pytest.raises(convert.CheckpointError, match="num_joints=17 .* but the tensors give 5"):
    convert.resolve_model_config(shapes, original_config=w32)
  with pytest.raises(ValueError, match="describes a 'pose_resnet' model"):
    convert.resolve_model_config(shapes, original_config=_hrnet_yaml(tiny, "pose_resnet"))
  with pytest.raises(ValueError, match="reads its configuration from an experiment file"):
    convert.resolve_model_config(shapes, original_args="--causal")


def test_hg3d_options_as_main_py_parses_them():
  from jaxpose.models import hg3d
  shapes = _shapes(hg3d.HG3DConfig.tiny(num_layers=18, num_joints=16))
  config, report = convert.resolve_model_config(
      shapes, original_args="--task human3d --dataset fusion_3d --arch msra_18")
  assert config.with_depth and report.given["num_joints"]["value"] == 16
  with pytest.raises(convert.CheckpointError,
                     match=r"with_depth=False \(pytorch-pose-hg-3d default of --task"):
    convert.resolve_model_config(shapes, original_args="--arch msra_18")


# ---------------------------------------------------------------------------------------
# Reading the user's configuration safely and strictly
# ---------------------------------------------------------------------------------------


def test_yaml_is_read_without_running_anything(tmp_path):
  marker = tmp_path / "pwned"
  (tmp_path / "evil.yaml").write_text(
      f"network: !!python/object/apply:os.system ['touch {marker}']\n")
  with pytest.raises(ValueError, match="evil.yaml: not a valid yaml file"):
    convert.resolve_model_config(_shapes(INTEGRAL_18x72), original_config=tmp_path / "evil.yaml")
  assert not marker.exists()
  laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
      f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
      for p, c in zip("abcdefgh", "bcdefghi"))
  (tmp_path / "laughs.yaml").write_text(laughs)
  with pytest.raises(ValueError, match="too large"):
    convert.resolve_model_config(_shapes(INTEGRAL_18x72),
                                 original_config=tmp_path / "laughs.yaml")


def test_model_config_keys_and_values_are_checked(integral_18x72):
  with pytest.raises(ValueError, match="'depth' is neither a field of integral's config") as info:
    convert.resolve_model_config(integral_18x72, overrides=["depth=72"])
  assert "depth_dim" in str(info.value) and "network.depth_dim" in str(info.value)
  with pytest.raises(ValueError, match="field 'depth_dim': 'many' is not a valid int"):
    convert.resolve_model_config(integral_18x72, overrides=["depth_dim=many"])
  with pytest.raises(ValueError, match="KEY=VALUE"):
    convert.resolve_model_config(integral_18x72, overrides=["depth_dim"])
  with pytest.raises(ValueError, match="--family videopose3d and --model-config name=integral"):
    convert.resolve_model_config(integral_18x72, family="videopose3d",
                                 overrides=["name=integral"])
