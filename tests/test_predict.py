"""``jaxpose predict``: inputs, boxes, tracking, the trained quickstart model on synthetic
images and a video with known keypoints, drawings, errors, model specs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from jaxpose import drawing
from jaxpose.data import keypoints as kp
from jaxpose.evaluation import nms
from jaxpose.inference import boxes as boxes_lib
from jaxpose.inference import loading, media, runner, tracking
from jaxpose.inference.pose2d import PosePredictor
from tests import predict_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The trained quickstart model (tests/data/quickstart_hrnet.pth, made by
# tests/data/make_quickstart_checkpoint.py; AP 0.510 on the whole validation split) on the
# first 12 synthetic validation images with ground-truth boxes: measured COCO AP 0.478 (a
# random or untrained model scores 0.00). On the panning video: mean OKS 0.679 per frame.
# Weights and data are fixed, so these only move with float rounding; the thresholds leave
# room for that and still fail a broken crop, colour order, flip or decoding.
MIN_AP = 0.35
MIN_VIDEO_OKS = 0.5


def _env() -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "jaxpose.predict", *args], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quickstart():
  return loading.load_model(predict_data.QUICKSTART_PTH, config=predict_data.QUICKSTART_CONFIG)


@pytest.fixture(scope="module")
def val_data(tmp_path_factory):
  folder = tmp_path_factory.mktemp("synthetic")
  images, ann = predict_data.validation_images(str(folder), 12)
  boxes = predict_data.gt_box_file(ann, str(folder / "gt_boxes.json"))
  return images, ann, boxes


# ----------------------------------------------------------------------------------------
# Inputs, boxes, tracking
# ----------------------------------------------------------------------------------------


def test_expand_inputs_files_dirs_globs_and_errors(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  for name in ("a/x.jpg", "a/y.png", "b/x.jpg", "a/clip.mp4", "a/notes.txt"):
    (tmp_path / name).write_bytes(b"")
  items = media.expand_inputs([str(tmp_path / "a"), str(tmp_path / "b" / "*.jpg")])
  assert [(i.kind, os.path.basename(i.path)) for i in items] == [
      ("video", "clip.mp4"), ("image", "x.jpg"), ("image", "y.png"), ("image", "x.jpg")]
  assert [i.name for i in items] == ["clip.mp4", "a_x.jpg", "y.png", "b_x.jpg"]
  with pytest.raises(media.MediaError, match="notes.txt: not an image or video"):
    media.expand_inputs([str(tmp_path / "a" / "notes.txt")])
  with pytest.raises(media.MediaError, match="no such file"):
    media.expand_inputs([str(tmp_path / "missing.jpg")])
  with pytest.raises(media.MediaError, match="matches no image"):
    media.expand_inputs([str(tmp_path / "*.gif")])


def test_unreadable_image_and_video_are_one_line_errors(tmp_path):
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"\xff\xd8 not really a jpeg")
  with pytest.raises(media.MediaError, match=r"bad\.jpg: cannot decode the image"):
    media.read_image(str(bad))
  fake = tmp_path / "fake.mp4"
  fake.write_bytes(b"\x00" * 4096)
  with pytest.raises(media.MediaError, match=r"fake\.mp4: OpenCV (cannot open|opens the file)"):
    media.VideoReader(str(fake))


def test_image_ids_from_integer_stems_else_input_order():
  items = [media.MediaItem("image", f"/x/{n}", n) for n in ("000000000042.jpg", "7.png")]
  assert boxes_lib.image_ids(items) == {"000000000042.jpg": 42, "7.png": 7}
  items.append(media.MediaItem("image", "/x/cat.jpg", "cat.jpg"))
  assert boxes_lib.image_ids(items) == {"000000000042.jpg": 1, "7.png": 2, "cat.jpg": 3}


def test_box_files_coco_results_and_per_file(tmp_path):
  image = media.MediaItem("image", "/d/000000000005.jpg", "000000000005.jpg")
  video = media.MediaItem("video", "/d/clip.mp4", "clip.mp4")
  results = tmp_path / "r.json"
  results.write_text(json.dumps([
      {"image_id": 5, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},
      {"image_id": 5, "category_id": 2, "bbox": [9, 9, 9, 9], "score": 0.9},  # not a person
      {"file_name": "clip.mp4", "frame": 3, "category_id": 1, "bbox": [5, 6, 7, 8], "score": 1}]))
  table = boxes_lib.FileBoxes.load(str(results))
  b, s = table.boxes(image, 5)
  np.testing.assert_array_equal(b, [[1, 2, 3, 4]])
  np.testing.assert_array_equal(s, [0.5])
  np.testing.assert_array_equal(table.boxes(video, None, 3)[0], [[5, 6, 7, 8]])
  assert len(table.boxes(video, None, 4)[0]) == 0
  per_file = tmp_path / "p.json"
  per_file.write_text(json.dumps({"000000000005.jpg": [[1, 2, 3, 4]],
                                  "clip.mp4": [[[1, 1, 2, 2, 0.3]], [], [[0, 0, 5, 5]]]}))
  table = boxes_lib.FileBoxes.load(str(per_file))
  np.testing.assert_array_equal(table.boxes(video, frame=2)[0], [[0, 0, 5, 5]])
  per_file.write_text(json.dumps({"000000000005.jpg": [[1, 2, 3, 4]],
                                  "clip.mp4": [[], [[1, 1, 2, 2, 0.3]]]}))
  np.testing.assert_array_equal(boxes_lib.FileBoxes.load(str(per_file)).boxes(video, frame=1)[1],
                                np.float32([0.3]))
  per_file.write_text(json.dumps({"000000000005.jpg": [[1, 2, 3, 4]],
                                  "clip.mp4": [[[1, 1, 2, 2, 0.3]], [], [[0, 0, 5, 5]]]}))
  table = boxes_lib.FileBoxes.load(str(per_file))
  np.testing.assert_array_equal(table.boxes(image)[1], [1.0])
  np.testing.assert_array_equal(table.boxes(video, frame=0)[1], np.float32([0.3]))
  assert len(table.boxes(video, frame=1)[0]) == 0
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"a.jpg": [[1, 2, 3]]}))
  with pytest.raises(boxes_lib.BoxFileError, match=r"bad\.json: a\.jpg: box 0 must be"):
    boxes_lib.FileBoxes.load(str(bad))
  bad.write_text(json.dumps({"a.jpg": [[1, 2, float("nan"), 4]]}).replace("NaN", "NaN"))
  with pytest.raises(boxes_lib.BoxFileError, match="NaN or inf"):
    boxes_lib.FileBoxes.load(str(bad))
  bad.write_text("[{\"bbox\": [1, 2, 3, 4]}]")
  with pytest.raises(boxes_lib.BoxFileError, match="entry 0: names no image"):
    boxes_lib.FileBoxes.load(str(bad))


def test_tracking_follows_two_people_and_picks_the_larger():
  frames = []
  for t in range(8):
    big = [10 + 3 * t, 10, 40, 80]
    small = [120 - 2 * t, 30, 20, 40]
    rows = [small, big] if t % 2 else [big, small]
    if t == 4:
      rows = [small]  # the big one is missed for a frame
    frames.append((np.array(rows, np.float32), np.ones(len(rows), np.float32)))
  tracks = tracking.track_boxes(frames, max_gap=2)
  assert len(tracks) == 2
  main = tracking.main_track(tracks)
  assert main.frames == [0, 1, 2, 3, 5, 6, 7]
  assert all(b[2] == 40 for b in main.boxes)
  plan = tracking.per_frame([main], 8)
  assert [len(p[0]) for p in plan] == [1, 1, 1, 1, 0, 1, 1, 1]
  assert tracking.main_track([]) is None


def test_hog_detector_finds_boxes_inside_the_image():
  image, *_ = predict_data.single_person_scene()
  detector = boxes_lib.HOGPersonDetector()  # pyproject pins an OpenCV that has it
  boxes, scores = detector(image)
  assert boxes.dtype == np.float32 and boxes.shape[1:] == (4,) and len(scores) == len(boxes)
  assert np.all(boxes[:, 2:] > 0) and np.all((scores > 0) & (scores < 1))
  assert np.all(boxes[:, 0] + boxes[:, 2] <= image.shape[1] + 1e-3)


def test_hog_detector_absence_is_one_clear_error(monkeypatch):
  """An OpenCV without HOG (5.x) names the alternatives instead of an AttributeError."""
  monkeypatch.delattr(boxes_lib.cv2, "HOGDescriptor")
  with pytest.raises(boxes_lib.DetectorUnavailableError, match="--boxes FILE.json or --boxes whole"):
    boxes_lib.HOGPersonDetector()


# ----------------------------------------------------------------------------------------
# The trained quickstart model through jaxpose predict
# ----------------------------------------------------------------------------------------


def test_trained_quickstart_model_finds_the_people(val_data, tmp_path):
  """The CLI on the validation images with ground-truth boxes: the JSON loads with
  pycocotools, its AP against the known keypoints passes ``MIN_AP``, drawings decode."""
  images, ann, boxes = val_data
  out = tmp_path / "out"
  proc = _cli(images, "--model", predict_data.QUICKSTART_PTH, "--config",
              predict_data.QUICKSTART_CONFIG, "--boxes", boxes, "--output", str(out), "--draw",
              "--heatmaps")
  assert proc.returncode == 0, proc.stderr[-2000:]
  entries = json.load(open(out / "predictions.json"))
  gt = COCO(ann)
  assert {e["file_name"] for e in entries} <= {i["file_name"] for i in gt.dataset["images"]}
  assert len(entries) == len(gt.dataset["annotations"])
  evaluator = COCOeval(gt, gt.loadRes(str(out / "predictions.json")), "keypoints")
  evaluator.evaluate()
  evaluator.accumulate()
  evaluator.summarize()
  ap = float(evaluator.stats[0])
  print(f"quickstart model, {len(gt.dataset['images'])} validation images, gt boxes: AP {ap:.3f}")
  assert ap >= MIN_AP
  for image in gt.dataset["images"]:
    for sub in ("drawn", "heatmaps"):
      drawn = cv2.imread(str(out / sub / image["file_name"]))
      assert drawn is not None and drawn.shape == (image["height"], image["width"], 3)
  summary = json.load(open(out / "summary.json"))
  assert len(summary["images"]) == len(gt.dataset["images"]) and not summary["failed"]


def test_plugged_detector_equals_the_box_file(quickstart, val_data, tmp_path):
  """A detector function (here: returning the ground-truth boxes) goes through the same
  path as a box file and gives the same keypoints."""
  images, ann, boxes = val_data
  gt = COCO(ann)
  by_size = {(i["width"], i["height"], i["id"]) for i in gt.dataset["images"]}
  files = sorted(os.listdir(images))[:4]

  def detector(image):
    h, w = image.shape[:2]
    for width, height, image_id in by_size:  # the first 4 images have distinct sizes
      if (width, height) == (w, h):
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[image_id]))
        return (np.array([a["bbox"] for a in anns], np.float32),
                np.ones(len(anns), np.float32))
    raise AssertionError("unknown image")

  inputs = [os.path.join(images, f) for f in files]
  a = runner.run(inputs, quickstart, str(tmp_path / "a"), options=runner.Options(boxes="detect"),
                 detector=detector)
  b = runner.run(inputs, quickstart, str(tmp_path / "b"), options=runner.Options(boxes=boxes))
  assert len(a.entries) == len(b.entries) > 0
  for x, y in zip(a.entries, b.entries):
    assert x["image_id"] == y["image_id"]
    np.testing.assert_allclose(x["keypoints"], y["keypoints"], atol=1e-3)


def test_video_main_track_empty_frame_and_drawn_video(quickstart, tmp_path):
  """A video panning over a synthetic figure, boxes from a per-video file with a small
  distractor and one empty frame: the main track is the figure, its keypoints match the
  known ones, the empty frame is recorded, the drawn video has every frame."""
  video = tmp_path / "walk.avi"
  truth, area, gt_boxes = predict_data.panning_video(str(video), num_frames=10)
  per_frame = []
  for t, box in enumerate(gt_boxes):
    rows = [] if t == 6 else [[*map(float, box), 0.9]]
    if 2 <= t <= 4:
      rows.append([150.0, 5.0, 20.0, 30.0, 0.99])
    per_frame.append(rows)
  box_file = tmp_path / "boxes.json"
  box_file.write_text(json.dumps({"walk.avi": per_frame}))
  result = runner.run([str(video)], quickstart, str(tmp_path / "out"),
                      options=runner.Options(boxes=str(box_file), draw=True, heatmaps=True,
                                             video_format="avi"))
  arrays = np.load(tmp_path / "out" / "walk.npz")
  assert arrays["keypoints"].shape == (10, 1, 17, 2)
  np.testing.assert_array_equal(arrays["num_people"], [1] * 6 + [0] + [1] * 3)
  assert result.summary["videos"][0]["empty_frames"] == [6]
  found = arrays["num_people"] == 1
  oks = [nms.oks_iou(truth[t], arrays["keypoints"][t, :1], area, np.array([area]))[0]
         for t in np.nonzero(found)[0]]
  print(f"video: mean OKS {np.mean(oks):.3f} over {len(oks)} frames")
  assert np.mean(oks) >= MIN_VIDEO_OKS
  frames = [e for e in result.entries if e["file_name"] == "walk.avi"]
  assert sorted(e["frame"] for e in frames) == [0, 1, 2, 3, 4, 5, 7, 8, 9]
  assert all(e["image_id"] == e["frame"] + 1 for e in frames)
  for sub in ("drawn", "heatmaps"):
    decoded = predict_data.read_video_frames(str(tmp_path / "out" / sub / "walk.avi"))
    assert len(decoded) == 10 and decoded[0].shape == (200, 200, 3)


@pytest.mark.slow  # 25-85 s on 2 contended cores
def test_bad_inputs_are_reported_and_the_rest_processed(val_data, tmp_path):
  images, _, _ = val_data
  (tmp_path / "broken.jpg").write_bytes(b"garbage")
  (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
  good = os.path.join(images, sorted(os.listdir(images))[0])
  proc = _cli(good, str(tmp_path / "broken.jpg"), str(tmp_path / "broken.mp4"), "--model",
              predict_data.QUICKSTART_PTH, "--config", predict_data.QUICKSTART_CONFIG,
              "--boxes", "whole", "--output", str(tmp_path / "out"))
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "broken.jpg: cannot decode the image" in proc.stdout + proc.stderr
  assert "broken.mp4: OpenCV" in proc.stdout + proc.stderr
  summary = json.load(open(tmp_path / "out" / "summary.json"))
  assert len(summary["failed"]) == 2 and len(summary["images"]) == 1
  proc = _cli(good, "--model", predict_data.QUICKSTART_PTH, "--boxes", "whole", "--output",
              str(tmp_path / "o2"))
  assert proc.returncode == 1
  assert proc.stderr.strip().count("\n") == 0 and "pass the jaxpose config" in proc.stderr


# ----------------------------------------------------------------------------------------
# Model specifications
# ----------------------------------------------------------------------------------------


def _save_workdir(loaded, workdir: str, steps=(5, 9)) -> None:
  """A training workdir holding ``loaded``'s weights at ``steps`` (and best = the first),
  from its source file (``loaded.model`` is the inference path: BatchNorms folded)."""
  import ml_collections
  from jaxpose import checkpoint as ckpt_lib
  from jaxpose.train import loop, state as state_lib, tasks
  config = loaded.config
  task = tasks.task_class(config.task).from_config(config, keypoint_set=loaded.keypoint_set)
  mesh = state_lib.make_mesh()
  model = task.load_model(loaded.source)
  _, _, state, _, _ = loop._train_state(task, model, loop.Schedule(1, 1), mesh, 0)
  checkpointer = ckpt_lib.TrainCheckpointer(workdir, async_save=False, best_metric="AP")
  for step in steps:
    checkpointer.save(step, state, {}, {})
  checkpointer.maybe_save_best(steps[0], state, {}, {}, {"AP": 0.5})
  checkpointer.wait()
  checkpointer.close()
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(ml_collections.ConfigDict(config).to_json_best_effort())


@pytest.mark.slow  # 25-85 s on 2 contended cores
def test_workdir_converted_and_pth_give_the_same_model(quickstart, tmp_path):
  from jaxpose import convert
  workdir = str(tmp_path / "run")
  _save_workdir(quickstart, workdir)
  crops = np.random.default_rng(0).integers(0, 255, (2, 128, 96, 3), dtype=np.uint8)
  want = PosePredictor(quickstart).heatmaps(crops)
  for spec, kwargs in ((workdir, {}), (workdir, {"checkpoint": "latest"}),
                       (workdir, {"checkpoint": 9}), (os.path.join(workdir, "best"), {})):
    loaded = loading.load_model(spec, **kwargs)
    assert loaded.config.task == "heatmap" and loaded.keypoint_set == kp.COCO
    np.testing.assert_allclose(PosePredictor(loaded).heatmaps(crops), want, atol=1e-6)
  with pytest.raises(loading.ModelSpecError, match="no 7 checkpoint"):
    loading.load_model(workdir, checkpoint=7)
  converted = str(tmp_path / "converted")
  convert.convert_checkpoint(predict_data.QUICKSTART_PTH, converted)
  with pytest.raises(loading.ModelSpecError, match="pass the jaxpose config"):
    loading.load_model(converted)
  loaded = loading.load_model(converted, config=predict_data.QUICKSTART_CONFIG + ":epochs=3")
  np.testing.assert_allclose(PosePredictor(loaded).heatmaps(crops), want, atol=1e-6)
  with pytest.raises(loading.ModelSpecError, match="no such file"):
    loading.load_model(str(tmp_path / "nothing"))
  with pytest.raises(loading.ModelSpecError, match="neither a training workdir"):
    loading.load_model(str(tmp_path))


# ----------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------


def test_drawings_colour_left_right_and_render_3d():
  image = np.zeros((64, 64, 3), np.uint8)
  points = np.zeros((17, 2), np.float32)
  points[5], points[7] = (10, 10), (10, 50)    # left shoulder -> left elbow
  points[6], points[8] = (50, 10), (50, 50)    # right shoulder -> right elbow
  scores = np.zeros(17, np.float32)
  scores[[5, 6, 7, 8]] = 1
  out = drawing.draw_people(image, points[None], scores[None], kp.COCO.skeleton,
                            kp.COCO.flip_pairs)
  left, right = out[30, 10].astype(int), out[30, 50].astype(int)  # BGR
  assert left[2] > 200 and left[0] < 50, left      # orange: the person's left arm
  assert right[0] > 200 and right[2] < 50, right   # blue: the right arm
  renderer = drawing.Skeleton3DRenderer(kp.H36M_PARENTS, kp.H36M_JOINTS_RIGHT, size_px=200)
  pose = np.random.default_rng(0).normal(0, 0.3, (17, 3))
  picture = renderer.render(pose)
  assert picture.shape == (200, 200, 3) and picture.std() > 0
  assert not np.array_equal(picture, renderer.render(pose * 0.5))


def test_jaxpose_command_dispatches(capsys):
  from jaxpose import cli
  assert cli.main([]) == 1  # no command: usage
  assert "usage: jaxpose {predict,export}" in capsys.readouterr().err
  assert cli.main(["frobnicate"]) == 1
  with pytest.raises(SystemExit) as e:
    cli.main(["predict", "--help"])
  assert e.value.code == 0 and "--lift-input" in capsys.readouterr().out
