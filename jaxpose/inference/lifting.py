"""2D-to-3D lifting of a video's 2D keypoints (VideoPose3D's in-the-wild recipe).

``Lifter.lift(keypoints_px, width, height)``:

1. the 2D keypoints of one person per frame (``[T, K, 2]`` pixels, in the 2D model's
   keypoint set) are brought into the lifter's input layout: COCO order as is for a
   lifter trained on COCO-order detections (VideoPose3D's
   ``pretrained_h36m_detectron_coco.bin``), or ``coco_to_h36m`` for one trained on
   Human3.6M-order inputs (``pretrained_h36m_cpn.bin``, RIE);
2. normalised by the frame size (``normalize_screen_coordinates``: ``[0, w]`` -> ``[-1,
   1]``);
3. edge-padded by the receptive field on both sides (a video shorter than the receptive
   field is padded the same way, with a warning), lifted by the full model over the whole
   sequence, with the horizontally flipped sequence averaged in (test-time
   augmentation): the lifting tasks' ``jaxpose.train.tasks.lifting.lift_sequence``;

giving root-relative 3D joints ``[T, 17, 3]`` in the lifter's units (metres for the
Human3.6M lifters), Human3.6M joint order, camera axes (x right, y down, z forward).

What the weights cannot show, the user says: ``input_layout`` ('coco' or 'h36m').
"""
from __future__ import annotations

import logging
import warnings

import numpy as np

from jaxpose.data import keypoints as kp
from jaxpose.geometry.camera import normalize_screen_coordinates
from jaxpose.inference.loading import LoadedModel
from jaxpose.train.tasks import lifting as lifting_task

logger = logging.getLogger(__name__)

INPUT_LAYOUTS = {"coco": kp.COCO, "h36m": kp.H36M}


class LiftError(ValueError):
  """The 2D keypoints cannot go into this lifter (one line: why)."""


def coco_to_h36m(keypoints: np.ndarray) -> np.ndarray:
  """COCO-order 2D keypoints ``[..., 17, 2]`` -> Human3.6M order ``[..., 17, 2]``.

  Joints COCO has (hips, knees, ankles, shoulders, elbows, wrists, nose) are copied;
  the others are made up from them: pelvis = mid-hips, thorax = mid-shoulders, spine =
  midway between pelvis and thorax, head = mid-eyes.

  Caveats: Human3.6M's hip joints are the mocap skeleton's hip centres, inside the body
  and closer together than COCO's annotated hips; its spine, thorax and head joints are
  mocap joints, not these midpoints; its "neck/nose" joint is taken as COCO's nose and
  its head (top) as the eyes' midpoint, which sits lower. A lifter trained on Human3.6M
  ground truth therefore sees a systematically different skeleton (expect a higher error
  than on its own inputs); lifters trained on detections (e.g. CPN's, 17 Human3.6M-order
  joints made by a detector fine-tuned on Human3.6M) are less sensitive. Left/right stay
  the person's own.
  """
  x = np.asarray(keypoints, np.float32)
  if x.shape[-2] != kp.COCO_NUM_KEYPOINTS:
    raise LiftError(f"coco_to_h36m takes 17 COCO keypoints, got {x.shape[-2]}")
  c = {name: i for i, name in enumerate(kp.COCO_KEYPOINT_NAMES)}
  mid = lambda a, b: (x[..., c[a], :] + x[..., c[b], :]) / 2  # noqa: E731
  pelvis = mid("left_hip", "right_hip")
  thorax = mid("left_shoulder", "right_shoulder")
  joints = {
      "pelvis": pelvis, "spine": (pelvis + thorax) / 2, "thorax": thorax,
      "neck": x[..., c["nose"], :], "head": mid("left_eye", "right_eye"),
  }
  out = [joints[name] if name in joints else x[..., c[name], :] for name in kp.H36M_JOINT_NAMES]
  return np.stack(out, axis=-2)


