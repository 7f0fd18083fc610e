"""COCO 2017 person keypoints as a TFDS dataset (array_record, one example per image).

Build from the official files, downloaded by the user::

    tfds build data_builders/coco_keypoints --manual_dir=/path/to/coco

or ``jaxpose.data.builders.build_dataset('coco_keypoints', data_dir, manual_dir=...)``.

Each example is one image with ALL its person annotations of
``person_keypoints_{train,val}2017.json``: crowd regions, people without labelled
keypoints and images without any person are kept, so that per-instance sampling (the
pipeline's job: e.g. skip ``iscrowd`` and ``num_keypoints == 0``) and COCO evaluation
(:func:`jaxpose.data.coco_format.ground_truth_from_examples`) both work downstream.
Values are the files' own, stored losslessly (float64): pixel coordinates,
``[x, y, width, height]`` boxes, COCO visibility flags. Images are the original JPEG
bytes; a missing or undecodable image is skipped with a warning naming the file.

The module-level :func:`features` and :func:`split_examples` are reused by the
``synthetic_people`` builder, which writes COCO files of its own. With
``--beam_pipeline_options`` (``tfds build``) the images are read by an Apache Beam
pipeline (e.g. on a cluster) instead of a Python loop.
"""
from __future__ import annotations

import functools
import os
import pathlib
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_builders import _common
from jaxpose.data import coco_format
from jaxpose.data.keypoints import COCO_KEYPOINT_NAMES

NUM_KEYPOINTS = len(COCO_KEYPOINT_NAMES)

_DESCRIPTION = """
COCO 2017 person keypoints: every image of the train and val sets with all of its person
annotations (boxes, 17 keypoints with visibility, num_keypoints, area, iscrowd, ids), one
example per image.
"""

_CITATION = """
@inproceedings{lin2014microsoft,
  title={Microsoft COCO: Common Objects in Context},
  author={Lin, Tsung-Yi and Maire, Michael and Belongie, Serge and Hays, James and
          Perona, Pietro and Ramanan, Deva and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  booktitle={ECCV},
  year={2014}
}
"""

MANUAL_DOWNLOAD_INSTRUCTIONS = """
Download from https://cocodataset.org/#download and unzip into the manual directory:
  * "2017 Train images" (train2017.zip, 18 GB)    -> <manual_dir>/train2017/*.jpg
  * "2017 Val images" (val2017.zip, 1 GB)          -> <manual_dir>/val2017/*.jpg
  * "2017 Train/Val annotations" (annotations_trainval2017.zip)
        -> <manual_dir>/annotations/person_keypoints_train2017.json
        -> <manual_dir>/annotations/person_keypoints_val2017.json
"""

# TFDS split name -> (annotation file, image folder), relative to the manual directory.
SPLIT_FILES = {
    "train": ("annotations/person_keypoints_train2017.json", "train2017/"),
    "validation": ("annotations/person_keypoints_val2017.json", "val2017/"),
}


def features(num_keypoints: int = NUM_KEYPOINTS) -> tfds.features.FeaturesDict:
  """The example structure shared by ``coco_keypoints`` and ``synthetic_people``."""
  k = num_keypoints
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg",
                                   doc="The image as stored (JPEG bytes)."),
      "image/id": tfds.features.Scalar(np.int64, doc="COCO image id."),
      "image/filename": tfds.features.Text(doc="File name in the split's image folder."),
      "image/height": tfds.features.Scalar(np.int32, doc="Image height in pixels."),
      "image/width": tfds.features.Scalar(np.int32, doc="Image width in pixels."),
      # Per-person fields as tensors with a leading person axis N (N may be 0), so that
      # random-access reads return stacked numpy arrays of a fixed rank.
      "objects": tfds.features.FeaturesDict({
          "id": tfds.features.Tensor(shape=(None,), dtype=np.int64,
                                     doc="COCO annotation ids [N]."),
          "bbox": _common.float64_tensor(
              (None, 4), "COCO boxes [N, 4]: x, y, width, height in pixels (not normalised)."),
          "area": _common.float64_tensor((None,), "Segmentation areas [N] in pixels^2."),
          "iscrowd": tfds.features.Tensor(shape=(None,), dtype=np.bool_,
                                          doc="Crowd regions [N] (they label no keypoints)."),
          "num_keypoints": tfds.features.Tensor(shape=(None,), dtype=np.int32,
                                                doc="Labelled keypoints per person [N]."),
          "keypoints": _common.float64_tensor(
              (None, k, 2), "Keypoints [N, K, 2]: x, y in pixels (0, 0 where not labelled)."),
          "keypoint_visibility": tfds.features.Tensor(
              shape=(None, k), dtype=np.int32,
              doc="COCO flags [N, K]: 0 not labelled, 1 labelled but occluded, 2 visible."),
      }),
  })


