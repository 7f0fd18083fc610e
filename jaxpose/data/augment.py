"""Random crop parameters of the top-down training pipelines, with the originals' distributions.

Two samplers, one per family of original code:

* ``hrnet_crop`` -- HRNet and SimpleBaseline (``JointsDataset.__getitem__`` in
  deep-high-resolution-net.pytorch): with probability ``half_body_prob`` and more than
  ``half_body_min_joints`` visible joints, a half-body box (upper body chosen when a
  standard normal draw is < 0.5, i.e. with probability 0.69, if it has > 2 joints; joint
  mean as centre; box x1.5); scale ``* clip(N(0,1) * sf + 1, 1 - sf, 1 + sf)``; rotation
  ``clip(N(0,1) * rf, -2 rf, 2 rf)`` with probability ``rotation_prob`` (0.6); horizontal
  flip with probability ``flip_prob``.
* ``mspn_crop`` -- MSPN (``dataset/JointsDataset.py``): box extended by ``basic_ext`` and a
  random ``U(0,1) * x_ext`` / ``U(0,1) * y_ext``, fitted to the aspect ratio; half-body
  (threshold ``half_body_min_joints`` = 3, box centre, random extensions); scale
  ``* U(1 + low, 1 + high) * shrink``; rotation ``U(-rf, rf)`` with probability
  ``rotation_prob``; flip. At test time ``mspn_test_crop`` applies the fixed extensions.

All functions are pure numpy given an ``np.random.Generator``; nothing here touches
pixels (see ``jaxpose.data.topdown``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxpose.data.transforms import PIXEL_STD, fliplr_joints


@dataclasses.dataclass(frozen=True)
class Crop:
  """Where to cut a training crop and how the keypoints move with it.

  Attributes:
    center: float32 (2,) (x, y) in pixels of the (possibly flipped) image.
    scale: float32 (2,) crop size / 200 (w, h).
    rotation: degrees (counter-clockwise in image coordinates, as the originals).
    flipped: the image must be mirrored (``image[:, ::-1]``) before warping.
    joints: float32 ``[K, 2]`` keypoints in the (possibly flipped) image.
    joints_vis: float32 ``[K]`` visibilities after the flip.
  """
  center: np.ndarray
  scale: np.ndarray
  rotation: float
  flipped: bool
  joints: np.ndarray
  joints_vis: np.ndarray


@dataclasses.dataclass(frozen=True)
class HRNetAugment:
  """``DATASET`` augmentation settings of HRNet / SimpleBaseline yamls."""
  scale_factor: float = 0.35
  rotation_factor: float = 45.0
  rotation_prob: float = 0.6
  flip_prob: float = 0.5
  half_body_prob: float = 0.3
  half_body_min_joints: int = 8
  half_body_scale: float = 1.5


@dataclasses.dataclass(frozen=True)
class MSPNAugment:
  """``DATASET.TRAIN`` / ``TEST`` settings of MSPN's ``dataset/attribute.py`` (COCO values)."""
  basic_ext: float = 0.05
  random_ext: bool = True
  x_ext: float = 0.6
  y_ext: float = 0.8
  scale_low: float = -0.25
  scale_high: float = 0.25
  scale_shrink: float = 0.8
  rotation_factor: float = 45.0
  rotation_prob: float = 0.5
  flip_prob: float = 0.5
  half_body_prob: float = 0.3
  half_body_min_joints: int = 3
  x_ext_half_body: float = 0.6
  y_ext_half_body: float = 0.8
  test_x_ext: float = 0.09
  test_y_ext: float = 0.135


def _fit_aspect(w: float, h: float, aspect_ratio: float) -> tuple[float, float]:
  if w > aspect_ratio * h:
    return w, w / aspect_ratio
  if w < aspect_ratio * h:
    return h * aspect_ratio, h
  return w, h


def _split_body(joints: np.ndarray, vis: np.ndarray, upper_ids: Sequence[int]):
  upper = [joints[j] for j in range(len(joints)) if vis[j] > 0 and j in upper_ids]
  lower = [joints[j] for j in range(len(joints)) if vis[j] > 0 and j not in upper_ids]
  return upper, lower


def _choose_half(rng: np.random.Generator, upper, lower, min_part: int):
  if rng.standard_normal() < 0.5 and len(upper) > min_part:
    return upper
  return lower if len(lower) > min_part else upper


def hrnet_half_body(rng: np.random.Generator, joints: np.ndarray, vis: np.ndarray,
                    upper_ids: Sequence[int], aspect_ratio: float, box_scale: float = 1.5,
                    ) -> tuple[np.ndarray, np.ndarray] | None:
  """HRNet's ``half_body_transform``: centre = joint mean, box x1.5.

  None (keep the full box) with fewer than 2 joints in the chosen half, as the original,
  or when those joints coincide (a zero-size box the original would crop to nothing).
  """
  upper, lower = _split_body(joints, vis, upper_ids)
  selected = _choose_half(rng, upper, lower, 2)
  if len(selected) < 2:
    return None
  pts = np.asarray(selected, np.float32)
  center = pts.mean(axis=0)[:2]
  w, h = pts.max(axis=0) - pts.min(axis=0)
  w, h = _fit_aspect(float(w), float(h), aspect_ratio)
  if w <= 0 or h <= 0:  # coincident joints: keep the full box
    return None
  scale = np.array([w / PIXEL_STD, h / PIXEL_STD], np.float32) * box_scale
  return center.astype(np.float32), scale.astype(np.float32)


