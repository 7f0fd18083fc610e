"""Conformance with the original PyTorch implementations (the acceptance criterion).

Fixtures are discovered at run time in the project's copy ``tests/reference/`` plus every
folder named in ``$JAXPOSE_REFERENCE_DIR`` (``os.pathsep``-separated; see
``tests/conformance/fixtures.py``); nothing here names a fixture or a case count, and a
missing or empty fixture folder is a failure, never a skip. For every ``models/*.json``:

1. the checkpoint is rebuilt with the weights the fixtures were recorded with
   (``tests/conformance/synth_weights.py``) in the layout of the original's released file,
   in the zip format and in the legacy (torch < 1.6) format;
2. jaxpose's converter gets the fixture's ``official.config`` the way a user passes the
   original's configuration (``USER_CONFIG``: the experiment yaml, or the original's
   command line), reads the rest off the tensors (nothing may be assumed), converts the
   file and writes an Orbax checkpoint, which is loaded back from disk;
3. the Flax model runs on the stored inputs and every stored output (including
   ``derived_from`` outputs and MSPN's ``aux_outputs``) is compared with a tolerance of
   ``TOLERANCE_FACTOR`` x the fixture's ``fp32_vs_fp64_max_abs`` for that output; so does
   the inference path users get (``jaxpose.models.inference.prepare_for_inference``:
   BatchNorms folded into convolutions), with the same tolerance;
4. the legacy-format conversion must give bit-identical variables.

For every ``functions/*.json`` each case runs through the checker for that function
(``tests/conformance``).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxpose import checkpoint
from jaxpose import convert
from jaxpose.codecs import integral as integral_codec
from jaxpose.models import inference
from tests.conformance import fixtures, functions_2d, functions_3d, synth_weights

FIXTURE_DIRS = fixtures.fixture_dirs()

# Our float32 result vs the original's float32 result differ by about the float32 noise of
# each (the fixture's fp32-vs-fp64 difference measures one of them).
TOLERANCE_FACTOR = 4.0

FUNCTION_CHECKERS: dict[str, Callable] = {**functions_2d.CHECKERS, **functions_3d.CHECKERS}


def _function_cases() -> list:
  params = []
  for test_id, path in fixtures.discover("functions", FIXTURE_DIRS):
    if isinstance(path, fixtures.NoFixtures):
      params.append(pytest.param(path, 0, id=test_id))
      continue
    fixture = json.loads(path.read_text())
    for case in range(int(fixture["cases"])):
      params.append(pytest.param(path, case, id=f"{test_id}-case{case}"))
  return params


@pytest.mark.parametrize("folder", FIXTURE_DIRS, ids=lambda d: d.label or "project")
def test_fixture_folder_holds_fixtures(folder: fixtures.FixtureDir):
  problem = folder.problem()
  assert problem is None, problem


# ----------------------------------------------------------------------------------------
# How each family's jaxpose outputs correspond to the fixture's raw outputs (NCHW etc.)
# ----------------------------------------------------------------------------------------


def _nchw(x) -> np.ndarray:
  return np.asarray(x).transpose(0, 3, 1, 2)


def _nhwc(x: np.ndarray) -> np.ndarray:
  return np.asarray(x).transpose(0, 2, 3, 1)


def _run_heatmap_model(model, inputs):
  return {"output": _nchw(model(_nhwc(inputs["input"]))["heatmaps"])}


def _run_mspn(model, inputs):
  out = model(_nhwc(inputs["input"]))
  raw = {"output": _nchw(out["heatmaps"])}
  for s, stage in enumerate(out["stages"]):
    for j, heatmaps in enumerate(stage):
      raw[f"aux_stage{s}_res{j}"] = _nchw(heatmaps)
  return raw


def _run_hg3d(model, inputs):
  out = model(_nhwc(inputs["input"]))
  return {"output_hm": _nchw(out["heatmaps"]), "output_depth": _nchw(out["depth"])}


def _run_videopose3d(model, inputs):
  raw = {"output": np.asarray(model(inputs["input"])["poses"])}
  if "input_1f" in inputs:
    raw["output_1f"] = np.asarray(model.single_frame(inputs["input_1f"])["poses"])
  return raw


def _run_rie(model, inputs):
  return {"output": np.asarray(model(inputs["input"])["poses"])}


def _model_input_shape(family: str, inputs: Mapping[str, np.ndarray]) -> tuple[int, ...]:
  """The shape of the model's own input (NHWC images, (N, T, J, 2) keypoints)."""
  x = inputs["input"]
  return tuple(x.shape) if family in ("videopose3d", "rie") else _nhwc(x).shape


