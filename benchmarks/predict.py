r"""Frames per second of ``jaxpose predict`` (the whole path: decode, crop, forward with the
flip test, decode, JSON) with the quickstart model, on synthetic images and a video.

    python -m benchmarks.predict --images 48 --video_frames 60 --batch_sizes 8,32

Per batch size, one row for a folder of ``synthetic_people`` validation images with their
ground-truth boxes (1-3 people per image) and one for a single-person video with
``--boxes whole``. The first call of each shape compiles; the table reports the second
run of the same inputs (steady state) and the first one (with compilation).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from jaxpose.inference import loading, runner
from tests import predict_data


def _timed(inputs, loaded, out, options) -> tuple[float, int, int]:
  start = time.perf_counter()
  result = runner.run(inputs, loaded, out, options=options)
  return time.perf_counter() - start, result.frames, len(result.entries)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--images", type=int, default=48)
  p.add_argument("--video_frames", type=int, default=60)
  p.add_argument("--batch_sizes", default="8,32")
  args = p.parse_args()
  loaded = loading.load_model(predict_data.QUICKSTART_PTH, config=predict_data.QUICKSTART_CONFIG)
  with tempfile.TemporaryDirectory() as tmp:
    images, ann = predict_data.validation_images(tmp, args.images)
    boxes = predict_data.gt_box_file(ann, os.path.join(tmp, "boxes.json"))
    video = os.path.join(tmp, "clip.avi")
    predict_data.panning_video(video, num_frames=args.video_frames, step=1)
    print("| input | batch | frames | people | first run (s) | frames/s (steady) | people/s |")
    print("|---|---|---|---|---|---|---|")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
      for name, inputs, box in ((f"{args.images} images, gt boxes", [images], boxes),
                                (f"video {args.video_frames} frames, whole", [video], "whole")):
        options = runner.Options(boxes=box, batch_size=batch)
        first, _, _ = _timed(inputs, loaded, os.path.join(tmp, "o1"), options)
        seconds, frames, people = _timed(inputs, loaded, os.path.join(tmp, "o2"), options)
        print(f"| {name} | {batch} | {frames} | {people} | {first:.1f} | {frames / seconds:.1f} | "
              f"{people / seconds:.1f} |")


if __name__ == "__main__":
  main()
