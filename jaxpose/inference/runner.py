"""``jaxpose predict``: a 2D model (and optionally a lifter) over users' images and videos.

``run(inputs, model, output_dir, ...)`` writes into ``output_dir``:

* ``predictions.json``: COCO keypoint results, one entry per person: ``image_id``,
  ``category_id`` (1), ``keypoints`` ``[x1, y1, s1, ...]`` (pixels, score), ``score``
  (HRNet's rescoring: box score x mean of the keypoint scores above 0.2), ``bbox`` ``[x,
  y, w, h]``, ``file_name``; video entries add ``frame`` (0-based) and ``track_id``, and
  their ``image_id`` is ``frame + 1`` (unique together with ``file_name``). Loadable by
  pycocotools ``COCO.loadRes``.
* ``<video name>.npz`` per video: ``keypoints`` ``[T, P, K, 2]``, ``scores`` ``[T, P, K]``,
  ``boxes`` ``[T, P, 4]``, ``box_scores`` ``[T, P]``, ``track_ids`` ``[T, P]`` (-1 where a
  frame has fewer than ``P`` people), ``num_people`` ``[T]``, ``fps``, ``frame_size``
  (w, h), ``keypoint_names``; with a lifter also ``poses_3d`` ``[T, 17, 3]``,
  ``lifted_track`` and ``interpolated`` ``[T]`` (frames whose 2D was filled in).
* ``<video name>_3d.json`` with a lifter: the 3D poses per frame and their joint names.
* ``summary.json``: every input, its people count (images) or frame count and empty
  frames (videos), and the inputs that could not be read, with why.
* with ``draw``: ``drawn/<image name>`` and ``drawn/<video stem>.<video_format>``; with
  ``heatmaps``: ``heatmaps/...`` likewise (the heatmaps of the first person of each
  image or frame); with a lifter and ``draw``: ``<video stem>_3d.<video_format>``, the
  frame with its 2D skeleton beside the 3D skeleton.

A frame or image without a person is recorded (``num_people`` 0, ``summary.json``), not
dropped. An unreadable input is reported in one line and skipped; the others still run.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from jaxpose import drawing, fileio
from jaxpose.data import keypoints as kp
from jaxpose.evaluation import coco as coco_eval
from jaxpose.geometry import h36m_cameras
from jaxpose.geometry.camera import camera_to_world
from jaxpose.inference import boxes as boxes_lib
from jaxpose.inference import lifting as lifting_lib
from jaxpose.inference import media, tracking
from jaxpose.inference.loading import LoadedModel, load_model
from jaxpose.inference.pose2d import Crops, PosePredictor, Poses

logger = logging.getLogger(__name__)

BOX_MODES = ("whole", "detect")
IN_VIS_THRE = 0.2  # HRNet's TEST.IN_VIS_THRE for the person score


@dataclasses.dataclass
class Options:
  """What ``run`` does besides 2D keypoints (see the module docstring).

  Attributes:
    boxes: 'whole', 'detect', or the path of a box JSON file.
    draw: write drawings.
    heatmaps: write heatmap overlays.
    threshold: keypoint score below which a joint is not drawn.
    all_people: videos: keep every track (default: the main one: largest summed area).
    batch_size: crops per device call.
    video_format: 'mp4', 'avi' or 'gif' for drawn videos.
    lift_flip_test: the lifter's test-time flip averaging.
  """
  boxes: str = "detect"
  draw: bool = False
  heatmaps: bool = False
  threshold: float = 0.2
  all_people: bool = False
  batch_size: int = 32
  video_format: str = "mp4"
  lift_flip_test: bool = True


@dataclasses.dataclass
class _Frame:
  """One image or video frame in flight: ``crops`` ready for the model."""
  item: media.MediaItem
  index: int | None  # video frame; None for an image
  image: np.ndarray | None
  crops: Crops | None
  track_ids: np.ndarray | None = None
  error: str | None = None


@dataclasses.dataclass
class Result:
  """What ``run`` did: ``entries`` (the COCO results), ``summary`` (``summary.json``),
  ``frames`` processed, ``seconds`` of wall time, ``failed`` inputs."""
  entries: list[dict[str, Any]]
  summary: dict[str, Any]
  frames: int
  seconds: float
  failed: list[str]


# ----------------------------------------------------------------------------------------
# Boxes
# ----------------------------------------------------------------------------------------


BoxFn = Callable[[media.MediaItem, np.ndarray, int | None], boxes_lib.Boxes]


def box_function(boxes: str, detector: boxes_lib.Detector | None, ids: dict[str, int]
                 ) -> tuple[BoxFn, boxes_lib.FileBoxes | None]:
  """``(item, image, frame) -> (boxes, scores)`` for ``boxes`` ('whole', 'detect', a file)."""
  if boxes == "whole":
    return (lambda item, image, frame: boxes_lib.whole_image_boxes(image)), None
  if boxes == "detect":
    det = detector if detector is not None else boxes_lib.HOGPersonDetector()
    return (lambda item, image, frame: det(image)), None
  if not os.path.isfile(boxes):
    raise boxes_lib.BoxFileError(f"--boxes {boxes}: not 'whole', 'detect' or an existing "
                                 "JSON file")
  table = boxes_lib.FileBoxes.load(boxes)
  return (lambda item, image, frame: table.boxes(item, ids.get(item.name), frame)), table


# ----------------------------------------------------------------------------------------
# Batched prediction over a stream of frames
# ----------------------------------------------------------------------------------------


def _predict_stream(predictor: PosePredictor, frames: Iterator[_Frame], keep_heatmaps: bool
                    ) -> Iterator[tuple[_Frame, Poses | None]]:
  """Poses of every frame, computed in batches of ``predictor.batch_size`` crops over
  consecutive frames (frames are produced ahead in a background thread)."""
  group: list[_Frame] = []
  count = 0

  def flush():
    images = [f.crops.images for f in group if f.crops is not None and len(f.crops)]
    heat = predictor.heatmaps(np.concatenate(images)) if images else None
    start = 0
    for f in group:
      if f.crops is None:
        yield f, None
        continue
      n = len(f.crops)
      part = heat[start:start + n] if n else None
      start += n
      yield f, (predictor.decode(f.crops, part, keep_heatmaps) if n
                else Poses.empty(predictor.keypoint_set.num_keypoints))

  for frame in media.prefetch(frames):
    group.append(frame)
    count += len(frame.crops) if frame.crops is not None else 0
    if count >= predictor.batch_size:
      yield from flush()
      group, count = [], 0
  if group:
    yield from flush()


def _person_entries(poses: Poses, **fields) -> list[dict[str, Any]]:
  """COCO results entries of one image's (or frame's) people."""
  if not len(poses):
    return []
  scores = coco_eval.rescore(poses.scores, poses.box_scores, IN_VIS_THRE)
  out = []
  for p in range(len(poses)):
    flat = np.concatenate([poses.keypoints[p], poses.scores[p][:, None]], axis=1)
    entry = {"category_id": boxes_lib.PERSON_CATEGORY_ID,
             "keypoints": [round(float(v), 3) for v in flat.reshape(-1)],
             "score": round(float(scores[p]), 5),
             "bbox": [round(float(v), 2) for v in poses.boxes[p]]}
    entry.update({k: (v[p] if isinstance(v, np.ndarray) else v) for k, v in fields.items()})
    entry = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in entry.items()}
    out.append(entry)
  return out


class _Outputs:
  """Drawings and heatmap overlays of images and video frames."""

  def __init__(self, output_dir: str, options: Options, predictor: PosePredictor):
    self.dir = output_dir
    self.options = options
    self.predictor = predictor
    self.writers: dict[str, media.VideoWriter] = {}

  def _draw(self, image: np.ndarray, poses: Poses, track_ids=None) -> np.ndarray:
    ks = self.predictor.keypoint_set
    return drawing.draw_people(image, poses.keypoints, poses.scores, ks.skeleton,
                               ks.flip_pairs, poses.boxes, self.options.threshold,
                               None if track_ids is None else [f"#{t}" for t in track_ids])

  def _heat(self, image: np.ndarray, poses: Poses) -> np.ndarray:
    if not len(poses):
      return image
    return drawing.heatmap_overlay(image, poses.heatmaps[0], poses.centers[0], poses.scales[0],
                                   self.predictor.spec.input_size)

  def image(self, frame: _Frame, poses: Poses) -> None:
    if self.options.draw:
      media.write_image(os.path.join(self.dir, "drawn", frame.item.name),
                        self._draw(frame.image, poses))
    if self.options.heatmaps:
      media.write_image(os.path.join(self.dir, "heatmaps", frame.item.name),
                        self._heat(frame.image, poses))

  def video_frame(self, frame: _Frame, poses: Poses, fps: float) -> None:
    stem = os.path.splitext(frame.item.name)[0]
    ext = self.options.video_format
    if self.options.draw:
      self._writer(os.path.join(self.dir, "drawn", f"{stem}.{ext}"), fps).write(
          self._draw(frame.image, poses, frame.track_ids))
    if self.options.heatmaps:
      self._writer(os.path.join(self.dir, "heatmaps", f"{stem}.{ext}"), fps).write(
          self._heat(frame.image, poses))

  def _writer(self, path: str, fps: float) -> media.VideoWriter:
    if path not in self.writers:
      self.writers[path] = media.VideoWriter(path, fps)
    return self.writers[path]

  def close(self) -> None:
    for writer in self.writers.values():
      writer.close()
    self.writers = {}


# ----------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------


def _image_frames(items: Sequence[media.MediaItem], predictor: PosePredictor, box_fn: BoxFn
                  ) -> Iterator[_Frame]:
  for item in items:
    try:
      image = media.read_image(item.path)
    except media.MediaError as e:
      yield _Frame(item, None, None, None, error=str(e))
      continue
    found, scores = box_fn(item, image, None)
    yield _Frame(item, None, image, predictor.crops(predictor.to_model_colors(image), found,
                                                    scores))


def _run_images(items, predictor, box_fn, ids, outputs, result: Result, progress) -> None:
  keep = outputs.options.heatmaps
  for frame, poses in _predict_stream(predictor, _image_frames(items, predictor, box_fn), keep):
    progress.update(1)
    if frame.error:
      _fail(result, frame.item, frame.error)
      continue
    result.frames += 1
    image_id = ids[frame.item.name]
    result.entries.extend(_person_entries(poses, image_id=image_id, file_name=frame.item.name))
    result.summary["images"].append({"file_name": frame.item.name, "image_id": image_id,
                                     "people": len(poses)})
    if not len(poses):
      logger.warning("%s: no person found", frame.item.path)
    outputs.image(frame, poses)


def _fail(result: Result, item: media.MediaItem, error: str) -> None:
  tqdm.write(f"jaxpose predict: {error}")
  result.failed.append(item.path)
  result.summary["failed"].append({"file": item.path, "error": error})


# ----------------------------------------------------------------------------------------
# Videos
# ----------------------------------------------------------------------------------------


def _video_boxes(reader: media.VideoReader, item, box_fn, whole: bool, all_people: bool
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Per frame ``(boxes, scores, track ids)`` of the people to estimate (pass 1)."""
  frames = []
  for t, image in enumerate(tqdm(reader, desc=f"boxes {item.name}", unit="frame", leave=False,
                                 disable=whole)):
    frames.append(boxes_lib.whole_image_boxes(image) if whole else box_fn(item, image, t))
  tracks = tracking.track_boxes(frames)
  if not all_people:
    main = tracking.main_track(tracks)
    tracks = [main] if main is not None else []
  return tracking.per_frame(tracks, len(frames))


