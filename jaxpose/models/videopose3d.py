"""VideoPose3D temporal lifter (``videopose3d``).

Pavllo et al., "3D human pose estimation in video with temporal convolutions and
semi-supervised training" (CVPR'19); facebookresearch/VideoPose3D ``common/model.py``
(``TemporalModel``, ``TemporalModelOptimized1f``).

The input ``[B, T, J_in, F]`` is flattened to ``J_in * F`` channels (channel = ``F * joint +
coordinate``) and run through the temporal convolution stack of ``jaxpose.models.temporal``
(ReLU, no activation after the residual sum); a 1x1 convolution with bias maps to
``J_out * 3``. Every output frame ``t`` uses input frames ``t .. t + receptive_field - 1``.
``TemporalModelOptimized1f`` of the original (used for training) shares the weights; here
it is the method ``VideoPose3D.single_frame``.

Module names mirror the PyTorch ones (``expand_conv``, ``layers_conv/3``, ``shrink``), so
checkpoints convert without renames.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jaxpose.models import layers
from jaxpose.models.base import ModelConfig
from jaxpose.models.temporal import TemporalConvNet

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class VideoPose3DConfig(ModelConfig):
  """VideoPose3D ``TemporalModel`` hyper-parameters (``run.py`` arguments in brackets).

  Attributes:
    num_joints_in: 2D joints per frame (17 Human3.6M, 15 HumanEva).
    in_features: values per input joint (2 for x, y). Checkpoints only store
      ``num_joints_in * in_features``; the converter assumes 2.
    num_joints_out: 3D joints out (1 for the trajectory model ``model_traj``).
    filter_widths: odd temporal widths (``-arc``); receptive field = their product.
    causal: causal convolutions (``--causal``): output frame t sees only frames up to
      t + receptive_field - 1 of the input, i.e. none after the predicted frame once the
      input is padded by ``total_causal_shift``. Not visible in the weights.
    dropout: dropout probability (``-drop``, 0.25). Not visible in the weights.
    channels: convolution channels (``-ch``, 1024).
    dense: undilated wide kernels (``--dense`` ablation), visible in kernel sizes.
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.

  The original's ``TemporalModelOptimized1f`` (used when ``stride == 1`` and not dense)
  changes the computation, not the weights: here it is ``VideoPose3D.single_frame``.
  """
  name: ClassVar[str] = "videopose3d"
  num_joints_in: int = 17
  in_features: int = 2
  num_joints_out: int = 17
  filter_widths: tuple[int, ...] = (3, 3, 3, 3, 3)
  causal: bool = False
  dropout: float = 0.25
  channels: int = 1024
  dense: bool = False
  dtype: str = "float32"

  @classmethod
  def h36m_243f(cls, **kw) -> "VideoPose3DConfig":
    """``pretrained_h36m_cpn.bin``: 17 -> 17 joints, widths 3,3,3,3,3 (243 frames)."""
    return cls(**{"filter_widths": (3, 3, 3, 3, 3), **kw})

  @classmethod
  def h36m_81f(cls, **kw) -> "VideoPose3DConfig":
    return cls(**{"filter_widths": (3, 3, 3, 3), **kw})

  @classmethod
  def h36m_27f(cls, **kw) -> "VideoPose3DConfig":
    return cls(**{"filter_widths": (3, 3, 3), **kw})

  @classmethod
  def humaneva15(cls, **kw) -> "VideoPose3DConfig":
    """``pretrained_humaneva15_detectron.bin``: 15 joints, widths 3,3,3 (27 frames)."""
    return cls(**{"num_joints_in": 15, "num_joints_out": 15, "filter_widths": (3, 3, 3), **kw})

  @classmethod
  def trajectory(cls, **kw) -> "VideoPose3DConfig":
    """``model_traj`` of semi-supervised training: one output 'joint' (the root position)."""
    return cls(**{"num_joints_out": 1, **kw})

  @classmethod
  def tiny(cls, **kw) -> "VideoPose3DConfig":
    """Widths 3,3 (9 frames), 32 channels, 5 joints: for tests and CPU experiments."""
    return cls(**{"num_joints_in": 5, "num_joints_out": 5, "filter_widths": (3, 3),
                  "channels": 32, **kw})


class VideoPose3D(TemporalConvNet):
  """VideoPose3D ``TemporalModel`` (+ ``TemporalModelOptimized1f`` as ``single_frame``).

  Train mode (the default after construction, or ``model.train()``) uses batch statistics
  and dropout: pass ``rngs=nnx.Rngs(dropout=key)``. ``model.eval()`` for inference.
  """
  Config = VideoPose3DConfig
  # Any T >= receptive_field input frames give T - receptive_field + 1 output frames (whole
  # sequences in one call; ``jaxpose.train.tasks.lifting.lift_sequence`` relies on it).
  predicts_sequences: ClassVar[bool] = True

  def __init__(self, config: VideoPose3DConfig, *, rngs: nnx.Rngs):
    if min(config.num_joints_in, config.in_features, config.num_joints_out) < 1:
      raise ValueError(f"VideoPose3D: joint and feature counts must be positive: {config}")
    self.config = config
    super().__init__(
        config.num_joints_in * config.in_features, config.num_joints_out * 3,
        config.filter_widths, causal=config.causal, dropout=config.dropout,
        channels=config.channels, dense=config.dense,
        dtype=layers.as_dtype(config.dtype), rngs=rngs, name="VideoPose3D")

  def _flatten(self, keypoints: Array) -> Array:
    c = self.config
    if keypoints.ndim != 4 or keypoints.shape[2:] != (c.num_joints_in, c.in_features):
      raise ValueError(
          f"VideoPose3D expects 2D keypoints [B, T, {c.num_joints_in}, {c.in_features}], got "
          f"shape {tuple(keypoints.shape)}")
    b, t = keypoints.shape[:2]
    dtype = layers.as_dtype(c.dtype)
    return keypoints.reshape(b, t, -1).astype(dtype)

  def _poses(self, y: Array) -> dict[str, Array]:
    b, t = y.shape[:2]
    out = jnp.promote_types(y.dtype, jnp.float32)  # float32, float64 for float64 models
    return {"poses": y.reshape(b, t, self.config.num_joints_out, 3).astype(out)}

  def __call__(self, keypoints: Array, *, rngs: nnx.Rngs | None = None) -> dict[str, Array]:
    """Dilated forward over a whole sequence.

    Args:
      keypoints: ``[B, T, J_in, in_features]`` (normalised screen coordinates), ``T >=
        receptive_field``.
      rngs: dropout randomness (``nnx.Rngs(dropout=key)``), needed in train mode only.

    Returns:
      ``{"poses": [B, T - receptive_field + 1, J_out, 3] float32}``; output frame ``t`` is
      computed from input frames ``t .. t + receptive_field - 1`` (root-relative joints, or
      the root trajectory for the trajectory model).

    In eval mode, given exactly one receptive field of frames (one output frame per item:
    a batch of windows), this runs ``single_frame``: the same output computed from only
    the frames it needs (243 frames: 15x fewer FLOPs). Train mode always runs the dilated
    form (its batch statistics would differ).
    """
    x = self._flatten(keypoints)
    if (x.shape[1] == self.receptive_field and not self.config.dense
        and self.expand_bn.use_running_average):
      return self._poses(self.strided(x, rngs))
    return self._poses(self.dilated(x, rngs))

  def single_frame(self, keypoints: Array, *, rngs: nnx.Rngs | None = None
                   ) -> dict[str, Array]:
    """``TemporalModelOptimized1f``: strided convolutions on one receptive field.

    Args:
      keypoints: ``[B, receptive_field, J_in, in_features]``.
      rngs: dropout randomness, needed in train mode only.

    Returns:
      ``{"poses": [B, 1, J_out, 3] float32}``, equal to ``self(keypoints)`` (the original
      trains with this form when ``stride == 1`` and not dense).
    """
    return self._poses(self.strided(self._flatten(keypoints), rngs))