RUNNERS: dict[str, Callable] = {
    "pose_resnet": _run_heatmap_model,
    "pose_hrnet": _run_heatmap_model,
    "mspn": _run_mspn,
    "integral": lambda model, inputs: {"output": _nchw(model(_nhwc(inputs["input"]))["heatmaps"])},
    "hg3d": _run_hg3d,
    "videopose3d": _run_videopose3d,
    "rie": _run_rie,
}


# ----------------------------------------------------------------------------------------
# How a user passes each original's configuration (a fixture's ``official.config``)
# ----------------------------------------------------------------------------------------


def _nested(flat: Mapping) -> dict:
  """``{"MODEL.EXTRA": {...}, "MODEL.NUM_JOINTS": 17}`` -> the nested mapping of a yaml."""
  out: dict = {}
  for key, value in flat.items():
    *parents, leaf = key.split(".")
    node = out
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = _nested(value) if isinstance(value, Mapping) else value
  return out


def _yaml_file(tmp_path: Path, name: str, mapping: Mapping) -> dict:
  import yaml  # the user's experiment file
  path = tmp_path / f"{name}.yaml"
  path.write_text(yaml.safe_dump(dict(mapping), sort_keys=False))
  return {"original_config": path}


def _hrnet_project_yaml(config: Mapping, tmp_path: Path) -> dict:
  """deep-high-resolution-net.pytorch (HRNet, SimpleBaseline): its experiment yaml."""
  return _yaml_file(tmp_path, "experiment", _nested(config))


def _mspn_config(config: Mapping, tmp_path: Path) -> dict:
  """MSPN's config.py (Python, never executed): its values written out as a yaml."""
  return _yaml_file(tmp_path, "mspn_config", config)


_INTEGRAL_DATASETS = {18: "hm36", 16: "mpii", 17: "coco"}


def _integral_yaml(config: Mapping, tmp_path: Path) -> dict:
  """integral-human-pose: the experiment yaml (``network``; joints from the dataset)."""
  network = {key: config[key] for key in (
      "num_layers", "num_deconv_layers", "num_deconv_filters", "num_deconv_kernel",
      "final_conv_kernel", "depth_dim", "input_channel")}
  return _yaml_file(tmp_path, "integral", {
      "pytorch": {"block": "resnet_pose", "loss": "integral"},
      "dataset": {"name": [_INTEGRAL_DATASETS[config["num_joints"]]]},
      "dataiter": {"target_id": 0},
      "train": {"patch_width": config["patch_width"], "patch_height": config["patch_height"]},
      "network": network})


def _hg3d_options(config: Mapping, tmp_path: Path) -> dict:
  """pytorch-pose-hg-3d: its command-line options."""
  del tmp_path
  return {"original_args": config["opts"]}


def _temporal_args(config: Mapping) -> list[str]:
  args = ["-arc", ",".join(str(w) for w in config["filter_widths"]),
          "-ch", str(config["channels"]), "-drop", str(config["dropout"])]
  return args + ["--causal"] * bool(config["causal"]) + ["--dense"] * bool(config["dense"])


def _videopose3d_args(config: Mapping, tmp_path: Path) -> dict:
  """VideoPose3D: the run.py command line."""
  del tmp_path
  return {"original_args": _temporal_args(config)}


def _rie_args(config: Mapping, tmp_path: Path) -> dict:
  """Pose3D-RIE: the run.py command line (``latten_features`` is the model's argument)."""
  del tmp_path
  return {"original_args": _temporal_args(config) + [
      "-lfd", str(config["latten_features"]), "--stage", str(config["stage"])]}


USER_CONFIG: dict[str, Callable[[Mapping, Path], dict]] = {
    "pose_resnet": _hrnet_project_yaml,
    "pose_hrnet": _hrnet_project_yaml,
    "mspn": _mspn_config,
    "integral": _integral_yaml,
    "hg3d": _hg3d_options,
    "videopose3d": _videopose3d_args,
    "rie": _rie_args,
}