def interpolate_missing(keypoints: np.ndarray, present: np.ndarray) -> np.ndarray:
  """``[T, K, 2]`` with the frames where ``present`` is False filled by linear
  interpolation between the nearest present frames (held constant beyond the ends), as
  VideoPose3D's ``prepare_data_2d_custom`` fills missed detections."""
  present = np.asarray(present, bool)
  if not present.any():
    raise LiftError("no frame has a person to lift")
  out = np.array(keypoints, np.float32)
  t = np.arange(len(out))
  for k in range(out.shape[1]):
    for d in range(2):
      out[:, k, d] = np.interp(t, t[present], out[present, k, d])
  return out


class Lifter:
  """A loaded temporal lifter with its input layout (see the module docstring).

  Args:
    loaded: a lifter from ``jaxpose.inference.load_model``.
    input_layout: 'coco' or 'h36m': the 2D joint order the lifter was trained on.
    flip_test: average with the horizontally flipped sequence (VideoPose3D's
      test-time augmentation).
  """

  def __init__(self, loaded: LoadedModel, input_layout: str, flip_test: bool = True):
    if not loaded.is_lifter:
      raise LiftError(f"{loaded.source}: a {loaded.model_config.name} model is not a 2D-to-3D "
                      "lifter (videopose3d, rie)")
    if input_layout not in INPUT_LAYOUTS:
      raise LiftError(f"lifter input layout must be one of {sorted(INPUT_LAYOUTS)}, got "
                      f"{input_layout!r}")
    self.loaded = loaded
    self.layout = INPUT_LAYOUTS[input_layout]
    self.flip_test = flip_test
    model = loaded.model
    joints_in = getattr(loaded.model_config, "num_joints_in", kp.H36M_NUM_JOINTS)
    if joints_in != self.layout.num_keypoints:
      raise LiftError(f"{loaded.source}: the lifter takes {joints_in} joints per frame, the "
                      f"{input_layout} layout has {self.layout.num_keypoints}")
    self.num_joints_out = getattr(loaded.model_config, "num_joints_out", kp.H36M_NUM_JOINTS)
    if self.num_joints_out != kp.H36M_NUM_JOINTS:
      raise LiftError(f"{loaded.source}: the lifter outputs {self.num_joints_out} joints; "
                      "in-the-wild lifting supports 17 Human3.6M joints")
    self.receptive_field = int(model.receptive_field)

  def to_input_layout(self, keypoints: np.ndarray, keypoint_set: kp.KeypointSet) -> np.ndarray:
    """2D keypoints of ``keypoint_set`` -> the lifter's layout, or ``LiftError``."""
    if keypoint_set.name == self.layout.name:
      return np.asarray(keypoints, np.float32)
    if keypoint_set.name == kp.COCO.name and self.layout.name == kp.H36M.name:
      return coco_to_h36m(keypoints)
    raise LiftError(f"the 2D model predicts {keypoint_set.name} keypoints "
                    f"({keypoint_set.num_keypoints}), the lifter takes {self.layout.name} "
                    "keypoints; no mapping between them (use a COCO 2D model)")

  def lift(self, keypoints_px: np.ndarray, width: int, height: int,
           keypoint_set: kp.KeypointSet, name: str = "video") -> np.ndarray:
    """Root-relative 3D joints ``[T, 17, 3]`` of one person's 2D keypoints ``[T, K, 2]``
    (pixels, every frame filled) in a ``width`` x ``height`` video."""
    x = self.to_input_layout(keypoints_px, keypoint_set)
    if not np.all(np.isfinite(x)):
      raise LiftError(f"{name}: the 2D keypoints hold NaN or inf")
    frames = len(x)
    if frames < self.receptive_field:
      warnings.warn(f"{name}: {frames} frames, shorter than the lifter's receptive field "
                    f"({self.receptive_field}); padded with copies of the first and last "
                    "frames", stacklevel=2)
    normalised = normalize_screen_coordinates(x, w=width, h=height)
    poses = lifting_task.lift_sequence(
        self.loaded.model, normalised, keypoint_flip_pairs=self.layout.flip_pairs,
        joint_flip_pairs=kp.H36M_FLIP_PAIRS, flip_test=self.flip_test)
    return np.asarray(poses, np.float32)