def _video_frames(reader, item, predictor, plan) -> Iterator[_Frame]:
  for t, image in enumerate(reader):
    if t >= len(plan):
      return
    found, scores, ids = plan[t]
    crops = predictor.crops(predictor.to_model_colors(image), found, scores)
    yield _Frame(item, t, image, crops, track_ids=ids)


class _VideoArrays:
  """Per-frame results of one video, stacked into the npz arrays at the end."""

  def __init__(self, num_keypoints: int):
    self.k = num_keypoints
    self.frames: list[tuple[Poses, np.ndarray]] = []

  def add(self, poses: Poses, track_ids: np.ndarray) -> None:
    self.frames.append((poses, track_ids))

  def arrays(self) -> dict[str, np.ndarray]:
    t = len(self.frames)
    p = max([len(f[0]) for f in self.frames] + [1])
    out = {"keypoints": np.zeros((t, p, self.k, 2), np.float32),
           "scores": np.zeros((t, p, self.k), np.float32),
           "boxes": np.zeros((t, p, 4), np.float32),
           "box_scores": np.zeros((t, p), np.float32),
           "track_ids": np.full((t, p), -1, np.int32),
           "num_people": np.zeros(t, np.int32)}
    for i, (poses, ids) in enumerate(self.frames):
      n = len(poses)
      out["keypoints"][i, :n] = poses.keypoints
      out["scores"][i, :n] = poses.scores
      out["boxes"][i, :n] = poses.boxes
      out["box_scores"][i, :n] = poses.box_scores
      out["track_ids"][i, :n] = ids[:n]
      out["num_people"][i] = n
    return out


