r"""Samples per second of the top-down training pipeline with 0, 1 and 2 grain workers.

    python -m benchmarks.input_pipeline                   # synthetic_people, 256x192, HRNet
    python -m benchmarks.input_pipeline --method mspn --size 256x192 --workers 0,1,2

Reads the built ``synthetic_people`` dataset (built on first use), decodes JPEGs with
OpenCV, samples HRNet's (or MSPN's) augmentation, warps the crop and makes the targets,
batches. Reports samples/s after a warm-up batch (worker start-up excluded).
"""
from __future__ import annotations

import argparse
import time

from benchmarks import _timing
from configs import common
from jaxpose.data import builders, pipeline, topdown
from jaxpose.data import keypoints as kp


def measure(ref, table, spec, workers: int, batch: int, batches: int) -> float:
  it = pipeline.train_iterator(ref, table, spec, batch_size=batch, seed=0, num_workers=workers)
  next(it)  # warm-up (starts the workers)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batch * batches / (time.perf_counter() - start)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", default=common.default_data_dir())
  parser.add_argument("--builder_config", default="default")
  parser.add_argument("--method", default="hrnet", choices=["hrnet", "mspn"])
  parser.add_argument("--size", default="256x192")
  parser.add_argument("--workers", default="0,1,2")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--batches", type=int, default=20)
  args = parser.parse_args(argv)
  builders.build_dataset("synthetic_people", args.data_dir, config=args.builder_config)
  ref = pipeline.DatasetRef("synthetic_people", args.data_dir, "train", args.builder_config)
  crop, heatmap = common.input_size(args.size)
  spec = topdown.SampleSpec(args.method, crop, heatmap, "rgb", kp.COCO_FLIP_PAIRS,
                            kp.COCO_UPPER_BODY_IDS)
  table = pipeline.instances(ref, spec, 17)
  rows = []
  for workers in (int(w) for w in args.workers.split(",")):
    rate = measure(ref, table, spec, workers, args.batch, args.batches)
    rows.append({"workers": workers, "samples_s": rate})
    print(f"  {workers} workers: {rate:.1f} samples/s", flush=True)
  print(f"\nsynthetic_people/{args.builder_config} train, {args.method} samples at {args.size}, "
        f"batch {args.batch}\n")
  _timing.print_table(rows, [("workers", "grain workers", "d"), ("samples_s", "samples/s", ".1f")])


if __name__ == "__main__":
  main()
