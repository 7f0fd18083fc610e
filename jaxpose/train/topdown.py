"""What differs between the top-down heatmap methods during training and evaluation.

``HeatmapTask`` (HRNet, SimpleBaseline) and ``MSPNTask`` each say how to

* normalise ``uint8`` crops on the device (``preprocess``);
* compute the training loss from the model outputs and a batch (``loss``);
* turn a crop batch into test heatmaps, with the flip test of the original (``predict``;
  HRNet shifts the flipped-back maps one pixel, MSPN does not);
* decode heatmaps into image-pixel keypoints and scores on the host (``decode``).

``TASKS`` is the explicit map from ``config.task`` to the class.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxpose.codecs import heatmap as heatmap_codec
from jaxpose.codecs import mspn as mspn_codec
from jaxpose.losses import heatmap as heatmap_losses

Batch = dict[str, jax.Array]


def normalize_images(images: jax.Array, mean: Sequence[float], std: Sequence[float],
                     dtype=jnp.float32) -> jax.Array:
  """``uint8 [B, H, W, 3]`` -> ``(x / 255 - mean) / std`` (per channel, in stored order)."""
  x = images.astype(jnp.float32) / 255.0
  x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  return x.astype(dtype)


@dataclasses.dataclass(frozen=True)
class HeatmapTask:
  """HRNet / SimpleBaseline: ``JointsMSELoss`` (or OHKM), shifted flip test, quarter offset."""
  mean: tuple[float, ...]
  std: tuple[float, ...]
  flip_pairs: tuple[tuple[int, int], ...]
  flip_test: bool = True
  shift_heatmap: bool = True
  post_process: bool = True
  use_target_weight: bool = True
  ohkm: bool = False
  topk: int = 8

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, flip_pairs) -> "HeatmapTask":
    return cls(mean=tuple(config.data.mean), std=tuple(config.data.std),
               flip_pairs=tuple(map(tuple, flip_pairs)),
               flip_test=config.eval.flip_test, shift_heatmap=config.eval.shift_heatmap,
               post_process=config.eval.post_process,
               use_target_weight=config.get("loss", {}).get("use_target_weight", True),
               ohkm=config.get("loss", {}).get("ohkm", False),
               topk=config.get("loss", {}).get("topk", 8))

  def preprocess(self, images: jax.Array) -> jax.Array:
    return normalize_images(images, self.mean, self.std)

  def loss(self, outputs: dict[str, jax.Array], batch: Batch) -> tuple[jax.Array, dict]:
    weight = batch["target_weight"] if self.use_target_weight else None
    if self.ohkm:
      loss = heatmap_losses.joints_ohkm_mse_loss(outputs["heatmaps"], batch["target"], weight,
                                                 self.topk)
    else:
      loss = heatmap_losses.joints_mse_loss(outputs["heatmaps"], batch["target"], weight)
    return loss, {}

  def predict(self, apply: Callable[[jax.Array], dict], images: jax.Array) -> jax.Array:
    """Test heatmaps ``[B, h, w, K]`` of normalised crops ``images``."""
    heatmaps = apply(images)["heatmaps"]
    if not self.flip_test:
      return heatmaps
    flipped = apply(images[:, :, ::-1])["heatmaps"]
    return heatmap_codec.flip_test_average_jax(heatmaps, flipped, self.flip_pairs,
                                               self.shift_heatmap)

  def decode(self, heatmaps: np.ndarray, center: np.ndarray, scale: np.ndarray,
             input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(keypoints [N, K, 2] image pixels, scores [N, K])`` (``get_final_preds``)."""
    del input_size
    preds, maxvals = heatmap_codec.get_final_preds(heatmaps, center, scale,
                                                   post_process=self.post_process)
    return preds, maxvals[..., 0]


@dataclasses.dataclass(frozen=True)
class MSPNTask:
  """MSPN: multi-stage coarse-to-fine loss with OHKM, unshifted flip test, blurred decoding."""
  mean: tuple[float, ...]
  std: tuple[float, ...]
  flip_pairs: tuple[tuple[int, int], ...]
  flip_test: bool = True
  ohkm: bool = True
  topk: int = 8
  coarse_to_fine: bool = True
  decode_kernel: int = 5
  shift_ratios: tuple[float, ...] = (0.25,)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, flip_pairs) -> "MSPNTask":
    loss = config.get("loss", {})
    return cls(mean=tuple(config.data.mean), std=tuple(config.data.std),
               flip_pairs=tuple(map(tuple, flip_pairs)), flip_test=config.eval.flip_test,
               ohkm=loss.get("ohkm", True), topk=loss.get("topk", 8),
               coarse_to_fine=loss.get("coarse_to_fine", True),
               decode_kernel=config.eval.decode_kernel,
               shift_ratios=tuple(config.eval.shift_ratios))

  def preprocess(self, images: jax.Array) -> jax.Array:
    return normalize_images(images, self.mean, self.std)

  def loss(self, outputs: dict, batch: Batch) -> tuple[jax.Array, dict]:
    return heatmap_losses.mspn_loss(outputs["stages"], batch["labels"], batch["valid"],
                                    ohkm=self.ohkm, topk=self.topk,
                                    coarse_to_fine=self.coarse_to_fine)

  def predict(self, apply: Callable[[jax.Array], dict], images: jax.Array) -> jax.Array:
    heatmaps = apply(images)["heatmaps"]
    if not self.flip_test:
      return heatmaps
    flipped = apply(images[:, :, ::-1])["heatmaps"]
    return mspn_codec.flip_test_average_jax(heatmaps, flipped, self.flip_pairs)

  def decode(self, heatmaps: np.ndarray, center: np.ndarray, scale: np.ndarray,
             input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    preds, maxvals = mspn_codec.decode(heatmaps, center, scale, input_size,
                                       kernel=self.decode_kernel, shifts=self.shift_ratios)
    return preds.astype(np.float32), maxvals[..., 0].astype(np.float32)


TASKS = {"heatmap": HeatmapTask, "mspn": MSPNTask}


def make_task(config: ml_collections.ConfigDict, flip_pairs):
  try:
    cls = TASKS[config.task]
  except KeyError:
    raise ValueError(f"unknown task {config.task!r}; valid: {sorted(TASKS)}") from None
  return cls.from_config(config, flip_pairs)
