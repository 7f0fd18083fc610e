"""Pose3D-RIE temporal lifter (``rie``).

Shan et al., "Improving Robustness and Accuracy via Relative Information Encoding in 3D
Human Pose Estimation" (ACM MM'21); paTRICK-swk/Pose3D-RIE ``common/model.py``
(``RIEModel``).

RIE splits the 17 Human3.6M joints into five groups (torso, left/right arm, left/right
leg). Each group is encoded by its own temporal convolution stack (``TemporalBlock`` =
``jaxpose.models.temporal.TemporalConvNet`` with LeakyReLU 0.2) from three encodings of
its joints: the coordinates, the coordinates minus the root joint of the same frame
(positional) and minus the same joint in the centre frame (temporal). A fully-connected
``GlobalInfo`` block encodes the whole centre-frame pose. From stage 2 on, one
``FuseBlocks[g]`` per group mixes the other four groups' features. Per-group
``Integration_*`` blocks decode ``[local, (fused,) global]`` into the group's 3D joints,
reassembled in the original joint order.

Module names mirror the PyTorch ones (``LocalLayer_Torso/shrink``,
``FuseBlocks/2/layers/0/w1``), so checkpoints convert without renames.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpose.models import layers
from jaxpose.models.base import ModelConfig
from jaxpose.models.temporal import TemporalConvNet, apply_dropout

Array = jax.Array


RIE_NUM_JOINTS = 17
RIE_IN_FEATURES = 2
# (module suffix, Human3.6M joints) in the order of the original's feature tensor; the
# torso lists the root first. Each group's output holds its joints in this order.
RIE_GROUPS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("Torso", (0, 7, 8, 9, 10)),
    ("LArm", (14, 15, 16)),
    ("RArm", (11, 12, 13)),
    ("LLeg", (1, 2, 3)),
    ("RLeg", (4, 5, 6)),
)
_RIE_GROUP_ORDER = np.concatenate([j for _, j in RIE_GROUPS])
# Group-concatenated joints -> joint order. int32 whether or not float64 is on: with an
# int64 index, jnp.take traced in one mode and then under the other (jax.enable_x64) in
# one process failed to lower (MLIR verifier: operand tensor<17xi64> vs tensor<17xi32>).
_RIE_UNGROUP = np.argsort(_RIE_GROUP_ORDER).astype(np.int32)
RIE_GLOBAL_BLOCKS = 2  # residual linear blocks of GlobalInfo (FuseBlocks/Integration: 1)


class ResidualLinear(nnx.Module):
  """RIE's ``Linear``: ``x + drop(act(bn2(w2(drop(act(bn1(w1(x))))))))``."""

  def __init__(self, size: int, dropout: float, *, dtype=None, rngs: nnx.Rngs):
    self.w1 = layers.Linear(size, size, dtype=dtype, rngs=rngs)
    self.batch_norm1 = layers.BatchNorm(size, dtype=dtype)
    self.w2 = layers.Linear(size, size, dtype=dtype, rngs=rngs)
    self.batch_norm2 = layers.BatchNorm(size, dtype=dtype)
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x: Array, rngs: nnx.Rngs | None = None) -> Array:
    act = lambda v: jax.nn.leaky_relu(v, 0.2)
    y = apply_dropout(self.dropout, act(self.batch_norm1(self.w1(x))), rngs, "RIE")
    y = apply_dropout(self.dropout, act(self.batch_norm2(self.w2(y))), rngs, "RIE")
    return x + y


class FCBlock(nnx.Module):
  """RIE's ``FCBlock``: fc_1 + BN + LeakyReLU + dropout, residual blocks, fc_2."""

  def __init__(self, in_features: int, out_features: int, size: int, num_blocks: int,
               dropout: float, *, dtype=None, rngs: nnx.Rngs):
    self.fc_1 = layers.Linear(in_features, size, dtype=dtype, rngs=rngs)
    self.bn_1 = layers.BatchNorm(size, dtype=dtype)
    self.layers = nnx.List([ResidualLinear(size, dropout, dtype=dtype, rngs=rngs)
                            for _ in range(num_blocks)])
    self.fc_2 = layers.Linear(size, out_features, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x: Array, rngs: nnx.Rngs | None = None) -> Array:
    """``[N, in_features] -> [N, out_features]``."""
    x = apply_dropout(self.dropout, jax.nn.leaky_relu(self.bn_1(self.fc_1(x)), 0.2), rngs, "RIE")
    for block in self.layers:
      x = block(x, rngs)
    return self.fc_2(x)


