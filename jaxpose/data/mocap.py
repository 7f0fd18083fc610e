"""Procedural 3D human motion on Human3.6M's 17-joint skeleton (the ``synthetic_mocap`` data).

A body is a kinematic tree with Human3.6M's joints and parents
(``jaxpose.data.keypoints.H36M_*``) and human bone lengths; a motion is a smooth trajectory
of joint angles, a heading and a path on the floor; forward kinematics turns them into
world positions in meters (z up, the floor at ``z = 0``, as Human3.6M's world frame)::

    rng = np.random.default_rng(0)
    body = sample_body(rng)                               # one subject's bone lengths
    poses = generate_motion("Walking", body, 250, rng)    # [250, 17, 3] float32 meters

Motions are named after the 15 Human3.6M actions (``MOTIONS``) so that per-action tables
mean something: locomotion with a gait cycle (Walking, WalkDog, WalkTogether), turning
and pointing (Directions), arm gestures (Discussion, Greeting, Phoning, Smoking),
sitting on a chair (Eating, Sitting) and sitting down / standing up (SittingDown),
bending and reaching (Purchases), crouching with the hands at the face (Photo), held
poses (Posing) and idling (Waiting).

Plausibility:

* every joint angle is clipped to human limits (``JOINT_LIMITS``): knees and elbows bend
  one way only, hips and shoulders within their ranges;
* the lowest ankle of every frame is ``body.ankle_height`` above the floor (so a standing
  or walking body has a foot on the ground, a sitting one sits at knee height);
* walking follows normative gait curves, the pelvis advances at the speed that keeps the
  standing foot (nearly) planted and bobs with the gait;
* paths stay inside Human3.6M's capture area (``CAPTURE_RADIUS`` around the origin), so
  the four cameras see the whole body.

Deterministic: everything draws from the ``numpy.random.Generator`` passed in.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from jaxpose.data.keypoints import H36M_JOINT_NAMES, H36M_PARENTS

NUM_JOINTS = len(H36M_JOINT_NAMES)
_J = {name: i for i, name in enumerate(H36M_JOINT_NAMES)}

FPS = 50  # Human3.6M's motion capture rate
CAPTURE_RADIUS = 1.3  # meters; paths stay within this distance of the world origin
_LEFT, _RIGHT = 1.0, -1.0

# Mean bone length of each non-root joint (to its parent), meters; close to Human3.6M's
# subjects (e.g. S1: hips 0.13, thighs 0.45, shins 0.45, upper arms 0.28, forearms 0.25).
MEAN_BONE_LENGTHS: dict[str, float] = {
    "right_hip": 0.13, "right_knee": 0.45, "right_ankle": 0.44,
    "left_hip": 0.13, "left_knee": 0.45, "left_ankle": 0.44,
    "spine": 0.23, "thorax": 0.25, "neck": 0.12, "head": 0.115,
    "left_shoulder": 0.15, "left_elbow": 0.28, "left_wrist": 0.25,
    "right_shoulder": 0.15, "right_elbow": 0.28, "right_wrist": 0.25,
}

# Rest direction of each bone in its parent segment's frame (x forward, y left, z up):
# legs and arms hang down, the spine and head point up, the nose ("neck") slightly forward.
_REST_DIRECTIONS: dict[str, tuple[float, float, float]] = {
    "right_hip": (0.0, -1.0, -0.08), "right_knee": (0.0, 0.0, -1.0),
    "right_ankle": (0.0, 0.0, -1.0),
    "left_hip": (0.0, 1.0, -0.08), "left_knee": (0.0, 0.0, -1.0),
    "left_ankle": (0.0, 0.0, -1.0),
    "spine": (0.02, 0.0, 1.0), "thorax": (0.0, 0.0, 1.0), "neck": (0.3, 0.0, 1.0),
    "head": (-0.1, 0.0, 1.0),
    "left_shoulder": (-0.05, 1.0, -0.12), "left_elbow": (0.0, 0.0, -1.0),
    "left_wrist": (0.0, 0.0, -1.0),
    "right_shoulder": (-0.05, -1.0, -0.12), "right_elbow": (0.0, 0.0, -1.0),
    "right_wrist": (0.0, 0.0, -1.0),
}

# Joint angles (degrees) of a pose, in this order. Positive flexion moves a thigh or upper
# arm forward, bends a knee backward and an elbow forward, leans the back forward and
# nods the head down; positive abduction moves a limb away from the body; twists turn
# about the bone (hips: positive turns the knee outward; shoulders: positive turns the
# forearm inward, towards the body's midline) or the vertical axis (back, neck).
DOF_NAMES: tuple[str, ...] = (
    "back_flex", "back_bend", "back_twist", "neck_nod", "neck_turn",
    "l_hip_flex", "l_hip_abd", "l_hip_twist", "l_knee",
    "r_hip_flex", "r_hip_abd", "r_hip_twist", "r_knee",
    "l_shoulder_flex", "l_shoulder_abd", "l_shoulder_twist", "l_elbow",
    "r_shoulder_flex", "r_shoulder_abd", "r_shoulder_twist", "r_elbow",
)
_D = {name: i for i, name in enumerate(DOF_NAMES)}
NUM_DOFS = len(DOF_NAMES)

# (min, max) of each angle in degrees.
JOINT_LIMITS: dict[str, tuple[float, float]] = {
    "back_flex": (-20.0, 80.0), "back_bend": (-25.0, 25.0), "back_twist": (-40.0, 40.0),
    "neck_nod": (-40.0, 50.0), "neck_turn": (-70.0, 70.0),
    "l_hip_flex": (-30.0, 120.0), "l_hip_abd": (-15.0, 45.0), "l_hip_twist": (-30.0, 30.0),
    "l_knee": (0.0, 140.0),
    "r_hip_flex": (-30.0, 120.0), "r_hip_abd": (-15.0, 45.0), "r_hip_twist": (-30.0, 30.0),
    "r_knee": (0.0, 140.0),
    "l_shoulder_flex": (-45.0, 170.0), "l_shoulder_abd": (-5.0, 160.0),
    "l_shoulder_twist": (-70.0, 70.0), "l_elbow": (0.0, 145.0),
    "r_shoulder_flex": (-45.0, 170.0), "r_shoulder_abd": (-5.0, 160.0),
    "r_shoulder_twist": (-70.0, 70.0), "r_elbow": (0.0, 145.0),
}
_LIMITS = np.array([JOINT_LIMITS[n] for n in DOF_NAMES], dtype=np.float64)  # [D, 2]

# The relaxed standing pose every motion starts from (degrees).
_STAND: dict[str, float] = {
    "back_flex": 3.0, "l_knee": 5.0, "r_knee": 5.0, "l_hip_flex": 3.0, "r_hip_flex": 3.0,
    "l_hip_abd": 3.0, "r_hip_abd": 3.0, "l_shoulder_abd": 8.0, "r_shoulder_abd": 8.0,
    "l_elbow": 15.0, "r_elbow": 15.0, "l_shoulder_flex": 3.0, "r_shoulder_flex": 3.0,
}


@dataclasses.dataclass(frozen=True)
class Body:
  """One subject's skeleton.

  Attributes:
    bone_lengths: ``[17]`` float64 meters, the length of the bone from each joint to its
      parent (0 for the pelvis).
    ankle_height: height of the ankle joints above the floor when standing, meters.
  """
  bone_lengths: np.ndarray
  ankle_height: float

  @property
  def leg_length(self) -> float:
    """Hip to ankle, meters."""
    return float(self.bone_lengths[_J["left_knee"]] + self.bone_lengths[_J["left_ankle"]])

  @property
  def height(self) -> float:
    """Approximate standing height (floor to head joint), meters."""
    b = self.bone_lengths
    chain = ("right_knee", "right_ankle", "spine", "thorax", "neck", "head")
    return float(sum(b[_J[n]] for n in chain) + self.ankle_height + 0.1)


def sample_body(rng: np.random.Generator) -> Body:
  """Draws a subject: an overall scale (sd 5%) times per-bone variation (sd 3%).

  Left and right limbs have the same lengths. Heights come out around 1.6-1.85 m.
  """
  scale = float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.12))
  lengths = np.zeros(NUM_JOINTS)
  for name, mean in MEAN_BONE_LENGTHS.items():
    if name.startswith("right_"):
      continue
    value = mean * scale * float(np.clip(rng.normal(1.0, 0.03), 0.92, 1.08))
    lengths[_J[name]] = value
    if name.startswith("left_"):
      lengths[_J["right_" + name[5:]]] = value
  return Body(bone_lengths=lengths, ankle_height=float(0.08 * scale))


# ----------------------------------------------------------------------------------------
# Forward kinematics
# ----------------------------------------------------------------------------------------


def _rot(axis: int, angle: np.ndarray) -> np.ndarray:
  """Rotation matrices ``[T, 3, 3]`` about the x (0), y (1) or z (2) axis; radians."""
  c, s = np.cos(angle), np.sin(angle)
  out = np.zeros(angle.shape + (3, 3))
  i, j = [(1, 2), (2, 0), (0, 1)][axis]
  out[..., axis, axis] = 1.0
  out[..., i, i] = c
  out[..., j, j] = c
  out[..., i, j] = -s
  out[..., j, i] = s
  return out


def _joint_rotations(angles: np.ndarray) -> dict[str, np.ndarray]:
  """The rotation of each bone relative to its parent segment, ``[T, 3, 3]`` per joint."""
  a = np.deg2rad(angles)
  rot = lambda axis, dof: _rot(axis, a[:, _D[dof]])  # noqa: E731
  out = {
      "spine": rot(1, "back_flex") @ rot(0, "back_bend") @ rot(2, "back_twist"),
      "neck": rot(1, "neck_nod") @ rot(2, "neck_turn"),
  }
  for side, sign in (("l", _LEFT), ("r", _RIGHT)):
    full = "left" if side == "l" else "right"
    out[f"{full}_knee"] = (_rot(1, -a[:, _D[f"{side}_hip_flex"]])
                           @ _rot(0, sign * a[:, _D[f"{side}_hip_abd"]])
                           @ _rot(2, sign * a[:, _D[f"{side}_hip_twist"]]))
    out[f"{full}_ankle"] = _rot(1, a[:, _D[f"{side}_knee"]])
    out[f"{full}_elbow"] = (_rot(1, -a[:, _D[f"{side}_shoulder_flex"]])
                            @ _rot(0, sign * a[:, _D[f"{side}_shoulder_abd"]])
                            @ _rot(2, -sign * a[:, _D[f"{side}_shoulder_twist"]]))
    out[f"{full}_wrist"] = _rot(1, -a[:, _D[f"{side}_elbow"]])
  return out


def forward_kinematics(body: Body, angles: np.ndarray, heading: np.ndarray,
                       root_xy: np.ndarray) -> np.ndarray:
  """World joint positions of a pose sequence, standing on the floor.

  Args:
    body: bone lengths.
    angles: ``[T, NUM_DOFS]`` joint angles in degrees (``DOF_NAMES`` order), clipped to
      ``JOINT_LIMITS`` here.
    heading: ``[T]`` facing direction in radians (0 faces world +x, counter-clockwise).
    root_xy: ``[T, 2]`` pelvis position on the floor plane, meters.

  Returns:
    ``[T, 17, 3]`` float64 world positions in meters (z up); the pelvis height is set so
    that the lowest ankle is ``body.ankle_height`` above the floor.
  """
  angles = np.clip(np.asarray(angles, np.float64), _LIMITS[:, 0], _LIMITS[:, 1])
  num = angles.shape[0]
  local = _joint_rotations(angles)
  frame = [None] * NUM_JOINTS  # rotation of the segment starting at each joint
  pos = np.zeros((num, NUM_JOINTS, 3))
  frame[0] = _rot(2, np.asarray(heading, np.float64))
  for j in range(1, NUM_JOINTS):
    name, parent = H36M_JOINT_NAMES[j], H36M_PARENTS[j]
    rest = np.asarray(_REST_DIRECTIONS[name])
    bone = rest / np.linalg.norm(rest) * body.bone_lengths[j]
    seg = frame[parent] @ local[name] if name in local else frame[parent]
    pos[:, j] = pos[:, parent] + seg @ bone
    frame[j] = seg
  lowest = np.minimum(pos[:, _J["left_ankle"], 2], pos[:, _J["right_ankle"], 2])
  pos[..., 2] += (body.ankle_height - lowest)[:, None]
  pos[..., :2] += np.asarray(root_xy, np.float64)[:, None, :]
  return pos


# ----------------------------------------------------------------------------------------
# Smooth random signals
# ----------------------------------------------------------------------------------------


def _smoothstep(x: np.ndarray) -> np.ndarray:
  x = np.clip(x, 0.0, 1.0)
  return x * x * x * (x * (6 * x - 15) + 10)  # minimum-jerk blend, C2 at both ends


def keyframes(rng: np.random.Generator, num_frames: int, interval: tuple[float, float],
              sample: Callable[[np.random.Generator], np.ndarray], hold: float = 0.3,
              fps: float = FPS) -> np.ndarray:
  """Holds and minimum-jerk transitions between random key values.

  Args:
    rng: random generator.
    num_frames: ``T``.
    interval: ``(min, max)`` seconds between keys.
    sample: draws one key value (a float or an array of any shape).
    hold: fraction of each interval spent holding the key before moving on.
    fps: frames per second.

  Returns:
    ``[T, *value shape]`` float64, starting at the first key.
  """
  t = np.arange(num_frames) / fps
  times, values = [0.0], [np.asarray(sample(rng), np.float64)]
  while times[-1] <= t[-1]:
    times.append(times[-1] + rng.uniform(*interval))
    values.append(np.asarray(sample(rng), np.float64))
  times_a = np.asarray(times)
  k = np.clip(np.searchsorted(times_a, t, side="right") - 1, 0, len(times) - 2)
  span = times_a[k + 1] - times_a[k]
  frac = _smoothstep(((t - times_a[k]) / span - hold) / (1 - hold))
  v = np.stack(values)
  frac = frac.reshape((-1,) + (1,) * (v.ndim - 1))
  return v[k] * (1 - frac) + v[k + 1] * frac


def wobble(rng: np.random.Generator, num_frames: int, amplitude: float,
           freq: tuple[float, float] = (0.15, 0.6), terms: int = 3, fps: float = FPS
           ) -> np.ndarray:
  """A smooth zero-mean signal: a sum of ``terms`` sinusoids of random frequency/phase.

  Returns ``[T]`` float64 with peak amplitude about ``amplitude``.
  """
  t = np.arange(num_frames) / fps
  f = rng.uniform(*freq, size=terms)
  phase = rng.uniform(0, 2 * np.pi, size=terms)
  weight = rng.uniform(0.5, 1.0, size=terms)
  weight = weight / weight.sum() * amplitude
  return (weight[:, None] * np.sin(2 * np.pi * f[:, None] * t[None] + phase[:, None])).sum(0)


# ----------------------------------------------------------------------------------------
# Motion building blocks
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Motion:
  """A motion being built: angles, heading and floor path, all ``T`` frames long.

  Attributes:
    angles: ``[T, NUM_DOFS]`` degrees.
    heading: ``[T]`` radians.
    root_xy: ``[T, 2]`` meters.
  """
  angles: np.ndarray
  heading: np.ndarray
  root_xy: np.ndarray

  def __getitem__(self, dof: str) -> np.ndarray:
    return self.angles[:, _D[dof]]

  def __setitem__(self, dof: str, value) -> None:
    self.angles[:, _D[dof]] = value

  def add(self, dof: str, value) -> None:
    self.angles[:, _D[dof]] += value


def standing(rng: np.random.Generator, num_frames: int) -> Motion:
  """A relaxed standing pose at a random place and heading, with breathing and sway."""
  angles = np.zeros((num_frames, NUM_DOFS))
  for dof, value in _STAND.items():
    angles[:, _D[dof]] = value
  m = Motion(angles, np.full(num_frames, rng.uniform(-np.pi, np.pi)),
             np.tile(_random_spot(rng, 0.6), (num_frames, 1)))
  for dof, amp in (("back_flex", 2.0), ("back_bend", 2.0), ("back_twist", 3.0),
                   ("neck_nod", 4.0), ("neck_turn", 8.0), ("l_elbow", 4.0),
                   ("r_elbow", 4.0), ("l_shoulder_flex", 3.0), ("r_shoulder_flex", 3.0)):
    m.add(dof, wobble(rng, num_frames, amp))
  shift = wobble(rng, num_frames, 4.0, freq=(0.1, 0.3))  # weight shift between the legs
  m.add("l_hip_abd", shift)
  m.add("r_hip_abd", -shift)
  return m


def _random_spot(rng: np.random.Generator, radius: float) -> np.ndarray:
  r = radius * np.sqrt(rng.uniform())
  a = rng.uniform(0, 2 * np.pi)
  return np.array([r * np.cos(a), r * np.sin(a)])


def _turns(rng: np.random.Generator, num_frames: int, interval: tuple[float, float],
           max_turn: float, start: float) -> np.ndarray:
  """A heading that turns to a new direction within ``max_turn`` radians of ``start``
  every ``interval`` seconds (turning in place)."""
  steps = keyframes(rng, num_frames, interval, lambda r: r.uniform(-max_turn, max_turn), 0.4)
  return start + steps - steps[0]


# One stride of a leg from its heel strike (fraction 0) over stance (to toe-off at 0.6) and
# swing, after normative sagittal gait data (Winter): the thigh's angle from the vertical
# (positive forward) and the knee's flexion, degrees.
_STANCE = 0.6
_THIGH_CURVE = ((0.0, 20.0), (0.1, 17.0), (0.3, 3.0), (0.5, -12.0), (0.6, -8.0), (0.75, 12.0),
                (0.87, 21.0))
_KNEE_CURVE = ((0.0, 3.0), (0.15, 17.0), (0.4, 4.0), (0.6, 38.0), (0.73, 58.0), (0.9, 16.0))


def _periodic(points: tuple[tuple[float, float], ...], harmonics: int = 5
              ) -> Callable[[np.ndarray], np.ndarray]:
  """A smooth periodic curve (period 1) through ``(phase, value)`` points: the piecewise
  linear curve's first ``harmonics`` Fourier terms."""
  grid = np.arange(512) / 512
  phases = [p for p, _ in points] + [1.0]
  values = [v for _, v in points] + [points[0][1]]
  coef = np.fft.rfft(np.interp(grid, phases, values))[:harmonics + 1] / len(grid)

  def curve(u: np.ndarray) -> np.ndarray:
    k = np.arange(1, harmonics + 1)
    terms = coef[1:, None] * np.exp(2j * np.pi * k[:, None] * np.asarray(u)[None])
    return coef[0].real + 2 * terms.sum(axis=0).real

  return curve