def _lift_track(arrays: dict[str, np.ndarray], lifter: lifting_lib.Lifter, reader, item,
                keypoint_set: kp.KeypointSet) -> dict[str, np.ndarray]:
  """The main person's 3D poses; frames without them are interpolated (and marked)."""
  ids = arrays["track_ids"]
  present_ids = ids[ids >= 0]
  if present_ids.size == 0:
    raise lifting_lib.LiftError(f"{item.path}: no person found in any frame; nothing to lift")
  values, counts = np.unique(present_ids, return_counts=True)
  track = int(values[np.argmax(counts)])
  t = len(ids)
  keypoints = np.zeros((t, keypoint_set.num_keypoints, 2), np.float32)
  present = np.zeros(t, bool)
  for i in range(t):
    hit = np.nonzero(ids[i] == track)[0]
    if hit.size:
      keypoints[i] = arrays["keypoints"][i, hit[0]]
      present[i] = True
  if not present.all():
    tqdm.write(f"jaxpose predict: {item.name}: person not found in {int((~present).sum())} of "
               f"{t} frames; their 2D keypoints are interpolated for lifting")
  keypoints = lifting_lib.interpolate_missing(keypoints, present)
  poses = lifter.lift(keypoints, reader.width, reader.height, keypoint_set, name=item.path)
  return {"poses_3d": poses.astype(np.float32), "lifted_track": np.int32(track),
          "interpolated": ~present, "keypoints_2d_lifted": keypoints}