@dataclasses.dataclass(frozen=True)
class RIEConfig(ModelConfig):
  """Pose3D-RIE ``RIEModel`` hyper-parameters (``run.py`` arguments in brackets).

  RIE is hard-wired to 17 Human3.6M joints with (x, y) inputs and its five joint groups.

  Attributes:
    filter_widths: odd temporal widths of every group encoder (``-arc``, 3,3,3,3,3).
    causal: causal temporal convolutions (``--causal``). Not visible in the weights.
      (The original crashes with causal + Optimize1f because its strided residual crop
      reuses the dilated shifts; here the strided path crops consistently.)
    dropout: dropout of the temporal encoders (``-drop``, 0.2). Not in the weights.
    latent_features: dimension of local, global and fused features (``-lfd``).
    channels: temporal convolution channels (``-ch``, 256).
    dense: undilated wide kernels (``--dense``); requires ``optimize_1f=False``.
    optimize_1f: run the encoders with strided convolutions (``Optimize1f=True``, the
      original's evaluation model) instead of dilated ones. The weights are the same and,
      on the one receptive field RIE accepts, so is the result.
    stage: multi-stage optimisation stage (``--stage``). Stage 1 has no ``FuseBlocks``
      and decodes ``[local, global]``; stages 2 and 3 share one architecture (with
      ``FuseBlocks``, decoding ``[local, fused, global]``) and differ only in what trains
      (``rie_trainable``). Stage 2 and 3 checkpoints are indistinguishable; the converter
      reads them as stage 3.
    linear_size: width of the fully-connected blocks (1024, fixed in the original).
    linear_dropout: dropout of the fully-connected blocks (0.25, fixed in the original).
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.
  """
  name: ClassVar[str] = "rie"
  filter_widths: tuple[int, ...] = (3, 3, 3, 3, 3)
  causal: bool = False
  dropout: float = 0.2
  latent_features: int = 256
  channels: int = 256
  dense: bool = False
  optimize_1f: bool = True
  stage: int = 3
  linear_size: int = 1024
  linear_dropout: float = 0.25
  dtype: str = "float32"

  @classmethod
  def gt(cls, **kw) -> "RIEConfig":
    """``gt_pretrained.bin`` (ground-truth 2D keypoints): stage 3, latent dim 256."""
    return cls(**{"latent_features": 256, **kw})

  @classmethod
  def cpn(cls, **kw) -> "RIEConfig":
    """``cpn_pretrained.bin`` (CPN detections): stage 3, latent dim 512."""
    return cls(**{"latent_features": 512, **kw})

  @classmethod
  def tiny(cls, **kw) -> "RIEConfig":
    """Widths 3,3 (9 frames), 16 channels, latent 8, FC width 32: for tests."""
    return cls(**{"filter_widths": (3, 3), "channels": 16, "latent_features": 8,
                  "linear_size": 32, **kw})


# What each stage trains (README of Pose3D-RIE, run.py ``--pretrain`` / ``--finetune``).
RIE_ENCODERS = tuple(f"LocalLayer_{g}" for g, _ in RIE_GROUPS) + ("GlobalInfo",)
RIE_DECODERS = tuple(f"Integration_{g}" for g, _ in RIE_GROUPS)
RIE_STAGES: dict[int, dict[str, tuple[str, ...]]] = {
    # Stage 1: encoders + decoders from scratch (no FuseBlocks exist).
    1: {"init_from_previous": (), "trainable": RIE_ENCODERS + RIE_DECODERS, "frozen": ()},
    # Stage 2 (``-p stage_1.bin``): encoders loaded from stage 1 and frozen; FuseBlocks and
    # the (wider) decoders are new and trained.
    2: {"init_from_previous": RIE_ENCODERS, "trainable": ("FuseBlocks",) + RIE_DECODERS,
        "frozen": RIE_ENCODERS},
    # Stage 3 (``-ft stage_2.bin -lr 0.0005``): everything loaded from stage 2, all trained.
    3: {"init_from_previous": RIE_ENCODERS + ("FuseBlocks",) + RIE_DECODERS,
        "trainable": RIE_ENCODERS + ("FuseBlocks",) + RIE_DECODERS, "frozen": ()},
}