_THIGH = _periodic(_THIGH_CURVE)
_KNEE = _periodic(_KNEE_CURVE)


def _stride_length(body: Body, scale: float) -> float:
  """How far the pelvis moves over one stride while a foot stands still (meters)."""
  u = np.linspace(0.0, _STANCE, 50)
  thigh = np.deg2rad(scale * _THIGH(u))
  shin = thigh - np.deg2rad(scale * _KNEE(u))
  x = (body.bone_lengths[_J["left_knee"]] * np.sin(thigh)
       + body.bone_lengths[_J["left_ankle"]] * np.sin(shin))
  return float(x[0] - x[-1]) / _STANCE


def walk(m: Motion, rng: np.random.Generator, body: Body, speed_factor: np.ndarray | float = 1.0,
         cadence: float | None = None, scale: float | None = None) -> None:
  """Adds a gait cycle and moves the body along an elliptic path in the capture area.

  The legs follow normative gait curves (thigh swing and knee flexion over a stride,
  scaled by ``scale``) at ``cadence`` steps per second; the arms swing against the legs
  and the back counter-rotates. The pelvis advances so that the standing foot stays
  (nearly) planted, scaled by ``speed_factor`` (may vary per frame; 0 stands still, the
  legs blending back to the motion's own pose).
  """
  num = m.angles.shape[0]
  cadence = cadence or rng.uniform(1.6, 2.0)
  scale = scale or rng.uniform(0.85, 1.15)
  factor = np.broadcast_to(np.asarray(speed_factor, np.float64), (num,)).clip(0, None)
  stride = np.cumsum(np.full(num, cadence / 2 / FPS) * factor) + rng.uniform()  # strides
  gait = factor.clip(0, 1)
  for side, offset in (("r", 0.0), ("l", 0.5)):
    u = (stride + offset) % 1.0
    thigh = scale * _THIGH(u)
    _blend(m, f"{side}_hip_flex", thigh, gait)
    _blend(m, f"{side}_knee", scale * _KNEE(u), gait)
    # the arm swings against the leg of its side
    m.add(f"{side}_shoulder_flex", gait * (-0.6 * (thigh - 4.0 * scale)))
    m.add(f"{side}_elbow", gait * (12.0 - 0.3 * (thigh - 4.0 * scale)))
  m.add("back_twist", gait * 0.25 * (scale * _THIGH(stride % 1.0) - 4.0 * scale))
  m.add("back_flex", gait * 3.0)
  speed = _stride_length(body, scale) * cadence / 2 * factor
  _follow_ellipse(m, rng, speed)


