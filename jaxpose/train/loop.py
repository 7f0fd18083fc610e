"""Training and evaluation of the 2D top-down models (``launch.py`` calls these).

``train_and_evaluate(config, workdir)``: builds the data (``synthetic_people`` on first
use), the model and its initial weights, then runs the sharded train step with a progress
bar, TensorBoard summaries, periodic asynchronous checkpoints (exact resume: parameters,
optimizer, step, RNG and data-iterator position), evaluation every ``eval_every_epochs``
and at the end, and the best checkpoint by ``eval.metric``. A non-finite loss stops the
run after saving the last good state.

``evaluate(config, workdir, checkpoint)``: loads the latest/best/given checkpoint (a
training checkpoint, a ``jaxpose.convert`` output directory, or an original ``.pth``) and
evaluates it.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from tqdm import tqdm

from jaxpose import checkpoint as ckpt_lib
from jaxpose import convert
from jaxpose import fileio
from jaxpose import models
from jaxpose.data import augment, keypoints as kp, pipeline, topdown
from jaxpose.evaluation import coco as coco_eval
from jaxpose.evaluation import mpii as mpii_eval
from jaxpose.train import optim, state as state_lib, summary
from jaxpose.train import topdown as tasks

logger = logging.getLogger(__name__)

KEYPOINT_SETS = {
    "coco": dict(flip_pairs=kp.COCO_FLIP_PAIRS, upper=kp.COCO_UPPER_BODY_IDS,
                 skeleton=kp.COCO_SKELETON, names=kp.COCO_KEYPOINT_NAMES,
                 joints_weight=tuple(np.asarray(kp.COCO_JOINTS_WEIGHT).reshape(-1))),
    "mpii": dict(flip_pairs=kp.MPII_FLIP_PAIRS, upper=kp.MPII_UPPER_BODY_IDS,
                 skeleton=kp.MPII_SKELETON, names=kp.MPII_JOINT_NAMES, joints_weight=None),
}


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or inf (the message names the step)."""


# ----------------------------------------------------------------------------------------
# Distributed runtime and devices
# ----------------------------------------------------------------------------------------


def maybe_initialize_distributed(force: bool = False) -> None:
  """``jax.distributed.initialize()`` when the environment describes several processes.

  JAX auto-detects SLURM, Open MPI and cloud TPU clusters; a plain multi-host launch sets
  ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.
  """
  env = os.environ
  multi = (force or "JAX_COORDINATOR_ADDRESS" in env
           or int(env.get("SLURM_NTASKS", "1")) > 1
           or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)
  if multi and not jax.distributed.is_initialized():
    jax.distributed.initialize()


# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Data:
  """The splits, instance tables and sample spec of a run."""
  train_ref: pipeline.DatasetRef
  eval_ref: pipeline.DatasetRef
  spec: topdown.SampleSpec
  keypoint_set: dict
  num_keypoints: int

  def train_table(self) -> topdown.InstanceTable:
    return pipeline.instances(self.train_ref, self.spec, self.num_keypoints)


def sample_spec(config: ml_collections.ConfigDict) -> topdown.SampleSpec:
  d = config.data
  keypoint_set = KEYPOINT_SETS[d.keypoints]
  aug_fields = dict(d.aug)
  return topdown.SampleSpec(
      method=d.method, input_size=tuple(d.input_size), heatmap_size=tuple(d.heatmap_size),
      color=d.color, flip_pairs=tuple(map(tuple, keypoint_set["flip_pairs"])),
      upper_body_ids=tuple(keypoint_set["upper"]), sigma=float(d.sigma),
      joints_weight=keypoint_set["joints_weight"] if d.use_different_joints_weight else None,
      mspn_kernels=tuple(map(tuple, d.mspn_kernels)),
      hrnet_aug=augment.HRNetAugment(**aug_fields) if d.method == "hrnet" else augment.HRNetAugment(),
      mspn_aug=augment.MSPNAugment(**aug_fields) if d.method == "mspn" else augment.MSPNAugment(),
      target=d.get("target"))