def rie_trainable(stage: int) -> nnx.filterlib.Filter:
  """NNX filter of the parameters RIE's multi-stage optimisation trains at ``stage``.

  Use it for the optimiser (``nnx.Optimizer(model, tx, wrt=rie_trainable(stage))``) and
  for gradients (``nnx.DiffState(0, rie_trainable(stage))``). As in the original (which
  sets ``requires_grad=False`` on the first 167 parameters, i.e. the five temporal
  encoders and ``GlobalInfo`` of the default 5-width model), freezing covers parameters
  only: in train mode the frozen encoders' BatchNorm statistics keep updating and their
  dropout stays active. See ``RIE_STAGES`` for what each stage loads from the previous one.
  """
  if stage not in RIE_STAGES:
    raise ValueError(f"RIE stage must be one of {sorted(RIE_STAGES)}, got {stage}")
  names = RIE_STAGES[stage]["trainable"]
  return nnx.All(nnx.Param, nnx.Any(*(nnx.PathContains(n) for n in names)))


class RIEModel(nnx.Module):
  """Pose3D-RIE: grouped relative-encoding temporal encoders + global and fused features.

  Predicts the 3D pose of one frame from exactly ``receptive_field`` input frames (the
  centre frame, or the last one when causal). Train mode needs ``rngs`` for dropout.
  """
  Config = RIEConfig
  # Exactly one receptive field in, one frame out: sequences are lifted window by window
  # (``jaxpose.train.tasks.lifting.lift_sequence``).
  predicts_sequences: ClassVar[bool] = False

  def __init__(self, config: RIEConfig, *, rngs: nnx.Rngs):
    if config.stage not in RIE_STAGES:
      raise ValueError(f"RIE stage must be one of {sorted(RIE_STAGES)}, got {config.stage}")
    if config.dense and config.optimize_1f:
      raise ValueError("RIE: dense kernels have no strided (Optimize1f) form; set "
                       "optimize_1f=False (the original silently builds non-dense layers)")
    if not 0.0 <= config.linear_dropout < 1.0:
      raise ValueError(f"RIE: linear_dropout must be in [0, 1), got {config.linear_dropout}")
    self.config = config
    dtype = layers.as_dtype(config.dtype)
    lfd, size = config.latent_features, config.linear_size
    for group, joints in RIE_GROUPS:
      setattr(self, f"LocalLayer_{group}", TemporalConvNet(
          3 * len(joints) * RIE_IN_FEATURES, lfd, config.filter_widths, causal=config.causal,
          dropout=config.dropout, channels=config.channels, dense=config.dense,
          negative_slope=0.2, dtype=dtype, rngs=rngs, name=f"RIE LocalLayer_{group}"))
    fc = dict(dropout=config.linear_dropout, dtype=dtype, rngs=rngs)
    self.GlobalInfo = FCBlock(RIE_NUM_JOINTS * RIE_IN_FEATURES, lfd, size, RIE_GLOBAL_BLOCKS,
                              **fc)
    if config.stage == 1:
      self.FuseBlocks = None
      decoder_in = 2 * lfd
    else:
      self.FuseBlocks = nnx.List([FCBlock(4 * lfd, lfd, size, 1, **fc) for _ in RIE_GROUPS])
      decoder_in = 3 * lfd
    for group, joints in RIE_GROUPS:
      setattr(self, f"Integration_{group}", FCBlock(decoder_in, 3 * len(joints), size, 1, **fc))

  def encoders(self) -> list[TemporalConvNet]:
    return [getattr(self, f"LocalLayer_{g}") for g, _ in RIE_GROUPS]

  @property
  def receptive_field(self) -> int:
    return self.LocalLayer_Torso.receptive_field

  @property
  def total_causal_shift(self) -> int:
    return self.LocalLayer_Torso.total_causal_shift

  def set_bn_momentum(self, momentum: float) -> None:
    """As the original: only the temporal encoders' BatchNorms (the FC blocks keep 0.1)."""
    for encoder in self.encoders():
      encoder.set_bn_momentum(momentum)

  def _check_input(self, keypoints: Array) -> None:
    rf = self.receptive_field
    if keypoints.ndim != 4 or keypoints.shape[2:] != (RIE_NUM_JOINTS, RIE_IN_FEATURES):
      raise ValueError(
          f"RIE expects 2D keypoints [B, {rf}, {RIE_NUM_JOINTS}, {RIE_IN_FEATURES}] (it is "
          f"hard-wired to the 17 Human3.6M joints), got shape {tuple(keypoints.shape)}")
    if keypoints.shape[1] != rf:
      raise ValueError(
          f"RIE predicts one frame from exactly receptive_field={rf} frames (its global "
          f"branch and temporal encoding use the centre input frame), got T="
          f"{keypoints.shape[1]}; cut the sequence into {rf}-frame windows")

  def _group_inputs(self, keypoints: Array) -> list[Array]:
    """Per group ``[B, T, 3 * n_joints * 2]``: coordinates, minus root, minus centre frame."""
    x = keypoints.astype(jnp.float32)
    b, t = x.shape[:2]
    root_relative = x - x[:, :, :1]
    centre = t // 2
    time_relative = x - x[:, centre:centre + 1]
    out = []
    for _, joints in RIE_GROUPS:
      idx = np.asarray(joints)
      parts = [e[:, :, idx].reshape(b, t, -1) for e in (x, root_relative, time_relative)]
      out.append(jnp.concatenate(parts, axis=-1))
    return out

  def _forward(self, keypoints: Array, rngs: nnx.Rngs | None, strided: bool
               ) -> dict[str, Array]:
    self._check_input(keypoints)
    dtype = layers.as_dtype(self.config.dtype)
    b, t = keypoints.shape[:2]
    centre_pose = keypoints[:, t // 2].reshape(b, -1).astype(dtype)
    x_global = self.GlobalInfo(centre_pose, rngs)
    local = []
    for encoder, group_input in zip(self.encoders(), self._group_inputs(keypoints)):
      group_input = group_input.astype(dtype)
      y = encoder.strided(group_input, rngs) if strided else encoder.dilated(group_input, rngs)
      local.append(y[:, 0])  # [B, latent]
    features = []
    for g, (group, _) in enumerate(RIE_GROUPS):
      parts = [local[g]]
      if self.FuseBlocks is not None:
        others = jnp.concatenate([f for h, f in enumerate(local) if h != g], axis=-1)
        parts.append(self.FuseBlocks[g](others, rngs))
      parts.append(x_global)
      decoder = getattr(self, f"Integration_{group}")
      features.append(decoder(jnp.concatenate(parts, axis=-1), rngs).reshape(b, -1, 3))
    grouped = jnp.concatenate(features, axis=1)  # [B, 17, 3] in group order
    poses = jnp.take(grouped, _RIE_UNGROUP, axis=1)
    out = jnp.promote_types(poses.dtype, jnp.float32)  # float32, float64 for float64 models
    return {"poses": poses[:, None].astype(out)}

  def __call__(self, keypoints: Array, *, rngs: nnx.Rngs | None = None) -> dict[str, Array]:
    """Lifts one receptive field of 2D keypoints.

    Args:
      keypoints: ``[B, receptive_field, 17, 2]`` normalised screen coordinates.
      rngs: dropout randomness (``nnx.Rngs(dropout=key)``), needed in train mode only.

    Returns:
      ``{"poses": [B, 1, 17, 3] float32}`` in the input joint order. The encoders run
      strided when ``config.optimize_1f`` (the original's evaluation model), dilated
      otherwise; both give the same result.
    """
    return self._forward(keypoints, rngs, strided=self.config.optimize_1f and not
                         self.config.dense)

  def single_frame(self, keypoints: Array, *, rngs: nnx.Rngs | None = None
                   ) -> dict[str, Array]:
    """The strided (Optimize1f) forward regardless of ``config.optimize_1f``."""
    return self._forward(keypoints, rngs, strided=not self.config.dense)
