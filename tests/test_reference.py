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
   ``TOLERANCE_FACTOR`` x the fixture's ``fp32_vs_fp64_max_abs`` for that output; so do,
   with the same tolerance, the inference path (``jaxpose.models.inference.
   prepare_for_inference``: BatchNorms folded into convolutions) and each entry point
   that takes it: ``load_model`` (``jaxpose predict`` / ``export``) and the training loop's
   evaluation step (``--mode=eval``), each checked to have folded the BatchNorms;
4. the legacy-format conversion must give bit-identical variables.

For every ``functions/*.json`` each case runs through the checker for that function
(``tests/conformance``).
"""
from __future__ import annotations

import json
import types
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from jaxpose import checkpoint
from jaxpose import convert
from jaxpose.codecs import integral as integral_codec
from jaxpose.inference import loading
from jaxpose.models import inference, layers
from jaxpose.train import loop, state as state_lib
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


class _EvalStepModel:
  """``model`` called the way the training loop's evaluation step calls it
  (``loop.make_predict_fns``: jitted, its traced parameters folded inside the step; the
  batch-sharded variant, ``sharded=True``, runs rows as micro-batches on one device), for a
  task whose ``predict`` is a plain call of the model (or of ``single_frame``)."""

  def __init__(self, model, sharded: bool):
    _, self.eval_def, self.params, self.batch_stats = state_lib.split_model(nnx.clone(model))
    self.mesh = state_lib.make_mesh()
    self.sharded = sharded

  def _run(self, method: str | None, x):
    call = (lambda m, x: m(x)) if method is None else (lambda m, x: getattr(m, method)(x))
    fns = loop.make_predict_fns(self.eval_def, types.SimpleNamespace(predict=call), self.mesh)
    return fns[0 if self.sharded else 1](self.params, self.batch_stats, np.asarray(x))

  def __call__(self, x):
    return self._run(None, x)

  def single_frame(self, x):
    return self._run("single_frame", x)


def _loaded_for_inference(family: str, out_dir: Path, model, inputs) -> object:
  """The model as ``jaxpose predict`` / ``jaxpose export`` get it: ``load_model`` on the
  converted directory (lifters need no jaxpose config); a 2D model needs the jaxpose
  config of its training run, so it goes through the loader's own preparation step with
  a task whose ``predict`` is the plain call at the fixture's input size."""
  if family in loading.LIFTER_FAMILIES:
    return loading.load_model(out_dir).model
  x = _nhwc(inputs["input"])
  task = types.SimpleNamespace(spec=types.SimpleNamespace(input_size=x.shape[1:3]),
                               predict=lambda m, images: m(images.astype(np.float32)))
  return loading._prepare_for_inference(nnx.clone(model), model.config, task)


def _folded_count(model) -> int:
  return sum(isinstance(m, layers.BatchNorm) and m.folded for _, m in nnx.iter_modules(model))


def _model_params():
  return [pytest.param(p, id=test_id, marks=pytest.mark.slow)
          for test_id, p in fixtures.discover("models", FIXTURE_DIRS)]


@pytest.mark.parametrize("fixture_path", _model_params())
def test_model_fixture(fixture_path: Path, tmp_path: Path, monkeypatch):
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
  folded = _folded_count(prepared)
  assert folded > 0, f"{fixture_path.name}: the inference path folded no BatchNorm"
  loaded = _loaded_for_inference(family, out_dir, model, inputs)
  assert _folded_count(loaded) == folded, "load_model (predict, export) is not the folded path"
  traced_folds = []
  fold = inference.fold_batch_norm
  monkeypatch.setattr(inference, "fold_batch_norm",
                      lambda conv, bn: traced_folds.append(bn) or fold(conv, bn))
  expected = {**manifest["outputs"], **manifest.get("aux_outputs", {})}
  noise = manifest["fp32_vs_fp64_max_abs"]
  paths = (("model", model), ("inference path", prepared), ("load_model", loaded),
           ("evaluation step", _EvalStepModel(model, sharded=True)),
           ("evaluation step, replicated", _EvalStepModel(model, sharded=False)))
  for path, runnable in paths:
    traced_folds.clear()
    raw = RUNNERS[family](runnable, inputs)
    if path.startswith("evaluation step"):  # the jitted step folds its traced parameters
      assert len(traced_folds) >= folded, (
          f"{fixture_path.name}: the {path} folded {len(traced_folds)} BatchNorms, the "
          f"inference path {folded}")
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
