"""The checkpoint reader and converter core (family-independent behaviour)."""
from __future__ import annotations

import collections
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxpose import convert
from jaxpose.convert import torch_pickle
from jaxpose.convert.__main__ import main as convert_main
from jaxpose.models import resnet
from tests import test_checkpoint_reader as hostile

torch = pytest.importorskip("torch")

TINY = resnet.PoseResNetConfig.tiny(num_joints=5)


def _save(obj, path: Path, legacy: bool) -> Path:
  torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
  return path


def _to_torch(sd: dict) -> collections.OrderedDict:
  return collections.OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in sd.items())


@pytest.fixture(scope="module")
def tiny_state_dict() -> dict[str, np.ndarray]:
  model = convert.models.build_model(TINY, seed=3)
  return convert.export_state_dict(model, TINY)


# ---------------------------------------------------------------------------------------
# torch_pickle
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reader_rebuilds_tensors_of_every_dtype_and_view(tmp_path, legacy):
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  obj = {
      "sd": collections.OrderedDict(
          f32=torch.randn(2, 3), f64=torch.randn(3, dtype=torch.float64),
          f16=torch.randn(4).half(), bf16=torch.randn(4).bfloat16(),
          i64=torch.tensor(7), u8=torch.tensor([1, 2], dtype=torch.uint8),
          boolean=torch.tensor([True, False]),
          column=base[:, 2], transposed=base.t(), sliced=base[1:3, ::2],
          param=torch.nn.Parameter(torch.ones(3))),
      "epoch": 5, "name": "x", "nested": [1, (2.5, "y")],
  }
  loaded = torch_pickle.load(_save(obj, tmp_path / "ck.pth", legacy))
  assert loaded["epoch"] == 5 and loaded["name"] == "x" and loaded["nested"] == [1, (2.5, "y")]
  for key, tensor in obj["sd"].items():
    want = tensor.detach()
    if want.dtype == torch.bfloat16:
      want = want.float()
    got = loaded["sd"][key]
    assert got.shape == tuple(want.shape), key
    np.testing.assert_array_equal(np.asarray(got, np.float64), want.double().numpy(), err_msg=key)
  assert loaded["sd"]["bf16"].dtype.name == "bfloat16"
  assert loaded["sd"]["i64"].dtype == np.int64


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reader_never_executes_pickled_code(tmp_path, legacy):
  marker = tmp_path / "pwned"

  class Evil:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))

  path = _save({"state_dict": _to_torch({"w": np.ones(2, np.float32)}), "evil": Evil()},
               tmp_path / "evil.pth", legacy)
  loaded = torch_pickle.load(path)
  assert not marker.exists()
  assert isinstance(loaded["evil"], torch_pickle.OpaqueObject)
  assert loaded["evil"].qualname in ("posix.system", "os.system", "nt.system")
  np.testing.assert_array_equal(loaded["state_dict"]["w"], np.ones(2, np.float32))


def test_reader_keeps_foreign_objects_opaque(tmp_path):
  import argparse
  obj = {"model_pos": _to_torch({"w": np.zeros(1, np.float32)}),
         "random_state": np.random.RandomState(0), "args": argparse.Namespace(lr=0.1)}
  loaded = torch_pickle.load(_save(obj, tmp_path / "vp3d.bin", legacy=True))
  assert isinstance(loaded["random_state"], torch_pickle.OpaqueObject)
  assert loaded["args"].qualname == "argparse.Namespace"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("cut", [0.5, 0.9, 0.999])
def test_truncated_files_are_reported(tmp_path, legacy, cut, tiny_state_dict):
  path = _save(_to_torch(tiny_state_dict), tmp_path / "full.pth", legacy)
  data = path.read_bytes()
  truncated = tmp_path / "cut.pth"
  truncated.write_bytes(data[: int(len(data) * cut)])
  with pytest.raises(torch_pickle.CheckpointError) as err:
    torch_pickle.load(truncated)
  message = str(err.value)
  assert str(truncated) in message and "\n" not in message
  assert any(w in message for w in ("truncated", "corrupt")), message


