"""Weakly-supervised 3D pose (Zhou et al., xingyizhou/pytorch-pose-hg-3d) on mixed data.

``HG3DTask`` (``config.task = 'hg3d'``) adds to ``image3d.Image3DTask``:

* data: ``datasets/{h36m,mpii,fusion_3d}.py`` (``jaxpose.data.image3d.hg3d_sample``):
  square crops of ``data.input_size`` (scale and flip; rotation for 2D samples only),
  BGR images normalised as ``(x / 256 - mean) / std``, Gaussian heatmaps (sigma 2) of the
  16 MPII-order joints on ``data.heatmap_size``, depth targets ``depth / crop side`` at the
  joints' cells for Human3.6M samples and the visibility stand-in for MPII samples;
  ``data.sources.<name>.joint_shift = 1`` reproduces the original's MPII joints, which it
  leaves 1-based while shifting the centre;
* ``loss``: ``MSELoss`` on the heatmaps plus, with a depth head (``model.with_depth``),
  ``FusionLoss`` = ``loss.weight_3d`` x the depth regression (smooth L1) + the
  bone-length-ratio loss of 2D samples weighted ``loss.weight_var``
  (``jaxpose.losses.hg3d``);
* ``predict``: heatmaps and depth maps averaged with those of the flipped crop (flipped
  back, channels swapped: ``train_3d.py``'s validation) when ``eval.flip_test``; the
  heatmap argmax (``get_preds``, with its fractional row) and ``get_preds_3d``;
* ``decode``: ``convert_eval_format`` (MPII -> Human3.6M 17, total bone length
  ``eval.mean_bone_length`` = 4000 mm), and the 2D joints back in the image
  (``transform_preds``) for PCKh.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxpose.codecs import hg3d as hg3d_codec
from jaxpose.data import augment, image3d, transforms
from jaxpose.data import keypoints as kp
from jaxpose.evaluation import h36m_image
from jaxpose.losses import hg3d as hg3d_losses
from jaxpose.train import state as state_lib
from jaxpose.train.tasks import base
from jaxpose.train.tasks import image3d as image3d_task


class HG3DTask(image3d_task.Image3DTask):
  """pytorch-pose-hg-3d (see the module docstring)."""
  keypoint_set = kp.MPII
  eval_keypoints = kp.H36M
  color = "bgr"
  pixel_scale = 256.0

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    d = config.data
    self.spec = image3d.HG3DSpec(tuple(d.input_size), tuple(d.heatmap_size),
                                 self.keypoint_set.flip_pairs, float(d.sigma),
                                 augment.HG3DAugment(**d.aug))
    self.with_depth = bool(config.model.get("with_depth", True))
    self.flip = kp.flip_permutation(self.keypoint_set.num_keypoints, self.keypoint_set.flip_pairs)

  def sample(self, cfg: ml_collections.ConfigDict, train: bool) -> image3d.SampleFn:
    del train
    return functools.partial(image3d.hg3d_draw_sample, self.spec,
                             float(cfg.get("joint_shift", 0.0)))

  def loss(self, model: nnx.Module, batch: base.Batch, rng: jax.Array,
           hparams: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Batch: ``image`` uint8, ``heatmaps`` ``[B, h, w, 16]``, ``reg_mask`` / ``reg_ind`` /
    ``reg_target`` ``[B, 16]``, ``gt_2d`` ``[B, 16, 2]``."""
    del hparams
    out = state_lib.call_model(model, self.preprocess(batch["image"]), rng)
    hm_loss = jnp.mean(jnp.square(out["heatmaps"] - batch["heatmaps"]))
    if not self.with_depth:
      return hm_loss, {}
    options = self.config.loss
    depth_loss = hg3d_losses.fusion_loss(out["depth"], batch["reg_mask"], batch["reg_ind"],
                                         batch["reg_target"], batch["gt_2d"],
                                         options.weight_3d, options.weight_var)
    return hm_loss + depth_loss, {"loss_hm": hm_loss, "loss_3d": depth_loss}

  def _maps(self, model: nnx.Module, x: jax.Array) -> dict[str, jax.Array]:
    out = model(x)
    if not self.config.eval.flip_test:
      return out
    flipped = model(x[:, :, ::-1])
    return {k: (v + flipped[k][:, :, ::-1][..., self.flip]) * 0.5 for k, v in out.items()}

  def predict(self, model: nnx.Module, inputs: jax.Array) -> dict[str, jax.Array]:
    maps = self._maps(model, self.preprocess(inputs))
    out = {"preds_2d": hg3d_codec.get_preds(maps["heatmaps"])}
    if self.with_depth:
      out["preds_3d"] = hg3d_codec.get_preds_3d(maps["heatmaps"], maps["depth"])
    return out

  def decode(self, outputs: Mapping[str, np.ndarray], rows: Mapping[str, np.ndarray]
             ) -> tuple[np.ndarray, np.ndarray]:
    ih, iw = self.config.data.input_size
    oh, ow = self.config.data.heatmap_size
    keypoints = []
    for pred, center, box, size in zip(outputs["preds_2d"], rows["box_center"],
                                       rows["box_size"], rows["image_size"]):
      s = min(float(np.max(box)), float(np.max(size)))
      crop = image3d.adjust_aspect_ratio(np.array([s, s]), iw / ih)
      inv = transforms.get_affine_transform(center, crop, 0.0, (ow, oh), inv=True, pixel_std=1.0)
      keypoints.append(transforms.affine_transform_points(np.asarray(pred, np.float64), inv))
    n = len(keypoints)
    pose = np.zeros((n, self.eval_keypoints.num_keypoints, 3))
    if self.with_depth:
      depth = rows["has_depth"]
      pose[depth] = h36m_image.hg3d_to_h36m(np.asarray(outputs["preds_3d"])[depth],
                                            self.config.eval.mean_bone_length)
    return pose, np.asarray(keypoints).reshape(n, -1, 2)