def _follow_ellipse(m: Motion, rng: np.random.Generator, speed: np.ndarray) -> None:
  """Moves the root along a random ellipse at ``speed`` m/s, facing along the path."""
  ra = rng.uniform(0.7, CAPTURE_RADIUS)
  rb = rng.uniform(0.5, ra)
  tilt = rng.uniform(0, np.pi)
  direction = rng.choice([-1.0, 1.0])
  theta0 = rng.uniform(0, 2 * np.pi)
  # integrate the path parameter so that the arc length follows the speed
  theta = np.empty(len(speed))
  th = theta0
  for i, v in enumerate(speed):
    theta[i] = th
    ds = np.hypot(ra * np.sin(th), rb * np.cos(th))
    th += direction * v / FPS / max(ds, 1e-6)
  x, y = ra * np.cos(theta), rb * np.sin(theta)
  dx, dy = -ra * np.sin(theta) * direction, rb * np.cos(theta) * direction
  c, s = np.cos(tilt), np.sin(tilt)
  m.root_xy = np.stack([c * x - s * y, s * x + c * y], axis=-1)
  path_heading = np.unwrap(np.arctan2(s * dx + c * dy, c * dx - s * dy))
  moving = speed > 0.05
  # when the body stops it keeps its last heading
  last = np.maximum.accumulate(np.where(moving, np.arange(len(speed)), 0))
  m.heading = path_heading[last] + (m.heading - m.heading[0])


