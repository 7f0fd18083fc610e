"""``jaxpose-convert INPUT OUTPUT_DIR [options] [-- ORIGINAL ARGS]``: PyTorch -> Orbax + config."""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from jaxpose import convert, fileio

PROG = "jaxpose-convert"
SHOWN_NAMES = 10  # names listed per category of a partial load
SHOWN_VALUE = 60  # characters of a given value in the summary


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog=PROG,
      usage=f"{PROG} INPUT OUTPUT_DIR [options] [-- ORIGINAL_ARGS ...]",
      formatter_class=argparse.RawDescriptionHelpFormatter,
      description="Convert an original PyTorch pose checkpoint (HRNet, SimpleBaseline, MSPN, "
                  "integral regression, pytorch-pose-hg-3d, VideoPose3D, Pose3D-RIE) into an "
                  "Orbax checkpoint plus the ml-collections model config that rebuilds it. "
                  "The file is read without PyTorch and without executing pickled code.",
      epilog="What the weights cannot show comes from the original's configuration, as the "
             "original took it:\n"
             "  --cfg FILE          the original experiment yaml (HRNet, SimpleBaseline,\n"
             "                      integral; for MSPN a yaml of its config.py values)\n"
             "  -- ORIGINAL_ARGS    the original's command line (VideoPose3D/RIE run.py,\n"
             "                      pytorch-pose-hg-3d); flags left out take its defaults\n"
             "  --model-config K=V  jaxpose config fields or the original's keys; they win\n"
             "Anything still unknown is assumed with a warning; an ambiguity fails, listing "
             "the candidates.\n\n"
             "examples:\n"
             f"  {PROG} pose_hrnet_w32_256x192.pth out/hrnet --cfg w32_256x192_adam_lr1e-3.yaml\n"
             f"  {PROG} epoch_80.bin out/vp3d -- -arc 3,3,3,3 --causal\n"
             f"  {PROG} stage_3_epoch_80.bin out/rie -- -arc 3,3,3,3,3 --stage 3 -lfd 512\n"
             f"  {PROG} model.pth out/integral --model-config depth_dim=72\n"
             f"  {PROG} fusion_3d_var.pth out/hg3d -- --task human3d --arch msra_50")
  p.add_argument("input", help=".pth/.pt/.bin/.tar file written by torch.save (any torch version)")
  p.add_argument("output_dir", help="new directory for checkpoint/, model_config.json, conversion.json")
  p.add_argument("--key", default=None,
                 help="take the state dict under this top-level key (default: the first of "
                      f"{', '.join(convert.core.WRAPPER_KEYS)} holding tensors)")
  p.add_argument("--family", default=None, choices=sorted(convert.FAMILIES),
                 help="model family (default: detected from the tensor names)")
  p.add_argument("--cfg", default=None, metavar="FILE",
                 help="the original experiment yaml (or JSON) describing the model")
  p.add_argument("--model-config", nargs="+", default=None, metavar="KEY=VALUE",
                 help="configuration values: jaxpose config fields (depth_dim=72, "
                      "causal=true, name=pose_hrnet) or the original's keys "
                      "(network.depth_dim=72, MODEL.NUM_JOINTS=16); or one JSON file with "
                      "a (partial) config")
  p.add_argument("--allow-partial", action="store_true",
                 help="load what fits, leave other variables at their initialisation and "
                      "ignore tensors without a place (shape mismatches still fail); "
                      "prints what stayed initial and what was ignored")
  p.add_argument("--pretrained-layers", nargs="*", default=None,
                 help="only load keys whose first component is listed ('*' = all), as the "
                      "originals' PRETRAINED_LAYERS")
  return p


def _split_argv(argv: list[str]) -> tuple[list[str], list[str] | None]:
  """``(converter arguments, the original's arguments after '--', or None)``."""
  if "--" in argv:
    i = argv.index("--")
    return argv[:i], argv[i + 1:]
  return argv, None


def _overrides(items: list[str] | None):
  """``--model-config`` items, or the JSON object of a single ``FILE.json`` item."""
  if not items:
    return None
  if len(items) == 1 and "=" not in items[0]:
    config = fileio.read_json(items[0])
    if not isinstance(config, dict):
      raise ValueError(f"{items[0]}: expected a JSON object of config fields")
    return config
  return items


def _short(value) -> str:
  text = repr(value)
  return text if len(text) <= SHOWN_VALUE else text[:SHOWN_VALUE - 3] + "..."


def _print_summary(args, summary: dict) -> None:
  print(f"converted {args.input} -> {args.output_dir} ({summary['family']})")
  cfg = summary["configuration"]
  if cfg["given"]:
    print("configuration given: " + "; ".join(
        f"{k}={_short(v['value'])} ({v['from']})" for k, v in cfg["given"].items()))
  print(f"configuration: {len(cfg['given'])} given, {len(cfg['inferred'])} read from the "
        f"checkpoint, {len(cfg['assumed'])} assumed (details in "
        f"{os.path.join(args.output_dir, convert.REPORT_FILE)})")
  for note in cfg["notes"]:
    print(f"note: {note}")
  if args.allow_partial:
    torch_keys = summary["missing_torch_keys"]
    missing = [f"{p} ({torch_keys[p]})" if p in torch_keys else p for p in summary["missing"]]
    for line in convert.core.partial_lines(summary["tensors_loaded"], missing,
                                           summary["unexpected"], summary["skipped"],
                                           SHOWN_NAMES):
      print(f"partial load: {line}")


def main(argv: list[str] | None = None) -> int:
  own, original_args = _split_argv(list(sys.argv[1:] if argv is None else argv))
  args = _parser().parse_args(own)
  try:
    select = (convert.pretrained_layers_filter(args.pretrained_layers)
              if args.pretrained_layers else None)
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always", convert.AssumptionWarning)
      convert.convert_checkpoint(
          args.input, args.output_dir, key=args.key, family=args.family,
          original_config=args.cfg, original_args=original_args,
          overrides=_overrides(args.model_config), allow_partial=args.allow_partial,
          select=select)
    summary = fileio.read_json(os.path.join(args.output_dir, convert.REPORT_FILE))
  except (convert.CheckpointError, ValueError, FileExistsError, OSError) as e:
    print(f"{PROG}: error: {e}", file=sys.stderr)
    return 1
  for w in caught:
    if issubclass(w.category, convert.AssumptionWarning):
      print(f"{PROG}: warning: {w.message}", file=sys.stderr)
    else:
      warnings.showwarning(w.message, w.category, w.filename, w.lineno)
  _print_summary(args, summary)
  return 0


if __name__ == "__main__":
  sys.exit(main())
