"""HRNet / SimpleBaseline: Gaussian heatmaps, ``JointsMSELoss`` (or OHKM), shifted flip test.

``HeatmapTask`` (``config.task = 'heatmap'``) adds to ``topdown.TopDownTask``:

* ``loss``: ``JointsMSELoss`` with target weights (``loss.use_target_weight``) or its
  online-hard-keypoint-mining variant (``loss.ohkm``, ``loss.topk``) on ``heatmaps``;
* ``flip_average`` (the flip test of ``TopDownTask.predict``, ``eval.flip_test``): the
  flipped crops' maps flipped back, joint pairs swapped, shifted one pixel right when
  ``eval.shift_heatmap`` (as HRNet does), averaged with the crops' maps;
* ``decode``: ``get_final_preds`` (argmax + quarter-pixel offset with
  ``eval.post_process``) back to image pixels.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx

from jaxpose.codecs import heatmap as heatmap_codec
from jaxpose.losses import heatmap as heatmap_losses
from jaxpose.train.tasks import base, topdown


class HeatmapTask(topdown.TopDownTask):
  """HRNet / SimpleBaseline (see the module docstring)."""

  def loss(self, model: nnx.Module, batch: base.Batch, rng: jax.Array,
           hparams: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Batch: ``image`` uint8 ``[B, h, w, 3]``, ``target`` ``[B, hh, hw, K]``,
    ``target_weight`` ``[B, K]``."""
    del hparams
    outputs = self.train_outputs(model, batch, rng)
    options = self.config.get("loss", {})
    weight = batch["target_weight"] if options.get("use_target_weight", True) else None
    if options.get("ohkm", False):
      loss = heatmap_losses.joints_ohkm_mse_loss(outputs["heatmaps"], batch["target"], weight,
                                                 options.get("topk", 8))
    else:
      loss = heatmap_losses.joints_mse_loss(outputs["heatmaps"], batch["target"], weight)
    return loss, {}

  def flip_average(self, heatmaps: jax.Array, flipped: jax.Array) -> jax.Array:
    """Flipped maps flipped back, pairs swapped, shifted one pixel (``eval.shift_heatmap``)."""
    return heatmap_codec.flip_test_average_jax(heatmaps, flipped, self.flip_pairs,
                                               self.config.eval.shift_heatmap)

  def decode(self, heatmaps: np.ndarray, center: np.ndarray, scale: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    preds, maxvals = heatmap_codec.get_final_preds(heatmaps, center, scale,
                                                   post_process=self.config.eval.post_process)
    return preds, maxvals[..., 0]

  def decode_traced(self, heatmaps: jax.Array, center: jax.Array, scale: jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
    preds, maxvals = heatmap_codec.get_final_preds_jax(heatmaps, center, scale,
                                                       post_process=self.config.eval.post_process)
    return preds, maxvals[..., 0]
