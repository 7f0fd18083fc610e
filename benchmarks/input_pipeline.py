r"""Throughput of the input pipelines with 0, 1 and 2 grain workers.

    python -m benchmarks.input_pipeline                   # synthetic_people, 256x192, HRNet
    python -m benchmarks.input_pipeline --method mspn --size 256x192 --workers 0,1,2
    python -m benchmarks.input_pipeline --pipeline lifting              # synthetic_mocap
    python -m benchmarks.input_pipeline --pipeline lifting --receptive_fields 27,243 \
        --chunk_length 1 --batch 1024

``topdown`` reads the built ``synthetic_people`` dataset (built on first use), decodes JPEGs
with OpenCV, samples HRNet's (or MSPN's) augmentation, warps the crop and makes the
targets, batches; it reports samples/s. ``lifting`` reads the 2D source ``--source`` of
``synthetic_mocap`` (built on first use) into memory and runs the sequence pipeline
(shuffled chunks, flip augmentation, receptive-field windows); it reports output frames/s
(chunks x chunk length) and input frames/s (the 2D frames cut). Rates are measured after a
warm-up batch (worker start-up excluded).
"""
from __future__ import annotations

import argparse
import time

from benchmarks import _timing
from configs import common
from jaxpose.data import builders, pipeline, sequences, topdown
from jaxpose.data import keypoints as kp


def measure(make_iterator, batches: int) -> float:
  """Seconds per batch of an iterator after one warm-up batch."""
  it = make_iterator()
  next(it)  # warm-up (starts the workers)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return (time.perf_counter() - start) / batches


def topdown_rows(args) -> list[dict]:
  builders.build_dataset("synthetic_people", args.data_dir, config=args.builder_config)
  ref = pipeline.DatasetRef("synthetic_people", args.data_dir, "train", args.builder_config)
  crop, heatmap = common.input_size(args.size)
  spec = topdown.SampleSpec(args.method, crop, heatmap, "rgb", kp.COCO_FLIP_PAIRS,
                            kp.COCO_UPPER_BODY_IDS)
  table = pipeline.instances(ref, spec, 17)
  rows = []
  for workers in (int(w) for w in args.workers.split(",")):
    seconds = measure(lambda: pipeline.train_iterator(  # noqa: B023
        ref, table, spec, batch_size=args.batch, seed=0, num_workers=workers), args.batches)
    rows.append({"workers": workers, "samples_s": args.batch / seconds})
    print(f"  {workers} workers: {rows[-1]['samples_s']:.1f} samples/s", flush=True)
  print(f"\nsynthetic_people/{args.builder_config} train, {args.method} samples at {args.size}, "
        f"batch {args.batch}\n")
  _timing.print_table(rows, [("workers", "grain workers", "d"), ("samples_s", "samples/s", ".1f")])
  return rows


def lifting_rows(args) -> list[dict]:
  builders.build_dataset("synthetic_mocap", args.data_dir, config=args.builder_config)
  ref = pipeline.DatasetRef("synthetic_mocap", args.data_dir, "train", args.builder_config)
  start = time.perf_counter()
  seqs = sequences.load_sequences(ref, args.source)
  print(f"  loaded {len(seqs)} sequences, {seqs.num_frames} frames in "
        f"{time.perf_counter() - start:.1f} s", flush=True)
  rows = []
  for field in (int(r) for r in args.receptive_fields.split(",")):
    spec = sequences.WindowSpec(field, args.chunk_length)
    for workers in (int(w) for w in args.workers.split(",")):
      seconds = measure(lambda: sequences.train_iterator(  # noqa: B023
          seqs, spec, batch_size=args.batch, seed=0, num_workers=workers), args.batches)
      rows.append({"receptive_field": field, "workers": workers,
                   "frames_s": args.batch * args.chunk_length / seconds,
                   "input_frames_s": args.batch * spec.input_length / seconds})
      print(f"  receptive field {field}, {workers} workers: {rows[-1]['frames_s']:.0f} "
            "frames/s", flush=True)
  print(f"\nsynthetic_mocap/{args.builder_config} train, source {args.source!r}, chunks of "
        f"{args.chunk_length} frame(s) with flips, batch {args.batch} chunks\n")
  _timing.print_table(rows, [("receptive_field", "receptive field", "d"),
                             ("workers", "grain workers", "d"),
                             ("frames_s", "output frames/s", ".0f"),
                             ("input_frames_s", "input 2D frames/s", ".0f")])
  return rows


PIPELINES = {"topdown": topdown_rows, "lifting": lifting_rows}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--pipeline", default="topdown", choices=sorted(PIPELINES))
  parser.add_argument("--data_dir", default=common.default_data_dir())
  parser.add_argument("--builder_config", default="default")
  parser.add_argument("--workers", default="0,1,2")
  parser.add_argument("--batch", type=int, default=None,
                      help="Batch size (default 32 crops for topdown, 1024 chunks for lifting).")
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--method", default="hrnet", choices=["hrnet", "mspn"], help="topdown")
  parser.add_argument("--size", default="256x192", help="topdown")
  parser.add_argument("--source", default="detected", help="lifting: 2D source")
  parser.add_argument("--receptive_fields", default="27,243", help="lifting")
  parser.add_argument("--chunk_length", type=int, default=1, help="lifting")
  args = parser.parse_args(argv)
  if args.batch is None:
    args.batch = 32 if args.pipeline == "topdown" else 1024
  PIPELINES[args.pipeline](args)


if __name__ == "__main__":
  main()
