"""VideoPose3D (Pavllo et al., CVPR'19): supervised and semi-supervised temporal lifting.

``VideoPose3DTask`` (``config.task = 'videopose3d'``) adds to ``lifting.LiftingTask``
what facebookresearch/VideoPose3D ``run.py`` does:

* training windows of ``receptive_field + stride - 1`` frames (``-s``, 1 by default),
  flipped copies listed too (train-time augmentation), the loss MPJPE on root-relative
  poses. With ``stride == 1`` and dilated kernels the model runs as
  ``TemporalModelOptimized1f`` (``VideoPose3D.single_frame``), else the dilated model
  over the chunk (all its frames count, the edge-padded ones too, as ``run.py``);
* the optimizer and its decays come from the config (Adam with PyTorch's AMSGrad, lr x0.95
  per epoch); the BatchNorm momentum (every BatchNorm of the networks) decays
  exponentially per epoch from 0.1 to 0.001 (``LiftingTask.step_hparams``);
* evaluation on whole sequences (``UnchunkedGenerator``: one sequence per model call,
  edge-padded by the receptive field, ``eval.length_multiple`` rounding the length to
  bound the compilations) with the flip test (``lifting.lift_windows``);
* semi-supervised training (``data.subjects_unlabeled`` non-empty, ``run.py -sun``): a
  second network of the same architecture predicts the root trajectory (one joint),
  trained with the depth-weighted MPJPE ``mean(|traj - gt| / gt_z)``; every batch pairs
  the labeled windows with as many windows of the unlabeled subjects (their own shuffling
  seed, ``data.unlabeled_seed``, as ``run.py``'s 4321). After ``loss.warmup`` epochs the
  pose network runs on both halves together (BatchNorm statistics over both), and the
  unlabeled half adds the 2D reprojection error of pose + trajectory through the camera
  intrinsics (``loss.projection``; distortion-free with ``loss.linear_projection``) and
  the bone-length term (``loss.bone_length``: mean absolute difference of the mean bone
  lengths of the labeled and unlabeled predictions). During warm-up only the supervised
  pose and trajectory losses run, on the labeled half alone: two training phases
  (``step_phase``: 'warmup', 'semi'), each compiled once.

Difference from ``run.py``: the reprojection target of a causal model is the 2D pose of
the predicted frame (``run.py`` slices ``[pad:-pad]`` of the window, which for causal
windows is ``pad`` frames before it).
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from tqdm import tqdm

from jaxpose import models
from jaxpose.data import keypoints as kp
from jaxpose.data import sequences
from jaxpose.evaluation import h36m as h36m_eval
from jaxpose.geometry import camera as camera_lib
from jaxpose.models import videopose3d as vp3d
from jaxpose.train import weights
from jaxpose.train.tasks import base, lifting

# run.py's semi-supervised stream uses its own generator seed.
UNLABELED_SEED = 4321


class PoseAndTrajectory(nnx.Module):
  """The two networks of semi-supervised VideoPose3D (``model_pos``, ``model_traj``)."""

  def __init__(self, pos: vp3d.VideoPose3D, traj: vp3d.VideoPose3D):
    self.pos = pos
    self.traj = traj


def pose_network(model: nnx.Module) -> vp3d.VideoPose3D:
  """The pose network of a task model (the model itself when supervised)."""
  return model.pos if isinstance(model, PoseAndTrajectory) else model


class VideoPose3DTask(lifting.LiftingTask):
  """VideoPose3D (see the module docstring)."""
  model_name = "videopose3d"

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    d = config.data
    self.semi = bool(self.unlabeled_subjects)
    cfg = self.model_config
    # run.py: TemporalModelOptimized1f when stride == 1, not dense, optimizations enabled.
    self.single_frame = int(d.stride) == 1 and not cfg.dense
    if self.semi:
      if cfg.num_joints_out != kp.H36M_NUM_JOINTS:
        raise ValueError("semi-supervised training needs the 17 Human3.6M joints (its bone "
                         f"length term uses their skeleton), the model has {cfg.num_joints_out}")
      overlap = set(self.unlabeled_subjects) & set(
          lifting.subject_list(d.subjects_train) or ())
      if overlap:
        raise ValueError(f"subjects {sorted(overlap)} are both labeled (data.subjects_train) "
                         "and unlabeled (data.subjects_unlabeled)")

  @property
  def input_joints(self) -> int:
    return self.model_config.num_joints_in

  @property
  def output_joints(self) -> int:
    return self.model_config.num_joints_out

  # -- model --------------------------------------------------------------------------------

  def trajectory_config(self) -> vp3d.VideoPose3DConfig:
    """``model_traj``: the pose network's architecture with one output joint."""
    return self.model_config.replace(num_joints_out=1)

  def build_model(self) -> nnx.Module:
    pos = models.build_model(self.model_config, seed=0)
    if not self.semi:
      return pos
    return PoseAndTrajectory(pos, models.build_model(self.trajectory_config(), seed=1))

  def init_model(self) -> nnx.Module:
    """``config.init`` for the pose network; a fresh trajectory network when semi."""
    pos = weights.initial_model(self.config)
    if not self.semi:
      return pos
    seed = self.config.train.seed + 1
    return PoseAndTrajectory(pos, models.build_model(self.trajectory_config(), seed=seed))

  # -- data -----------------------------------------------------------------------------------

  def train_data(self, *, global_batch_size: int, process_index: int, process_count: int
                 ) -> base.TrainData:
    """Batches of ``keypoints_2d`` ``[B, rf + stride - 1, K, 2]`` and ``positions_3d``
    ``[B, stride, J, 3]``; semi-supervised: ``{"labeled": {... , "trajectory"},
    "unlabeled": {"keypoints_2d", "camera"}}`` with ``B`` windows in each."""
    local = global_batch_size // process_count
    labeled, num = self.labeled_iterator(local, process_index, process_count)
    if not self.semi:
      return base.TrainData(lifting.KeyedIterator(labeled, ("keypoints_2d", "positions_3d")),
                            num)
    d = self.config.data
    unlabeled = self.load(self.train_ref, d.subjects_unlabeled, with_3d=False)
    stream = sequences.train_iterator(
        unlabeled, self.window_spec(int(d.stride)), batch_size=local,
        seed=int(d.get("unlabeled_seed", UNLABELED_SEED)), augment=bool(d.augment),
        num_workers=int(d.num_workers), process_index=process_index,
        process_count=process_count)
    return base.TrainData(lifting.PairedIterator(
        lifting.KeyedIterator(labeled, ("keypoints_2d", "positions_3d", "trajectory")),
        lifting.KeyedIterator(stream, ("keypoints_2d", "camera"))), num)

  # -- the train step (traced) ------------------------------------------------------------

  def step_hparams(self, step: jax.Array, schedule: base.Schedule) -> dict[str, jax.Array]:
    """``LiftingTask``'s, plus ``semi`` (1 from epoch ``loss.warmup`` on; logged, the
    computation follows ``step_phase``) when semi-supervised."""
    hparams = super().step_hparams(step, schedule)
    if self.semi:
      hparams["semi"] = (hparams["epoch"] >= self.config.loss.warmup).astype(jnp.float32)
    return hparams

  def forward(self, net: vp3d.VideoPose3D, keypoints: jax.Array, key: jax.Array) -> jax.Array:
    """*Traced.* Training-mode poses ``[B, stride, J, 3]`` of windows ``[B, rf + stride - 1,
    K, 2]`` (``single_frame`` when the original uses ``TemporalModelOptimized1f``)."""
    rngs = nnx.Rngs(dropout=key)
    if self.single_frame:
      return net.single_frame(keypoints, rngs=rngs)["poses"]
    return net(keypoints, rngs=rngs)["poses"]

  def step_phase(self, step: int, schedule: base.Schedule) -> str | None:
    """Semi-supervised: 'warmup' for the first ``loss.warmup`` epochs, then 'semi'."""
    if not self.semi:
      return None
    return "semi" if step // schedule.steps_per_epoch >= self.config.loss.warmup else "warmup"

  def loss(self, model: nnx.Module, batch: base.Batch, rng: jax.Array,
           hparams: Mapping[str, jax.Array], phase: str | None = None
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    if not self.semi:
      lifting.set_bn_momentum(model.batch_norms(), hparams["bn_momentum"])
      predicted = self.forward(model, batch["keypoints_2d"], rng)
      loss = h36m_eval.mpjpe(predicted, batch["positions_3d"])
      return loss, {"loss_3d": loss}
    if phase not in ("warmup", "semi"):
      raise ValueError(f"semi-supervised VideoPose3D trains in phases 'warmup' and 'semi' "
                       f"(step_phase), got {phase!r}")
    return self.semi_loss(model, batch, rng, hparams["bn_momentum"], semi=phase == "semi")

  def semi_loss(self, model: PoseAndTrajectory, batch: base.Batch, rng: jax.Array,
                momentum: jax.Array, *, semi: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """*Traced.* ``run.py``'s semi-supervised step; ``semi=False``: its warm-up epochs."""
    lifting.set_bn_momentum(model.pos.batch_norms() + model.traj.batch_norms(), momentum)
    labeled, unlabeled = batch["labeled"], batch["unlabeled"]
    n = labeled["keypoints_2d"].shape[0]
    inputs = labeled["keypoints_2d"]
    if semi:
      inputs = jnp.concatenate([inputs, unlabeled["keypoints_2d"]], axis=0)
    pos_key, traj_key = jax.random.split(rng)
    poses = self.forward(model.pos, inputs, pos_key)
    traj = self.forward(model.traj, inputs, traj_key)
    loss_3d = h36m_eval.mpjpe(poses[:n], labeled["positions_3d"])
    gt_traj = labeled["trajectory"]
    loss_traj = h36m_eval.weighted_mpjpe(traj[:n], gt_traj, 1.0 / gt_traj[..., 2])
    zero = jnp.zeros((), loss_3d.dtype)
    loss_2d, bone = zero, zero
    total = loss_3d + loss_traj
    if semi:
      options = self.config.loss
      project = (camera_lib.project_to_2d_linear if options.linear_projection
                 else camera_lib.project_to_2d)
      length = poses.shape[1]
      first = (self.receptive_field - 1) // 2 + (self.receptive_field - 1) // 2 * self.causal
      target_2d = unlabeled["keypoints_2d"][:, first:first + length]
      reprojected = project(poses[n:] + traj[n:], unlabeled["camera"])
      loss_2d = h36m_eval.mpjpe(reprojected, target_2d)
      if options.projection:
        total = total + loss_2d
      if options.bone_length:
        parents = np.asarray(kp.H36M_PARENTS[1:])
        bones = jnp.linalg.norm(poses[:, :, 1:] - poses[:, :, parents], axis=-1).mean(axis=1)
        bone = jnp.mean(jnp.abs(bones[:n].mean(axis=0) - bones[n:].mean(axis=0)))
        total = total + bone
    return total, {"loss_3d": loss_3d, "loss_traj": loss_traj, "loss_2d_unlabeled": loss_2d,
                   "bone_length": bone}

  # -- evaluation ---------------------------------------------------------------------------

  def predict(self, model: nnx.Module, inputs: base.Batch) -> jax.Array:
    """*Traced.* ``{"keypoints_2d": [B, T + rf - 1, K, 2]}`` (edge-padded sequences) ->
    ``[B, T, J, 3]`` poses of the pose network, with the flip test (``eval.flip_test``)."""
    keypoint_flip, joint_flip = (self.flip_permutations() if self.config.eval.flip_test
                                 else (None, None))
    return lifting.lift_windows(pose_network(model), inputs["keypoints_2d"], keypoint_flip,
                                joint_flip)

  def predict_windows(self, ctx: base.EvalContext, seqs: sequences.PoseSequences):
    """Every sequence whole (``ctx.predict_replicated``); each process keeps the rows of
    sequences ``i`` with ``i % process_count == process_index``."""
    spec = self.window_spec(1)
    multiple = int(self.config.eval.get("length_multiple", 1) or 1)
    parts = []
    items = sequences.eval_sequences(seqs, spec, flip_test=False, length_multiple=multiple)
    for item in tqdm(items, total=len(seqs), desc="eval", leave=False,
                     disable=ctx.process_index != 0):
      poses = ctx.predict_replicated({"keypoints_2d": item["keypoints_2d"]})
      if item["sequence"] % ctx.process_count == ctx.process_index:
        num = item["num_frames"]
        parts.append((np.full(num, item["sequence"]), np.arange(num), poses[0, :num]))
    return parts

