"""What the image-based 3D methods share: mixed 2D/3D training data, 3D (and 2D) evaluation.

``Image3DTask`` implements the data and evaluation parts of ``base.Task`` for methods that
crop one person per image and predict its joints in the image with their depth:
``integral.IntegralTask`` (integral regression) and ``hg3d.HG3DTask``
(pytorch-pose-hg-3d). A method supplies its joint sets, its sample function, ``loss``,
``predict`` (test-time flip included) and ``decode`` (its protocol's conversion to a
root-relative 3D pose in millimetres, and MPII-order image joints).

Training data (``data``): ``data.mixture`` names entries of ``data.sources``; each source
is a split of a dataset of ``jaxpose.datasets`` that has a people reader (``people``):
``{dataset, builder_config, split, manual_dir, weight, box, joint_shift}``. Its people are
moved into the method's joint set (``joint_maps``), cropped by its ``box`` rule
('stored': the dataset's box; 'joints': ``transforms.joint_box`` of the visible joints at
the input's aspect ratio, integral-human-pose's challenge rule) and mixed with the others
by their integer ``weight`` (``jaxpose.data.mixing``: exact ratio in every batch; an epoch
is one pass over the first source). 2D sources carry no depth supervision.

Evaluation (``eval``): ``eval.sets`` names entries of ``eval.datasets`` (``{dataset,
builder_config, split, manual_dir, every}``; ``every`` = 10 evaluates every 10th person,
as pytorch-pose-hg-3d without ``--full_test``); each is scored by its dataset's evaluator:
Human3.6M-type sets (people with depth) by ``H36MImageErrors`` on the decoded 3D poses
(``MPJPE``, ``P-MPJPE`` when the method reports one, per action), MPII by PCKh on the
decoded 2D joints. The first set's metrics keep their names and choose the best
checkpoint; the others' are prefixed with the set name (``mpii/Mean``). With
``eval.baseline`` the first 3D set is also scored against the training sources' mean
pose (``mean-pose MPJPE``, as the lifters name it). The run ends with ``Protocol #1 Error (MPJPE): X mm``.
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
from tqdm import tqdm

from jaxpose import datasets
from jaxpose.data import image3d, joint_maps, mixing, pipeline
from jaxpose.data import keypoints as kp
from jaxpose.evaluation import h36m as h36m_eval
from jaxpose.train.tasks import base

logger = logging.getLogger(__name__)

PEOPLE_CACHE_VERSION = 1
BOX_RULES = ("stored", "joints")
# The config fields every image-based 3D run reads.
REQUIRED_FIELDS = {"data": ("sources", "mixture", "input_size", "mean", "std", "data_dir",
                            "num_workers"),
                   "eval": ("sets", "datasets", "batch_size", "flip_test")}


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float],
              pixel_scale: float, color_scale: jax.Array | None = None) -> jax.Array:
  """uint8 ``[B, H, W, 3]`` -> ``(clip(x * gain, 0, 255) / pixel_scale - mean) / std``
  float32 (``gain`` ``[B, 3]`` per channel, integral regression's colour augmentation)."""
  x = images.astype(jnp.float32)
  if color_scale is not None:
    x = jnp.clip(x * color_scale[:, None, None, :], 0.0, 255.0)
  x = x / pixel_scale
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def people_table(ref: pipeline.DatasetRef, reader: image3d.PeopleReader) -> image3d.PersonTable:
  """The people of a split in its dataset's own joints (cached beside the data)."""
  def build():
    source = pipeline.open_source(ref)
    return reader((i, source[i]) for i in range(len(source)))

  return pipeline.cached_table(
      ref, f"jaxpose_people3d_v{PEOPLE_CACHE_VERSION}_{ref.split}.npz", image3d.PersonTable,
      build, "people")


class Image3DTask(base.Task):
  """Data and evaluation of the image-based 3D methods (see the module docstring).

  Subclasses set ``keypoint_set`` (the joints the network predicts), ``eval_keypoints``
  (the joints of ``decode``'s 3D poses), ``color`` ('rgb' / 'bgr') and ``pixel_scale``
  (255 / 256), and define ``sample``, ``loss``, ``predict`` and ``decode``.
  """
  keypoint_set: kp.KeypointSet
  eval_keypoints: kp.KeypointSet
  predict_unsupported = (
      "jaxpose predict/export do not run image-based 3D models (their 3D decoding needs "
      "each person's box, camera and root depth, which users' images lack); evaluate them "
      "with launch.py --mode=eval")
  color: str = "rgb"
  pixel_scale: float = 255.0

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    for section, fields in REQUIRED_FIELDS.items():
      missing = [f for f in fields if f not in config.get(section, {})]
      if missing:
        raise ValueError(f"{type(self).__name__} needs {', '.join(f'{section}.{f}' for f in missing)}"
                         " (configs/common.py: image3d_data / image3d_eval)")
    d = config.data
    self.sources = [self._entry(d.sources, name, "data.sources") for name in d.mixture]
    if not self.sources:
      raise ValueError("data.mixture names no training source")
    self.eval_sets = [self._entry(config.eval.datasets, name, "eval.datasets")
                      for name in config.eval.sets]
    if not self.eval_sets:
      raise ValueError("eval.sets names no evaluation dataset")
    for name, entry, cfg in self.sources:
      joint_maps.joint_map(entry.keypoints.name, self.keypoint_set.name)
      if cfg.get("box", "stored") not in BOX_RULES:
        raise ValueError(f"data.sources.{name}.box must be one of {BOX_RULES}, got {cfg.box!r}")
      if int(cfg.get("weight", 1)) < 1:
        raise ValueError(f"data.sources.{name}.weight must be a positive integer")
    for name, entry, _ in self.eval_sets:
      if entry.evaluator is None:
        raise ValueError(f"eval.datasets.{name}: {entry.name} has no evaluator")
      joint_maps.joint_map(entry.keypoints.name, self.keypoint_set.name)
    joints = config.model.get("num_joints")
    if joints is not None and joints != self.keypoint_set.num_keypoints:
      raise ValueError(f"config.model.num_joints={joints}, but {type(self).__name__} predicts "
                       f"the {self.keypoint_set.num_keypoints} joints of "
                       f"{self.keypoint_set.name!r}")
    self._tables: dict[tuple, image3d.PersonTable] = {}

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Image3DTask":
    return cls(config)

  @staticmethod
  def _entry(group: ml_collections.ConfigDict, name: str, where: str):
    if name not in group:
      raise ValueError(f"{where} has no entry {name!r}; entries: {sorted(group)}")
    cfg = group[name]
    entry = datasets.dataset(cfg.dataset)
    if entry.people is None:
      valid = sorted(n for n, d in datasets.DATASETS.items() if d.people is not None)
      raise ValueError(f"{where}.{name}: dataset {cfg.dataset!r} has no people reader for "
                       f"image-based 3D methods; valid: {valid}")
    return name, entry, cfg

  def _ref(self, cfg: ml_collections.ConfigDict) -> pipeline.DatasetRef:
    return pipeline.DatasetRef(cfg.dataset, os.path.expanduser(self.config.data.data_dir),
                               cfg.split, cfg.get("builder_config"))

  # -- metrics ----------------------------------------------------------------------------

  @property
  def best_metric(self) -> str:
    return self.config.eval.get("metric") or self.eval_sets[0][1].evaluator.default_metric

  @property
  def best_mode(self) -> str:
    return self.eval_sets[0][1].evaluator.mode

  # -- data -------------------------------------------------------------------------------

  def prepare_data(self) -> None:
    """Builds every dataset the run reads that is missing (synthetic ones generate; the
    others need their ``manual_dir``)."""
    from jaxpose.data import builders
    seen = set()
    for _, entry, cfg in self.sources + self.eval_sets:
      key = (entry.name, cfg.get("builder_config"))
      if key not in seen:
        seen.add(key)
        builders.build_dataset(entry.name, os.path.expanduser(self.config.data.data_dir),
                               manual_dir=cfg.get("manual_dir"), config=cfg.get("builder_config"))

  def table(self, entry: datasets.Dataset, cfg: ml_collections.ConfigDict
            ) -> image3d.PersonTable:
    """The people of a source / evaluation set in the method's joints, boxes by its rule."""
    key = (entry.name, cfg.get("builder_config"), cfg.split, cfg.get("box", "stored"))
    if key not in self._tables:
      table = people_table(self._ref(cfg), entry.people)
      table = table.remap(joint_maps.joint_map(entry.keypoints.name, self.keypoint_set.name))
      if cfg.get("box", "stored") == "joints":
        h, w = self.config.data.input_size
        table = table.with_joint_boxes(w / h)
      self._tables[key] = table
    return self._tables[key]

  def sample(self, cfg: ml_collections.ConfigDict, train: bool) -> image3d.SampleFn:
    """A picklable ``(row, image, rng | None) -> sample`` for source ``cfg``."""
    raise NotImplementedError

  def train_data(self, *, global_batch_size: int, process_index: int, process_count: int
                 ) -> base.TrainData:
    parts = []
    for name, entry, cfg in self.sources:
      table = self.table(entry, cfg)
      transform = image3d.SampleTransform(self.sample(cfg, train=True), self.color)
      parts.append(mixing.MixPart(pipeline.InstanceSource(self._ref(cfg), table), transform,
                                  int(cfg.get("weight", 1)), name))
    iterator = mixing.mixed_train_iterator(
        parts, batch_size=global_batch_size // process_count, seed=self.config.train.seed,
        global_batch_size=global_batch_size, num_workers=self.config.data.num_workers,
        process_index=process_index, process_count=process_count)
    return base.TrainData(iterator, mixing.epoch_examples(parts))

  def preprocess(self, images: jax.Array, color_scale: jax.Array | None = None) -> jax.Array:
    d = self.config.data
    return normalize(images, d.mean, d.std, self.pixel_scale, color_scale)

  # -- evaluation -------------------------------------------------------------------------

  def decode(self, outputs: Mapping[str, np.ndarray], rows: Mapping[str, np.ndarray]
             ) -> tuple[np.ndarray, np.ndarray]:
    """Host side: ``predict``'s outputs of ``n`` people and their table rows (columns of
    ``n``) -> ``(pose_3d [n, J, 3] root-relative mm in eval_keypoints (zeros where the
    protocol cannot apply), keypoints [n, 16, 2] MPII-order image pixels)``."""
    raise NotImplementedError

  def eval_table(self, entry: datasets.Dataset, cfg: ml_collections.ConfigDict
                 ) -> image3d.PersonTable:
    """The evaluated people of a set (every ``every``-th)."""
    table = self.table(entry, cfg)
    return table.take(np.arange(0, len(table), int(cfg.get("every", 1))))

  def predict_dataset(self, ctx: base.EvalContext) -> base.Columns:
    """Every evaluation set's people (this process's share of each batch), decoded.

    Columns: ``set`` (index in ``eval.sets``), ``index`` (row of the set's table),
    ``example_index``, ``annotation_id``, ``pose_3d`` ``[N, J, 3]`` mm, ``keypoints``
    ``[N, 16, 2]`` MPII-order pixels.
    """
    parts = []
    for set_index, (name, entry, cfg) in enumerate(self.eval_sets):
      table = self.eval_table(entry, cfg)
      if len(table) == 0:
        raise ValueError(f"eval set {name} ({self._ref(cfg)}) has no people")
      batch_size = ctx.global_batch_size(self.config.eval.batch_size)
      batches = pipeline.ordered_batches(
          pipeline.InstanceSource(self._ref(cfg), table),
          image3d.EvalSampleTransform(self.sample(cfg, train=False), self.color),
          batch_size=batch_size, num_workers=self.config.data.num_workers,
          process_index=ctx.process_index, process_count=ctx.process_count)
      for batch in tqdm(batches, total=math.ceil(len(table) / batch_size), desc=f"eval {name}",
                        leave=False, disable=ctx.process_index != 0):
        outputs = ctx.predict(batch["image"])
        real = batch["mask"]
        keep = real if real.any() else np.arange(len(real)) == 0
        index = batch["index"][keep]
        rows = table.take(index)
        pose, keypoints = self.decode(jax.tree_util.tree_map(lambda x: x[keep], outputs),
                                      rows.columns())
        part = {"set": np.full(len(index), set_index, np.int64), "index": index,
                "example_index": rows.example_index, "annotation_id": rows.annotation_id,
                "pose_3d": pose.astype(np.float64), "keypoints": keypoints.astype(np.float64)}
        parts.append(part if real.any() else {k: v[:0] for k, v in part.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def score(self, predictions: base.Columns, ctx: base.EvalContext) -> dict[str, float]:
    """Each set's evaluator on its rows (in table order); the baseline on the first 3D set."""
    metrics: dict[str, float] = {}
    for set_index, (name, entry, cfg) in enumerate(self.eval_sets):
      rows = predictions["set"] == set_index
      order = np.argsort(predictions["index"][rows], kind="stable")
      columns = {k: v[rows][order] for k, v in predictions.items()}
      result = entry.evaluator(self._ref(cfg), columns, keypoints=self.eval_keypoints,
                               options=self.config.eval, workdir=ctx.workdir)
      prefix = "" if set_index == 0 else f"{name}/"
      if self.config.eval.get("baseline", False) and "MPJPE" in result and not any(
          k.endswith(h36m_eval.BASELINE_METRIC) for k in metrics):
        mean = self.mean_training_pose()
        base_cols = {**columns, "pose_3d": np.broadcast_to(mean, columns["pose_3d"].shape)}
        base_result = entry.evaluator(self._ref(cfg), base_cols, keypoints=self.eval_keypoints,
                                      options={"align": None}, workdir=ctx.workdir)
        metrics[prefix + h36m_eval.BASELINE_METRIC] = base_result["MPJPE"]
      metrics.update({prefix + k: v for k, v in result.items()})
    return metrics

  def mean_training_pose(self) -> np.ndarray:
    """``[J, 3]`` mm: the mean root-relative pose of the training sources with depth, in
    ``eval_keypoints`` (the mean-pose baseline)."""
    poses = []
    for _, entry, cfg in self.sources:
      table = people_table(self._ref(cfg), entry.people)
      if table.has_depth.any():
        rel = table.positions_3d[table.has_depth] * 1000.0
        poses.append(joint_maps.joint_map(entry.keypoints.name, self.eval_keypoints.name)
                     .apply(rel, np.ones(rel.shape[:-1]))[0])
    if not poses:
      raise ValueError("eval.baseline needs a training source with 3D poses")
    return np.concatenate(poses).mean(axis=0)

  def metrics_table(self, metrics: Mapping[str, float]) -> str:
    """The first set's table (per action, then ``Protocol #1 Error (MPJPE): X mm``) after
    the other sets' metrics."""
    first = self.eval_sets[0][2]
    header = (f"{self.config.model.name} on {first.dataset}/{first.split} "
              f"(every {int(first.get('every', 1))}), flip test "
              f"{'on' if self.config.eval.flip_test else 'off'}")
    names = {n for n, _, _ in self.eval_sets[1:]}
    others = [f"{k}: {v:.4f}" for k, v in metrics.items() if k.split("/", 1)[0] in names]
    own = {k: v for k, v in metrics.items() if k.split("/", 1)[0] not in names}
    if "MPJPE" in own:
      return "\n".join(others + h36m_eval.protocol_table(own, header=header, average="mean over "
                                                         "the evaluated people")
                        + h36m_eval.summary_lines(own))
    return "\n".join(others + [header] + [f"{k}: {v:.4f}" for k, v in own.items()])
