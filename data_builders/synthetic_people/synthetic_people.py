"""synthetic_people: procedurally drawn people in COCO keypoint format; no download.

``tfds build data_builders/synthetic_people`` (or ``--config=tiny``), or
``jaxpose.data.builders.build_dataset('synthetic_people', data_dir)``.

The builder first writes real COCO files with
:func:`jaxpose.data.synthetic.generate_coco_dataset` (into
``<download_dir>/synthetic_people/<config>-<version>/``: ``annotations/
person_keypoints_{train,val}.json`` and ``{train,val}/*.jpg``), then reads them with the
``coco_keypoints`` parser, so examples have exactly the ``coco_keypoints`` structure and
the same pipeline and pycocotools evaluation run on both. The files are deterministic
functions of the config (seed, sizes) and the generator version: change the generator's
output and bump ``VERSION``.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from data_builders import _common
from data_builders.coco_keypoints import coco_keypoints
from jaxpose.data import synthetic

_DESCRIPTION = """
Procedurally generated images of articulated figures with COCO's 17 keypoints, person
boxes, areas and visibility flags (deterministic from a seed; no download). Left limbs are
red-magenta, right limbs blue-cyan. Same structure as coco_keypoints: one example per
image with all its person annotations.
"""

# TFDS split name -> file split name of the generated COCO folder.
SPLITS = {"train": "train", "validation": "val"}


@dataclasses.dataclass(kw_only=True)
class SyntheticPeopleConfig(tfds.core.BuilderConfig):
  """Sizes and seed of a synthetic_people variant.

  Attributes:
    num_train_images: images of the train split.
    num_val_images: images of the validation split.
    seed: base seed of the generator.
    image_size: ``(min, max)`` image side in pixels.
    persons_per_image: ``(min, max)`` figures per image.
    person_height: ``(min, max)`` standing figure height in pixels.
  """

  num_train_images: int = 1500
  num_val_images: int = 200
  seed: int = 0
  image_size: tuple[int, int] = synthetic.SceneConfig.image_size
  persons_per_image: tuple[int, int] = synthetic.SceneConfig.persons_per_image
  person_height: tuple[float, float] = synthetic.SceneConfig.person_height

  def generator_args(self) -> dict[str, Any]:
    return {"image_size": tuple(self.image_size),
            "persons_per_image": tuple(self.persons_per_image),
            "person_height": tuple(self.person_height)}


class SyntheticPeople(_common.ArrayRecordByDefault, _common.BeamWhenAsked,
                      tfds.core.GeneratorBasedBuilder):
  """Synthetic COCO-format person keypoints, generated on the fly (no download)."""

  # Metadata folder: this file's folder, however the package was imported.
  pkg_dir_path = epath.Path(__file__).parent
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SyntheticPeopleConfig(
          name="default",
          description="~2900 train / ~380 val people in 1500 / 200 images of 160-256 px."),
      SyntheticPeopleConfig(
          name="tiny", description="6 train / 3 val images, for tests.",
          num_train_images=6, num_val_images=3, image_size=(96, 128),
          person_height=(48.0, 110.0)),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=coco_keypoints.features(),
    )

  def generated_dir(self, dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
    """Where this config's COCO files are written."""
    return (pathlib.Path(dl_manager.download_dir) / self.name
            / f"{self.builder_config.name}-{self.version}")

  def _generate_files(self, out_dir: pathlib.Path) -> None:
    """Writes the COCO folder unless an identical one is already there."""
    config = self.builder_config
    stamp = {"version": str(self.version), "seed": config.seed,
             "num_images": {s: n for s, n in (("train", config.num_train_images),
                                              ("val", config.num_val_images))},
             **{k: list(v) for k, v in config.generator_args().items()}}
    marker = out_dir / "COMPLETE.json"
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
      return
    marker.unlink(missing_ok=True)  # an interrupted run must not look complete
    for split, num in stamp["num_images"].items():
      synthetic.generate_coco_dataset(out_dir, split, num, seed=config.seed,
                                      **config.generator_args())
    marker.write_text(json.dumps(stamp))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    out_dir = self.generated_dir(dl_manager)
    self._generate_files(out_dir)
    return {
        tfds_split: self._generate_examples(out_dir, split, tfds_split)
        for tfds_split, split in SPLITS.items()
    }

  def _generate_examples(self, out_dir: pathlib.Path, split: str, tfds_split: str) -> Any:
    return coco_keypoints.split_examples(
        self, synthetic.annotation_path(out_dir, split), synthetic.image_dir(out_dir, split),
        tfds_split)
