"""Integral regression (Sun et al., JimmySuen/integral-human-pose) on mixed 2D/3D data.

``IntegralTask`` (``config.task = 'integral'``) adds to ``image3d.Image3DTask``:

* data: ``get_single_patch_sample`` (``jaxpose.data.image3d.integral_sample``): patches of
  ``data.input_size`` cut from the box with scale, rotation, flip (joint swaps) and colour
  gains (``data.aug``), RGB normalised by the ImageNet mean/std in 0..255 units; labels
  ``(x / pw - 0.5, y / ph - 0.5, depth / (box width x scale))`` with per-coordinate
  weights (depth 0 for 2D sources); people in integral's 18 joints (``keypoints.H36M18``);
* ``loss``: the integral L1 (``loss.type = 'L1'``, the released setting) or L2 loss on the
  soft-argmax of the joint volumes (``jaxpose.losses.integral``);
* ``predict``: soft-argmax -> patch pixels (``joint_location_result``); with
  ``eval.flip_test`` averaged with the flipped patch's joints mapped back (x -> pw - 1 -
  x, pairs swapped: ``test.py``'s ``flip_fea_merge=False``);
* ``decode``: ``eval.protocol`` 'backproject' (the Human3.6M protocol: back to the image,
  depth from the box's metric size plus the true root depth, through the camera; needs
  the intrinsics) or 'bone_length' (the ECCV'18 challenge protocol: relative to the
  pelvis, scaled to ``eval.bone_length`` mm of total bone length); ``eval.align`` 'rigid_root'
  / 'rigid' gives the original's "align" number as P-MPJPE.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np
from flax import nnx

from jaxpose.codecs import integral as integral_codec
from jaxpose.data import augment, image3d, joint_maps, transforms
from jaxpose.data import keypoints as kp
from jaxpose.evaluation import h36m_image
from jaxpose.losses import integral as integral_losses
from jaxpose.train import state as state_lib
from jaxpose.train.tasks import base
from jaxpose.train.tasks import image3d as image3d_task

PROTOCOLS = ("backproject", "bone_length")
LOSSES = {"L1": integral_losses.l1_joint_location_loss,
          "L2": integral_losses.l2_joint_location_loss}


class IntegralTask(image3d_task.Image3DTask):
  """Integral regression (see the module docstring)."""
  keypoint_set = kp.H36M18
  eval_keypoints = kp.H36M18
  color = "rgb"
  pixel_scale = 255.0

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    if config.eval.protocol not in PROTOCOLS:
      raise ValueError(f"eval.protocol must be one of {PROTOCOLS}, got {config.eval.protocol!r}")
    if config.loss.type not in LOSSES:
      raise ValueError(f"loss.type must be one of {sorted(LOSSES)}, got {config.loss.type!r}")
    h, w = config.data.input_size
    self.spec = image3d.IntegralSpec((h, w), self.keypoint_set.flip_pairs,
                                     augment.IntegralAugment(**config.data.aug))
    self.flip = kp.flip_permutation(self.keypoint_set.num_keypoints, self.keypoint_set.flip_pairs)

  def sample(self, cfg: ml_collections.ConfigDict, train: bool) -> image3d.SampleFn:
    del cfg, train  # every source is cut the same way; evaluation passes no generator
    return functools.partial(image3d.integral_draw_sample, self.spec)

  def loss(self, model: nnx.Module, batch: base.Batch, rng: jax.Array,
           hparams: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Batch: ``image`` uint8, ``color_scale`` ``[B, 3]``, ``target`` / ``target_weight``
    ``[B, K, 3]``."""
    del hparams
    x = self.preprocess(batch["image"], batch["color_scale"])
    raw = state_lib.call_model(model, x, rng)["heatmaps"]
    return LOSSES[self.config.loss.type](raw, batch["target"], batch["target_weight"]), {}

  def patch_joints(self, model: nnx.Module, x: jax.Array) -> jax.Array:
    """Normalised patches -> ``[B, K, 3]`` (u, v, z) patch pixels."""
    h, w = self.config.data.input_size
    coords = integral_codec.softmax_integral(model(x)["heatmaps"], self.keypoint_set.num_keypoints)
    return integral_codec.joint_location_result(coords, w, h)[..., :3]

  def predict(self, model: nnx.Module, inputs: jax.Array) -> jax.Array:
    x = self.preprocess(inputs)
    joints = self.patch_joints(model, x)
    if not self.config.eval.flip_test:
      return joints
    flipped = self.patch_joints(model, x[:, :, ::-1])[:, self.flip]
    w = self.config.data.input_size[1]
    flipped = flipped.at[..., 0].set(w - flipped[..., 0] - 1)
    return (joints + flipped) * 0.5

  def decode(self, outputs: np.ndarray, rows: Mapping[str, np.ndarray]
             ) -> tuple[np.ndarray, np.ndarray]:
    h, w = self.config.data.input_size
    patch = np.asarray(outputs, np.float64)
    image_xy = np.stack([
        transforms.affine_transform_points(
            p[:, :2], transforms.patch_transform(c, s, (w, h), inv=True))
        for p, c, s in zip(patch, rows["box_center"], rows["box_size"])])
    image_xy = image_xy.reshape(-1, patch.shape[1], 2)
    keypoints, _ = joint_maps.joint_map(self.keypoint_set.name, "mpii").apply(
        image_xy, np.ones(image_xy.shape[:-1]))
    pose = np.zeros_like(patch)
    depth = rows["has_depth"]
    if self.config.eval.protocol == "backproject":
      if np.any(depth & ~rows["has_camera"]):
        raise ValueError(
            "eval.protocol='backproject' (integral's Human3.6M protocol) needs the camera "
            "intrinsics and root depth, which this evaluation set lacks (the ECCV'18 "
            "challenge data has none): use --config.eval.protocol=bone_length")
      camera = h36m_image.backproject(patch[depth], rows["box_center"][depth],
                                      rows["box_size"][depth], (w, h),
                                      rows["root_position"][depth], rows["camera"][depth])
      pose[depth] = camera - camera[:, :1]
    else:
      pose[depth] = h36m_image.rescale_to_bone_length(
          patch[depth], kp.H36M18_PARENT_IDS, self.config.eval.bone_length)
    return pose, keypoints