def setup_data(config: ml_collections.ConfigDict) -> Data:
  """Builds ``synthetic_people`` if missing (others need their manual download) and
  describes the splits."""
  from jaxpose.data import builders
  if config.eval.get("boxes") == "detections":
    detection_file(config)  # fail now, not after the first training epochs
  d = config.data
  data_dir = os.path.expanduser(d.data_dir)
  if jax.process_index() == 0:
    builders.build_dataset(d.dataset, data_dir, manual_dir=d.manual_dir, config=d.builder_config)
  _sync("dataset built")
  keypoint_set = KEYPOINT_SETS[d.keypoints]
  return Data(
      train_ref=pipeline.DatasetRef(d.dataset, data_dir, d.train_split, d.builder_config),
      eval_ref=pipeline.DatasetRef(d.dataset, data_dir, d.eval_split, d.builder_config),
      spec=sample_spec(config), keypoint_set=keypoint_set,
      num_keypoints=len(keypoint_set["names"]))


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def eval_table(config: ml_collections.ConfigDict, data: Data) -> topdown.InstanceTable:
  """Instances to evaluate: ground-truth boxes, or person detections (``eval.boxes``)."""
  if config.eval.boxes == "gt":
    return pipeline.instances(data.eval_ref, data.spec, data.num_keypoints)
  if config.eval.boxes != "detections":
    raise ValueError(f"eval.boxes must be 'gt' or 'detections', got {config.eval.boxes!r}")
  path = detection_file(config)
  image_ids = pipeline.image_index(data.eval_ref)
  detections = coco_eval.load_person_detections(path, image_thre=config.eval.image_thre,
                                                image_ids=set(image_ids))
  table, missing = topdown.detection_instances(
      detections, image_ids, data.num_keypoints, data.spec.method, data.spec.aspect_ratio,
      config.eval.image_thre, data.spec.padding)
  if missing:
    logger.warning("%d detections are on images missing from %s", missing, data.eval_ref)
  return table


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


# ----------------------------------------------------------------------------------------
# Model and initial weights
# ----------------------------------------------------------------------------------------


def model_config(config: ml_collections.ConfigDict):
  """The model config with the run's compute dtype."""
  cfg = models.model_config(config.model)
  return cfg.replace(dtype=config.train.dtype) if "dtype" in config.get("train", {}) else cfg


def initial_model(config: ml_collections.ConfigDict) -> nnx.Module:
  """The model with its initial weights as ``config.init`` says.

  * 'scratch': the original's random initialisation.
  * 'imagenet': an ImageNet classification checkpoint (``init.path``, ``.pth``) loaded
    partially (what fits; ``init.pretrained_layers`` as HRNet's ``PRETRAINED_LAYERS``),
    the rest freshly initialised -- as the originals start training.
  * 'checkpoint': every weight from ``init.path`` (a ``jaxpose.convert`` directory or a
    ``.pth`` of the same architecture).
  """
  cfg = model_config(config)
  kind, path = config.init.kind, os.path.expanduser(config.init.get("path", "") or "")
  seed = config.train.seed
  if kind == "scratch":
    return models.build_model(cfg, seed=seed)
  if kind not in ("imagenet", "checkpoint"):
    raise ValueError(f"init.kind must be 'scratch', 'imagenet' or 'checkpoint', got {kind!r}")
  if not path or not os.path.exists(path):
    raise FileNotFoundError(
        f"init.kind={kind!r} needs init.path, the file to start from; {path or '(unset)'} "
        "does not exist. Download the ImageNet-pretrained weights the original project uses "
        "(see the config's docstring) or start from random weights with "
        "--config.init.kind=scratch")
  if kind == "checkpoint":
    return load_weights(path, cfg)
  unwrapped = convert.load_state_dict(path)
  state_dict = unwrapped.state_dict
  if cfg.name == "mspn":
    from jaxpose.convert import mspn as mspn_family
    if not any(k.startswith("top.") for k in state_dict):  # torchvision names
      state_dict = mspn_family.torchvision_resnet_to_mspn(state_dict)
  model, _, report = convert.convert_state_dict(
      state_dict, cfg, source=path, allow_partial=True, seed=seed,
      select=convert.pretrained_layers_filter(config.init.pretrained_layers))
  logger.info("initialised %d tensors from %s; %d variables keep their fresh init, %d "
              "checkpoint tensors unused", len(report.assigned), path, len(report.missing),
              len(report.unexpected))
  return model


