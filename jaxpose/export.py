r"""``jaxpose export MODEL OUT --format stablehlo|savedmodel``: an inference graph to run
without jaxpose's model code (see ``jaxpose.inference.export``).

    jaxpose export runs/quickstart out/qs_hlo --format stablehlo
    jaxpose export pose_hrnet_w32_256x192.pth out/hrnet_tf --format savedmodel \
        --config configs/hrnet_coco.py
    jaxpose export pretrained_h36m_cpn.bin out/vp3d --format stablehlo --flip-test \
        --lift-input h36m
    python -m jaxpose.export ...                  # the same
"""
from __future__ import annotations

import argparse
import sys


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="jaxpose export", description=__doc__.split("\n\n")[0])
  p.add_argument("model", help="training workdir, jaxpose.convert directory or .pth/.bin file")
  p.add_argument("out", help="new output directory")
  p.add_argument("--format", default="stablehlo", choices=("stablehlo", "savedmodel"))
  p.add_argument("--config", default=None, help="jaxpose config of a converted/.pth 2D model")
  p.add_argument("--checkpoint", default=None, help="workdir checkpoint: best, latest or a step")
  flip = p.add_mutually_exclusive_group()
  flip.add_argument("--flip-test", dest="flip_test", action="store_true", default=None,
                    help="include the flip test (2D default: as the config says)")
  flip.add_argument("--no-flip-test", dest="flip_test", action="store_false")
  p.add_argument("--no-decode", action="store_true",
                 help="2D: output heatmaps instead of decoded keypoints")
  p.add_argument("--lift-input", default=None, choices=("coco", "h36m"),
                 help="lifter: its 2D joint order (needed for --flip-test)")
  return p


def main(argv: list[str] | None = None) -> int:
  args = parser().parse_args(argv)
  from jaxpose.inference import export
  try:
    path = export.export_model(args.model, args.out, args.format, config=args.config,
                               checkpoint=args.checkpoint, flip_test=args.flip_test,
                               decode=not args.no_decode, lift_layout=args.lift_input)
  except (ValueError, OSError) as e:
    print(f"jaxpose export: error: {e}", file=sys.stderr)
    return 1
  print(f"exported {args.model} -> {path} ({args.format})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