def _render_lift(path: str, reader, lifted: dict[str, np.ndarray], arrays, keypoint_set,
                 threshold: float) -> None:
  """Frame + 2D skeleton of the lifted person beside the 3D skeleton (VideoPose3D's view:
  the prediction rotated by a Human3.6M camera's orientation, feet on the ground)."""
  poses = lifted["poses_3d"]
  orientation = np.asarray(h36m_cameras.h36m_camera("S1", 0).orientation, np.float32)
  world = np.array(camera_to_world(poses, orientation, np.zeros(3, np.float32)))
  world[..., 2] -= world[..., 2].min()
  renderer = drawing.Skeleton3DRenderer(kp.H36M_PARENTS, kp.H36M_JOINTS_RIGHT,
                                        size_px=max(240, min(reader.height, 480)))
  writer = media.VideoWriter(path, reader.fps)
  try:
    for t, frame in enumerate(reader):
      if t >= len(poses):
        break
      scores = np.where(lifted["interpolated"][t], 0.0, 1.0) * np.ones(keypoint_set.num_keypoints)
      left = drawing.draw_people(frame, lifted["keypoints_2d_lifted"][t:t + 1], scores[None],
                                 keypoint_set.skeleton, keypoint_set.flip_pairs,
                                 threshold=threshold)
      writer.write(drawing.side_by_side(left, renderer.render(world[t])))
  finally:
    writer.close()


def _run_video(item, predictor, box_fn, options, outputs, lifter, result: Result,
               progress) -> None:
  try:
    reader = media.VideoReader(item.path)
  except media.MediaError as e:
    _fail(result, item, str(e))
    return
  plan = _video_boxes(reader, item, box_fn, options.boxes == "whole", options.all_people)
  arrays = _VideoArrays(predictor.keypoint_set.num_keypoints)
  stream = _video_frames(reader, item, predictor, plan)
  for frame, poses in _predict_stream(predictor, stream, options.heatmaps):
    progress.update(1)
    result.frames += 1
    arrays.add(poses, frame.track_ids)
    result.entries.extend(_person_entries(
        poses, image_id=frame.index + 1, file_name=item.name, frame=frame.index,
        track_id=frame.track_ids))
    outputs.video_frame(frame, poses, reader.fps)
  outputs.close()
  out = arrays.arrays()
  empty = np.nonzero(out["num_people"] == 0)[0]
  if len(empty):
    tqdm.write(f"jaxpose predict: {item.name}: no person in {len(empty)} of "
               f"{len(out['num_people'])} frames (recorded as empty)")
  record = {"file_name": item.name, "frames": int(len(out["num_people"])),
            "fps": reader.fps, "frame_size": [reader.width, reader.height],
            "empty_frames": [int(i) for i in empty]}
  stem = os.path.splitext(item.name)[0]
  if lifter is not None:
    try:
      lifted = _lift_track(out, lifter, reader, item, predictor.keypoint_set)
    except lifting_lib.LiftError as e:
      tqdm.write(f"jaxpose predict: {e}")
      record["lift_error"] = str(e)
    else:
      out.update(lifted)
      record["lifted_track"] = int(lifted["lifted_track"])
      record["interpolated_frames"] = int(lifted["interpolated"].sum())
      fileio.write_json(os.path.join(outputs.dir, f"{stem}_3d.json"), {
          "file_name": item.name, "joint_names": list(kp.H36M_JOINT_NAMES),
          "units": "the lifter's (metres for Human3.6M lifters)",
          "frame": "camera axes (x right, y down, z forward), root-relative (pelvis = 0)",
          "interpolated_frames": [int(i) for i in np.nonzero(lifted["interpolated"])[0]],
          "poses_3d": np.round(lifted["poses_3d"], 5).tolist()})
      if options.draw:
        _render_lift(os.path.join(outputs.dir, f"{stem}_3d.{options.video_format}"), reader,
                     lifted, out, predictor.keypoint_set, options.threshold)
  out.update(fps=np.float32(reader.fps), frame_size=np.array([reader.width, reader.height],
                                                              np.int32),
             keypoint_names=np.array(predictor.keypoint_set.names))
  fileio.atomic_write(os.path.join(outputs.dir, f"{stem}.npz"),
                      lambda f: np.savez(f, **out), binary=True)
  result.summary["videos"].append(record)