def load_weights(path: str, cfg) -> nnx.Module:
  """All weights of ``cfg``'s model from a converter directory or a ``.pth`` file."""
  if os.path.isdir(path):
    model, loaded = convert.load_converted(path, dtype=cfg.dtype)
    if loaded.replace(dtype=cfg.dtype) != cfg:
      raise ValueError(f"{path} holds a {loaded} model, the config asks for {cfg}")
    return model
  model, _, _ = convert.convert_file(path, cfg)
  return model


# ----------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------


def make_eval_step(eval_def: nnx.GraphDef, task, mesh: Mesh):
  """Jitted ``(params, batch_stats, uint8 images) -> test heatmaps`` (batch sharded)."""

  def step(params, batch_stats, images):
    model = nnx.merge(eval_def, params, batch_stats)
    return task.predict(lambda x: model(x), task.preprocess(images))

  return jax.jit(step, in_shardings=(state_lib.replicated(mesh), state_lib.replicated(mesh),
                                     state_lib.batch_sharding(mesh)),
                 out_shardings=state_lib.replicated(mesh))


def _global_from_full(array: np.ndarray, mesh: Mesh) -> jax.Array:
  """A batch every host holds in full -> one global array sharded over ``data``."""
  sharding = state_lib.batch_sharding(mesh)
  return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


def run_eval(config: ml_collections.ConfigDict, data: Data, eval_step, params, batch_stats,
             mesh: Mesh, task, workdir: str, step: int,
             writer: summary.SummaryWriter | None = None) -> dict[str, float]:
  """Predicts every evaluation instance and scores them (COCO AP or MPII PCKh)."""
  table = eval_table(config, data)
  batch_size = _round_up(config.eval.batch_size, mesh.size)
  preds, scores, meta, shown = [], [], [], []
  batches = pipeline.eval_batches(data.eval_ref, table, data.spec, batch_size=batch_size,
                                  num_workers=config.data.num_workers)
  for batch in tqdm(batches, total=math.ceil(len(table) / batch_size), desc="eval",
                    leave=False, disable=jax.process_index() != 0):
    heatmaps = np.asarray(eval_step(params, batch_stats, _global_from_full(batch["image"], mesh)))
    n = int(batch["mask"].sum())
    keypoints, maxvals = task.decode(heatmaps[:n], batch["center"][:n], batch["scale"][:n],
                                     data.spec.input_size)
    preds.append(keypoints)
    scores.append(maxvals)
    meta.append({k: batch[k][:n] for k in ("image_id", "annotation_id", "score", "center", "scale",
                                           "area")})
    if len(shown) < config.train.get("num_summary_images", 0):
      shown.append((batch["image"][0], heatmaps[0]))
  if not preds:
    raise ValueError(f"no evaluation instances in {data.eval_ref}")
  keypoints = np.concatenate(preds)
  keypoint_scores = np.concatenate(scores)
  cols = {k: np.concatenate([m[k] for m in meta]) for k in meta[0]}
  if writer is not None and shown:
    writer.images(step, "val/predictions", _skeleton_images(shown, data, config))
  if jax.process_index() != 0:
    return {}
  if config.data.dataset == "mpii":
    return _score_mpii(config, data, keypoints, cols)
  return _score_coco(config, data, keypoints, keypoint_scores, cols, workdir)


