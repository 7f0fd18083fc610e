"""Procedural people posed in 3D and photographed by a pinhole camera (``synthetic_people3d``).

The 3D counterpart of ``jaxpose.data.synthetic``: a body of ``jaxpose.data.mocap`` (one
subject's bone lengths) takes a pose from one of its motions (the 15 Human3.6M action
kinds), a camera looks at it from a random direction, height and distance, and the
figure is drawn with the projections of its body parts, far parts first:

* limbs are tapered capsules whose radii are metric (thigh 7 cm, forearm 4 cm ...)
  divided by their depth, the torso a quadrilateral between shoulders and hips, the
  head an ellipse with a skin-coloured face on the side of the nose (visible when the
  figure faces the camera), the neck a short capsule;
* colours carry the person's sides as in the 2D data: LEFT arm and leg red-magenta,
  RIGHT ones blue-cyan (lower segments in another shade);
* brightness falls with depth (a part 30 cm nearer than the pelvis is about 20% brighter),
  a depth cue that a single image otherwise lacks;
* backgrounds, clutter, lighting, noise and blur are those of ``synthetic``.

Each image holds one person with Human3.6M's 17 joints, the same features as
``h36m_images`` (``data_builders/h36m_images``): 2D joints (pixels), depth relative to the
pelvis in pixels at the pelvis' distance, camera-frame positions relative to the pelvis
(meters), the pelvis position, the intrinsics, and the crop box of integral-human-pose's
Human3.6M loader: the projection of a ``rect_size`` (2 m) square centred on the pelvis.

Deterministic: image ``i`` of split ``s`` draws from ``synthetic.split_seed(seed, s, i)``.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from jaxpose.data import keypoints as kp
from jaxpose.data import mocap
from jaxpose.data import synthetic as synth2d

_J = {name: i for i, name in enumerate(kp.H36M_JOINT_NAMES)}

# Radii of the body parts in meters (proximal, distal).
_LIMB_RADII = {"upper_arm": (0.05, 0.042), "forearm": (0.042, 0.032),
               "thigh": (0.08, 0.06), "shin": (0.06, 0.045)}
_HEAD_RADIUS = 0.1
_NECK_RADIUS = 0.045


@dataclasses.dataclass(frozen=True)
class Scene3DConfig:
  """How 3D scenes are drawn.

  Attributes:
    image_size: side of the square image, pixels.
    box_size: ``(min, max)`` side of the projected ``rect_size`` square around the pelvis
      (the crop box), pixels.
    distance: ``(min, max)`` camera-to-pelvis distance, meters.
    camera_height: ``(min, max)`` camera height above the floor, meters.
    root_offset: largest offset of the pelvis from the image centre, as a fraction of the
      box size.
    rect_size: the metric square of the crop box, meters (integral-human-pose's
      ``rect_3d_width`` = 2000 mm).
    occluder_prob: probability of an occluding shape over the person.
    actions: motion kinds to pose from (``mocap.MOTIONS`` keys).
    jpeg_quality: ``(min, max)``.
  """
  image_size: int = 128
  box_size: tuple[float, float] = (88.0, 120.0)
  distance: tuple[float, float] = (3.5, 6.0)
  camera_height: tuple[float, float] = (0.6, 2.0)
  root_offset: float = 0.12
  rect_size: float = 2.0
  occluder_prob: float = 0.15
  actions: tuple[str, ...] = tuple(mocap.MOTIONS)
  jpeg_quality: tuple[int, int] = (85, 95)

  def __post_init__(self):
    if self.image_size < 32:
      raise ValueError(f"Scene3DConfig.image_size must be >= 32, got {self.image_size}")
    for name in ("box_size", "distance", "camera_height", "jpeg_quality"):
      lo, hi = getattr(self, name)
      if not 0 < lo <= hi:
        raise ValueError(f"Scene3DConfig.{name} must be (min, max), 0 < min <= max, got {(lo, hi)}")
    unknown = sorted(set(self.actions) - set(mocap.MOTIONS))
    if unknown or not self.actions:
      raise ValueError(f"Scene3DConfig.actions: unknown {unknown}; valid: {list(mocap.MOTIONS)}")


@dataclasses.dataclass(frozen=True)
class Person3D:
  """One rendered person (``h36m_images`` feature values).

  Attributes:
    keypoints_2d: float64 ``[17, 2]`` image pixels.
    depth: float64 ``[17]`` ``(Z - Z_root) * f / Z_root``, pixels.
    positions_3d: float64 ``[17, 3]`` camera frame (x right, y down, z forward) relative
      to the pelvis, meters.
    root_position: float64 ``[3]`` the pelvis in the camera frame, meters.
    focal_length: float64 ``[2]`` pixels; center: float64 ``[2]`` principal point.
    box_center, box_size: float64 ``[2]`` the projected ``rect_size`` square.
    action: the motion kind.
  """
  keypoints_2d: np.ndarray
  depth: np.ndarray
  positions_3d: np.ndarray
  root_position: np.ndarray
  focal_length: np.ndarray
  center: np.ndarray
  box_center: np.ndarray
  box_size: np.ndarray
  action: str


def look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
  """World -> camera rotation ``[3, 3]`` (rows: right, down, forward) of a camera at
  ``position`` looking at ``target`` with the world's z axis up."""
  forward = target - position
  forward = forward / np.linalg.norm(forward)
  right = np.cross(forward, [0.0, 0.0, 1.0])
  right = right / np.linalg.norm(right)
  down = np.cross(forward, right)
  return np.stack([right, down, forward])


