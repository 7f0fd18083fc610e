r"""``jaxpose predict``: 2D (and 3D) poses of the people in your images and videos.

    jaxpose predict photos/ clip.mp4 --model runs/quickstart --boxes whole --output out --draw
    jaxpose predict 'val2017/*.jpg' --model pose_hrnet_w32_256x192.pth \
        --config configs/hrnet_coco.py --boxes COCO_val2017_detections_AP_H_56_person.json \
        --output out
    jaxpose predict walk.mp4 --model runs/hrnet --boxes detect --output out --draw \
        --lift pretrained_h36m_detectron_coco.bin --lift-input coco
    python -m jaxpose.predict ...                 # the same

See ``jaxpose.inference.runner`` for the files written. Exit status: 0, 1 for an error
that stops the run (one line on stderr), 2 when some inputs could not be read (the
others were processed; ``summary.json`` lists them).
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings

from jaxpose.inference import boxes as boxes_lib

EPILOG = """\
model: a training workdir (its config.json says how to preprocess; --checkpoint picks
best/latest/step), a jaxpose.convert directory or an original .pth (these two need
--config, the jaxpose config the model was trained with).
boxes: a JSON file (COCO detection results, or {"file name": [[x, y, w, h, score], ...]}),
'whole' (the whole image is one person) or 'detect' (OpenCV's HOG people detector).
"""


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="jaxpose predict", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
      description="Human pose estimation on image and video files.")
  p.add_argument("inputs", nargs="+", help="image/video files, directories, glob patterns")
  p.add_argument("--model", required=True, help="workdir, converted directory or .pth file")
  p.add_argument("--config", default=None,
                 help="jaxpose config (configs/x.py[:args] or config.json) of a converted "
                      "directory or .pth model")
  p.add_argument("--checkpoint", default=None, help="workdir checkpoint: best, latest or a step")
  p.add_argument("--output", required=True, help="output directory")
  p.add_argument("--boxes", default="detect", help="FILE.json, whole or detect (default)")
  p.add_argument("--draw", action="store_true", help="write images/videos with skeletons")
  p.add_argument("--heatmaps", action="store_true", help="write one person's heatmap overlay")
  p.add_argument("--threshold", type=float, default=0.2,
                 help="keypoint score below which a joint is not drawn (0.2)")
  p.add_argument("--all-people", action="store_true",
                 help="videos: every tracked person (default: the main track)")
  p.add_argument("--batch-size", type=int, default=32, help="person crops per device call")
  p.add_argument("--video-format", default="mp4", choices=("mp4", "avi", "gif"))
  p.add_argument("--lift", default=None, help="lifter: converted directory, .bin or workdir")
  p.add_argument("--lift-input", default=None, choices=("coco", "h36m"),
                 help="2D joint order the lifter was trained on (coco for VideoPose3D's "
                      "pretrained_h36m_detectron_coco.bin, h36m for pretrained_h36m_cpn.bin)")
  p.add_argument("--lift-args", default=None,
                 help="an original lifter file's run.py arguments for what its weights do not "
                      "show, e.g. '-arc 3,3,3 --causal'")
  p.add_argument("--no-lift-flip", action="store_true", help="no test-time flip for the lifter")
  return p


def main(argv: list[str] | None = None) -> int:
  args = parser().parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="jaxpose predict: %(message)s")
  warnings.simplefilter("default")
  warnings.formatwarning = lambda message, *a, **k: f"jaxpose predict: warning: {message}\n"
  from jaxpose.inference import runner  # heavy imports after argument errors
  options = runner.Options(
      boxes=args.boxes, draw=args.draw, heatmaps=args.heatmaps, threshold=args.threshold,
      all_people=args.all_people, batch_size=args.batch_size, video_format=args.video_format,
      lift_flip_test=not args.no_lift_flip)
  try:
    result = runner.run(args.inputs, args.model, args.output, options=options,
                        config=args.config, checkpoint=args.checkpoint, lift=args.lift,
                        lift_layout=args.lift_input, lift_args=args.lift_args)
  except (ValueError, OSError, boxes_lib.DetectorUnavailableError) as e:
    print(f"jaxpose predict: error: {e}", file=sys.stderr)
    return 1
  people = len(result.entries)
  print(f"{people} people in {result.frames} images/frames in {result.seconds:.1f} s "
        f"({result.frames / max(result.seconds, 1e-9):.1f} frames/s) -> {args.output}")
  if result.failed:
    print(f"jaxpose predict: {len(result.failed)} inputs could not be read (see "
          f"{args.output}/summary.json)", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
