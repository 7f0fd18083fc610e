"""Building the TFDS datasets of ``data_builders/`` from Python.

``build_dataset('synthetic_people', data_dir)`` generates and prepares the embedded
dataset on first use and reuses it afterwards (likewise ``synthetic_mocap``, the 3D
poses; ``synthetic_people3d``, people posed in 3D); ``coco_keypoints``, ``mpii``,
``h36m_poses`` and ``h36m_images`` need the user's downloaded files in ``manual_dir``.
Prepared datasets are ``array_record`` files: read them with
``builder.as_data_source(split)`` (or ``tfds.data_source``), whose elements are decoded
numpy dicts (pass
``decoders={'image': tfds.decode.SkipDecoding()}`` to get the JPEG bytes instead and
decode with OpenCV in the pipeline).

From the shell (the same as ``tfds build data_builders/<name>``)::

    python -m jaxpose.data.builders synthetic_people --data_dir ~/tensorflow_datasets
    python -m jaxpose.data.builders coco_keypoints --data_dir D --manual_dir /data/coco
    python -m jaxpose.data.builders synthetic_mocap --data_dir ~/tensorflow_datasets
    python -m jaxpose.data.builders h36m_poses --data_dir D --manual_dir VideoPose3D/data
    python -m jaxpose.data.builders h36m_images --data_dir D --manual_dir /data/h36m

A missing manual file, a malformed annotation file or a split whose images all fail
ends the command with one line on stderr naming the files (exit status 1);
``--help`` prints each dataset's download instructions.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds

from data_builders import _common
from data_builders.coco_keypoints.coco_keypoints import CocoKeypoints
from data_builders.h36m_images.h36m_images import H36MImages, H36MImagesFormatError
from data_builders.h36m_poses.h36m_poses import H36MFormatError, H36MPoses
from data_builders.mpii.mpii import Mpii, MpiiFormatError
from data_builders.synthetic_mocap.synthetic_mocap import SyntheticMocap
from data_builders.synthetic_people.synthetic_people import SyntheticPeople
from data_builders.synthetic_people3d.synthetic_people3d import SyntheticPeople3D
from jaxpose.data import safe_npz
from jaxpose.data.coco_format import CocoFormatError

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "coco_keypoints": CocoKeypoints,
    "h36m_images": H36MImages,
    "h36m_poses": H36MPoses,
    "mpii": Mpii,
    "synthetic_mocap": SyntheticMocap,
    "synthetic_people": SyntheticPeople,
    "synthetic_people3d": SyntheticPeople3D,
}


def builder_class(name: str) -> type[tfds.core.GeneratorBasedBuilder]:
  """The builder class of ``name``; raises ``ValueError`` listing the valid names."""
  try:
    return BUILDERS[name]
  except KeyError:
    raise ValueError(
        f"unknown dataset {name!r}; valid names: {', '.join(sorted(BUILDERS))}") from None


def build_dataset(
    name: str,
    data_dir: str | os.PathLike,
    manual_dir: str | os.PathLike | None = None,
    config: str | tfds.core.BuilderConfig | None = None,
    download_dir: str | os.PathLike | None = None,
) -> tfds.core.DatasetBuilder:
  """Returns the builder of a dataset, preparing it first if it is not on disk yet.

  Args:
    name: a key of ``BUILDERS``.
    data_dir: the TFDS data directory (datasets land in ``data_dir/name/config/version``).
    manual_dir: folder with the downloaded files (COCO, MPII, Human3.6M); not used by
      the synthetic datasets.
    config: builder config name or object (``synthetic_people``/``synthetic_mocap``/
      ``synthetic_people3d``: ``'default'`` or ``'tiny'``; ``h36m_images``: ``'eccv18'``
      or ``'hm36'``); ``None`` for the default.
    download_dir: where generated/downloaded intermediate files go (default
      ``data_dir/downloads``).

  Returns:
    The prepared builder (``array_record`` files); use ``builder.as_data_source(split)``
    for random access.

  Raises:
    ValueError: unknown name.
    data_builders._common.MissingManualFilesError: a manual file is missing (one error
      listing all of them and where they go).
    ValueError: a malformed annotation (naming the file and the annotation id).
    data_builders._common.NoExamplesError: every image of a split failed (nothing is
      written).
  """
  cls = builder_class(name)
  kwargs: dict[str, Any] = {"data_dir": os.fspath(data_dir), "file_format": "array_record"}
  if config is not None:
    kwargs["config"] = config
  builder = cls(**kwargs)
  if not builder.is_prepared():
    download_config = tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir) if manual_dir is not None else None,
        # Feature statistics would be computed by a slow extra pass through tf.data.
        compute_stats=tfds.download.ComputeStatsMode.SKIP,
    )
    builder.download_and_prepare(
        download_dir=os.fspath(download_dir) if download_dir is not None else None,
        download_config=download_config)
  return builder


# Errors of the user's input files: the command line prints them as one line.
INPUT_ERRORS = (_common.MissingManualFilesError, _common.NoExamplesError, CocoFormatError,
                MpiiFormatError, H36MFormatError, H36MImagesFormatError, safe_npz.NpzError)


def one_line(error: BaseException) -> str:
  """The message of an input error on a single line."""
  if isinstance(error, _common.MissingManualFilesError):
    return error.summary() + " (download instructions: --help)"
  return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _parser() -> argparse.ArgumentParser:
  instructions = "\n".join(
      f"{name}:{cls.MANUAL_DOWNLOAD_INSTRUCTIONS.rstrip()}\n"
      for name, cls in sorted(BUILDERS.items()) if cls.MANUAL_DOWNLOAD_INSTRUCTIONS)
  parser = argparse.ArgumentParser(
      prog="python -m jaxpose.data.builders",
      description="Build a jaxpose TFDS dataset (array_record files).",
      epilog="Manual downloads:\n" + instructions,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", choices=sorted(BUILDERS))
  parser.add_argument("--data_dir", required=True, help="TFDS data directory.")
  parser.add_argument("--manual_dir", default=None,
                      help="Downloaded files (coco_keypoints, mpii, h36m_poses, h36m_images).")
  parser.add_argument("--config", default=None, help="Builder config, e.g. 'tiny'.")
  parser.add_argument("--download_dir", default=None,
                      help="Intermediate files (default DATA_DIR/downloads).")
  return parser


def main(argv: Sequence[str] | None = None) -> tfds.core.DatasetBuilder:
  """Command line: builds one dataset and prints its splits and the time taken.

  Raises:
    SystemExit: status 2 for bad arguments, 1 for an input error (one line on stderr).
  """
  parser = _parser()
  args = parser.parse_args(argv)
  configs = [c.name for c in BUILDERS[args.name].BUILDER_CONFIGS]
  if args.config is not None and args.config not in configs:
    parser.error(f"{args.name} has no config {args.config!r}; valid configs: "
                 f"{', '.join(configs) or 'none (leave --config out)'}")
  start = time.perf_counter()
  try:
    builder = build_dataset(args.name, args.data_dir, manual_dir=args.manual_dir,
                            config=args.config, download_dir=args.download_dir)
  except INPUT_ERRORS as e:
    print(f"{parser.prog}: error: {one_line(e)}", file=sys.stderr)
    raise SystemExit(1) from None
  splits = ", ".join(f"{name}: {info.num_examples} examples"
                     for name, info in builder.info.splits.items())
  print(f"{builder.info.full_name} at {builder.data_dir} ({splits}); "
        f"{time.perf_counter() - start:.1f} s")
  return builder


if __name__ == "__main__":
  main()
