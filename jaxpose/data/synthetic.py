"""Procedurally generated people in COCO keypoint format (the ``synthetic_people`` data).

A dataset that needs no download: :func:`generate_coco_dataset` draws images of
articulated figures with OpenCV and writes *real* COCO files into a folder::

    out_dir/annotations/person_keypoints_{split}.json
    out_dir/{split}/000000000001.jpg ...

so that everything built for COCO (the TFDS builder's parser, the input pipeline, the
pycocotools evaluator) runs on it unchanged.

What a scene holds:

* a background: gradients, smooth noise, stripes or checks, a horizon, plus clutter
  (rectangles, ellipses, lines and limb-like sticks, some in the limbs' colours);
* one or more figures with COCO's 17 keypoints. Bodies have varied proportions, lean,
  facing direction (front, profile, back) and joint angles (shoulders, elbows, hips,
  knees, head turn and tilt); limbs are tapered capsules of person-proportional thickness,
  the torso a quadrilateral, the head an ellipse with hair, face, eyes, nose and ears;
* a consistent left/right cue: the person's LEFT arm and leg are always red-magenta
  hues and the RIGHT ones blue-cyan hues (upper and lower segments differ in brightness so
  elbows and knees show); torsos are green-yellow, purple or grey, hands skin-coloured,
  shoes dark;
* scale variation, partial occlusion by other figures and by occluder shapes drawn over
  them, truncation at the image border, lighting gradients, noise, blur and JPEG
  compression.

Labels follow COCO's conventions exactly:

* ``v = 2`` the keypoint's pixel shows the figure's own body part that the joint belongs
  to; ``v = 1`` inside the image but covered (by another figure, an occluder, the figure's
  own torso in profile, or the back of the head for a face point turned away);
  ``v = 0`` outside the image or a face point far behind the head (not labelled, with
  ``x = y = 0``). ``num_keypoints`` counts ``v > 0``;
* ``segmentation`` is the RLE of the figure's *visible* pixels, ``area`` its pixel count
  and ``bbox`` its tight box (as pycocotools' ``toBbox``); figures that end up invisible
  are not annotated;
* keypoint coordinates are pixel coordinates with pixel centres at integers (the frame of
  ``cv2.warpAffine``), stored with two decimals.

Generation is deterministic: image ``i`` of split ``s`` draws from
``numpy.random.default_rng([seed, crc32(s), i])``, so a file is the same on every run and
independent of ``num_images``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import zlib
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from jaxpose.data import coco_format
from jaxpose.data.keypoints import COCO_KEYPOINT_NAMES

NUM_KEYPOINTS = len(COCO_KEYPOINT_NAMES)
_K = {name: i for i, name in enumerate(COCO_KEYPOINT_NAMES)}

# Body part codes of the label map (a figure's label is ``owner * _PARTS + part``).
_PARTS = 32
(_NONE, _TORSO, _NECK, _HEAD, _FACE, _EAR, _EYE, _NOSE,
 _L_UPPER_ARM, _L_FOREARM, _L_HAND, _R_UPPER_ARM, _R_FOREARM, _R_HAND,
 _L_THIGH, _L_SHIN, _L_FOOT, _R_THIGH, _R_SHIN, _R_FOOT) = range(20)
_HEAD_PARTS = (_HEAD, _FACE, _EAR, _EYE, _NOSE)

_SUBPIXEL_BITS = 4
_SUBPIXEL = float(1 << _SUBPIXEL_BITS)


@dataclasses.dataclass(frozen=True)
class SceneConfig:
  """How scenes are drawn.

  Attributes:
    image_size: ``(min, max)`` of each image side in pixels (width and height drawn
      independently).
    persons_per_image: ``(min, max)`` number of figures placed per image.
    person_height: ``(min, max)`` standing height of a figure in pixels (log-uniform);
      capped at 0.9 of the image height for untruncated figures.
    truncation_prob: probability that a figure is placed across the image border.
    occluder_prob: probability per figure of an occluder shape drawn over it.
    max_overlap: largest IoU allowed between the full (amodal) boxes of two figures.
    jpeg_quality: ``(min, max)`` JPEG quality.
  """

  image_size: tuple[int, int] = (160, 256)
  persons_per_image: tuple[int, int] = (1, 3)
  person_height: tuple[float, float] = (64.0, 200.0)
  truncation_prob: float = 0.15
  occluder_prob: float = 0.25
  max_overlap: float = 0.3
  jpeg_quality: tuple[int, int] = (80, 95)

  def __post_init__(self):
    for name in ("image_size", "persons_per_image", "person_height", "jpeg_quality"):
      lo, hi = getattr(self, name)
      if not 0 < lo <= hi:
        raise ValueError(f"SceneConfig.{name} must be (min, max) with 0 < min <= max, "
                         f"got {(lo, hi)}")
    if self.image_size[0] < 32:
      raise ValueError(f"SceneConfig.image_size must be at least 32 px, got {self.image_size}")
    if self.jpeg_quality[1] > 100:
      raise ValueError(f"SceneConfig.jpeg_quality must be at most 100, got {self.jpeg_quality}")
    for name in ("truncation_prob", "occluder_prob", "max_overlap"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"SceneConfig.{name} must lie in [0, 1], got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------
# Drawing onto an image and a label map at once
# ----------------------------------------------------------------------------------------


class _Canvas:
  """A BGR image and a uint16 label map drawn with the same sub-pixel geometry."""

  def __init__(self, image: np.ndarray):
    self.image = image
    self.labels = np.zeros(image.shape[:2], np.uint16)

  @staticmethod
  def _fx(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, np.float64) * _SUBPIXEL).astype(np.int32)

  def polygon(self, points: np.ndarray, color: Sequence[float], label: int) -> None:
    pts = self._fx(points).reshape(-1, 1, 2)
    cv2.fillPoly(self.image, [pts], _bgr(color), cv2.LINE_AA, _SUBPIXEL_BITS)
    cv2.fillPoly(self.labels, [pts], (int(label),), cv2.LINE_8, _SUBPIXEL_BITS)

  def ellipse(self, center: np.ndarray, axes: tuple[float, float], angle_deg: float,
              color: Sequence[float], label: int) -> None:
    c = tuple(int(v) for v in self._fx(center))
    ax = tuple(max(int(round(a * _SUBPIXEL)), int(_SUBPIXEL)) for a in axes)
    cv2.ellipse(self.image, c, ax, float(angle_deg), 0.0, 360.0, _bgr(color), -1,
                cv2.LINE_AA, _SUBPIXEL_BITS)
    cv2.ellipse(self.labels, c, ax, float(angle_deg), 0.0, 360.0, (int(label),), -1,
                cv2.LINE_8, _SUBPIXEL_BITS)

  def capsule(self, p0: np.ndarray, p1: np.ndarray, r0: float, r1: float,
              color: Sequence[float], label: int) -> None:
    """A tapered stick: discs of radius ``r0``/``r1`` at the ends joined by a quad."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    d = p1 - p0
    length = float(np.hypot(*d))
    if length > 1e-6:
      n = np.array([-d[1], d[0]]) / length
      self.polygon(np.stack([p0 + n * r0, p1 + n * r1, p1 - n * r1, p0 - n * r0]),
                   color, label)
    self.ellipse(p0, (r0, r0), 0.0, color, label)
    self.ellipse(p1, (r1, r1), 0.0, color, label)

  def pattern(self, label: int, rng: np.random.Generator, strength: float) -> None:
    """Modulates the brightness of the pixels labelled ``label`` with stripes or noise."""
    ys, xs = np.nonzero(self.labels == label)
    if ys.size == 0:
      return
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    roi = self.image[y0:y1, x0:x1].astype(np.float32)
    gain = 1.0 + strength * _texture(rng, (y1 - y0, x1 - x0))
    sel = self.labels[y0:y1, x0:x1] == label
    roi[sel] *= gain[sel][:, None]
    self.image[y0:y1, x0:x1] = np.clip(roi, 0, 255).astype(np.uint8)