def _arm_pose(m: Motion, side: str, flex, abd, twist, elbow) -> None:
  for dof, value in (("shoulder_flex", flex), ("shoulder_abd", abd),
                     ("shoulder_twist", twist), ("elbow", elbow)):
    m[f"{side}_{dof}"] = value


def _blend(m: Motion, dof: str, target, weight: np.ndarray) -> None:
  m[dof] = m[dof] * (1 - weight) + target * weight


def _gesture(rng: np.random.Generator, num: int, side_scale: float = 1.0) -> np.ndarray:
  """Keyframed conversational arm gestures: ``[T, 4]`` (flex, abd, twist, elbow)."""
  return keyframes(rng, num, (0.6, 1.6), lambda r: np.array([
      r.uniform(-5, 55) * side_scale, r.uniform(5, 35), r.uniform(-20, 40),
      r.uniform(20, 100)]), hold=0.2)


# ----------------------------------------------------------------------------------------
# The 15 motions
# ----------------------------------------------------------------------------------------


def _directions(m: Motion, rng, body) -> None:
  num = len(m.heading)
  m.heading = _turns(rng, num, (1.0, 2.5), 1.6, m.heading[0])
  side = rng.choice(["l", "r"])
  point = keyframes(rng, num, (1.0, 2.5), lambda r: float(r.uniform() < 0.6), hold=0.5)
  _arm_pose(m, side, 75 * point + m[f"{side}_shoulder_flex"] * (1 - point),
            m[f"{side}_shoulder_abd"] + 25 * point, 0.0, m[f"{side}_elbow"] * (1 - point) + 5)
  m.add("neck_turn", keyframes(rng, num, (0.8, 2.0), lambda r: r.uniform(-40, 40)))