@pytest.mark.parametrize("content,expected", [
    (b"", "empty file"),
    (b"hello, this is not a checkpoint" * 4, "not a PyTorch checkpoint"),
    (pickle.dumps({"a": 1}), "not a PyTorch checkpoint"),
])
def test_non_checkpoint_files_get_one_line_errors(tmp_path, content, expected):
  path = tmp_path / "thing.pth"
  path.write_bytes(content)
  with pytest.raises(torch_pickle.CheckpointError, match=expected) as err:
    torch_pickle.load(path)
  assert "\n" not in str(err.value)


def test_zip_that_is_not_a_checkpoint(tmp_path):
  import zipfile
  path = tmp_path / "archive.pth"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("readme.txt", "hi")
  with pytest.raises(torch_pickle.CheckpointError, match="without data.pkl"):
    torch_pickle.load(path)


def test_missing_file(tmp_path):
  with pytest.raises(torch_pickle.CheckpointError, match="no such file"):
    torch_pickle.load(tmp_path / "absent.pth")


def test_converter_refuses_a_tensor_reading_outside_its_storage(tmp_path, tiny_state_dict,
                                                                capsys):
  """Stride -1 on ``final_layer.bias``: the old reader converted heap bytes (rc 0)."""
  good = hostile.write_state_dict_zip(tmp_path / "good.pth", tiny_state_dict)
  assert convert_main([str(good), str(tmp_path / "ok")]) == 0
  bad = hostile.write_state_dict_zip(tmp_path / "bad.pth", tiny_state_dict,
                                     {"final_layer.bias": {"stride": (-1,)}})
  capsys.readouterr()
  assert convert_main([str(bad), str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and str(bad) in err
  assert "tensor 'final_layer.bias'" in err and "negative stride (-1,)" in err
  assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------
# Unwrapping and mapping
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrap,prefix", [
    (None, ""), ("state_dict", ""), ("model", ""), ("model_pos", ""), ("network", "module."),
    ("state_dict", "module."),
])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_wrappers_and_prefixes_are_unwrapped(tmp_path, tiny_state_dict, wrap, prefix, legacy):
  sd = _to_torch({prefix + k: v for k, v in tiny_state_dict.items()})
  obj = sd if wrap is None else {"epoch": 140, "perf": 0.5, wrap: sd, "optimizer": {"state": {}}}
  path = _save(obj, tmp_path / "ck.pth", legacy)
  unwrapped = convert.load_state_dict(path)
  assert unwrapped.wrapper_key == wrap and unwrapped.prefix == prefix
  assert set(unwrapped.state_dict) == set(tiny_state_dict)
  model, config, report = convert.convert_file(path)
  assert config == TINY and report.ok


def test_explicit_key_selects_among_several_state_dicts(tmp_path, tiny_state_dict):
  other = {k: v + 1 if v.dtype.kind == "f" else v for k, v in tiny_state_dict.items()}
  path = _save({"model_pos": _to_torch(tiny_state_dict), "model_traj": _to_torch(other)},
               tmp_path / "two.bin", legacy=False)
  assert convert.load_state_dict(path).wrapper_key == "model_pos"
  traj = convert.load_state_dict(path, key="model_traj")
  np.testing.assert_array_equal(traj.state_dict["conv1.weight"], other["conv1.weight"])
  with pytest.raises(convert.CheckpointError, match="no entry 'nope'"):
    convert.load_state_dict(path, key="nope")


def test_wrong_architecture_is_refused_with_every_name(tiny_state_dict):
  sd = dict(tiny_state_dict)
  del sd["layer2.0.conv1.weight"]
  sd["layer9.0.extra.weight"] = np.zeros((3, 3, 1, 1), np.float32)
  sd["final_layer.bias"] = np.zeros(4, np.float32)
  with pytest.raises(convert.CheckpointError) as err:
    convert.convert_state_dict(sd, TINY, source="bad.pth")
  message = str(err.value)
  for name in ("backbone/layer2/0/conv1/kernel", "layer9.0.extra.weight", "final_layer.bias"):
    assert name in message, message
  assert "bad.pth" in message


def test_shape_mismatch_is_fatal_even_when_partial(tiny_state_dict):
  other = resnet.PoseResNetConfig.tiny(num_joints=9)
  with pytest.raises(convert.CheckpointError, match="mis-shaped"):
    convert.convert_state_dict(tiny_state_dict, other, allow_partial=True)