def _score_coco(config, data: Data, keypoints, keypoint_scores, cols, workdir) -> dict[str, float]:
  from jaxpose.data import coco_format
  source = pipeline.open_source(data.eval_ref)
  gt = coco_format.ground_truth_from_examples(
      (source[i] for i in range(len(source))), data.keypoint_set["names"],
      data.keypoint_set["skeleton"])
  predictions = coco_eval.KeypointPredictions(
      image_ids=cols["image_id"], keypoints=keypoints, keypoint_scores=keypoint_scores,
      box_scores=cols["score"], areas=coco_eval.crop_areas(cols["scale"]),
      centers=cols["center"], scales=cols["scale"])
  return dict(coco_eval.evaluate_coco(
      predictions, gt, workdir, image_set=data.eval_ref.split,
      in_vis_thre=config.eval.in_vis_thre, oks_thre=config.eval.oks_thre,
      soft_nms=config.eval.soft_nms))


def _score_mpii(config, data: Data, keypoints, cols) -> dict[str, float]:
  source = pipeline.open_source(data.eval_ref)
  joints, missing, heads, order = [], [], [], []
  for i in range(len(source)):
    people = source[i]["people"]
    if not np.all(people["has_eval_gt"]):
      raise ValueError(f"{data.eval_ref}: PCKh needs gt_valid.mat in the manual_dir when "
                       "building mpii (annot/gt_valid.mat)")
    joints.append(people["eval_joints"])
    missing.append(people["eval_joints_missing"])
    heads.append(people["head_box"])
    order.append(people["index"])
  order = np.concatenate(order)
  head_box = np.concatenate(heads)
  gt = mpii_eval.MPIIGroundTruth(
      joints=np.concatenate(joints)[np.argsort(order)],
      visible=~np.concatenate(missing)[np.argsort(order)],
      headboxes=head_box.reshape(-1, 2, 2)[np.argsort(order)])
  preds = keypoints[np.argsort(cols["annotation_id"])]
  return dict(mpii_eval.evaluate_pckh(preds, gt))