def _discussion(m: Motion, rng, body) -> None:
  num = len(m.heading)
  for side in ("l", "r"):
    g = _gesture(rng, num)
    _arm_pose(m, side, g[:, 0], g[:, 1], g[:, 2], g[:, 3])
  m.add("back_twist", wobble(rng, num, 10.0))
  m.add("neck_turn", keyframes(rng, num, (0.8, 2.0), lambda r: r.uniform(-30, 30)))
  m.heading = _turns(rng, num, (2.0, 4.0), 0.8, m.heading[0])


def _eating(m: Motion, rng, body) -> None:
  _sit(m, rng, np.ones(len(m.heading)))
  num = len(m.heading)
  for side in ("l", "r"):
    to_mouth = keyframes(rng, num, (0.8, 2.0), lambda r: float(r.uniform() < 0.45), hold=0.35)
    _arm_pose(m, side, 25 + 35 * to_mouth, 10 + 10 * to_mouth, 30 * to_mouth,
              70 + 65 * to_mouth)
  m.add("back_flex", 10.0)
  m.add("neck_nod", 15.0)


def _greeting(m: Motion, rng, body) -> None:
  num = len(m.heading)
  side = rng.choice(["l", "r"])
  wave = keyframes(rng, num, (1.5, 3.0), lambda r: float(r.uniform() < 0.6), hold=0.5)
  t = np.arange(num) / FPS
  _blend(m, f"{side}_shoulder_abd", 110.0, wave)
  _blend(m, f"{side}_shoulder_flex", 30.0, wave)
  _blend(m, f"{side}_elbow", 70 + 30 * np.sin(2 * np.pi * 2.2 * t), wave)
  bow = keyframes(rng, num, (1.5, 3.0), lambda r: r.uniform(0, 25) * (r.uniform() < 0.4))
  m.add("back_flex", bow)
  step = keyframes(rng, num, (1.0, 2.5), lambda r: float(r.uniform() < 0.5), hold=0.3)
  walk(m, rng, body, speed_factor=0.6 * step)


