"""``python -m jaxpose.convert INPUT OUTPUT_DIR``: PyTorch checkpoint -> Orbax + config."""
from __future__ import annotations

import argparse
import sys

from jaxpose import convert, fileio


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="jaxpose-convert",
      description="Convert an original PyTorch pose checkpoint (HRNet, SimpleBaseline, MSPN, "
                  "integral regression, pytorch-pose-hg-3d, VideoPose3D, Pose3D-RIE) into an "
                  "Orbax checkpoint plus the ml-collections model config that rebuilds it. "
                  "The file is read without PyTorch and without executing pickled code.")
  p.add_argument("input", help=".pth/.pt/.bin/.tar file written by torch.save (any torch version)")
  p.add_argument("output_dir", help="new directory for checkpoint/, model_config.json, conversion.json")
  p.add_argument("--key", default=None,
                 help="take the state dict under this top-level key (default: the first of "
                      f"{', '.join(convert.core.WRAPPER_KEYS)} holding tensors)")
  p.add_argument("--family", default=None, choices=sorted(convert.FAMILIES),
                 help="model family (default: inferred from tensor names and shapes)")
  p.add_argument("--model-config", default=None,
                 help="JSON file with the target model config (e.g. a pose model to initialise "
                      "from an ImageNet backbone with --allow-partial)")
  p.add_argument("--allow-partial", action="store_true",
                 help="load what fits, leave other variables at their initialisation and "
                      "ignore tensors without a place (shape mismatches still fail)")
  p.add_argument("--pretrained-layers", nargs="*", default=None,
                 help="only load keys whose first component is listed ('*' = all), as the "
                      "originals' PRETRAINED_LAYERS")
  return p


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  config = None
  try:
    if args.model_config:
      config = fileio.read_json(args.model_config)
    elif args.family:
      unwrapped = convert.load_state_dict(args.input, key=args.key)
      config = convert.infer_model_config(unwrapped.state_dict, source=args.input,
                                          family_name=args.family)
    select = (convert.pretrained_layers_filter(args.pretrained_layers)
              if args.pretrained_layers else None)
    config = convert.convert_checkpoint(args.input, args.output_dir, config=config, key=args.key,
                                        allow_partial=args.allow_partial, select=select)
  except (convert.CheckpointError, ValueError, FileExistsError, OSError) as e:
    print(f"jaxpose-convert: error: {e}", file=sys.stderr)
    return 1
  print(f"converted {args.input} -> {args.output_dir} ({config.name})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
