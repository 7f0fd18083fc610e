"""``jaxpose export``: StableHLO and SavedModel artifacts equal the jax model's outputs, for
the trained quickstart 2D model (given as an original-layout .pth, converted on the fly)
and for lifters; the StableHLO file runs without jaxpose."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxpose import models
from jaxpose.data import keypoints as kp
from jaxpose.inference import export, loading
from jaxpose.inference.loading import LoadedModel
from jaxpose.inference.pose2d import Crops, PosePredictor
from jaxpose.models import rie, videopose3d
from jaxpose.train.tasks import lifting as lifting_task
from tests import predict_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# float32 everywhere: the exported graph is the same computation compiled separately
# (other fusion, same ops); heatmaps agree to ~1e-6, keypoints (image pixels, ~1e2) to
# float32 rounding of the back-projection plus the rare argmax tie flipped by it.
HEATMAP_ATOL = 1e-5
KEYPOINT_ATOL = 1e-3


@pytest.fixture(scope="module")
def quickstart():
  return loading.load_model(predict_data.QUICKSTART_PTH, config=predict_data.QUICKSTART_CONFIG)


def _crops(n: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 128, 96, 3), dtype=np.uint8)
  center = rng.uniform(50, 150, (n, 2)).astype(np.float32)
  scale = rng.uniform(0.3, 1.2, (n, 2)).astype(np.float32)
  return images, center, scale


def _reference(loaded, images, center, scale):
  predictor = PosePredictor(loaded)
  heatmaps = predictor.heatmaps(images)
  poses = predictor.decode(Crops(images, center, scale, np.zeros((len(images), 4), np.float32),
                                 np.ones(len(images), np.float32)), heatmaps)
  return heatmaps, poses.keypoints, poses.scores


@pytest.mark.slow  # 25-85 s on 2 contended cores
def test_cli_exports_an_original_pth_to_stablehlo_that_runs_without_jaxpose(quickstart, tmp_path):
  out = tmp_path / "hlo"
  proc = subprocess.run(
      [sys.executable, "-m", "jaxpose.export", predict_data.QUICKSTART_PTH, str(out),
       "--format", "stablehlo", "--config", predict_data.QUICKSTART_CONFIG], cwd=ROOT,
      env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  signature = json.load(open(out / "signature.json"))
  assert [i["name"] for i in signature["inputs"]] == ["images", "center", "scale"]
  assert signature["notes"]["flip_test"] is True and signature["notes"]["color"] == "rgb"
  for batch in (3, 5):  # the batch dimension is symbolic
    images, center, scale = _crops(batch, seed=batch)
    np.savez(tmp_path / "inputs.npz", images=images, center=center, scale=scale)
    script = (
        "import sys, numpy as np, jax\n"
        f"x = np.load({str(tmp_path / 'inputs.npz')!r})\n"
        f"exp = jax.export.deserialize(bytearray(open({str(out / 'model.stablehlo')!r}, 'rb').read()))\n"
        "y = exp.call(x['images'], x['center'], x['scale'])\n"
        f"np.savez({str(tmp_path / 'outputs.npz')!r}, **{{k: np.asarray(v) for k, v in y.items()}})\n"
        "assert not any(m.startswith('jaxpose') for m in sys.modules), 'jaxpose was imported'\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path),
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    got = np.load(tmp_path / "outputs.npz")
    _, keypoints, scores = _reference(quickstart, images, center, scale)
    np.testing.assert_allclose(got["keypoints"], keypoints, atol=KEYPOINT_ATOL)
    np.testing.assert_allclose(got["scores"], scores, atol=HEATMAP_ATOL)


def test_stablehlo_heatmaps_without_flip_and_decode(quickstart, tmp_path):
  path = export.export_model(quickstart, str(tmp_path / "h"), "stablehlo", flip_test=False,
                             decode=False)
  images, _, _ = _crops(4)
  got = np.asarray(export.load_stablehlo(path)(images)["heatmaps"])
  want = np.asarray(quickstart.model(
      quickstart.task.preprocess(images))["heatmaps"])
  np.testing.assert_allclose(got, want, atol=HEATMAP_ATOL)
  with pytest.raises(ValueError, match="not empty"):
    export.export_model(quickstart, str(tmp_path / "h"), "stablehlo")
  with pytest.raises(ValueError, match="unknown export format"):
    export.export_model(quickstart, str(tmp_path / "x"), "onnx")


@pytest.mark.slow
def test_savedmodel_2d_equals_jax(quickstart, tmp_path):
  import tensorflow as tf
  path = export.export_model(quickstart, str(tmp_path / "sm"), "savedmodel")
  loaded = tf.saved_model.load(path)
  images, center, scale = _crops(3)
  out = loaded.signatures["serving_default"](images=tf.constant(images),
                                             center=tf.constant(center),
                                             scale=tf.constant(scale))
  _, keypoints, scores = _reference(quickstart, images, center, scale)
  np.testing.assert_allclose(out["keypoints"].numpy(), keypoints, atol=KEYPOINT_ATOL)
  np.testing.assert_allclose(out["scores"].numpy(), scores, atol=HEATMAP_ATOL)


def _vp3d() -> LoadedModel:
  cfg = videopose3d.VideoPose3DConfig(num_joints_in=17, num_joints_out=17, filter_widths=(3, 3),
                                      channels=32)
  model = models.build_model(cfg, seed=1)
  model.eval()
  return LoadedModel(model, cfg, None, None, None, "vp3d")


def _lifter_reference(loaded, x, flip: bool):
  perm_in = kp.flip_permutation(17, kp.COCO.flip_pairs) if flip else None
  perm_out = kp.flip_permutation(17, kp.H36M_FLIP_PAIRS) if flip else None
  return np.asarray(lifting_task.lift_windows(loaded.model, x, perm_in, perm_out))


@pytest.mark.parametrize("fmt", ["stablehlo", "savedmodel"])
def test_lifter_export_with_flip_equals_jax(fmt, tmp_path):
  loaded = _vp3d()
  path = export.export_model(loaded, str(tmp_path / fmt), fmt, flip_test=True, lift_layout="coco")
  rng = np.random.default_rng(0)
  for b, t in ((2, 9), (1, 20)):  # symbolic batch and time
    x = rng.uniform(-1, 1, (b, t, 17, 2)).astype(np.float32)
    want = _lifter_reference(loaded, x, flip=True)
    if fmt == "stablehlo":
      got = np.asarray(export.load_stablehlo(path)(x)["poses"])
    else:
      import tensorflow as tf
      got = tf.saved_model.load(path).signatures["serving_default"](
          keypoints_2d=tf.constant(x))["poses"].numpy()
    assert got.shape == (b, t - 8, 17, 3)
    np.testing.assert_allclose(got, want, atol=1e-5)
  with pytest.raises(ValueError, match="input joint order"):
    export.export_model(loaded, str(tmp_path / "y"), fmt, flip_test=True)


@pytest.mark.slow  # 25-85 s on 2 contended cores
def test_rie_export_takes_one_receptive_field(tmp_path):
  cfg = rie.RIEConfig.tiny()
  model = models.build_model(cfg, seed=0)
  model.eval()
  loaded = LoadedModel(model, cfg, None, None, None, "rie")
  path = export.export_model(loaded, str(tmp_path / "r"), "stablehlo")
  x = np.random.default_rng(1).uniform(-1, 1, (3, 9, 17, 2)).astype(np.float32)
  got = np.asarray(export.load_stablehlo(path)(x)["poses"])
  np.testing.assert_allclose(got, np.asarray(model(x)["poses"]), atol=1e-5)
  assert json.load(open(tmp_path / "r" / "signature.json"))["inputs"][0]["shape"] == [
      "batch", 9, 17, 2]


def test_traced_decoding_equals_get_final_preds():
  """``get_final_preds_jax`` (the exported decoding) against the numpy original's twin,
  with peaks on the border (no refinement), non-positive maps (0, 0) and ties."""
  import jax.numpy as jnp
  from jaxpose.codecs import heatmap as codec
  rng = np.random.default_rng(0)
  maps = rng.random((6, 16, 12, 17)).astype(np.float32)
  maps[0, ..., 2] = -1.0                      # maximum <= 0
  maps[1, ..., 3] = 0.0
  maps[1, 0, 5, 3] = 2.0                      # peak on the top row
  maps[2, ..., 4] = 0.5                       # a plateau: the first maximum wins
  center = rng.uniform(0, 300, (6, 2)).astype(np.float32)
  scale = rng.uniform(0.2, 2.0, (6, 2)).astype(np.float32)
  for post in (True, False):
    want, want_max = codec.get_final_preds(maps, center, scale, post_process=post)
    got, got_max = codec.get_final_preds_jax(jnp.asarray(maps), center, scale, post_process=post)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(got_max), want_max)
