"""Pose3D-RIE (Shan et al., ACM MM'21): the lifter trained in three stages.

``RIETask`` (``config.task = 'rie'``) adds to ``lifting.LiftingTask`` what
paTRICK-swk/Pose3D-RIE ``run.py`` does differently from VideoPose3D, which is why it is
its own task rather than VideoPose3D's with another model: the model predicts one frame
per receptive-field window (training and evaluation both run on windows, evaluation in
fixed-size batches as ``Evaluate_Generator``), the optimizer is AdamW (AMSGrad, PyTorch's
default weight decay 0.01) over the trainable parameters only, only the temporal
encoders' BatchNorms decay their momentum (``RIEModel.set_bn_momentum``), there is no
semi-supervised branch, and training runs in stages (``config.model.stage``,
``jaxpose.models.rie.RIE_STAGES``; README of Pose3D-RIE):

1. ``--stage 1``: encoders and decoders from scratch, all trained (no FuseBlocks).
2. ``--stage 2 -p stage_1_best.bin``: the five temporal encoders and ``GlobalInfo`` are
   loaded from stage 1 (``init.kind='checkpoint'``, ``init.path`` = the stage-1 run: its
   best checkpoint) and frozen -- their parameters only: their BatchNorm statistics keep
   updating and their dropout stays on, as with ``requires_grad=False``; the FuseBlocks
   and the wider decoders start fresh and train. Without ``-p`` (``init.kind='scratch'``)
   ``run.py`` freezes nothing, and neither does this task.
3. ``--stage 3 -ft stage_2_best.bin -lr 0.0005``: everything loaded from stage 2 and
   trained, with a fresh optimizer and momentum schedule.

Each stage is its own run (workdir); the lr decays x0.95 per epoch from the stage's rate.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import jax
import ml_collections
from flax import nnx
from tqdm import tqdm

from jaxpose import checkpoint as ckpt_lib
from jaxpose import convert, models
from jaxpose.data import sequences
from jaxpose.evaluation import h36m as h36m_eval
from jaxpose.models import rie as rie_model
from jaxpose.train import optim, weights
from jaxpose.train.tasks import base, lifting

logger = logging.getLogger(__name__)


def load_rie(path: str, cfg: rie_model.RIEConfig) -> rie_model.RIEModel:
  """Every weight of an RIE model of ``cfg`` from a jaxpose run, a ``jaxpose.convert``
  directory or an original ``.bin``; stages 2 and 3 (one architecture) are
  interchangeable, so a stage-2 checkpoint loads into a stage-3 model.

  Raises:
    ValueError: the checkpoint holds another architecture (e.g. a stage-1 model for a
      stage-2/3 config, which has no FuseBlocks).
  """
  path = os.path.expanduser(path)
  if os.path.isdir(path) and ckpt_lib.training_checkpoint(path) is None:
    loaded, found = convert.load_converted(path, dtype=cfg.dtype)
    if found.stage in (2, 3) and cfg.stage in (2, 3):
      found = found.replace(stage=cfg.stage)
    if found != cfg:
      raise ValueError(f"{path} holds a {found} model, the config asks for {cfg}")
    model = models.build_model(cfg, seed=0)
    ckpt_lib.set_model_variables(model, ckpt_lib.model_variables(loaded))
    return model
  return weights.load_weights(path, cfg)


class RIETask(lifting.LiftingTask):
  """Pose3D-RIE (see the module docstring)."""
  model_name = "rie"

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    if int(config.data.stride) != 1:
      raise ValueError(f"RIE predicts one frame per window: data.stride must be 1, got "
                       f"{config.data.stride}")
    if self.unlabeled_subjects:
      raise ValueError("Pose3D-RIE has no semi-supervised training: leave "
                       "data.subjects_unlabeled empty")
    self.stage = int(self.model_config.stage)
    # Stage 2 freezes the encoders it loads from stage 1 (run.py's -p).
    self.frozen = (rie_model.RIE_STAGES[self.stage]["frozen"]
                   if config.init.kind == "checkpoint" else ())

  @property
  def input_joints(self) -> int:
    return rie_model.RIE_NUM_JOINTS

  @property
  def output_joints(self) -> int:
    return rie_model.RIE_NUM_JOINTS

  # -- model ------------------------------------------------------------------------------

  def init_model(self) -> nnx.Module:
    """Stage 1 or ``init.kind='scratch'``: fresh. Stage 2: the encoders of the stage-1
    checkpoint ``init.path``, the rest fresh. Stage 3: everything of ``init.path``."""
    config, cfg = self.config, self.model_config
    if config.init.kind != "checkpoint":
      if self.stage > 1:
        logger.warning("RIE stage %d from scratch (init.kind=%r): nothing is loaded or frozen, "
                       "as run.py without -p/-ft", self.stage, config.init.kind)
      return weights.initial_model(config)
    path = os.path.expanduser(config.init.get("path") or "")
    if not path or not os.path.exists(path):
      raise FileNotFoundError(
          f"RIE stage {self.stage} starts from the previous stage's checkpoint: set "
          f"init.path to that run's workdir (its best checkpoint), a converted directory or a "
          f"stage_{self.stage - 1}_epoch_N.bin; {path or '(unset)'} does not exist")
    if self.stage != 2:
      return load_rie(path, cfg)
    previous = load_rie(path, cfg.replace(stage=1))
    model = models.build_model(cfg, seed=config.train.seed)
    loaded, fresh = ckpt_lib.model_variables(previous), ckpt_lib.model_variables(model)
    for collection in fresh:
      for name in rie_model.RIE_STAGES[2]["init_from_previous"]:
        fresh[collection][name] = loaded[collection][name]
    ckpt_lib.set_model_variables(model, fresh)
    logger.info("RIE stage 2: encoders %s loaded from %s and frozen",
                ", ".join(rie_model.RIE_STAGES[2]["init_from_previous"]), path)
    return model

  def load_model(self, path: str) -> nnx.Module:
    if self.config.eval.get("original_args") and os.path.isfile(path):
      return self.load_pose_model(path)
    return load_rie(path, self.model_config)

  def optimizer(self, model: nnx.Module, schedule: base.Schedule):
    """``config.optim`` for the trainable parameters; the frozen encoders get none."""
    if not self.frozen:
      return super().optimizer(model, schedule)
    frozen = nnx.Any(*(nnx.PathContains(name) for name in self.frozen))
    labels = optim.param_labels(model, {"frozen": frozen}, "trained")
    return optim.make_partitioned_optimizer({"trained": self.config.optim, "frozen": None},
                                            labels, schedule.steps_per_epoch)

  # -- the train step (traced) ------------------------------------------------------------

  def loss(self, model: nnx.Module, batch: base.Batch, rng: jax.Array,
           hparams: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MPJPE of the windows' centre (or last, causal) frame; momentum decay of the
    temporal encoders' BatchNorms."""
    norms = [bn for encoder in model.encoders() for bn in encoder.batch_norms()]
    lifting.set_bn_momentum(norms, hparams["bn_momentum"])
    predicted = model(batch["keypoints_2d"], rngs=nnx.Rngs(dropout=rng))["poses"]
    loss = h36m_eval.mpjpe(predicted, batch["positions_3d"])
    return loss, {"loss_3d": loss}

  def train_data(self, *, global_batch_size: int, process_index: int, process_count: int
                 ) -> base.TrainData:
    """Batches of ``keypoints_2d`` ``[B, rf, 17, 2]`` and ``positions_3d`` ``[B, 1, 17, 3]``."""
    labeled, num = self.labeled_iterator(global_batch_size // process_count, process_index,
                                         process_count)
    return base.TrainData(lifting.KeyedIterator(labeled, ("keypoints_2d", "positions_3d")), num)

  # -- evaluation -------------------------------------------------------------------------

  def predict(self, model: nnx.Module, inputs: base.Batch) -> jax.Array:
    """*Traced.* ``{"keypoints_2d": [B, rf, 17, 2]}`` -> ``[B, 1, 17, 3]`` with the flip
    test (``eval.flip_test``)."""
    keypoint_flip, joint_flip = (self.flip_permutations() if self.config.eval.flip_test
                                 else (None, None))
    return lifting.lift_windows(model, inputs["keypoints_2d"], keypoint_flip, joint_flip)

  def predict_windows(self, ctx: base.EvalContext, seqs: sequences.PoseSequences):
    """Every frame's window, ``eval.batch_size`` windows per global batch (sharded)."""
    batch = ctx.global_batch_size(int(self.config.eval.batch_size))
    local = ctx.local_batch_size(batch)
    batches = sequences.eval_batches(seqs, self.window_spec(1), batch_size=local,
                                     process_index=ctx.process_index,
                                     process_count=ctx.process_count)
    parts = []
    for item in tqdm(batches, total=-(-seqs.num_frames // batch), desc="eval", leave=False,
                     disable=ctx.process_index != 0):
      poses = ctx.predict({"keypoints_2d": item["keypoints_2d"]})
      real = item["mask"]
      parts.append((item["sequence"][real], item["start"][real], poses[real, 0]))
    return parts