def _bgr(color: Sequence[float]) -> tuple[float, float, float]:
  return (float(color[0]), float(color[1]), float(color[2]))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
  """One OpenCV-HSV colour (``h`` in [0, 180)) as float BGR."""
  px = np.array([[[h % 180.0, np.clip(s, 0, 255), np.clip(v, 0, 255)]]], np.uint8)
  return cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)


def _texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
  """A zero-mean pattern in [-1, 1] (stripes, checks or smooth noise), float32 ``shape``."""
  h, w = shape
  kind = rng.integers(3)
  if kind == 2:
    small = rng.uniform(-1, 1, (max(2, h // 8), max(2, w // 8))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(-1, 1)
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  theta = rng.uniform(0, np.pi)
  period = rng.uniform(4, 14)
  u = (xx * np.cos(theta) + yy * np.sin(theta)) * (2 * np.pi / period)
  if kind == 0:
    return np.sign(np.sin(u)).astype(np.float32)
  v = (-xx * np.sin(theta) + yy * np.cos(theta)) * (2 * np.pi / period)
  return np.sign(np.sin(u) * np.sin(v)).astype(np.float32)


# ----------------------------------------------------------------------------------------
# Backgrounds, clutter and occluders
# ----------------------------------------------------------------------------------------


def _random_color(rng: np.random.Generator) -> np.ndarray:
  return _hsv(rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(30, 250))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A textured BGR background, uint8 ``[height, width, 3]``."""
  c0, c1 = _random_color(rng), _random_color(rng)
  kind = rng.integers(4)
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  if kind == 0:  # linear gradient
    theta = rng.uniform(0, 2 * np.pi)
    t = xx * np.cos(theta) + yy * np.sin(theta)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
  elif kind == 1:  # smooth noise
    small = rng.uniform(0, 1, (rng.integers(2, 7), rng.integers(2, 7))).astype(np.float32)
    t = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
  elif kind == 2:  # stripes or checks
    t = 0.5 + 0.5 * _texture(rng, (height, width))
  else:  # horizon: wall above, floor below
    horizon = rng.uniform(0.3, 0.8) * height + np.tan(rng.uniform(-0.3, 0.3)) * (
        xx - width / 2)
    t = (yy > horizon).astype(np.float32)
  image = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
  return np.clip(image, 0, 255).astype(np.uint8)


def _limb_like_color(rng: np.random.Generator) -> np.ndarray:
  """A colour from the left or right limb families (for distractors)."""
  return _left_color(rng) if rng.random() < 0.5 else _right_color(rng)


def _clutter(canvas: _Canvas, rng: np.random.Generator, count: int) -> None:
  """Random shapes drawn on the background (label 0)."""
  h, w = canvas.labels.shape
  scale = min(h, w)
  for _ in range(count):
    color = _limb_like_color(rng) if rng.random() < 0.25 else _random_color(rng)
    center = rng.uniform([0, 0], [w, h])
    kind = rng.integers(4)
    if kind == 0:
      half = rng.uniform(0.03, 0.25, 2) * scale
      angle = rng.uniform(0, np.pi)
      rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
      corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
      canvas.polygon(center + corners @ rot.T, color, 0)
    elif kind == 1:
      axes = tuple(rng.uniform(0.02, 0.18, 2) * scale)
      canvas.ellipse(center, axes, rng.uniform(0, 180), color, 0)
    else:  # sticks, limb-like or thin lines
      length = rng.uniform(0.1, 0.45) * scale
      angle = rng.uniform(0, 2 * np.pi)
      end = center + length * np.array([np.cos(angle), np.sin(angle)])
      radius = rng.uniform(0.5, 0.05 * scale) if kind == 2 else rng.uniform(1.0, 2.5)
      canvas.capsule(center, end, radius, radius * rng.uniform(0.6, 1.0), color, 0)


def _occluder(canvas: _Canvas, rng: np.random.Generator, box: np.ndarray) -> None:
  """An opaque shape over part of the amodal box ``[x0, y0, x1, y1]`` (label 0)."""
  x0, y0, x1, y1 = box
  bw, bh = x1 - x0, y1 - y0
  center = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])
  color = _random_color(rng)
  if rng.random() < 0.5:  # a horizontal or vertical bar
    long_side, short_side = rng.uniform(0.15, 0.45), rng.uniform(0.08, 0.3)
    if rng.random() < 0.5:
      half = np.array([long_side * bw, short_side * bh])
    else:
      half = np.array([short_side * bw, long_side * bh])
    half = np.maximum(half, 3.0)
    canvas.polygon(center + np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half, color, 0)
  else:
    axes = (max(rng.uniform(0.15, 0.45) * bw, 3.0), max(rng.uniform(0.08, 0.25) * bh, 3.0))
    canvas.ellipse(center, axes, rng.uniform(-30, 30), color, 0)


# ----------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------


def _left_color(rng: np.random.Generator) -> np.ndarray:
  """Red-magenta hues: the person's left arm and leg."""
  return _hsv(rng.uniform(-14, 6), rng.uniform(160, 255), rng.uniform(120, 250))


def _right_color(rng: np.random.Generator) -> np.ndarray:
  """Blue-cyan hues: the person's right arm and leg."""
  return _hsv(rng.uniform(92, 122), rng.uniform(160, 255), rng.uniform(120, 250))


def _shade(color: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """The same hue markedly darker or lighter (the lower limb segment)."""
  hsv = cv2.cvtColor(np.clip(color, 0, 255).astype(np.uint8)[None, None],
                     cv2.COLOR_BGR2HSV)[0, 0].astype(np.float64)
  v = hsv[2]
  delta = rng.uniform(70, 110)
  v = v - delta if v - delta >= 45 or v + delta > 255 else v + delta
  return _hsv(hsv[0], hsv[1], max(v, 30.0))


@dataclasses.dataclass
class _Palette:
  torso: np.ndarray
  skin: np.ndarray
  hair: np.ndarray
  shoes: np.ndarray
  upper: dict[str, np.ndarray]
  lower: dict[str, np.ndarray]


def _palette(rng: np.random.Generator) -> _Palette:
  if rng.random() < 0.25:
    torso = _hsv(0, rng.uniform(0, 40), rng.uniform(40, 240))  # grey / white / black
  else:
    hue = rng.uniform(22, 80) if rng.random() < 0.6 else rng.uniform(128, 155)
    torso = _hsv(hue, rng.uniform(90, 255), rng.uniform(70, 245))
  skin = _hsv(rng.uniform(7, 18), rng.uniform(50, 150), rng.uniform(80, 240))
  hair = _hsv(rng.uniform(0, 30), rng.uniform(20, 200), rng.uniform(15, 170))
  shoes = _hsv(rng.uniform(0, 180), rng.uniform(0, 120), rng.uniform(15, 70))
  upper = {"left": _left_color(rng), "right": _right_color(rng)}
  lower = {side: _shade(c, rng) for side, c in upper.items()}
  return _Palette(torso, skin, hair, shoes, upper, lower)


@dataclasses.dataclass
class _Figure:
  """A posed figure in image pixels.

  ``keypoints``: float64 ``[17, 2]``; ``face_code``: int ``[17]`` upper bound of the
  visibility flag from self-occlusion of the head (2 for body joints); ``allowed``: the
  body parts whose pixels make each keypoint visible; ``draw``: callables that draw the
  figure back to front given the canvas and the figure's label base.
  """

  keypoints: np.ndarray
  face_code: np.ndarray
  allowed: list[tuple[int, ...]]
  draw: list[Any]
  amodal_box: np.ndarray


def _rot(angle: float) -> np.ndarray:
  return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def _limb_angles(rng: np.random.Generator) -> dict[str, float]:
  """Joint angles in radians; 0 = pointing down, positive = away from the body."""
  def arm():
    upper = rng.uniform(-0.35, 3.0) if rng.random() < 0.6 else rng.uniform(-0.2, 0.9)
    bend = rng.uniform(0.0, 2.5) * (1 if rng.random() < 0.6 else -1)
    return upper, upper + bend

  def leg():
    upper = rng.uniform(-0.3, 0.8) if rng.random() < 0.85 else rng.uniform(0.8, 1.8)
    bend = rng.uniform(0.0, 1.9) * (1 if rng.random() < 0.5 else -1)
    return upper, upper + bend

  out = {}
  for side in ("left", "right"):
    out[f"{side}_upper_arm"], out[f"{side}_forearm"] = arm()
    out[f"{side}_thigh"], out[f"{side}_shin"] = leg()
  return out


def _sample_figure(rng: np.random.Generator, height: float) -> tuple[dict[str, Any], _Palette]:
  """Draws body shape, facing and pose parameters of one figure."""
  r = rng.random()
  if r < 0.65:
    yaw = rng.uniform(-0.9, 0.9)  # facing the camera
  elif r < 0.85:
    yaw = rng.choice([-1, 1]) * rng.uniform(0.9, 2.2)  # profile
  else:
    yaw = rng.choice([-1, 1]) * rng.uniform(2.2, np.pi)  # from behind
  lean = rng.normal(0, 0.15) if rng.random() < 0.92 else rng.uniform(-1.4, 1.4)
  prop = lambda: rng.uniform(0.9, 1.1)  # noqa: E731
  foreshorten = lambda: 1.0 if rng.random() < 0.75 else rng.uniform(0.55, 1.0)  # noqa: E731
  params = {
      "H": height, "yaw": yaw, "lean": lean,
      "head_yaw": rng.normal(0, 0.3), "head_tilt": rng.normal(0, 0.2),
      "torso": 0.29 * prop(), "shoulder": 0.12 * prop(), "hip": 0.085 * prop(),
      "neck": 0.04 * prop(), "head_rx": 0.062 * prop(), "head_ry": 0.074 * prop(),
      "upper_arm": 0.165 * prop(), "forearm": 0.145 * prop(),
      "thigh": 0.235 * prop(), "shin": 0.225 * prop(),
      "w_upper_arm": 0.085 * prop(), "w_forearm": 0.07 * prop(),
      "w_thigh": 0.12 * prop(), "w_shin": 0.095 * prop(),
      "shorten": {k: foreshorten() for k in ("upper_arm", "forearm", "thigh", "shin")},
      "angles": _limb_angles(rng),
      "patterned_torso": rng.random() < 0.35,
  }
  return params, _palette(rng)


def _pose_figure(params: dict[str, Any], palette: _Palette, rng: np.random.Generator,
                 origin: np.ndarray) -> _Figure:
  """Places a sampled figure with its hip centre at ``origin`` (pixels)."""
  H = params["H"]
  yaw = params["yaw"]
  cos_y, sin_y = math.cos(yaw), math.sin(yaw)
  rot = _rot(params["lean"])
  to_img = lambda p: origin + (np.asarray(p) * H) @ rot.T  # noqa: E731

  # Sides: x sign of each side in the body frame (+x = image right when upright).
  frontal = abs(cos_y) >= 0.35
  forward = 1.0 if sin_y >= 0 else -1.0
  side_x = {"left": math.copysign(1.0, cos_y), "right": -math.copysign(1.0, cos_y)}
  # Depth of the person's left side toward the camera is -sin(yaw).
  depth = {"left": -sin_y, "right": sin_y}
  far = {s: (not frontal and depth[s] < 0) for s in ("left", "right")}

  shoulder_c = np.array([0.0, -params["torso"]])
  kp = np.zeros((NUM_KEYPOINTS, 2))
  joint = {}
  for side in ("left", "right"):
    sx = side_x[side]
    joint[f"{side}_shoulder"] = shoulder_c + [sx * params["shoulder"] * abs(cos_y), 0.0]
    joint[f"{side}_hip"] = np.array([sx * params["hip"] * abs(cos_y), 0.0])
    out = sx if frontal else forward
    for a, b, seg_a, seg_b, root in (
        ("elbow", "wrist", "upper_arm", "forearm", "shoulder"),
        ("knee", "ankle", "thigh", "shin", "hip")):
      th_a = params["angles"][f"{side}_{seg_a}"]
      th_b = params["angles"][f"{side}_{seg_b}"]
      la = params[seg_a] * params["shorten"][seg_a]
      lb = params[seg_b] * params["shorten"][seg_b]
      joint[f"{side}_{a}"] = joint[f"{side}_{root}"] + la * np.array(
          [out * math.sin(th_a), math.cos(th_a)])
      joint[f"{side}_{b}"] = joint[f"{side}_{a}"] + lb * np.array(
          [out * math.sin(th_b), math.cos(th_b)])
  for name, p in joint.items():
    kp[_K[name]] = to_img(p)

  # Head: centre above the neck, turned by psi, tilted by head_tilt.
  tilt = params["head_tilt"]
  up = np.array([math.sin(tilt), -math.cos(tilt)])
  neck_top = shoulder_c + params["neck"] * up
  head_c = neck_top + params["head_ry"] * up
  psi = yaw + params["head_yaw"]
  head_rot = _rot(params["lean"] + tilt)
  rx, ry = params["head_rx"] * H, params["head_ry"] * H
  head_center = to_img(head_c)
  face_code = np.full(NUM_KEYPOINTS, 2, np.int32)

  def head_point(azimuth, radial, y):
    local = np.array([radial * rx * math.sin(azimuth + psi), y * ry])
    return head_center + head_rot @ local, math.cos(azimuth + psi)

  face_points = {"nose": (0.0, 1.05, 0.22), "left_eye": (0.56, 0.85, -0.12),
                 "right_eye": (-0.56, 0.85, -0.12), "left_ear": (1.71, 1.0, 0.02),
                 "right_ear": (-1.71, 1.0, 0.02)}
  facing = {}
  for name, (az, radial, y) in face_points.items():
    kp[_K[name]], facing[name] = head_point(az, radial, y)
    c = facing[name]
    if name.endswith("ear"):
      face_code[_K[name]] = 2 if c > -0.25 else 1
    else:
      face_code[_K[name]] = 2 if c > 0.2 else (1 if c > -0.6 else 0)

  widths = {k: params[f"w_{k}"] * H / 2 for k in ("upper_arm", "forearm", "thigh", "shin")}
  draw_limbs: dict[str, list[Any]] = {}
  allowed: list[tuple[int, ...]] = [()] * NUM_KEYPOINTS
  part_codes = {
      "left": (_L_UPPER_ARM, _L_FOREARM, _L_HAND, _L_THIGH, _L_SHIN, _L_FOOT),
      "right": (_R_UPPER_ARM, _R_FOREARM, _R_HAND, _R_THIGH, _R_SHIN, _R_FOOT)}
  for side in ("left", "right"):
    ua, fa, hand, th, sh, foot = part_codes[side]
    k = lambda n: kp[_K[f"{side}_{n}"]]  # noqa: B023,E731
    up_c, low_c = palette.upper[side], palette.lower[side]
    hand_dir = k("wrist") - k("elbow")
    hand_dir = hand_dir / max(np.hypot(*hand_dir), 1e-6)
    shin_dir = k("ankle") - k("knee")
    shin_dir = shin_dir / max(np.hypot(*shin_dir), 1e-6)
    toe = np.array([-shin_dir[1], shin_dir[0]]) * (forward if not frontal else side_x[side])
    foot_len = 0.07 * H * (1.0 if not frontal else 0.6)
    foot_c = k("ankle") + shin_dir * 0.015 * H + toe * foot_len * 0.45
    foot_angle = math.degrees(math.atan2(toe[1], toe[0]))
    draw_limbs[f"{side}_arm"] = [
        (lambda c, b, p0=k("shoulder"), p1=k("elbow"), col=up_c, part=ua:
         c.capsule(p0, p1, widths["upper_arm"], widths["upper_arm"] * 0.85, col, b + part)),
        (lambda c, b, p0=k("elbow"), p1=k("wrist"), col=low_c, part=fa:
         c.capsule(p0, p1, widths["forearm"], widths["forearm"] * 0.8, col, b + part)),
        (lambda c, b, p=k("wrist") + hand_dir * 0.035 * H, part=hand:
         c.ellipse(p, (0.038 * H, 0.038 * H), 0.0, palette.skin, b + part)),
    ]
    draw_limbs[f"{side}_leg"] = [
        (lambda c, b, p=foot_c, ang=foot_angle, L=foot_len, part=foot:
         c.ellipse(p, (max(L * 0.6, 0.035 * H), 0.033 * H), ang, palette.shoes, b + part)),
        (lambda c, b, p0=k("knee"), p1=k("ankle"), col=low_c, part=sh:
         c.capsule(p0, p1, widths["shin"], widths["shin"] * 0.8, col, b + part)),
        (lambda c, b, p0=k("hip"), p1=k("knee"), col=up_c, part=th:
         c.capsule(p0, p1, widths["thigh"], widths["thigh"] * 0.85, col, b + part)),
    ]
    torso_ok = () if far[side] else (_TORSO,)
    allowed[_K[f"{side}_shoulder"]] = (ua,) + torso_ok
    allowed[_K[f"{side}_elbow"]] = (ua, fa)
    allowed[_K[f"{side}_wrist"]] = (fa, hand)
    allowed[_K[f"{side}_hip"]] = (th,) + torso_ok
    allowed[_K[f"{side}_knee"]] = (th, sh)
    allowed[_K[f"{side}_ankle"]] = (sh, foot)
  for name in face_points:
    allowed[_K[name]] = _HEAD_PARTS

  # Torso outline: shoulders and hips pushed outward, at least a profile's thickness.
  half_s = max(params["shoulder"] * abs(cos_y) + 0.03, 0.075)
  half_h = max(params["hip"] * abs(cos_y) + 0.05, 0.07)
  torso_poly = to_img(np.array([[-half_s, -params["torso"] - 0.012],
                                [half_s, -params["torso"] - 0.012],
                                [half_h, 0.03], [-half_h, 0.03]]))

  def draw_torso(c, b):
    c.polygon(torso_poly, palette.torso, b + _TORSO)
    if params["patterned_torso"]:
      c.pattern(b + _TORSO, rng, 0.18)

  def draw_head(c, b):
    c.capsule(to_img(shoulder_c), to_img(neck_top + 0.3 * params["head_ry"] * up),
              0.032 * H, 0.03 * H, palette.skin * 0.9, b + _NECK)
    angle = math.degrees(params["lean"] + tilt)
    c.ellipse(head_center, (rx, ry), angle, palette.hair, b + _HEAD)
    if math.cos(psi) > -0.3:  # the face (skin) is the turned-to part of the head
      shift = head_rot @ np.array([0.42 * rx * math.sin(psi), 0.17 * ry])
      width = rx * (0.45 + 0.4 * abs(math.cos(psi)))
      c.ellipse(head_center + shift, (width, 0.78 * ry), angle, palette.skin, b + _FACE)
    for name in ("left_ear", "right_ear"):
      if -0.25 < facing[name] < 0.9:
        c.ellipse(kp[_K[name]], (0.2 * rx, 0.3 * ry), angle, palette.skin * 0.85, b + _EAR)
    for name in ("left_eye", "right_eye"):
      if facing[name] > 0.2:
        rad = max(0.16 * rx, 0.9)
        c.ellipse(kp[_K[name]], (rad, rad), 0.0, (25, 20, 20), b + _EYE)
    if facing["nose"] > 0.0:
      rad = max(0.15 * rx, 0.9)
      c.ellipse(kp[_K["nose"]], (rad, rad), 0.0, palette.skin * 0.6, b + _NOSE)

  # Back to front: far-side limbs, legs, torso, head, arms (near side last).
  order: list[Any] = []
  for side in ("left", "right"):
    if far[side]:
      order += draw_limbs[f"{side}_leg"] + draw_limbs[f"{side}_arm"]
  for side in ("left", "right"):
    if not far[side]:
      order += draw_limbs[f"{side}_leg"]
  order += [draw_torso, draw_head]
  near = [s for s in ("left", "right") if not far[s]]
  near.sort(key=lambda s: depth[s])
  for side in near:
    order += draw_limbs[f"{side}_arm"]

  pts = np.concatenate([kp, torso_poly, head_center[None] + [[-rx, -ry], [rx, ry]]])
  margin = 0.04 * H
  box = np.array([pts[:, 0].min() - margin, pts[:, 1].min() - margin,
                  pts[:, 0].max() + margin, pts[:, 1].max() + margin])
  return _Figure(kp, face_code, allowed, order, box)


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
  ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = ix * iy
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / max(union, 1e-9)


def _place_figures(rng: np.random.Generator, config: SceneConfig, width: int,
                   height: int) -> list[_Figure]:
  """Samples figures and positions that keep their amodal boxes apart."""
  count = int(rng.integers(config.persons_per_image[0], config.persons_per_image[1] + 1))
  lo, hi = config.person_height
  figures: list[_Figure] = []
  for _ in range(count):
    truncated = rng.random() < config.truncation_prob
    person_h = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    if not truncated:
      person_h = min(person_h, 0.9 * height)
    params, palette = _sample_figure(rng, person_h)
    probe = _pose_figure(params, palette, rng, np.zeros(2))
    bw = probe.amodal_box[2] - probe.amodal_box[0]
    bh = probe.amodal_box[3] - probe.amodal_box[1]
    for _attempt in range(12):
      if truncated:  # let 15-60% of the box leave the image on some side
        lo_x, hi_x = -0.6 * bw, width - 0.4 * bw
        lo_y, hi_y = -0.6 * bh, height - 0.4 * bh
      else:
        lo_x, hi_x = 0.0, max(width - bw, 0.0)
        lo_y, hi_y = 0.0, max(height - bh, 0.0)
      x0, y0 = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
      box = np.array([x0, y0, x0 + bw, y0 + bh])
      if all(_box_iou(box, f.amodal_box) <= config.max_overlap for f in figures):
        origin = box[:2] - probe.amodal_box[:2]
        figures.append(_pose_figure(params, palette, rng, origin))
        break
  # Smaller figures are farther away: draw them first.
  figures.sort(key=lambda f: f.amodal_box[3] - f.amodal_box[1])
  return figures


# ----------------------------------------------------------------------------------------
# Scenes and annotations
# ----------------------------------------------------------------------------------------


def _visibility(fig: _Figure, owner: int, labels: np.ndarray) -> np.ndarray:
  """COCO flags (int32 ``[17]``) from the final label map."""
  h, w = labels.shape
  flags = np.zeros(NUM_KEYPOINTS, np.int32)
  for k, (x, y) in enumerate(fig.keypoints):
    if not (-0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5) or fig.face_code[k] == 0:
      continue
    label = int(labels[int(round(y)), int(round(x))])
    seen = label // _PARTS == owner and label % _PARTS in fig.allowed[k]
    flags[k] = min(2 if seen else 1, int(fig.face_code[k]))
  return flags


def _finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Lighting gradient, blur and sensor noise."""
  h, w = image.shape[:2]
  out = image.astype(np.float32)
  small = rng.uniform(0.75, 1.25, (3, 3)).astype(np.float32)
  out *= cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
  if rng.random() < 0.25:
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.0))
  out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(rng.uniform(0.0, 6.0))
  return np.clip(out, 0, 255).astype(np.uint8)


def render_scene(rng: np.random.Generator, config: SceneConfig = SceneConfig()
                 ) -> tuple[np.ndarray, list[dict[str, Any]]]:
  """Draws one scene.

  Args:
    rng: the random generator (the only source of randomness).
    config: scene parameters.

  Returns:
    ``(image, persons)``: the BGR uint8 image ``[H, W, 3]`` and one dict per visible
    figure with ``keypoints`` (float64 ``[17, 2]``, pixels, 0 where ``v = 0``),
    ``visibility`` (int32 ``[17]``), ``mask`` (uint8 ``[H, W]``, its visible pixels) and
    ``amodal_box`` (float64 ``[4]``, ``x0, y0, x1, y1`` of the whole figure).
  """
  width = int(rng.integers(config.image_size[0], config.image_size[1] + 1))
  height = int(rng.integers(config.image_size[0], config.image_size[1] + 1))
  canvas = _Canvas(_background(rng, height, width))
  _clutter(canvas, rng, int(rng.integers(3, 14)))
  figures = _place_figures(rng, config, width, height)
  for owner, fig in enumerate(figures, start=1):
    for draw in fig.draw:
      draw(canvas, owner * _PARTS)
  for fig in figures:
    if rng.random() < config.occluder_prob:
      _occluder(canvas, rng, fig.amodal_box)
  image = _finish(canvas.image, rng)

  persons = []
  for owner, fig in enumerate(figures, start=1):
    mask = (canvas.labels // _PARTS == owner).astype(np.uint8)
    if not mask.any():
      continue
    vis = _visibility(fig, owner, canvas.labels)
    kpts = np.where(vis[:, None] > 0, fig.keypoints, 0.0)
    persons.append({"keypoints": kpts, "visibility": vis, "mask": mask,
                    "amodal_box": fig.amodal_box})
  return image, persons


def _annotation(person: dict[str, Any], ann_id: int, image_id: int) -> dict[str, Any]:
  rle = mask_utils.encode(np.asfortranarray(person["mask"]))
  bbox = [float(v) for v in mask_utils.toBbox(rle)]
  flat = np.concatenate([np.round(person["keypoints"], 2),
                         person["visibility"][:, None].astype(np.float64)], axis=1)
  keypoints = [float(v) if i % 3 != 2 else int(v) for i, v in enumerate(flat.reshape(-1))]
  return {
      "id": ann_id,
      "image_id": image_id,
      "category_id": coco_format.PERSON_CATEGORY_ID,
      "segmentation": {"size": [int(s) for s in rle["size"]],
                       "counts": rle["counts"].decode("ascii")},
      "area": float(mask_utils.area(rle)),
      "bbox": bbox,
      "iscrowd": 0,
      "keypoints": keypoints,
      "num_keypoints": int(np.count_nonzero(person["visibility"])),
  }


def split_seed(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator of image ``index`` of ``split``: independent of the split's size."""
  return np.random.default_rng([int(seed), zlib.crc32(split.encode("utf-8")), int(index)])


def annotation_path(out_dir: str | os.PathLike, split: str) -> pathlib.Path:
  """Where :func:`generate_coco_dataset` writes the annotation file of ``split``."""
  return pathlib.Path(out_dir) / "annotations" / f"person_keypoints_{split}.json"


def image_dir(out_dir: str | os.PathLike, split: str) -> pathlib.Path:
  """Where :func:`generate_coco_dataset` writes the images of ``split``."""
  return pathlib.Path(out_dir) / split


def generate_coco_dataset(
    out_dir: str | os.PathLike,
    split: str,
    num_images: int,
    seed: int = 0,
    image_size: tuple[int, int] = SceneConfig.image_size,
    persons_per_image: tuple[int, int] = SceneConfig.persons_per_image,
    person_height: tuple[float, float] = SceneConfig.person_height,
    truncation_prob: float = SceneConfig.truncation_prob,
    occluder_prob: float = SceneConfig.occluder_prob,
) -> pathlib.Path:
  """Writes a COCO person-keypoints split of synthetic scenes.

  Args:
    out_dir: the dataset folder; receives ``annotations/person_keypoints_{split}.json``
      and ``{split}/{image_id:012d}.jpg``.
    split: split name used in the file names (e.g. ``'train'``, ``'val'``).
    num_images: number of images; image ids are ``1..num_images``, annotation ids count
      from 1 in image order.
    seed: base seed; the same arguments always give the same files.
    image_size: ``(min, max)`` image side in pixels.
    persons_per_image: ``(min, max)`` figures per image.
    person_height: ``(min, max)`` standing figure height in pixels.
    truncation_prob: probability that a figure crosses the image border.
    occluder_prob: probability of an occluder shape per figure.

  Returns:
    The path of the annotation file.

  Raises:
    ValueError: ``num_images`` is not positive, ``split`` is not a plain name, or a
      scene parameter is out of range.
  """
  if num_images <= 0:
    raise ValueError(f"num_images must be positive, got {num_images}")
  if not split or any(c in split for c in "/\\ ") or split.startswith("."):
    raise ValueError(f"split must be a plain folder name, got {split!r}")
  config = SceneConfig(image_size=tuple(image_size), persons_per_image=tuple(persons_per_image),
                       person_height=tuple(person_height), truncation_prob=truncation_prob,
                       occluder_prob=occluder_prob)
  images_out = image_dir(out_dir, split)
  images_out.mkdir(parents=True, exist_ok=True)
  ann_file = annotation_path(out_dir, split)
  ann_file.parent.mkdir(parents=True, exist_ok=True)

  images, annotations = [], []
  for index in range(num_images):
    rng = split_seed(seed, split, index)
    image, persons = render_scene(rng, config)
    image_id = index + 1
    file_name = f"{image_id:012d}.jpg"
    quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
      raise RuntimeError(f"OpenCV could not encode image {file_name}")
    (images_out / file_name).write_bytes(encoded.tobytes())
    images.append({"id": image_id, "file_name": file_name, "height": image.shape[0],
                   "width": image.shape[1], "license": 1})
    for person in persons:
      annotations.append(_annotation(person, len(annotations) + 1, image_id))

  data = {
      "info": {"description": "jaxpose synthetic_people: procedurally drawn figures",
               "version": "1.0", "year": 2025, "contributor": "jaxpose",
               "seed": int(seed), "split": split},
      "licenses": [{"id": 1, "name": "generated procedurally; no restrictions", "url": ""}],
      "images": images,
      "annotations": annotations,
      "categories": [coco_format.person_category()],
  }
  tmp = ann_file.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
  tmp.replace(ann_file)
  return ann_file
