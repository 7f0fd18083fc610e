"""``tfds build data_builders/<name>``, the command TFDS users type, on dummy data.

The command runs in a subprocess from the repository root exactly as the ``tfds`` console
script does (``launch_cli()`` of ``tensorflow_datasets.scripts.cli.main``), with the
interpreter that runs the tests, so it sees the same installed packages (TFDS 4.9.10's
command line imports ``apache_beam`` and ``mlcroissant`` at start-up). One build goes
through Apache Beam (``--beam_pipeline_options``) and must give the same examples as the
Python loop of ``jaxpose.data.builders``.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from jaxpose.data import builders
from tests.test_builders import _write_coco

REPO = pathlib.Path(__file__).resolve().parents[1]
# In-process Beam runner. (Beam 2.77's DirectRunner first tries to download its Prism
# runner from GitHub, then falls back to this one.)
BEAM_OPTIONS = "runner=FnApiRunner"
LAUNCH = "import sys; from tensorflow_datasets.scripts.cli.main import launch_cli; " \
         "sys.argv[0] = 'tfds'; sys.exit(launch_cli())"


def _tfds(*args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
  return subprocess.run([sys.executable, "-c", LAUNCH, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


def _ok(result: subprocess.CompletedProcess) -> None:
  assert result.returncode == 0, result.stderr[-4000:]


def _examples(builder, split: str) -> dict:
  source = builder.as_data_source(split)
  return {int(source[i]["image/id"]): source[i] for i in range(len(source))}


def test_the_command_line_dependencies_are_installed():
  missing = [m for m in ("apache_beam", "mlcroissant") if importlib.util.find_spec(m) is None]
  assert not missing, (f"{', '.join(missing)} not installed: `tfds build` cannot start; they are "
                       "dependencies of jaxpose (pyproject.toml): pip install -e '.[test]'")


# Each build starts TensorFlow, TFDS and Beam in a new process (~15-30 s).
@pytest.mark.slow
def test_tfds_build_synthetic_people_tiny_writes_array_record(tmp_path: pathlib.Path):
  _ok(_tfds("build", "data_builders/synthetic_people", "--config", "tiny",
            "--data_dir", str(tmp_path / "data"), "--download_dir", str(tmp_path / "dl")))
  files = sorted(p.name for p in (tmp_path / "data/synthetic_people/tiny/1.0.0").iterdir())
  assert "synthetic_people-train.array_record-00000-of-00001" in files
  assert "synthetic_people-validation.array_record-00000-of-00001" in files
  builder = builders.builder_class("synthetic_people")(config="tiny",
                                                       data_dir=tmp_path / "data")
  assert builder.is_prepared() and builder.info.file_format.value == "array_record"
  config = builder.builder_config
  assert len(builder.as_data_source("train")) == config.num_train_images
  assert len(builder.as_data_source("validation")) == config.num_val_images


@pytest.mark.slow
def test_tfds_build_coco_keypoints_with_beam_equals_the_python_build(tmp_path: pathlib.Path):
  manual = tmp_path / "manual"
  _write_coco(manual, "train", 0)
  _write_coco(manual, "val", 100)
  result = _tfds("build", "data_builders/coco_keypoints", "--manual_dir", str(manual),
                 "--data_dir", str(tmp_path / "beam"),
                 f"--beam_pipeline_options={BEAM_OPTIONS}")
  _ok(result)
  output = result.stdout + result.stderr
  assert "using BeamWriter" in output  # TFDS took the Beam path
  assert "coco_keypoints[train]: skipping an example: image id 5: missing image file" in output
  beam_built = builders.builder_class("coco_keypoints")(data_dir=tmp_path / "beam")
  assert beam_built.info.file_format.value == "array_record"
  python_built = builders.build_dataset("coco_keypoints", tmp_path / "python", manual_dir=manual)
  for split in ("train", "validation"):
    got, want = _examples(beam_built, split), _examples(python_built, split)
    assert sorted(got) == sorted(want) and len(got) == 3
    for image_id, example in want.items():
      assert (got[image_id]["image"] == example["image"]).all()
      for key, value in example["objects"].items():
        assert (got[image_id]["objects"][key] == value).all(), key


@pytest.mark.slow
def test_tfds_build_reports_missing_files_and_empty_splits(tmp_path: pathlib.Path):
  manual = tmp_path / "manual"
  _write_coco(manual, "val", 100)
  result = _tfds("build", "data_builders/coco_keypoints", "--manual_dir", str(manual),
                 "--data_dir", str(tmp_path / "data"))
  assert result.returncode != 0
  assert f"{manual / 'annotations/person_keypoints_train2017.json'}  (COCO annotation" \
         in result.stderr

  _write_coco(manual, "train", 0)
  for image in (manual / "val2017").iterdir():
    image.unlink()
  (manual / "val2017/README.txt").write_text("images go here")
  result = _tfds("build", "data_builders/coco_keypoints", "--manual_dir", str(manual),
                 "--data_dir", str(tmp_path / "data"),
                 f"--beam_pipeline_options={BEAM_OPTIONS}")
  assert result.returncode != 0
  output = result.stdout + result.stderr
  assert "generated examples is 0 for split validation" in output  # TFDS's check under Beam
  assert not list((tmp_path / "data").rglob("dataset_info.json"))