def test_unknown_family_gets_one_line_error():
  sd = {"encoder.weight": np.zeros((3, 3), np.float32), "decoder.bias": np.zeros(3, np.float32)}
  with pytest.raises(convert.CheckpointError, match="match no jaxpose model family") as err:
    convert.convert_state_dict(sd, source="foreign.pth")
  assert "\n" not in str(err.value)


def test_partial_loading_of_an_imagenet_backbone(tiny_state_dict):
  # torchvision classification checkpoint: trunk + fc, no pose head.
  imagenet = {k: v for k, v in tiny_state_dict.items()
              if not k.startswith(("deconv_layers", "final_layer"))}
  imagenet["fc.weight"] = np.zeros((1000, 512), np.float32)
  imagenet["fc.bias"] = np.zeros(1000, np.float32)
  with pytest.raises(convert.CheckpointError, match="missing"):
    convert.convert_state_dict(imagenet, TINY)
  model, _, report = convert.convert_state_dict(imagenet, TINY, allow_partial=True, seed=11)
  assert report.unexpected == ["fc.weight", "fc.bias"]
  assert all(p.startswith(("deconv_layers", "final_layer")) for p in report.missing)
  exported = convert.export_state_dict(model, TINY)
  np.testing.assert_array_equal(exported["layer3.1.conv2.weight"], imagenet["layer3.1.conv2.weight"])
  # Head keeps its (std 0.001) initialisation, not zeros.
  assert 0 < np.std(exported["final_layer.weight"]) < 0.01


def test_pretrained_layers_filter(tiny_state_dict):
  select = convert.pretrained_layers_filter(["conv1", "bn1", "layer1"])
  model, _, report = convert.convert_state_dict(tiny_state_dict, TINY, allow_partial=True,
                                                select=select)
  assert all(k.split(".")[0] in ("conv1", "bn1", "layer1") for k in report.sources.values())
  assert "layer2.0.conv1.weight" in report.skipped
  assert convert.pretrained_layers_filter(["*"])("anything.weight")


# ---------------------------------------------------------------------------------------
# Orbax output and the command line
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_convert_checkpoint_round_trip_through_orbax(tmp_path, tiny_state_dict, legacy):
  path = _save({"state_dict": _to_torch(tiny_state_dict), "epoch": 3}, tmp_path / "m.pth", legacy)
  out = tmp_path / "out"
  config = convert.convert_checkpoint(path, out)
  assert config == TINY
  report = json.loads((out / "conversion.json").read_text())
  assert report["family"] == "pose_resnet" and report["wrapper_key"] == "state_dict"
  assert report["checkpoint_extra"] == {"epoch": 3}
  model, loaded = convert.load_converted(out)
  assert loaded == TINY
  exported = convert.export_state_dict(model, loaded)
  assert exported.keys() == tiny_state_dict.keys()
  for k, v in tiny_state_dict.items():
    np.testing.assert_array_equal(exported[k], v, err_msg=k)
  with pytest.raises(FileExistsError):
    convert.convert_checkpoint(path, out)
  bf16_model, bf16_config = convert.load_converted(out, dtype="bfloat16")
  assert bf16_config.dtype == "bfloat16"


def test_cli(tmp_path, tiny_state_dict, capsys):
  path = _save(_to_torch(tiny_state_dict), tmp_path / "m.pth", legacy=True)
  assert convert_main([str(path), str(tmp_path / "out")]) == 0
  assert "pose_resnet" in capsys.readouterr().out
  assert (tmp_path / "out" / "model_config.json").exists()
  bad = tmp_path / "bad.pth"
  bad.write_bytes(b"garbage" * 20)
  assert convert_main([str(bad), str(tmp_path / "out2")]) == 1
  err = capsys.readouterr().err
  assert err.startswith("jaxpose-convert: error:") and str(bad) in err
  assert not (tmp_path / "out2").exists()


def test_cli_runs_as_module_without_torch_import(tmp_path, tiny_state_dict):
  path = _save(_to_torch(tiny_state_dict), tmp_path / "m.pth", legacy=False)
  code = ("import sys; sys.modules['torch'] = None\n"
          "from jaxpose.convert.__main__ import main\n"
          f"sys.exit(main([{str(path)!r}, {str(tmp_path / 'o')!r}]))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