def hrnet_crop(rng: np.random.Generator, center: np.ndarray, scale: np.ndarray,
               joints: np.ndarray, joints_vis: np.ndarray, image_width: int, *,
               aug: HRNetAugment, aspect_ratio: float, flip_pairs: Sequence[Sequence[int]],
               upper_body_ids: Sequence[int]) -> Crop:
  """One training crop as HRNet / SimpleBaseline draw it.

  Args:
    rng: the sample's generator.
    center, scale: the instance box (``box_to_center_scale``, padding 1.25).
    joints: ``[K, 2]`` keypoints in image pixels; joints_vis: ``[K]`` 0/1.
    image_width: width of the image (for the flip).
    aug: the augmentation settings.
    aspect_ratio: crop width / height.
    flip_pairs, upper_body_ids: the dataset's joint pairs and upper-body joints.
  """
  center = np.array(center, np.float32)
  scale = np.array(scale, np.float32)
  joints = np.asarray(joints, np.float32)[:, :2]
  vis = np.asarray(joints_vis, np.float32).reshape(-1)
  if np.sum(vis) > aug.half_body_min_joints and rng.random() < aug.half_body_prob:
    half = hrnet_half_body(rng, joints, vis, upper_body_ids, aspect_ratio, aug.half_body_scale)
    if half is not None:
      center, scale = half
  sf, rf = aug.scale_factor, aug.rotation_factor
  scale = scale * np.float32(np.clip(rng.standard_normal() * sf + 1, 1 - sf, 1 + sf))
  rotation = float(np.clip(rng.standard_normal() * rf, -2 * rf, 2 * rf)
                   if rng.random() <= aug.rotation_prob else 0.0)
  flipped = bool(aug.flip_prob > 0 and rng.random() <= aug.flip_prob)
  if flipped:
    joints, vis2 = fliplr_joints(joints, vis[:, None], image_width, flip_pairs)
    vis = vis2[:, 0]
    center = center.copy()
    center[0] = image_width - center[0] - 1
  return Crop(center.astype(np.float32), scale.astype(np.float32), rotation, flipped,
              joints.astype(np.float32), vis.astype(np.float32))