def sample_pose(rng: np.random.Generator, body: mocap.Body, actions: tuple[str, ...]
                ) -> tuple[np.ndarray, str]:
  """A world pose ``[17, 3]`` (meters, z up) from a random frame of a random motion."""
  action = actions[int(rng.integers(len(actions)))]
  motion = mocap.generate_motion(action, body, 60, rng)
  return np.asarray(motion[int(rng.integers(len(motion)))], np.float64), action


def photograph(rng: np.random.Generator, world: np.ndarray, config: Scene3DConfig
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """A random camera looking at the pose.

  Returns:
    ``(camera-frame joints [17, 3] m, focal [2], principal point [2], rotation [3, 3])``.
  """
  root = world[_J["pelvis"]]
  distance = rng.uniform(*config.distance)
  azimuth = rng.uniform(0.0, 2.0 * math.pi)
  height = rng.uniform(*config.camera_height)
  horizontal = math.sqrt(max(distance**2 - (height - root[2])**2, 0.25))
  position = root + np.array([horizontal * math.cos(azimuth), horizontal * math.sin(azimuth),
                              height - root[2]])
  target = root + np.array([0.0, 0.0, rng.normal(0.0, 0.1)])
  rotation = look_at(position, target)
  camera = (world - position) @ rotation.T
  box = rng.uniform(*config.box_size)
  focal = box * camera[_J["pelvis"], 2] / config.rect_size
  size = config.image_size
  # Principal point such that the pelvis lands near the image centre.
  root_px = camera[_J["pelvis"], :2] / camera[_J["pelvis"], 2] * focal
  offset = rng.uniform(-config.root_offset, config.root_offset, 2) * box
  center = np.array([size / 2.0, size / 2.0]) + offset - root_px
  return camera, np.array([focal, focal]), center, rotation


def project(points: np.ndarray, focal: np.ndarray, center: np.ndarray) -> np.ndarray:
  """Pinhole projection of camera-frame points ``[..., 3]`` -> pixels ``[..., 2]``."""
  return points[..., :2] / points[..., 2:3] * focal + center


def crop_box(root: np.ndarray, focal: np.ndarray, center: np.ndarray, rect_size: float
             ) -> tuple[np.ndarray, np.ndarray]:
  """Projection of the ``rect_size`` square centred on ``root`` (integral-human-pose's
  ``from_worldjt_to_imagejt`` box): ``(center [2], size (w, h) [2])``, pixels."""
  half = np.array([rect_size / 2.0, rect_size / 2.0, 0.0])
  left_top = project(root - half, focal, center)
  right_bottom = project(root + half, focal, center)
  return (left_top + right_bottom) / 2.0, right_bottom - left_top


def _parts(cam: np.ndarray, focal: float, center: np.ndarray, palette):
  """Drawing calls of the body parts with their depths: ``[(depth, draw(canvas, label))]``."""
  px = project(cam, np.array([focal, focal]), center)
  z = cam[:, 2]
  root_z = z[_J["pelvis"]]

  def shade(color, depth):
    return np.clip(np.asarray(color) * np.clip(1.0 + 0.7 * (root_z - depth), 0.55, 1.45), 0, 255)

  def capsule(a, b, radii, color, part):
    depth = (z[a] + z[b]) / 2
    r0, r1 = (focal * r / z[j] for r, j in zip(radii, (a, b)))
    return depth, lambda c, base: c.capsule(px[a], px[b], max(r0, 1.0), max(r1, 1.0),
                                            shade(color, depth), base + part)

  out = []
  for side, code in (("left", 0), ("right", 1)):
    upper, lower = palette.upper[side], palette.lower[side]
    joint = lambda name, s=side: _J[f"{s}_{name}"]  # noqa: E731
    out += [capsule(joint("shoulder"), joint("elbow"), _LIMB_RADII["upper_arm"], upper, 2 + code),
            capsule(joint("elbow"), joint("wrist"), _LIMB_RADII["forearm"], lower, 4 + code),
            capsule(joint("hip"), joint("knee"), _LIMB_RADII["thigh"], upper, 6 + code),
            capsule(joint("knee"), joint("ankle"), _LIMB_RADII["shin"], lower, 8 + code)]
  corners = [_J[n] for n in ("left_shoulder", "right_shoulder", "right_hip", "left_hip")]
  torso_depth = float(np.mean(z[corners]))
  out.append((torso_depth, lambda c, base: c.polygon(px[corners], shade(palette.torso, torso_depth),
                                                     base + 1)))
  out.append(capsule(_J["thorax"], _J["neck"], (_NECK_RADIUS, _NECK_RADIUS), palette.skin, 10))
  head, nose = _J["head"], _J["neck"]
  head_r = focal * _HEAD_RADIUS / z[head]
  facing = z[nose] < z[head]  # the nose is nearer: the face is turned to the camera

  def draw_head(c, base):
    c.ellipse(px[head], (head_r, head_r * 1.15), 0.0, shade(palette.hair, z[head]), base + 11)
    if facing:
      toward = px[nose] - px[head]
      c.ellipse(px[head] + 0.5 * toward, (head_r * 0.6, head_r * 0.75), 0.0,
                shade(palette.skin, z[nose]), base + 12)

  out.append((float(z[head]), draw_head))
  return out


def render_person(rng: np.random.Generator, config: Scene3DConfig = Scene3DConfig(),
                  body: mocap.Body | None = None) -> tuple[np.ndarray, Person3D]:
  """Draws one image of one posed person.

  Args:
    rng: the only source of randomness.
    config: scene parameters.
    body: the subject (drawn from ``rng`` when None).

  Returns:
    ``(image, person)``: BGR uint8 ``[S, S, 3]`` and its labels.
  """
  body = body or mocap.sample_body(rng)
  world, action = sample_pose(rng, body, config.actions)
  cam, focal, center, _ = photograph(rng, world, config)
  size = config.image_size
  canvas = synth2d._Canvas(synth2d._background(rng, size, size))  # noqa: SLF001
  synth2d._clutter(canvas, rng, int(rng.integers(2, 8)))  # noqa: SLF001
  palette = synth2d._palette(rng)  # noqa: SLF001
  for _, draw in sorted(_parts(cam, float(focal[0]), center, palette), key=lambda p: -p[0]):
    draw(canvas, 32)
  points = project(cam, focal, center)
  if rng.random() < config.occluder_prob:
    lo, hi = points.min(axis=0), points.max(axis=0)
    synth2d._occluder(canvas, rng, np.concatenate([lo, hi]))  # noqa: SLF001
  image = synth2d._finish(canvas.image, rng)  # noqa: SLF001
  root = cam[_J["pelvis"]]
  box_center, box_size = crop_box(root, focal, center, config.rect_size)
  person = Person3D(
      keypoints_2d=points, depth=(cam[:, 2] - root[2]) * focal[0] / root[2],
      positions_3d=cam - root, root_position=root.copy(), focal_length=focal,
      center=center, box_center=box_center, box_size=box_size, action=action)
  return image, person


def encode_jpeg(image: np.ndarray, rng: np.random.Generator, config: Scene3DConfig) -> bytes:
  """JPEG bytes of a BGR image at a random quality of ``config.jpeg_quality``."""
  quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
  ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
  if not ok:
    raise RuntimeError("OpenCV could not encode a synthetic image")
  return encoded.tobytes()
