"""Finding the reference fixtures (tests/conformance/fixtures.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conformance import fixtures


def _folder(root: Path, models=(), functions=()) -> Path:
  for kind, stems in (("models", models), ("functions", functions)):
    for stem in stems:
      (root / kind).mkdir(parents=True, exist_ok=True)
      (root / kind / f"{stem}.json").write_text("{}")
  return root


def test_the_project_copy_is_always_first_and_complete():
  dirs = fixtures.fixture_dirs({})
  assert dirs == [fixtures.FixtureDir(fixtures.PROJECT_DIR, "")]
  assert dirs[0].problem() is None
  assert dirs[0].fixtures("models") and dirs[0].fixtures("functions")


def test_extra_folders_add_to_the_project_copy_with_unique_ids(tmp_path: Path):
  a = _folder(tmp_path / "a", models=["pose_hrnet_w32_256x192", "mine"])
  b = _folder(tmp_path / "b", functions=["hrnet_flip_back"])
  environ = {fixtures.ENV_VAR: os.pathsep.join([str(a), "", str(fixtures.PROJECT_DIR), str(b),
                                                str(a)])}
  dirs = fixtures.fixture_dirs(environ)
  # Empty entries, the project's own folder and repeats add nothing; numbering follows
  # the entries so an id names its folder.
  assert [(d.path, d.label) for d in dirs] == [
      (fixtures.PROJECT_DIR, ""), (a, "env1"), (b, "env3")]
  models = fixtures.discover("models", dirs)
  ids = [i for i, _ in models]
  assert len(ids) == len(set(ids))
  assert "pose_hrnet_w32_256x192" in ids and "env1-pose_hrnet_w32_256x192" in ids
  assert dict(models)["env1-mine"] == a / "models" / "mine.json"
  assert "env3-hrnet_flip_back" in [i for i, _ in fixtures.discover("functions", dirs)]
  assert all(d.problem() is None for d in dirs)


def test_missing_or_empty_folders_are_failures_that_say_where(tmp_path: Path):
  missing = tmp_path / "nowhere"
  empty = tmp_path / "empty"
  (empty / "models").mkdir(parents=True)
  dirs = fixtures.fixture_dirs({fixtures.ENV_VAR: f"{missing}{os.pathsep}{empty}"})
  assert str(missing) in dirs[1].problem() and "does not exist" in dirs[1].problem()
  assert f"entry 1 of ${fixtures.ENV_VAR}" in dirs[1].problem()
  message = dirs[2].problem()
  assert str(empty / "models" / "*.json") in message and str(empty / "functions") in message


def test_no_fixtures_at_all_gives_a_failing_case_not_an_empty_parameter_set(tmp_path: Path):
  dirs = [fixtures.FixtureDir(tmp_path / "project", ""),
          fixtures.FixtureDir(tmp_path / "x", "env1")]
  (found,) = fixtures.discover("models", dirs)
  assert found[0] == "no-fixtures"
  with pytest.raises(AssertionError, match="no models fixtures") as info:
    fixtures.require(found[1])
  assert str(tmp_path / "project" / "models") in str(info.value)
  assert str(tmp_path / "x" / "models") in str(info.value)


def test_a_project_copy_missing_one_kind_is_a_failure(tmp_path: Path):
  root = tmp_path / "reference"
  _folder(root, functions=["hrnet_flip_back"])
  problem = fixtures.FixtureDir(root, "").problem()
  assert problem is not None and "models/" in problem
