"""synthetic_people3d: procedural people posed in 3D, photographed by a pinhole camera.

``tfds build data_builders/synthetic_people3d`` (or ``--config=tiny``), or
``jaxpose.data.builders.build_dataset('synthetic_people3d', data_dir)``; no download.

The embedded stand-in for ``h36m_images`` with exactly its features (one person per
image: 2D joints, depth relative to the pelvis, camera-frame 3D joints, the pelvis
position and the intrinsics, the crop box of integral-human-pose's Human3.6M loader), so
the image-based 3D methods (integral regression, pytorch-pose-hg-3d) train and evaluate
without the real data. Bodies and poses come from ``jaxpose.data.mocap`` (the generator
of ``synthetic_mocap``), images from ``jaxpose.data.render3d``.

Subjects are named like Human3.6M's (train S1, S5, S6, S7, S8; validation S9, S11),
each with its own bone lengths; image ``i`` of a split belongs to subject ``i mod n`` and
poses one of the 15 action kinds, so per-action tables work. Image ``i`` of split ``s``
draws from ``synthetic.split_seed(seed, s, i)``: the data is the same on every run.
Change the generator's output and bump ``VERSION``.
"""
from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_builders import _common
from data_builders.h36m_images import h36m_images
from jaxpose.data import mocap, mocap_format, render3d, synthetic

_DESCRIPTION = """
Procedurally drawn people posed in 3D (Human3.6M's 17 joints, the 15 action kinds),
photographed from random viewpoints; the features of h36m_images (2D joints, depth,
camera-frame 3D joints, intrinsics, crop box). Deterministic; no download.
"""


@dataclasses.dataclass(kw_only=True)
class SyntheticPeople3DConfig(tfds.core.BuilderConfig):
  """Sizes and seed of a synthetic_people3d variant.

  Attributes:
    num_train_images, num_val_images: images per split.
    train_subjects, validation_subjects: subject names per split.
    seed: base seed.
    image_size: image side, pixels.
  """
  num_train_images: int = 6000
  num_val_images: int = 600
  train_subjects: tuple[str, ...] = mocap_format.TRAIN_SUBJECTS
  validation_subjects: tuple[str, ...] = mocap_format.TEST_SUBJECTS
  seed: int = 0
  image_size: int = 128

  def splits(self) -> dict[str, tuple[int, tuple[str, ...]]]:
    return {"train": (self.num_train_images, tuple(self.train_subjects)),
            "validation": (self.num_val_images, tuple(self.validation_subjects))}


def generate_examples(config: SyntheticPeople3DConfig, split: str, num_images: int,
                      subjects: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
  """The examples of one split (``h36m_images.features()`` structure)."""
  scene = render3d.Scene3DConfig(image_size=config.image_size)
  bodies = {s: mocap.sample_body(np.random.default_rng([config.seed, mocap_format.subject_id(s)]))
            for s in subjects}
  for index in range(num_images):
    rng = synthetic.split_seed(config.seed, split, index)
    subject = subjects[index % len(subjects)]
    image, person = render3d.render_person(rng, scene, bodies[subject])
    jpeg = render3d.encode_jpeg(image, rng, scene)
    record = h36m_images.PersonRecord(
        image_path=pathlib.Path(f"{index + 1:06d}.jpg"), image_id=index + 1,
        filename=f"{index + 1:06d}.jpg", box_center=person.box_center,
        box_size=person.box_size, keypoints_2d=person.keypoints_2d, depth=person.depth,
        positions_3d=person.positions_3d, subject_id=mocap_format.subject_id(subject),
        action=person.action, focal_length=person.focal_length,
        camera_center=person.center, root_position=person.root_position)
    yield index + 1, h36m_images.example(record, jpeg, image.shape[0], image.shape[1])


class SyntheticPeople3D(_common.ArrayRecordByDefault, tfds.core.GeneratorBasedBuilder):
  """Synthetic people posed in 3D, h36m_images features, generated on the fly."""

  name = "synthetic_people3d"  # TFDS would derive "synthetic_people3_d" from the class name
  pkg_dir_path = epath.Path(__file__).parent
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SyntheticPeople3DConfig(
          name="default", description="6000 train / 600 validation images of 128x128."),
      SyntheticPeople3DConfig(
          name="tiny", description="For tests: 8 train / 4 validation images of 96x96.",
          num_train_images=8, num_val_images=4, image_size=96),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(description=_DESCRIPTION,
                                          features=h36m_images.features())

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split, num, subjects)
            for split, (num, subjects) in self.builder_config.splits().items()}

  def _generate_examples(self, split: str, num_images: int, subjects: tuple[str, ...]):
    return generate_examples(self.builder_config, split, num_images, subjects)
