"""What the top-down 2D methods share: person crops in, keypoints in image pixels out.

``TopDownTask`` implements the data, evaluation and summary parts of ``base.Task`` for
methods that train on one augmented person crop per sample (``jaxpose.data.topdown``) and
are scored on a COCO-format or MPII split with the dataset's evaluator
(``jaxpose.datasets``). A method subclasses it with its loss, its flip test and its ``decode``: ``heatmap.HeatmapTask`` (HRNet, SimpleBaseline) and
``mspn.MSPNTask``.

Config fields read: ``data.{dataset, builder_config, data_dir, manual_dir, train_split,
eval_split, method, input_size, heatmap_size, color, mean, std, sigma,
use_different_joints_weight, mspn_kernels, aug, target, num_workers}``, ``train.{seed,
num_summary_images}``, ``eval.{boxes, detection_file, image_thre, batch_size, metric,
flip_test}`` and what the dataset's evaluator reads from ``eval``.

Inference without a dataset (``jaxpose predict``): ``HeatmapTask.from_config(config,
keypoint_set=keypoints.COCO)`` needs only ``model``, ``data.{method, input_size,
heatmap_size, color, mean, std}`` and the ``eval`` fields of the flip test and decoding;
then ``task.spec`` (crop size, colour order), ``task.predict`` and ``task.decode``.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from tqdm import tqdm

from jaxpose import datasets, drawing
from jaxpose.data import augment, pipeline, topdown
from jaxpose.data import keypoints as kp
from jaxpose.evaluation import coco as coco_eval
from jaxpose.train import state as state_lib
from jaxpose.train.tasks import base

logger = logging.getLogger(__name__)

BOXES = ("gt", "detections")


def normalize_images(images: jax.Array, mean: Sequence[float], std: Sequence[float],
                     dtype=jnp.float32) -> jax.Array:
  """``uint8 [B, H, W, 3]`` -> ``(x / 255 - mean) / std`` (per channel, in stored order)."""
  x = images.astype(jnp.float32) / 255.0
  x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  return x.astype(dtype)


def sample_spec(config: ml_collections.ConfigDict, keypoint_set: kp.KeypointSet
                ) -> topdown.SampleSpec:
  """The crop/target recipe of ``config.data`` for a dataset of ``keypoint_set``."""
  d = config.data
  aug_fields = dict(d.aug)
  return topdown.SampleSpec(
      method=d.method, input_size=tuple(d.input_size), heatmap_size=tuple(d.heatmap_size),
      color=d.color, flip_pairs=tuple(map(tuple, keypoint_set.flip_pairs)),
      upper_body_ids=tuple(keypoint_set.upper_body_ids), sigma=float(d.sigma),
      joints_weight=keypoint_set.joints_weight if d.use_different_joints_weight else None,
      mspn_kernels=tuple(map(tuple, d.mspn_kernels)),
      hrnet_aug=augment.HRNetAugment(**aug_fields) if d.method == "hrnet" else augment.HRNetAugment(),
      mspn_aug=augment.MSPNAugment(**aug_fields) if d.method == "mspn" else augment.MSPNAugment(),
      target=d.get("target"))


def detection_file(config: ml_collections.ConfigDict) -> str:
  """The person-detection file of ``eval.boxes='detections'``; checked before any work."""
  path = os.path.expanduser(config.eval.detection_file or "")
  if not os.path.isfile(path):
    raise FileNotFoundError(
        "eval.boxes='detections' needs eval.detection_file, a COCO results file of person "
        "boxes (the originals use COCO_val2017_detections_AP_H_56_person.json); got "
        f"{path or '(unset)'}. Set --config.eval.detection_file=PATH or evaluate on "
        "ground-truth boxes with --config.eval.boxes=gt")
  return path


def _dataset_of(config: ml_collections.ConfigDict) -> datasets.Dataset:
  """The table entry of ``config.data.dataset``, checked against the config."""
  entry = datasets.dataset(config.data.dataset)
  stated = config.data.get("keypoints")
  if stated and stated != entry.keypoints.name:
    raise ValueError(f"config.data.keypoints={stated!r}, but {entry.name} has the "
                     f"{entry.keypoints.name!r} keypoint set (drop the field; the dataset "
                     "table in jaxpose/datasets.py says which)")
  if entry.person_instances is None or entry.evaluator is None:
    raise ValueError(f"dataset {entry.name} has no person-box annotations or no 2D "
                     "evaluator; top-down tasks need one of "
                     f"{sorted(n for n, d in datasets.DATASETS.items() if d.person_instances)}")
  return entry


class TopDownTask(base.Task):
  """Data, evaluation and summaries of the top-down 2D methods (see the module docstring).

  Subclasses define ``loss`` (with ``train_outputs``), ``flip_average`` (the flip test of
  ``predict``: uint8 crops ``[B, h, w, 3]`` -> test heatmaps ``[B, hh, hw, K]``) and
  ``decode``; ``summary_score_scale`` is the heatmap value of a confident peak (1 for
  Gaussian targets, 255 for MSPN's).
  """
  summary_score_scale: float = 1.0

  def __init__(self, config: ml_collections.ConfigDict,
               keypoint_set: kp.KeypointSet | None = None):
    """Validates the config; ``keypoint_set`` given: inference only, no dataset needed."""
    self.config = config
    self.dataset = None if keypoint_set is not None else _dataset_of(config)
    self.keypoint_set = keypoint_set or self.dataset.keypoints
    self.spec = sample_spec(config, self.keypoint_set)
    self.flip_pairs = tuple(map(tuple, self.keypoint_set.flip_pairs))
    joints = config.model.get("num_joints")
    if joints is not None and joints != self.keypoint_set.num_keypoints:
      raise ValueError(f"config.model.num_joints={joints}, but the {self.keypoint_set.name!r} "
                       f"keypoint set has {self.keypoint_set.num_keypoints} joints")
    self.train_ref = self.eval_ref = None
    if self.dataset is not None:
      if config.eval.boxes not in BOXES:
        raise ValueError(f"eval.boxes must be one of {BOXES}, got {config.eval.boxes!r}")
      if config.eval.boxes == "detections":
        detection_file(config)  # fail now, not after the first training epochs
      d = config.data
      data_dir = os.path.expanduser(d.data_dir)
      self.train_ref = pipeline.DatasetRef(d.dataset, data_dir, d.train_split, d.builder_config)
      self.eval_ref = pipeline.DatasetRef(d.dataset, data_dir, d.eval_split, d.builder_config)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict,
                  keypoint_set: kp.KeypointSet | None = None) -> "TopDownTask":
    return cls(config, keypoint_set)

  def _require_dataset(self) -> datasets.Dataset:
    if self.dataset is None:
      raise ValueError("this task was built for inference only (keypoint_set given); "
                       "training and evaluation need config.data.dataset")
    return self.dataset

  # -- metrics ----------------------------------------------------------------------------

  @property
  def best_metric(self) -> str:
    return self.config.eval.get("metric") or self._require_dataset().evaluator.default_metric

  @property
  def best_mode(self) -> str:
    return self._require_dataset().evaluator.mode

  # -- data -------------------------------------------------------------------------------

  def preprocess(self, images: jax.Array) -> jax.Array:
    """uint8 crops -> normalised float32 (``data.mean`` / ``data.std``)."""
    return normalize_images(images, self.config.data.mean, self.config.data.std)

  def prepare_data(self) -> None:
    """Builds ``synthetic_people`` if missing (the others need their manual download)."""
    from jaxpose.data import builders
    d = self.config.data
    builders.build_dataset(self._require_dataset().name, os.path.expanduser(d.data_dir),
                           manual_dir=d.manual_dir, config=d.builder_config)

  def instances(self, ref: pipeline.DatasetRef) -> topdown.InstanceTable:
    """Ground-truth person instances of a split (cached beside the data)."""
    entry = self._require_dataset()
    return pipeline.instances(ref, self.spec, self.keypoint_set.num_keypoints,
                              read=entry.person_instances)

  def train_data(self, *, global_batch_size: int, process_index: int, process_count: int
                 ) -> base.TrainData:
    self._require_dataset()
    table = self.instances(self.train_ref)
    iterator = pipeline.train_iterator(
        self.train_ref, table, self.spec, batch_size=global_batch_size // process_count,
        seed=self.config.train.seed, num_workers=self.config.data.num_workers,
        process_index=process_index, process_count=process_count)
    return base.TrainData(iterator, len(table))

  def eval_table(self) -> topdown.InstanceTable:
    """Instances to evaluate: ground-truth boxes, or person detections (``eval.boxes``)."""
    self._require_dataset()
    config = self.config
    if config.eval.boxes == "gt":
      return self.instances(self.eval_ref)
    image_ids = pipeline.image_index(self.eval_ref)
    detections = coco_eval.load_person_detections(
        detection_file(config), image_thre=config.eval.image_thre, image_ids=set(image_ids))
    table, missing = topdown.detection_instances(
        detections, image_ids, self.keypoint_set.num_keypoints, self.spec.method,
        self.spec.aspect_ratio, config.eval.image_thre, self.spec.padding)
    if missing:
      logger.warning("%d detections are on images missing from %s", missing, self.eval_ref)
    return table

  # -- model calls (traced) ---------------------------------------------------------------

  def train_outputs(self, model: nnx.Module, batch: base.Batch, rng: jax.Array) -> dict:
    """The training-mode model's outputs for the batch's uint8 ``image`` crops."""
    return state_lib.call_model(model, self.preprocess(batch["image"]), rng)

  def predict(self, model: nnx.Module, inputs: jax.Array) -> jax.Array:
    """uint8 crops ``[B, h, w, 3]`` -> test heatmaps ``[B, hh, hw, K]`` (with
    ``eval.flip_test``: averaged with the flipped crops' maps, ``flip_average``)."""
    images = self.preprocess(inputs)
    heatmaps = model(images)["heatmaps"]
    if not self.config.eval.flip_test:
      return heatmaps
    return self.flip_average(heatmaps, model(images[:, :, ::-1])["heatmaps"])

  def flip_average(self, heatmaps: jax.Array, flipped: jax.Array) -> jax.Array:
    """The method's flip test: maps of the crops and of the flipped crops -> test maps."""
    raise NotImplementedError

  # -- evaluation -------------------------------------------------------------------------

  def decode(self, heatmaps: np.ndarray, center: np.ndarray, scale: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Host side: test heatmaps ``[N, hh, hw, K]`` and the crops' ``center`` / ``scale``
    ``[N, 2]`` -> ``(keypoints [N, K, 2] image pixels, scores [N, K])``."""
    raise NotImplementedError

  def decode_traced(self, heatmaps: jax.Array, center: jax.Array, scale: jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
    """*Traced* ``decode`` (the same numbers, for exported inference graphs): ``(keypoints
    [N, K, 2] image pixels, scores [N, K])``. Methods without one raise
    ``NotImplementedError`` (export their heatmaps and decode on the host)."""
    raise NotImplementedError(f"{type(self).__name__} has no traced decoding; export the "
                              "heatmaps (--no-decode) and decode them on the host")

  def predict_dataset(self, ctx: base.EvalContext) -> base.Columns:
    """Crops of this process's share of every evaluation batch -> decoded keypoints.

    Columns: ``index`` (row of the evaluation table), ``keypoints``, ``keypoint_scores``,
    ``image_id``, ``annotation_id``, ``box_score``, ``center``, ``scale``, ``area``.
    Writes the first ``train.num_summary_images`` crops of process 0 with their predicted
    skeletons to ``val/predictions``.
    """
    table = self.eval_table()
    if len(table) == 0:
      raise ValueError(f"no evaluation instances in {self.eval_ref}")
    batch_size = ctx.global_batch_size(self.config.eval.batch_size)
    batches = pipeline.eval_batches(
        self.eval_ref, table, self.spec, batch_size=batch_size,
        num_workers=self.config.data.num_workers, process_index=ctx.process_index,
        process_count=ctx.process_count)
    parts, shown = [], []
    num_shown = self.config.train.get("num_summary_images", 0)
    for batch in tqdm(batches, total=math.ceil(len(table) / batch_size), desc="eval",
                      leave=False, disable=ctx.process_index != 0):
      heatmaps = ctx.predict(batch["image"])
      real = batch["mask"]
      if len(shown) < num_shown:
        shown.append((batch["image"][0], heatmaps[0]))
      # A batch of padding only (possible on hosts > 0) still decodes one row, kept as
      # zero rows, so that every process returns the same dtypes.
      rows = real if real.any() else np.arange(len(real)) == 0
      keypoints, scores = self.decode(heatmaps[rows], batch["center"][rows],
                                      batch["scale"][rows])
      part = {"index": batch["index"][rows], "keypoints": keypoints, "keypoint_scores": scores,
              "image_id": batch["image_id"][rows], "annotation_id": batch["annotation_id"][rows],
              "box_score": batch["score"][rows], "center": batch["center"][rows],
              "scale": batch["scale"][rows], "area": batch["area"][rows]}
      parts.append(part if real.any() else {k: v[:0] for k, v in part.items()})
    if shown:
      ctx.writer.images(ctx.step, "val/predictions", self.skeleton_images(shown))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def score(self, predictions: base.Columns, ctx: base.EvalContext) -> dict[str, float]:
    """The dataset's evaluator on the predictions in evaluation-table order."""
    entry = self._require_dataset()
    order = np.argsort(predictions["index"], kind="stable")
    ordered = {k: v[order] for k, v in predictions.items()}
    return entry.evaluator(self.eval_ref, ordered, keypoints=self.keypoint_set,
                           options=self.config.eval, workdir=ctx.workdir)

  def metrics_table(self, metrics: Mapping[str, float]) -> str:
    """The originals' results table, preceded by what was evaluated on which boxes."""
    config = self.config
    boxes = ("ground-truth boxes" if config.eval.boxes == "gt"
             else f"detection boxes ({os.path.basename(config.eval.detection_file)})")
    header = (f"{config.model.name} on {config.data.dataset}/{config.data.eval_split}, "
              f"{boxes}, flip test {'on' if config.eval.flip_test else 'off'}")
    return header + "\n" + coco_eval.format_name_value_table(metrics, config.model.name)

  def skeleton_images(self, shown: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Crops (uint8, stored channel order) with the skeleton of their heatmaps' maxima,
    uint8 RGB ``[N, h, w, 3]``."""
    h, w = self.spec.input_size
    out = []
    for image, heatmaps in shown:
      hh, hw = heatmaps.shape[:2]
      flat = heatmaps.reshape(-1, heatmaps.shape[-1])
      idx = flat.argmax(0)
      pts = np.stack([(idx % hw + 0.5) * w / hw, (idx // hw + 0.5) * h / hh], -1)
      rgb = image if self.spec.color == "rgb" else image[..., ::-1]
      out.append(drawing.draw_skeleton(rgb, pts, flat.max(0) / self.summary_score_scale,
                                       self.keypoint_set.skeleton, self.flip_pairs))
    return np.stack(out)