def _phoning(m: Motion, rng, body) -> None:
  num = len(m.heading)
  side = rng.choice(["l", "r"])
  other = "r" if side == "l" else "l"
  moving = keyframes(rng, num, (1.5, 3.5), lambda r: r.uniform(0.0, 0.6) * (r.uniform() < 0.6))
  walk(m, rng, body, speed_factor=moving)
  _arm_pose(m, side, 30.0, 35.0, 40.0, 140.0)
  g = _gesture(rng, num, 0.6)
  _arm_pose(m, other, g[:, 0], g[:, 1], g[:, 2], g[:, 3])
  m.add("neck_nod", 10.0)
  m.add("neck_turn", wobble(rng, num, 15.0))


def _photo(m: Motion, rng, body) -> None:
  num = len(m.heading)
  crouch = keyframes(rng, num, (1.5, 3.0), lambda r: r.uniform(0, 55) * (r.uniform() < 0.5))
  for side in ("l", "r"):
    m.add(f"{side}_knee", crouch)
    m.add(f"{side}_hip_flex", 0.55 * crouch)
  m.add("back_flex", 0.3 * crouch)
  camera = keyframes(rng, num, (1.0, 2.5), lambda r: float(r.uniform() < 0.7), hold=0.4)
  for side in ("l", "r"):
    _blend(m, f"{side}_shoulder_flex", 70.0, camera)
    _blend(m, f"{side}_shoulder_abd", 25.0, camera)
    _blend(m, f"{side}_shoulder_twist", 35.0, camera)
    _blend(m, f"{side}_elbow", 125.0, camera)
  m.heading = _turns(rng, num, (1.5, 3.0), 1.2, m.heading[0])