def _derive(spec: Mapping, raw: np.ndarray) -> np.ndarray:
  """Applies a fixture's ``derived_from`` operation to a raw NCHW output."""
  op = spec["op"]
  if op == "take":
    out = np.take(raw, spec["rows"], axis=spec["rows_axis"])
    return np.take(out, spec["cols"], axis=spec["cols_axis"])
  if op == "mean":
    return raw.astype(np.float64).mean(axis=tuple(spec["axes"]))
  if op == "softmax_integral":
    coords = integral_codec.softmax_integral(
        _nhwc(raw), num_joints=spec["num_joints"], depth=spec["hm_depth"])
    return np.asarray(coords).reshape(raw.shape[0], -1)
  if op == "get_joint_location_result":
    num_joints = spec.get("num_joints")
    depth = spec.get("hm_depth", raw.shape[3])  # the original assumes depth == width
    if num_joints is None:
      num_joints = raw.shape[1] // depth
    coords = integral_codec.softmax_integral(_nhwc(raw), num_joints=num_joints, depth=depth)
    return np.asarray(integral_codec.joint_location_result(
        coords, patch_width=spec["patch_width"], patch_height=spec["patch_height"]))
  raise AssertionError(f"unknown derived_from op {op!r}")


def _flat_variables(model) -> dict[str, np.ndarray]:
  flat = jax.tree_util.tree_flatten_with_path(checkpoint.model_variables(model))[0]
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}


def _model_params():
  return [pytest.param(p, id=test_id, marks=pytest.mark.slow)
          for test_id, p in fixtures.discover("models", FIXTURE_DIRS)]


@pytest.mark.parametrize("fixture_path", _model_params())
def test_model_fixture(fixture_path: Path, tmp_path: Path):
  manifest = synth_weights.load_manifest(fixtures.require(fixture_path))
  arrays = np.load(fixture_path.with_suffix(".npz"))
  family = manifest["family"]
  assert family in RUNNERS, f"{fixture_path.name}: no jaxpose runner for family {family!r}"

  variables = {}
  for legacy in (False, True):
    fmt = "legacy" if legacy else "zip"
    ckpt = synth_weights.write_checkpoint(
        manifest, tmp_path / f"{fixture_path.stem}_{fmt}.pth", legacy=legacy)
    out_dir = tmp_path / f"converted_{fmt}"
    user = USER_CONFIG[family](manifest["official"]["config"], tmp_path)
    config = convert.convert_checkpoint(ckpt, out_dir, **user)
    assert config.name == family
    configuration = json.loads((out_dir / convert.REPORT_FILE).read_text())["configuration"]
    assert configuration["assumed"] == {}, f"{fixture_path.name}: {configuration['assumed']}"
    model, loaded_config = convert.load_converted(out_dir)
    assert loaded_config == config
    variables[fmt] = _flat_variables(model)
  assert variables["zip"].keys() == variables["legacy"].keys()
  for key, value in variables["zip"].items():
    np.testing.assert_array_equal(value, variables["legacy"][key], err_msg=key)

  model.eval()
  inputs = {name: arrays[name] for name in manifest["inputs"]}
  prepared = inference.prepare_for_inference(model, _model_input_shape(family, inputs))
  expected = {**manifest["outputs"], **manifest.get("aux_outputs", {})}
  noise = manifest["fp32_vs_fp64_max_abs"]
  for path, runnable in (("model", model), ("inference path", prepared)):
    raw = RUNNERS[family](runnable, inputs)
    for name, spec in expected.items():
      if "derived_from" in spec:
        # ``derived_from.output`` names (or describes) the raw output it was computed from.
        source = spec["derived_from"].get("output")
        ours = _derive(spec["derived_from"], raw[source if source in raw else "output"])
      else:
        assert name in raw, f"{fixture_path.name}: jaxpose produced no output {name!r}"
        ours = raw[name]
      want = arrays[name]
      assert ours.shape == want.shape, f"{name}: shape {ours.shape} != {want.shape}"
      tol = TOLERANCE_FACTOR * noise[name]
      err = float(np.max(np.abs(ours.astype(np.float64) - want)))
      print(f"{fixture_path.stem}/{name} ({path}): max |diff| {err:.3g} = {err / noise[name]:.2f} "
            f"x fp32-vs-fp64 noise (allowed {TOLERANCE_FACTOR:g} x)")  # pytest -s shows it
      assert err <= tol, f"{fixture_path.stem}/{name} ({path}): max |diff| {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("fixture_path,case", _function_cases())
def test_function_fixture(fixture_path: Path, case: int):
  fixture = json.loads(fixtures.require(fixture_path).read_text())
  checker = FUNCTION_CHECKERS.get(fixture["name"])
  assert checker is not None, (
      f"{fixture_path.name}: no jaxpose checker for function fixture {fixture['name']!r} "
      f"({fixture.get('official', {}).get('function')})")
  checker(fixture, np.load(fixture_path.with_suffix(".npz")), case)
