"""Test inputs for ``jaxpose predict``: synthetic scenes as images, box files and videos,
with their known keypoints."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np

from jaxpose.data import synthetic
from jaxpose.inference import media

QUICKSTART_PTH = os.path.join(os.path.dirname(__file__), "data", "quickstart_hrnet.pth")
QUICKSTART_CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs",
                                 "quickstart.py")


def validation_images(folder: str, num_images: int) -> tuple[str, str]:
  """The first ``num_images`` images of ``synthetic_people``'s validation split (the
  builder's seed and sizes: images the quickstart model never trained on) and their
  annotation file: ``(image folder, annotation json)``."""
  ann = synthetic.generate_coco_dataset(folder, "val", num_images, seed=0)
  return str(synthetic.image_dir(folder, "val")), str(ann)


def gt_box_file(annotation_file: str, path: str) -> str:
  """A COCO detection-results file with the ground-truth boxes (score 1)."""
  data = json.load(open(annotation_file))
  boxes = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0}
           for a in data["annotations"]]
  json.dump(boxes, open(path, "w"))
  return path


def single_person_scene(seed: int = 0, size: int = 256, margin: int = 40):
  """A ``size`` x ``size`` scene with one unoccluded figure well inside the image:
  ``(BGR image, keypoints [17, 2], visibility [17], area, box xywh)``."""
  config = synthetic.SceneConfig(image_size=(size, size), persons_per_image=(1, 1),
                                 person_height=(110.0, 130.0), truncation_prob=0.0,
                                 occluder_prob=0.0)
  for s in range(seed, seed + 200):
    image, persons = synthetic.render_scene(np.random.default_rng([s, 7]), config)
    if len(persons) != 1:
      continue
    x0, y0, x1, y1 = persons[0]["amodal_box"]
    if min(x0, y0) >= margin and max(x1, y1) <= size - margin and persons[0]["visibility"].min() > 0:
      mask = persons[0]["mask"]
      ys, xs = np.nonzero(mask)
      box = np.array([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1],
                     np.float32)
      return image, persons[0]["keypoints"], persons[0]["visibility"], float(mask.sum()), box
  raise RuntimeError("no suitable scene")


def panning_video(path: str, num_frames: int = 10, crop: int = 200, step: int = 4,
                  fps: float = 10.0, seed: int = 0):
  """A video panning over one scene (the figure drifts ``step`` px per frame to the left).

  Returns:
    ``(keypoints [T, 17, 2], area, boxes [T, 4])``: the figure's known keypoints, visible
    area and tight box in each frame.
  """
  image, keypoints, _, area, box = single_person_scene(seed)
  writer = media.VideoWriter(path, fps)
  kps, boxes = [], []
  top = (image.shape[0] - crop) // 2
  for t in range(num_frames):
    left = t * step
    writer.write(image[top:top + crop, left:left + crop])
    offset = np.array([left, top], np.float32)
    kps.append(keypoints - offset)
    boxes.append(np.concatenate([box[:2] - offset, box[2:]]))
  writer.close()
  return np.stack(kps).astype(np.float32), area, np.stack(boxes)


def read_video_frames(path: str) -> list[np.ndarray]:
  cap = cv2.VideoCapture(path)
  frames = []
  while True:
    ok, frame = cap.read()
    if not ok:
      break
    frames.append(frame)
  cap.release()
  return frames