def mspn_box(bbox_xywh: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  """MSPN's ``_bbox_to_center_and_scale``: box centre and size / 200, no padding."""
  x, y, w, h = (float(v) for v in bbox_xywh[:4])
  center = np.array([x + w / 2.0, y + h / 2.0], np.float32)
  scale = np.array([w / PIXEL_STD, h / PIXEL_STD], np.float32)
  return center, scale


def mspn_test_crop(center: np.ndarray, scale: np.ndarray, aug: MSPNAugment,
                   aspect_ratio: float) -> tuple[np.ndarray, np.ndarray]:
  """MSPN's evaluation crop: fixed extensions, then the aspect-ratio fit."""
  scale = np.array(scale, np.float32)
  scale[0] *= 1 + aug.test_x_ext
  scale[1] *= 1 + aug.test_y_ext
  w, h = _fit_aspect(float(scale[0]), float(scale[1]), aspect_ratio)
  return np.array(center, np.float32), np.array([w, h], np.float32)


def mspn_half_body(rng: np.random.Generator, joints: np.ndarray, vis: np.ndarray,
                   upper_ids: Sequence[int], aspect_ratio: float, aug: MSPNAugment,
                   ) -> tuple[np.ndarray, np.ndarray] | None:
  """MSPN's ``half_body_transform``: box centre, random extensions.

  None (keep the full box) with fewer than 3 joints in the chosen half or coincident joints.
  """
  upper, lower = _split_body(joints, vis, upper_ids)
  selected = _choose_half(rng, upper, lower, 3)
  if len(selected) < 3:
    return None
  pts = np.asarray(selected, np.float32)
  left_top, right_bottom = pts.min(axis=0), pts.max(axis=0)
  center = (left_top + right_bottom) / 2
  w, h = (right_bottom - left_top).tolist()
  w *= 1 + rng.random() * aug.x_ext_half_body
  h *= 1 + rng.random() * aug.y_ext_half_body
  w, h = _fit_aspect(w, h, aspect_ratio)
  if w <= 0 or h <= 0:  # coincident joints: keep the full box
    return None
  return center.astype(np.float32), np.array([w / PIXEL_STD, h / PIXEL_STD], np.float32)


def mspn_crop(rng: np.random.Generator, center: np.ndarray, scale: np.ndarray,
              joints: np.ndarray, joints_vis: np.ndarray, image_width: int, *,
              aug: MSPNAugment, aspect_ratio: float, flip_pairs: Sequence[Sequence[int]],
              upper_body_ids: Sequence[int]) -> Crop:
  """One training crop as MSPN draws it (``center``/``scale`` from ``mspn_box``).

  ``joints_vis`` keeps COCO's 0/1/2 levels (the loss distinguishes them).
  """
  center = np.array(center, np.float32)
  scale = np.array(scale, np.float32)
  joints = np.asarray(joints, np.float32)[:, :2]
  vis = np.asarray(joints_vis, np.float32).reshape(-1)
  scale *= 1 + aug.basic_ext
  scale[0] *= 1 + (rng.random() if aug.random_ext else 1.0) * aug.x_ext
  scale[1] *= 1 + (rng.random() if aug.random_ext else 1.0) * aug.y_ext
  scale = np.array(_fit_aspect(float(scale[0]), float(scale[1]), aspect_ratio), np.float32)
  if np.sum(vis > 0) > aug.half_body_min_joints and rng.random() < aug.half_body_prob:
    half = mspn_half_body(rng, joints, vis, upper_body_ids, aspect_ratio, aug)
    if half is not None:
      center, scale = half
  scale = scale * np.float32(rng.uniform(1 + aug.scale_low, 1 + aug.scale_high) * aug.scale_shrink)
  rotation = float(rng.uniform(-aug.rotation_factor, aug.rotation_factor)
                   if rng.random() <= aug.rotation_prob else 0.0)
  flipped = bool(aug.flip_prob > 0 and rng.random() <= aug.flip_prob)
  if flipped:
    joints, vis2 = fliplr_joints(joints, vis[:, None], image_width, flip_pairs,
                                 multiply_by_visibility=False)
    vis = vis2[:, 0]
    center = center.copy()
    center[0] = image_width - center[0] - 1
  return Crop(center.astype(np.float32), scale.astype(np.float32), rotation, flipped,
              joints.astype(np.float32), vis.astype(np.float32))


# ----------------------------------------------------------------------------------------
# Image-based 3D methods
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IntegralAugment:
  """integral-human-pose's ``aug`` settings (``common/utility/augment.py``; the yamls set
  scale 0.25, rotation 30, colour 0.2 and flips)."""
  scale_factor: float = 0.25
  rotation_factor: float = 30.0
  color_factor: float = 0.2
  flip: bool = True
  rotation_prob: float = 0.6
  flip_prob: float = 0.5


@dataclasses.dataclass(frozen=True)
class PatchAugment:
  """One draw of integral regression's augmentation.

  Attributes:
    scale: the box is multiplied by it (1 + clipped N(0, 1) * scale_factor).
    rotation: degrees.
    flip: mirror the image first.
    color: float32 ``[3]`` per-channel gains of the RGB patch (clipped to 0..255 after).
  """
  scale: float = 1.0
  rotation: float = 0.0
  flip: bool = False
  color: tuple[float, float, float] = (1.0, 1.0, 1.0)


def integral_augmentation(rng: np.random.Generator, aug: IntegralAugment) -> PatchAugment:
  """``do_augmentation``: scale ``clip(N(0,1), -1, 1) * sf + 1``; with probability 0.6 a
  rotation ``clip(N(0,1), -2, 2) * rf``; a flip with probability 0.5; colour gains
  ``U(1 - cf, 1 + cf)`` per channel (drawn in this order)."""
  scale = float(np.clip(rng.standard_normal(), -1.0, 1.0) * aug.scale_factor + 1.0)
  rotation = 0.0
  if rng.random() <= aug.rotation_prob:
    rotation = float(np.clip(rng.standard_normal(), -2.0, 2.0) * aug.rotation_factor)
  flip = bool(aug.flip and rng.random() <= aug.flip_prob)
  low, high = 1.0 - aug.color_factor, 1.0 + aug.color_factor
  color = tuple(float(rng.uniform(low, high)) for _ in range(3))
  return PatchAugment(scale, rotation, flip, color)


@dataclasses.dataclass(frozen=True)
class HG3DAugment:
  """pytorch-pose-hg-3d's ``opts.py`` augmentation (MPII / fusion_3d defaults): scale
  0.25, rotation 30 degrees (2D samples only: its Human3.6M loader has the rotation
  commented out), flip probability 0.5."""
  scale_factor: float = 0.25
  rotation_factor: float = 30.0
  rotation_prob: float = 0.6
  flip_prob: float = 0.5


def hg3d_augmentation(rng: np.random.Generator, aug: HG3DAugment, rotate: bool
                      ) -> tuple[float, float, bool]:
  """``(scale multiplier, rotation degrees, flip)`` as ``datasets/{mpii,h36m}.py`` draw them:
  ``clip(N(0,1) * sf + 1, 1 - sf, 1 + sf)``; when ``rotate``, with probability 0.6 a
  rotation ``clip(N(0,1) * rf, -2 rf, 2 rf)``; a flip with probability ``flip_prob``."""
  sf, rf = aug.scale_factor, aug.rotation_factor
  scale = float(np.clip(rng.standard_normal() * sf + 1, 1 - sf, 1 + sf))
  rotation = 0.0
  if rotate and rng.random() <= aug.rotation_prob:
    rotation = float(np.clip(rng.standard_normal() * rf, -rf * 2, rf * 2))
  return scale, rotation, bool(rng.random() < aug.flip_prob)