def _posing(m: Motion, rng, body) -> None:
  num = len(m.heading)

  def pose(r):
    v = np.zeros(NUM_DOFS)
    for side in ("l", "r"):
      v[_D[f"{side}_shoulder_flex"]] = r.uniform(-20, 150)
      v[_D[f"{side}_shoulder_abd"]] = r.uniform(0, 140)
      v[_D[f"{side}_shoulder_twist"]] = r.uniform(-30, 50)
      v[_D[f"{side}_elbow"]] = r.uniform(0, 130)
    lift = r.choice(["l", "r"])
    v[_D[f"{lift}_hip_flex"]] = r.uniform(0, 70) * (r.uniform() < 0.35)
    v[_D[f"{lift}_knee"]] = v[_D[f"{lift}_hip_flex"]] * r.uniform(0.5, 1.5)
    v[_D[f"{lift}_hip_abd"]] = r.uniform(0, 30)
    v[_D["back_flex"]] = r.uniform(-10, 30)
    v[_D["back_bend"]] = r.uniform(-20, 20)
    v[_D["back_twist"]] = r.uniform(-30, 30)
    v[_D["neck_turn"]] = r.uniform(-40, 40)
    return v

  m.angles += keyframes(rng, num, (1.5, 3.0), pose, hold=0.5)
  m.heading = _turns(rng, num, (2.0, 4.0), 1.0, m.heading[0])


def _purchases(m: Motion, rng, body) -> None:
  num = len(m.heading)
  moving = keyframes(rng, num, (1.0, 2.5), lambda r: r.uniform(0.3, 0.8) * (r.uniform() < 0.5))
  walk(m, rng, body, speed_factor=moving)
  reach = keyframes(rng, num, (1.0, 2.5), lambda r: r.uniform() * (r.uniform() < 0.6), hold=0.4)
  still = 1 - np.clip(moving * 3, 0, 1)
  m.add("back_flex", 55 * reach * still)
  m.add("l_knee", 25 * reach * still)
  m.add("r_knee", 25 * reach * still)
  m.add("l_hip_flex", 15 * reach * still)
  m.add("r_hip_flex", 15 * reach * still)
  for side in ("l", "r"):
    _blend(m, f"{side}_shoulder_flex", 60.0, reach * still)
    _blend(m, f"{side}_elbow", 20.0, reach * still)
  m.add("neck_nod", 20 * reach)


def _sit(m: Motion, rng, amount: np.ndarray) -> None:
  """Blends in a seated pose (thighs level, shins down) by ``amount`` in [0, 1]."""
  hip = rng.uniform(80, 95)
  knee = rng.uniform(80, 100)
  for side in ("l", "r"):
    _blend(m, f"{side}_hip_flex", hip + rng.uniform(-5, 5), amount)
    _blend(m, f"{side}_knee", knee + rng.uniform(-10, 10), amount)
    _blend(m, f"{side}_hip_abd", rng.uniform(5, 15), amount)
  m.add("back_flex", -5 * amount)


def _sitting(m: Motion, rng, body) -> None:
  num = len(m.heading)
  _sit(m, rng, np.ones(num))
  for side in ("l", "r"):
    g = _gesture(rng, num, 0.8)
    _arm_pose(m, side, g[:, 0] + 10, g[:, 1], g[:, 2], g[:, 3])
  m.add("back_flex", keyframes(rng, num, (1.5, 3.5), lambda r: r.uniform(-5, 30)))
  m.add("back_twist", wobble(rng, num, 10.0))
  # crossing a leg now and then
  cross = keyframes(rng, num, (2.0, 4.0), lambda r: float(r.uniform() < 0.3), hold=0.5)
  leg = rng.choice(["l", "r"])
  m.add(f"{leg}_hip_flex", 15 * cross)
  m.add(f"{leg}_hip_abd", -15 * cross)


def _sitting_down(m: Motion, rng, body) -> None:
  num = len(m.heading)
  seated = keyframes(rng, num, (1.2, 2.5), lambda r: float(r.uniform() < 0.5), hold=0.35)
  _sit(m, rng, seated)
  transition = np.abs(np.gradient(seated)) * FPS  # lean forward while getting up or down
  m.add("back_flex", 35 * np.clip(transition, 0, 1.2))
  for side in ("l", "r"):
    _blend(m, f"{side}_shoulder_flex", 35.0, np.clip(transition, 0, 1))
  m.add("neck_turn", wobble(rng, num, 15.0))