# ----------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------


def run(inputs: Sequence[str], model: str | LoadedModel, output_dir: str, *,
        options: Options | None = None, config=None, checkpoint=None,
        detector: boxes_lib.Detector | None = None, lift: str | LoadedModel | None = None,
        lift_layout: str | None = None, lift_args: str | None = None) -> Result:
  """Predicts 2D poses (and 3D with ``lift``) for ``inputs``; see the module docstring.

  Args:
    inputs: image/video files, directories, glob patterns.
    model: a model spec for ``load_model`` (or a loaded 2D model).
    output_dir: where the results go (created).
    options: boxes, drawings, heatmaps, tracks, batch size.
    config, checkpoint: passed to ``load_model`` for ``model``.
    detector: the person detector of ``options.boxes='detect'`` (default: HOG).
    lift: a lifter spec (or loaded lifter) for the videos.
    lift_layout: the lifter's 2D input layout, 'coco' or 'h36m' (required with ``lift``).
    lift_args: the lifter's original command line, for an original file (``--causal``).
  """
  start = time.perf_counter()
  options = options or Options()
  items = media.expand_inputs(inputs)
  loaded = model if isinstance(model, LoadedModel) else load_model(model, config=config,
                                                                   checkpoint=checkpoint)
  predictor = PosePredictor(loaded, options.batch_size)
  lifter = None
  if lift is not None:
    if lift_layout is None:
      raise lifting_lib.LiftError("--lift needs --lift-input coco|h36m: the 2D keypoint order "
                                  "the lifter was trained on (the weights do not show it)")
    lift_model = lift if isinstance(lift, LoadedModel) else load_model(lift, original_args=lift_args)
    lifter = lifting_lib.Lifter(lift_model, lift_layout, options.lift_flip_test)
    lifter.to_input_layout(np.zeros((1, predictor.keypoint_set.num_keypoints, 2)),
                           predictor.keypoint_set)  # a layout mismatch fails now
  ids = boxes_lib.image_ids(items)
  box_fn, table = box_function(options.boxes, detector, ids)
  if table is not None:
    uncovered = [it.name for it in items if not table.covers(it, ids.get(it.name))]
    if uncovered:
      tqdm.write(f"jaxpose predict: {len(uncovered)} inputs have no entry in {table.path} "
                 f"(no person; e.g. {uncovered[0]})")
  os.makedirs(output_dir, exist_ok=True)
  result = Result([], {"model": loaded.source, "boxes": options.boxes, "images": [],
                       "videos": [], "failed": []}, 0, 0.0, [])
  outputs = _Outputs(output_dir, options, predictor)
  images = [it for it in items if it.kind == "image"]
  videos = [it for it in items if it.kind == "video"]
  with tqdm(total=len(images), desc="images", unit="image", disable=not images) as progress:
    _run_images(images, predictor, box_fn, ids, outputs, result, progress)
  for item in videos:
    with tqdm(desc=item.name, unit="frame") as progress:
      _run_video(item, predictor, box_fn, options, outputs, lifter, result, progress)
  result.seconds = time.perf_counter() - start
  result.summary.update(frames=result.frames, seconds=round(result.seconds, 3),
                        frames_per_s=round(result.frames / max(result.seconds, 1e-9), 3))
  fileio.write_json(os.path.join(output_dir, "predictions.json"), result.entries)
  fileio.write_json(os.path.join(output_dir, "summary.json"), result.summary, indent=1)
  return result