def _objects(record: coco_format.ImageRecord, num_keypoints: int) -> dict[str, np.ndarray]:
  persons = record.persons
  n = len(persons)
  return {
      "id": np.array([p.id for p in persons], np.int64).reshape(n),
      "bbox": np.array([p.bbox for p in persons], np.float64).reshape(n, 4),
      "area": np.array([p.area for p in persons], np.float64).reshape(n),
      "iscrowd": np.array([p.iscrowd for p in persons], np.bool_).reshape(n),
      "num_keypoints": np.array([p.num_keypoints for p in persons], np.int32).reshape(n),
      "keypoints": np.array([p.keypoints for p in persons],
                            np.float64).reshape(n, num_keypoints, 2),
      "keypoint_visibility": np.array([p.visibility for p in persons],
                                      np.int32).reshape(n, num_keypoints),
  }


def load_records(annotation_file: str | os.PathLike,
                 num_keypoints: int = NUM_KEYPOINTS) -> list[coco_format.ImageRecord]:
  """Every image of a COCO person-keypoints file with its people.

  Raises:
    coco_format.CocoFormatError: the file is malformed (names the file and the annotation
      or image id); raised before any example is produced.
  """
  return coco_format.load_person_keypoints(annotation_file, num_keypoints)


def make_example(record: coco_format.ImageRecord, image_dir: pathlib.Path,
                 annotation_file: str, num_keypoints: int = NUM_KEYPOINTS,
                 ) -> tuple[int, dict[str, Any]]:
  """``(image id, example)`` of one image record.

  Raises:
    OSError: the image file is missing, undecodable or of another size than the
      annotation says (the message names the file); the builders skip the image.
  """
  path = pathlib.Path(image_dir) / record.file_name
  try:
    data, (height, width) = _common.read_jpeg(path)
  except OSError as e:
    raise OSError(f"image id {record.id}: {e}") from e
  if (height, width) != (record.height, record.width):
    raise OSError(f"image id {record.id}: {path} is {width}x{height} but {annotation_file} "
                  f"says {record.width}x{record.height}")
  return record.id, {
      "image": data,
      "image/id": record.id,
      "image/filename": record.file_name,
      "image/height": height,
      "image/width": width,
      "objects": _objects(record, num_keypoints),
  }


def split_examples(
    builder: _common.BeamWhenAsked, annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike, split: str, num_keypoints: int = NUM_KEYPOINTS,
) -> Any:
  """The examples of one split of a COCO folder, for ``builder._generate_examples``.

  Args:
    builder: the calling builder (chooses Python loop or Beam).
    annotation_file: the ``person_keypoints_*.json`` file.
    image_dir: the folder holding the images named in it.
    split: the TFDS split name (for messages).
    num_keypoints: ``K``.

  Returns:
    An iterator of ``(image id, example)`` (or a Beam ``PTransform``); images whose file
    is missing, undecodable or of another size than the annotation says are skipped with
    a warning naming the file, and a split where every image fails raises
    :class:`data_builders._common.NoExamplesError`.

  Raises:
    coco_format.CocoFormatError: the annotation file is malformed (raised at once).
  """
  records = load_records(annotation_file, num_keypoints)
  make = functools.partial(make_example, image_dir=pathlib.Path(image_dir),
                           annotation_file=os.fspath(annotation_file),
                           num_keypoints=num_keypoints)
  return builder.examples(records, make, split)


class CocoKeypoints(_common.ArrayRecordByDefault, _common.BeamWhenAsked,
                    tfds.core.GeneratorBasedBuilder):
  """COCO 2017 person keypoints, one example per image, from a manual download."""

  # Metadata folder: this file's folder, however the package was imported.
  pkg_dir_path = epath.Path(__file__).parent
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=features(),
        homepage="https://cocodataset.org/#keypoints-2017",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    required = []
    for ann, images in SPLIT_FILES.values():
      required += [(ann, "COCO annotation file"), (images, "COCO image folder")]
    root = _common.require_manual_files(self.name, dl_manager, required,
                                        MANUAL_DOWNLOAD_INSTRUCTIONS)
    # Annotation files are parsed and validated here, before anything is written.
    return {
        split: self._generate_examples(root / ann, root / images, split)
        for split, (ann, images) in SPLIT_FILES.items()
    }

  def _generate_examples(self, annotation_file: pathlib.Path, image_dir: pathlib.Path,
                         split: str) -> Any:
    return split_examples(self, annotation_file, image_dir, split)
