r"""Precision and recall of a person detector on ``synthetic_people`` (IoU >= 0.5).

    python -m benchmarks.person_detector --split val --num_images 200
    python -m benchmarks.person_detector --split train --upscale 1.5,2,3 --shrink 0.6x0.85

Generates the split's images with the same seed and sizes as the ``synthetic_people``
builder (``default``: seed 0, validation = file split ``val``), runs
``jaxpose.inference.boxes.HOGPersonDetector`` with each setting and prints one table row
per setting: ground-truth persons, detections, true positives (greedy one-to-one matching
by IoU, best score first), precision, recall, and images/s on this machine. Ground-truth
boxes are the tight boxes of each figure's visible pixels, as the annotations store them;
every annotated person counts, including small, truncated and occluded ones.

OpenCV's HOG people detector is in opencv-python-headless < 5 (OpenCV 5 moved it out of the
main package); with OpenCV 5 the detector raises ``DetectorUnavailableError``. The README's
numbers were measured with opencv-python-headless 4.14 in a separate virtual environment.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from jaxpose import fileio
from jaxpose.data import synthetic
from jaxpose.inference import boxes as boxes_lib
from jaxpose.inference import media


def match(gt: np.ndarray, det: np.ndarray, scores: np.ndarray, iou: float) -> int:
  """True positives: greedy one-to-one matching by IoU, best-scoring detection first."""
  if len(gt) == 0 or len(det) == 0:
    return 0
  ious = boxes_lib.box_iou(det, gt)
  used, tp = set(), 0
  for d in np.argsort(-scores, kind="stable"):
    candidates = [(ious[d, g], g) for g in range(len(gt)) if g not in used and ious[d, g] >= iou]
    if candidates:
      used.add(max(candidates)[1])
      tp += 1
  return tp


def evaluate(folder: str, split: str, detector, iou: float) -> dict[str, float]:
  data = fileio.read_json(synthetic.annotation_path(folder, split))
  gt: dict[int, list] = {}
  for a in data["annotations"]:
    gt.setdefault(a["image_id"], []).append(a["bbox"])
  num_gt = num_det = tp = 0
  start = time.perf_counter()
  for image in data["images"]:
    pixels = media.read_image(os.path.join(synthetic.image_dir(folder, split), image["file_name"]))
    det, scores = detector(pixels)
    g = np.asarray(gt.get(image["id"], []), np.float32).reshape(-1, 4)
    num_gt += len(g)
    num_det += len(det)
    tp += match(g, det, scores, iou)
  seconds = time.perf_counter() - start
  return {"gt": num_gt, "det": num_det, "tp": tp, "precision": tp / max(num_det, 1),
          "recall": tp / max(num_gt, 1), "images_per_s": len(data["images"]) / seconds}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--split", default="val", help="file split: 'val' (validation) or 'train'")
  p.add_argument("--num_images", type=int, default=200)
  p.add_argument("--upscale", default="2", help="comma-separated upscale factors")
  p.add_argument("--shrink", default="0.6x0.85", help="comma-separated WxH box shrink factors")
  p.add_argument("--hit_threshold", default="0", help="comma-separated SVM thresholds")
  p.add_argument("--iou", type=float, default=0.5)
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as folder:
    synthetic.generate_coco_dataset(folder, args.split, args.num_images, seed=0)
    print(f"HOG person detector on synthetic_people/{args.split} ({args.num_images} images), "
          f"IoU >= {args.iou}\n")
    print("| upscale | shrink | hit threshold | persons | detections | TP | precision | "
          "recall | images/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for up in (float(v) for v in args.upscale.split(",")):
      for shrink in args.shrink.split(","):
        sw, sh = (float(v) for v in shrink.split("x"))
        for thr in (float(v) for v in args.hit_threshold.split(",")):
          detector = boxes_lib.HOGPersonDetector(upscale=up, shrink=(sw, sh), hit_threshold=thr)
          r = evaluate(folder, args.split, detector, args.iou)
          print(f"| {up:g} | {sw:g}x{sh:g} | {thr:g} | {r['gt']} | {r['det']} | {r['tp']} | "
                f"{r['precision']:.3f} | {r['recall']:.3f} | {r['images_per_s']:.1f} |")


if __name__ == "__main__":
  main()
