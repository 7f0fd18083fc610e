"""synthetic_mocap: procedural 3D motion seen by the Human3.6M cameras; no download.

``tfds build data_builders/synthetic_mocap`` (or ``--config=tiny``), or
``jaxpose.data.builders.build_dataset('synthetic_mocap', data_dir)``.

The embedded stand-in for ``h36m_poses``, with exactly its features and split
conventions, so every 3D code path (lifting, trajectories, projection losses, per-action
evaluation) runs without the real data:

* subjects named like Human3.6M's (train S1, S5, S6, S7, S8; validation S9, S11), each
  with its own bone lengths (``jaxpose.data.mocap.sample_body``);
* the 15 Human3.6M actions as motion kinds (``jaxpose.data.mocap.MOTIONS``), ``takes``
  recordings each (``"Walking"``, ``"Walking 1"``), 50 frames per second;
* each recording seen by the subject's four real Human3.6M cameras (extrinsics and
  intrinsics with distortion, ``jaxpose.geometry``);
* two 2D sources: ``gt``, the exact projections (as VideoPose3D's ``data_2d_h36m_gt.npz``),
  and ``detected``, with detector-like errors and per-joint scores
  (``jaxpose.data.detector_noise``).

Recording ``(subject, action, take)`` draws from
``numpy.random.default_rng([seed, subject_id, action_index, take])`` and its camera's
detections from ``[seed, subject_id, action_index, take, camera, 1]``, so the data is the
same on every run and independent of which subjects or actions a config lists. Change
the generator's output and bump ``VERSION``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_builders import _common
from data_builders.h36m_poses import h36m_poses
from jaxpose.data import detector_noise, keypoints, mocap, mocap_format

_DESCRIPTION = """
Procedural human motion (the 15 Human3.6M action kinds) on Human3.6M's 17-joint skeleton,
seen by the four Human3.6M cameras, with exact ('gt') and simulated detector ('detected')
2D keypoints. Same features and subject split as h36m_poses; deterministic; no download.
"""

# Extremities jitter more than the torso in real detections.
_JOINT_SCALE = tuple(
    1.6 if name.endswith(("wrist", "ankle")) else 1.25 if name.endswith(("elbow", "knee"))
    else 1.0 for name in keypoints.H36M_JOINT_NAMES)
_LIMBS = (tuple(zip(keypoints.H36M_JOINTS_LEFT[:3], keypoints.H36M_JOINTS_RIGHT[:3])),
          tuple(zip(keypoints.H36M_JOINTS_LEFT[3:], keypoints.H36M_JOINTS_RIGHT[3:])))
_FLIP = keypoints.flip_permutation(keypoints.H36M_NUM_JOINTS, keypoints.H36M_FLIP_PAIRS)
SOURCES = (
    mocap_format.Source2D("gt", "h36m", _FLIP.astype(np.int32), has_scores=False),
    mocap_format.Source2D("detected", "h36m", _FLIP.astype(np.int32), has_scores=True),
)


@dataclasses.dataclass(kw_only=True)
class SyntheticMocapConfig(tfds.core.BuilderConfig):
  """Sizes and seed of a synthetic_mocap variant.

  Attributes:
    train_subjects: subjects of the ``train`` split.
    validation_subjects: subjects of the ``validation`` split.
    actions: motion kinds (``mocap.MOTIONS`` keys).
    takes: recordings per subject and action.
    num_frames: ``(min, max)`` frames of a recording.
    seed: base seed.
  """
  train_subjects: tuple[str, ...] = mocap_format.TRAIN_SUBJECTS
  validation_subjects: tuple[str, ...] = mocap_format.TEST_SUBJECTS
  actions: tuple[str, ...] = tuple(mocap.MOTIONS)
  takes: int = 2
  num_frames: tuple[int, int] = (120, 220)
  seed: int = 0

  def splits(self) -> dict[str, tuple[str, ...]]:
    return {"train": tuple(self.train_subjects), "validation": tuple(self.validation_subjects)}


def recording(config: SyntheticMocapConfig, subject: str, action: str, take: int
              ) -> np.ndarray:
  """The ``[T, 17, 3]`` world positions (meters) of one recording."""
  sid = mocap_format.subject_id(subject)
  body = mocap.sample_body(np.random.default_rng([config.seed, sid]))
  rng = np.random.default_rng([config.seed, sid, list(mocap.MOTIONS).index(action), take])
  num = int(rng.integers(config.num_frames[0], config.num_frames[1] + 1))
  return mocap.generate_motion(action, body, num, rng)


def take_name(action: str, take: int) -> str:
  """Human3.6M's naming of takes: ``"Walking"``, ``"Walking 1"``, ``"Walking 2"``..."""
  return action if take == 0 else f"{action} {take}"


def generate_examples(config: SyntheticMocapConfig, subjects: tuple[str, ...]
                      ) -> Iterator[tuple[str, dict[str, Any]]]:
  """The examples of one split (``h36m_poses.features()`` structure)."""
  noise = detector_noise.DetectorNoise(joint_scale=_JOINT_SCALE)
  for subject in subjects:
    sid = mocap_format.subject_id(subject)
    for action in config.actions:
      for take in range(config.takes):
        world = recording(config, subject, action, take)
        name = take_name(action, take)
        for camera in range(h36m_poses.NUM_CAMERAS):
          cam = mocap_format.camera_values(subject, camera)
          gt = mocap_format.project_pixels(mocap_format.to_camera(world, cam), cam)
          rng = np.random.default_rng(
              [config.seed, sid, list(mocap.MOTIONS).index(action), take, camera, 1])
          detected, scores = detector_noise.simulate_detections(rng, gt, _LIMBS, noise)
          yield f"{subject}/{name}/{camera}", h36m_poses.sequence_example(
              subject, name, camera, world, SOURCES, [(gt, None), (detected, scores)])


class SyntheticMocap(_common.ArrayRecordByDefault, tfds.core.GeneratorBasedBuilder):
  """Synthetic Human3.6M-like 3D poses and 2D keypoints, generated on the fly."""

  pkg_dir_path = epath.Path(__file__).parent
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SyntheticMocapConfig(
          name="default",
          description="5 train / 2 validation subjects x 15 actions x 2 takes x 4 cameras, "
                      "120-220 frames per recording."),
      SyntheticMocapConfig(
          name="tiny", description="For tests: S1 / S9, 3 actions, 1 take, 40-60 frames.",
          train_subjects=("S1",), validation_subjects=("S9",),
          actions=("Walking", "Sitting", "Greeting"), takes=1, num_frames=(40, 60)),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(description=_DESCRIPTION,
                                          features=h36m_poses.features())

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download
    config = self.builder_config
    unknown = sorted(set(config.actions) - set(mocap.MOTIONS))
    if unknown:
      raise ValueError(f"{self.name}: unknown actions {unknown}; valid: {', '.join(mocap.MOTIONS)}")
    return {split: self._generate_examples(subjects)
            for split, subjects in config.splits().items()}

  def _generate_examples(self, subjects: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    return generate_examples(self.builder_config, subjects)