def _skeleton_images(shown, data: Data, config) -> np.ndarray:
  task_scale = 255.0 if config.task == "mspn" else 1.0
  out = []
  for image, heatmaps in shown:
    h, w = data.spec.input_size
    hh, hw = heatmaps.shape[:2]
    flat = heatmaps.reshape(-1, heatmaps.shape[-1])
    idx = flat.argmax(0)
    pts = np.stack([(idx % hw + 0.5) * w / hw, (idx // hw + 0.5) * h / hh], -1)
    rgb = image if config.data.color == "rgb" else image[..., ::-1]
    out.append(summary.draw_skeleton(rgb, pts, flat.max(0) / task_scale,
                                     data.keypoint_set["skeleton"],
                                     data.keypoint_set["flip_pairs"]))
  return np.stack(out)


def _round_up(n: int, multiple: int) -> int:
  return int(math.ceil(n / multiple) * multiple)


def metrics_table(config: ml_collections.ConfigDict, name_value: dict[str, float]) -> str:
  """The originals' results table, preceded by what was evaluated on which boxes."""
  boxes = ("ground-truth boxes" if config.eval.boxes == "gt"
           else f"detection boxes ({os.path.basename(config.eval.detection_file)})")
  header = (f"{config.model.name} on {config.data.dataset}/{config.data.eval_split}, {boxes}, "
            f"flip test {'on' if config.eval.flip_test else 'off'}")
  return header + "\n" + coco_eval.format_name_value_table(name_value, config.model.name)


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Schedule:
  steps_per_epoch: int
  total_steps: int


def schedule(config: ml_collections.ConfigDict, num_instances: int) -> Schedule:
  batch = config.train.global_batch_size
  steps_per_epoch = num_instances // batch
  if steps_per_epoch == 0:
    raise ValueError(f"global batch {batch} is larger than the {num_instances} training instances")
  total = config.train.get("total_steps") or config.train.num_epochs * steps_per_epoch
  return Schedule(steps_per_epoch, int(total))


def _check_batch(config: ml_collections.ConfigDict) -> int:
  batch, n_proc, n_dev = config.train.global_batch_size, jax.process_count(), jax.device_count()
  if batch % n_dev:
    raise ValueError(f"train.global_batch_size={batch} is not divisible by the {n_dev} devices")
  return batch // n_proc


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains and evaluates; returns the final evaluation metrics."""
  start = time.time()
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  _save_config(config, workdir)
  host_batch = _check_batch(config)
  data = setup_data(config)
  train_table = data.train_table()
  plan = schedule(config, len(train_table))
  mesh = state_lib.make_mesh()
  task = tasks.make_task(config, data.keypoint_set["flip_pairs"])

  model = initial_model(config)
  train_def, eval_def, params, batch_stats = state_lib.split_model(model)
  tx, lr_schedule = optim.make_optimizer(config.optim, plan.steps_per_epoch)
  state = state_lib.init_train_state(params, batch_stats, tx, config.train.seed)
  state = jax.device_put(state, state_lib.replicated(mesh))
  train_step = state_lib.jit_train_step(
      state_lib.make_train_step(train_def, task.loss, tx, task.preprocess), mesh)
  eval_step = make_eval_step(eval_def, task, mesh)

  checkpointer = ckpt_lib.TrainCheckpointer(
      workdir, keep=config.train.keep_checkpoints, async_save=config.train.async_checkpoints,
      best_metric=config.eval.metric)
  train_iter = pipeline.train_iterator(
      data.train_ref, train_table, data.spec, batch_size=host_batch, seed=config.train.seed,
      num_workers=config.data.num_workers, process_index=jax.process_index(),
      process_count=jax.process_count())
  if checkpointer.latest_step() is not None:
    state, data_state, meta = checkpointer.restore(state)
    train_iter.set_state(data_state)
    logger.info("resumed from step %d (%s)", int(state.step), meta)
  writer = summary.SummaryWriter(os.path.join(workdir, "tensorboard"))
  step = int(state.step)
  metrics: dict[str, float] = {}
  log_every = config.train.log_every_steps
  progress = tqdm(total=plan.total_steps, initial=step, desc="train", unit="step",
                  disable=jax.process_index() != 0, dynamic_ncols=True)
  last_log, last_time = step, time.time()
  try:
    while step < plan.total_steps:
      batch = state_lib.global_batch(next(train_iter), mesh)
      state, step_metrics = train_step(state, batch)
      step += 1
      progress.update(1)
      epoch_done = step % plan.steps_per_epoch == 0
      if step % log_every == 0 or step == plan.total_steps or epoch_done:
        host = jax.device_get({**step_metrics, "first_bad_step": state.first_bad_step})
        _stop_if_not_finite(host, state, checkpointer, train_iter, step, plan)
        now = time.time()
        images_per_s = (step - last_log) * config.train.global_batch_size / max(now - last_time, 1e-9)
        last_log, last_time = step, now
        scalars = {f"train/{k}": float(v) for k, v in host.items() if k != "first_bad_step"}
        scalars.update({"train/lr": float(lr_schedule(step - 1)),
                        "train/images_per_s": images_per_s})
        writer.scalars(step, scalars)
        writer.flush()
        progress.set_postfix(loss=f"{scalars['train/loss']:.3g}", lr=f"{scalars['train/lr']:.2g}")
      epoch = step // plan.steps_per_epoch
      if step % config.train.checkpoint_every_steps == 0:
        checkpointer.save(step, state, train_iter.get_state(), {"epoch": epoch})
      if (epoch_done and epoch % config.train.eval_every_epochs == 0) or step == plan.total_steps:
        metrics = run_eval(config, data, eval_step, state.params, state.batch_stats, mesh, task,
                           workdir, step, writer)
        if metrics:
          writer.scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
          tqdm.write(metrics_table(config, metrics))
        checkpointer.save(step, state, train_iter.get_state(), {"epoch": epoch, "metrics": metrics})
        checkpointer.maybe_save_best(step, state, train_iter.get_state(), {"epoch": epoch}, metrics)
        writer.flush()
    if not metrics:  # resumed a run that had already finished training
      metrics = run_eval(config, data, eval_step, state.params, state.batch_stats, mesh, task,
                         workdir, step, writer)
      if metrics:
        tqdm.write(metrics_table(config, metrics))
  finally:
    progress.close()
    checkpointer.wait()
    checkpointer.close()
    writer.close()
  wall = time.time() - start
  if jax.process_index() == 0:
    _write_json(os.path.join(workdir, "final_metrics.json"),
                {"step": step, "metrics": metrics, "wall_time_s": wall})
    print(f"finished {step} steps in {wall / 60:.1f} min (wall time); workdir {workdir}")
  return metrics


def _stop_if_not_finite(host: dict, state, checkpointer, train_iter, step, plan) -> None:
  bad = int(host["first_bad_step"])
  if bad < 0:
    return
  good = int(state.step)
  checkpointer.save(good, state, train_iter.get_state(), {"epoch": good // plan.steps_per_epoch,
                                                         "stopped": f"non-finite loss at step {bad}"},
                    force=True)
  checkpointer.wait()
  raise NonFiniteLossError(
      f"the loss became NaN or inf at step {bad + 1} (update {bad}); stopped at step {step}. "
      f"The last good state (step {good}) is saved in {checkpointer.latest.directory}")


def evaluate(config: ml_collections.ConfigDict, workdir: str, checkpoint: str | None = None
             ) -> dict[str, float]:
  """Evaluates a checkpoint: ``checkpoint`` is None (the latest in ``workdir``), 'best', a
  training step number, a ``jaxpose.convert`` directory or an original ``.pth`` file."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  data = setup_data(config)
  mesh = state_lib.make_mesh()
  task = tasks.make_task(config, data.keypoint_set["flip_pairs"])
  cfg = model_config(config)
  if checkpoint and (os.path.isdir(checkpoint) or os.path.isfile(checkpoint)):
    model = load_weights(os.path.expanduser(checkpoint), cfg)
    _, eval_def, params, batch_stats = state_lib.split_model(model)
  else:
    model = models.build_model(cfg, seed=0)
    _, eval_def, params, batch_stats = state_lib.split_model(model)
    tx, _ = optim.make_optimizer(config.optim, 1)
    target = state_lib.init_train_state(params, batch_stats, tx, 0)
    target = jax.device_put(target, state_lib.replicated(mesh))
    checkpointer = ckpt_lib.TrainCheckpointer(workdir, best_metric=config.eval.metric)
    step = None if checkpoint in (None, "best", "latest") else int(checkpoint)
    restored, _, _ = checkpointer.restore(target, step, best=checkpoint == "best")
    checkpointer.close()
    params, batch_stats = restored.params, restored.batch_stats
  eval_step = make_eval_step(eval_def, task, mesh)
  metrics = run_eval(config, data, eval_step, params, batch_stats, mesh, task, workdir, 0)
  if metrics:
    print(metrics_table(config, metrics))
    _write_json(os.path.join(workdir, "eval_metrics.json"), metrics)
  return metrics


def _save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    fileio.atomic_write(os.path.join(workdir, "config.json"),
                        lambda f: f.write(config.to_json_best_effort(indent=1)))


def _write_json(path: str, obj: Any) -> None:
  fileio.write_json(path, obj, indent=1, default=float)
