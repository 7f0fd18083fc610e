"""MSPN: multi-stage coarse-to-fine loss with OHKM, unshifted flip test, blurred decoding.

``MSPNTask`` (``config.task = 'mspn'``) adds to ``topdown.TopDownTask``:

* ``init_model``: an ImageNet checkpoint with torchvision ResNet names is renamed to
  MSPN's encoder names first (``convert.mspn.torchvision_resnet_to_mspn``);
* ``loss``: ``mspn_loss`` over every stage's units against the coarse-to-fine targets
  (``loss.ohkm``, ``loss.topk``, ``loss.coarse_to_fine``);
* ``flip_average``: the flip test without the one-pixel shift;
* ``decode``: MSPN's blur (``eval.decode_kernel``) and quarter step toward the second
  maximum (``eval.shift_ratios``).

Target maps peak at 255, so the summaries scale the maxima by 1/255.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx

from jaxpose.codecs import mspn as mspn_codec
from jaxpose.losses import heatmap as heatmap_losses
from jaxpose.train import weights
from jaxpose.train.tasks import base, topdown


def _imagenet_names(state_dict: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
  """torchvision ResNet names -> MSPN's (a checkpoint already in MSPN names passes)."""
  from jaxpose.convert import mspn as mspn_family
  if any(k.startswith("top.") for k in state_dict):
    return state_dict
  return mspn_family.torchvision_resnet_to_mspn(state_dict)


class MSPNTask(topdown.TopDownTask):
  """MSPN (see the module docstring)."""
  summary_score_scale = 255.0

  def init_model(self) -> nnx.Module:
    return weights.initial_model(self.config, imagenet_transform=_imagenet_names)

  def loss(self, model: nnx.Module, batch: base.Batch, rng: jax.Array,
           hparams: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Batch: ``image`` uint8 ``[B, h, w, 3]``, ``labels`` ``[B, L, hh, hw, K]``,
    ``valid`` ``[B, K]``."""
    del hparams
    outputs = self.train_outputs(model, batch, rng)
    options = self.config.get("loss", {})
    return heatmap_losses.mspn_loss(outputs["stages"], batch["labels"], batch["valid"],
                                    ohkm=options.get("ohkm", True), topk=options.get("topk", 8),
                                    coarse_to_fine=options.get("coarse_to_fine", True))

  def flip_average(self, heatmaps: jax.Array, flipped: jax.Array) -> jax.Array:
    """Flipped maps flipped back and pairs swapped, without a shift."""
    return mspn_codec.flip_test_average_jax(heatmaps, flipped, self.flip_pairs)

  def decode(self, heatmaps: np.ndarray, center: np.ndarray, scale: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    preds, maxvals = mspn_codec.decode(heatmaps, center, scale, self.spec.input_size,
                                       kernel=self.config.eval.decode_kernel,
                                       shifts=tuple(self.config.eval.shift_ratios))
    return preds.astype(np.float32), maxvals[..., 0].astype(np.float32)
