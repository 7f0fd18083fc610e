"""Conformance with the original PyTorch implementations (the acceptance criterion).

Fixtures are discovered at run time in ``$JAXPOSE_REFERENCE_DIR`` (default
``../shared/reference`` beside the repository); nothing here names a fixture or a case
count. For every ``models/*.json``:

1. the checkpoint is rebuilt with the fixture's own ``synth.write_checkpoint`` in the zip
   format and in the legacy (torch < 1.6) format;
2. jaxpose's converter infers the family and configuration, converts the file and writes
   an Orbax checkpoint, which is loaded back from disk;
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

import functools
import importlib.util
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from unittest import mock

import jax
import numpy as np
import pytest

from jaxpose import checkpoint
from jaxpose import convert
from jaxpose.codecs import integral as integral_codec
from jaxpose.models import inference
from tests.conformance import functions_2d, functions_3d

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("JAXPOSE_REFERENCE_DIR",
                                    REPO_ROOT.parent / "shared" / "reference")).resolve()

# Our float32 result vs the original's float32 result differ by about the float32 noise of
# each (the fixture's fp32-vs-fp64 difference measures one of them).
TOLERANCE_FACTOR = 4.0

FUNCTION_CHECKERS: dict[str, Callable] = {**functions_2d.CHECKERS, **functions_3d.CHECKERS}


def _fixtures(kind: str) -> list[Path]:
  return sorted((REFERENCE_DIR / kind).glob("*.json"))


def _function_cases() -> list:
  params = []
  for path in _fixtures("functions"):
    fixture = json.loads(path.read_text())
    for case in range(int(fixture["cases"])):
      params.append(pytest.param(path, case, id=f"{path.stem}-case{case}"))
  return params


def test_reference_dir_has_fixtures():
  assert REFERENCE_DIR.is_dir(), (
      f"reference fixtures not found at {REFERENCE_DIR}; set JAXPOSE_REFERENCE_DIR")
  assert _fixtures("models") and _fixtures("functions"), f"no fixtures under {REFERENCE_DIR}"


@functools.cache
def _synth_module():
  spec = importlib.util.spec_from_file_location("reference_synth", REFERENCE_DIR / "synth.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


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


def _write_checkpoint(manifest: dict, path: Path, legacy: bool) -> Path:
  synth = _synth_module()
  if not legacy:
    return synth.write_checkpoint(manifest, path)
  import torch  # test-only dependency
  legacy_save = functools.partial(torch.save, _use_new_zipfile_serialization=False)
  with mock.patch.object(torch, "save", legacy_save):
    return synth.write_checkpoint(manifest, path)


def _flat_variables(model) -> dict[str, np.ndarray]:
  flat = jax.tree_util.tree_flatten_with_path(checkpoint.model_variables(model))[0]
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}


def _model_params():
  return [pytest.param(p, id=p.stem, marks=pytest.mark.slow) for p in _fixtures("models")]


@pytest.mark.parametrize("fixture_path", _model_params())
def test_model_fixture(fixture_path: Path, tmp_path: Path):
  synth = _synth_module()
  manifest = synth.load_manifest(fixture_path)
  arrays = np.load(fixture_path.with_suffix(".npz"))
  family = manifest["family"]
  assert family in RUNNERS, f"{fixture_path.name}: no jaxpose runner for family {family!r}"

  variables = {}
  for legacy in (False, True):
    fmt = "legacy" if legacy else "zip"
    ckpt = _write_checkpoint(manifest, tmp_path / f"{fixture_path.stem}_{fmt}.pth", legacy)
    out_dir = tmp_path / f"converted_{fmt}"
    config = convert.convert_checkpoint(ckpt, out_dir)
    assert config.name == family
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
  fixture = json.loads(fixture_path.read_text())
  checker = FUNCTION_CHECKERS.get(fixture["name"])
  assert checker is not None, (
      f"{fixture_path.name}: no jaxpose checker for function fixture {fixture['name']!r} "
      f"({fixture.get('official', {}).get('function')})")
  checker(fixture, np.load(fixture_path.with_suffix(".npz")), case)