def _smoking(m: Motion, rng, body) -> None:
  num = len(m.heading)
  side = rng.choice(["l", "r"])
  puff = keyframes(rng, num, (1.0, 2.5), lambda r: float(r.uniform() < 0.45), hold=0.45)
  _arm_pose(m, side, 20 + 30 * puff, 15 + 15 * puff, 10 + 30 * puff, 60 + 80 * puff)
  other = "r" if side == "l" else "l"
  _arm_pose(m, other, 15.0, 20.0, 40.0, 95.0)  # arm folded across the belly
  moving = keyframes(rng, num, (2.0, 4.0), lambda r: r.uniform(0.2, 0.5) * (r.uniform() < 0.3))
  walk(m, rng, body, speed_factor=moving)


def _waiting(m: Motion, rng, body) -> None:
  num = len(m.heading)
  crossed = keyframes(rng, num, (2.0, 4.0), lambda r: float(r.uniform() < 0.5), hold=0.5)
  for side in ("l", "r"):
    _blend(m, f"{side}_shoulder_flex", 25.0, crossed)
    _blend(m, f"{side}_shoulder_twist", 45.0, crossed)
    _blend(m, f"{side}_elbow", 105.0, crossed)
  shift = keyframes(rng, num, (1.5, 3.5), lambda r: r.uniform(-8, 8))
  m.add("l_hip_abd", shift)
  m.add("r_hip_abd", -shift)
  m.add("l_knee", np.clip(shift, 0, None) * 2)
  m.add("r_knee", np.clip(-shift, 0, None) * 2)
  m.add("neck_turn", keyframes(rng, num, (1.0, 2.5), lambda r: r.uniform(-50, 50)))
  m.heading = _turns(rng, num, (2.0, 5.0), 1.5, m.heading[0])


def _walk_dog(m: Motion, rng, body) -> None:
  num = len(m.heading)
  pace = keyframes(rng, num, (1.0, 2.5), lambda r: r.uniform(0.3, 0.9) * (r.uniform() < 0.8))
  side = rng.choice(["l", "r"])
  walk(m, rng, body, speed_factor=pace)
  _arm_pose(m, side, 30.0 + wobble(rng, num, 10.0), 15.0, 10.0, 25.0 + wobble(rng, num, 10.0))
  m.add("neck_nod", 15.0)
  m.add("back_flex", 5.0)


def _walking(m: Motion, rng, body) -> None:
  walk(m, rng, body, speed_factor=rng.uniform(0.9, 1.1))


def _walk_together(m: Motion, rng, body) -> None:
  num = len(m.heading)
  walk(m, rng, body, speed_factor=rng.uniform(0.7, 0.9), cadence=rng.uniform(1.5, 1.8))
  m.add("neck_turn", rng.choice([-1, 1]) * (25 + wobble(rng, num, 10.0)))
  m.add("back_twist", 5.0)


MOTIONS: dict[str, Callable[[Motion, np.random.Generator, Body], None]] = {
    "Directions": _directions,
    "Discussion": _discussion,
    "Eating": _eating,
    "Greeting": _greeting,
    "Phoning": _phoning,
    "Photo": _photo,
    "Posing": _posing,
    "Purchases": _purchases,
    "Sitting": _sitting,
    "SittingDown": _sitting_down,
    "Smoking": _smoking,
    "Waiting": _waiting,
    "WalkDog": _walk_dog,
    "Walking": _walking,
    "WalkTogether": _walk_together,
}


def generate_motion(kind: str, body: Body, num_frames: int, rng: np.random.Generator
                    ) -> np.ndarray:
  """One motion sequence of ``kind`` at 50 frames per second.

  Args:
    kind: one of ``MOTIONS`` (Human3.6M action names).
    body: the subject (``sample_body``).
    num_frames: ``T`` (at least 2).
    rng: random generator (all randomness of the sequence).

  Returns:
    ``[T, 17, 3]`` float32 world positions in meters, z up, floor at 0.

  Raises:
    ValueError: unknown kind (listing the valid ones) or fewer than 2 frames.
  """
  if kind not in MOTIONS:
    raise ValueError(f"unknown motion {kind!r}; valid: {', '.join(MOTIONS)}")
  if num_frames < 2:
    raise ValueError(f"a motion needs at least 2 frames, got {num_frames}")
  m = standing(rng, num_frames)
  MOTIONS[kind](m, rng, body)
  return forward_kinematics(body, m.angles, m.heading, m.root_xy).astype(np.float32)
