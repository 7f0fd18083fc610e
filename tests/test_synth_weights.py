"""The fixtures' weight generator (tests/conformance/synth_weights.py).

The model fixtures were recorded from the original code loaded with weights of a fixed
recipe; ``tests/reference/synth_digests.json`` holds the sha256 of the state dict that the
fixture authors' generator produced for each fixture. These tests prove on any machine
that the project's generator makes the same bytes, and that its checkpoint files have the
originals' layouts.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from jaxpose import fileio
from tests.conformance import fixtures, synth_weights


def _digest_params() -> list:
  """One case per model fixture of every folder that holds a digest file.

  The project's copy must hold one; an extra folder (``$JAXPOSE_REFERENCE_DIR``) is
  checked when it holds one (its fixtures are checked end to end by test_reference.py
  either way).
  """
  params = []
  for folder in fixtures.fixture_dirs():
    if folder.label and not (folder.path / synth_weights.DIGEST_FILE).is_file():
      continue
    for path in folder.fixtures("models"):
      params.append(pytest.param(folder, path, id=folder.id_for(path.stem)))
  if not params:
    params.append(pytest.param(None, fixtures.NoFixtures(
        f"no model fixtures in {fixtures.PROJECT_DIR / 'models'}"), id="no-fixtures"))
  return params


@pytest.mark.parametrize("folder,manifest_path", _digest_params())
def test_generator_reproduces_the_recorded_weights(folder, manifest_path):
  manifest = synth_weights.load_manifest(fixtures.require(manifest_path))
  digest_file = folder.path / synth_weights.DIGEST_FILE
  stored = fileio.read_json(digest_file)["fixtures"]
  assert manifest_path.stem in stored, (
      f"{digest_file} has no entry for {manifest_path.name}; record it with "
      f"`python -m tests.conformance.synth_weights {folder.path}`")
  want = stored[manifest_path.stem]
  got = synth_weights.digest(manifest)
  assert got["num_tensors"] == want["num_tensors"] == len(manifest["tensors"])
  # The first tensor of each rule pinpoints a broken rule before the overall hash.
  assert got["first_of_role"] == want["first_of_role"]
  assert set(want["first_of_role"]) == set(synth_weights.ROLES), "a rule is not covered"
  assert got["all"] == want["all"]


def test_every_recorded_digest_has_its_fixture():
  stored = fileio.read_json(fixtures.PROJECT_DIR / synth_weights.DIGEST_FILE)["fixtures"]
  present = {p.stem for p in (fixtures.PROJECT_DIR / "models").glob("*.json")}
  assert set(stored) <= present, f"digests of missing fixtures: {sorted(set(stored) - present)}"


SMALL = {
    "tensors": [
        ["conv.weight", [4, 3, 3, 3], "float32"],
        ["conv.bias", [4], "float32"],
        ["bn.weight", [4], "float32"],
        ["bn.bias", [4], "float32"],
        ["bn.running_mean", [4], "float32"],
        ["bn.running_var", [4], "float32"],
        ["bn.num_batches_tracked", [], "int64"],
        ["fc.weight", [5, 4], "float32"],
    ],
    "synth": {"bn_gamma": 0.5},
}


def test_rules_on_a_small_manifest():
  state = synth_weights.state_dict(SMALL)
  assert list(state) == [name for name, _, _ in SMALL["tensors"]]
  assert synth_weights.roles(SMALL) == {
      "conv.weight": "matrix", "conv.bias": "vector", "bn.weight": "bn_weight",
      "bn.bias": "vector", "bn.running_mean": "bn_mean", "bn.running_var": "bn_var",
      "bn.num_batches_tracked": "int", "fc.weight": "matrix"}
  assert state["bn.num_batches_tracked"].dtype == np.int64
  assert state["bn.num_batches_tracked"].shape == () and state["bn.num_batches_tracked"] == 0
  for name, value in state.items():
    if name != "bn.num_batches_tracked":
      assert value.dtype == np.float32, name
  assert np.all((state["bn.running_var"] >= 0.5) & (state["bn.running_var"] < 1.5))
  assert np.all((state["bn.weight"] >= 0.25) & (state["bn.weight"] < 0.75))  # bn_gamma 0.5
  # Halving is exact in binary: the gamma-0.5 weights are the gamma-1 weights / 2.
  plain = synth_weights.state_dict({"tensors": SMALL["tensors"]})
  np.testing.assert_array_equal(state["bn.weight"], plain["bn.weight"] / 2)
  np.testing.assert_array_equal(state["conv.weight"], plain["conv.weight"])
  # The stream depends on the name only, not on the manifest it sits in.
  alone = synth_weights.state_dict({"tensors": [["fc.weight", [5, 4], "float32"]]})
  np.testing.assert_array_equal(alone["fc.weight"], state["fc.weight"])
  # fan-in scaling: 3*3*3 for the conv; unit variance before it.
  rs = np.random.RandomState(zlib.crc32(b"conv.weight"))
  np.testing.assert_array_equal(
      state["conv.weight"], (rs.standard_normal((4, 3, 3, 3)) / np.sqrt(27)).astype(np.float32))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("layout", [
    {"prefix": "module.", "wrap": "network", "extra": {"epoch": 300}},
    {"prefix": "", "wrap": "model_pos", "extra": {"epoch": 80, "lr": 0.5}},
    {"prefix": "", "wrap": None, "extra": {}},
], ids=["prefix-wrap", "wrap-extra", "bare"])
def test_checkpoint_has_the_originals_layout(tmp_path: Path, layout, legacy):
  torch = pytest.importorskip("torch")
  manifest = {**SMALL, "checkpoint": layout}
  path = synth_weights.write_checkpoint(manifest, tmp_path / "ckpt.pth", legacy=legacy)
  assert zipfile.is_zipfile(path) != legacy
  loaded = torch.load(path, weights_only=True)
  state = loaded
  if layout["wrap"]:
    assert set(loaded) == {layout["wrap"], *layout["extra"]}
    assert {k: loaded[k] for k in layout["extra"]} == layout["extra"]
    state = loaded[layout["wrap"]]
  want = synth_weights.state_dict(manifest)
  assert list(state) == [layout["prefix"] + name for name in want]
  for name, value in want.items():
    got = state[layout["prefix"] + name].numpy()
    assert got.dtype == value.dtype and got.shape == value.shape, name
    np.testing.assert_array_equal(got, value, err_msg=name)


def test_digest_detects_a_one_bit_change():
  state = synth_weights.state_dict(SMALL)
  before = synth_weights.digest(SMALL, state)
  bits = state["bn.running_var"].view(np.uint32)
  bits[2] ^= 1
  after = synth_weights.digest(SMALL, state)
  assert after["all"] != before["all"]
  assert after["first_of_role"]["bn_var"] != before["first_of_role"]["bn_var"]
  assert after["first_of_role"]["matrix"] == before["first_of_role"]["matrix"]


def test_recording_digests_adds_new_fixtures_and_keeps_recorded_ones(tmp_path: Path):
  (tmp_path / "models").mkdir()
  fileio.write_json(tmp_path / "models" / "small.json", SMALL)
  kept = {"num_tensors": 1, "all": "recorded elsewhere", "first_of_role": {}}
  fileio.write_json(tmp_path / synth_weights.DIGEST_FILE,
                    {"about": "x", "fixtures": {"older": kept}})
  synth_weights.main([str(tmp_path)])
  stored = fileio.read_json(tmp_path / synth_weights.DIGEST_FILE)
  assert stored["about"] == "x" and stored["fixtures"]["older"] == kept
  assert stored["fixtures"]["small"] == synth_weights.digest(SMALL)
