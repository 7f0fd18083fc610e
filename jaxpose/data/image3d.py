"""Samples of the image-based 3D methods: people with 2D joints and (maybe) depth, cropped.

Integral regression (JimmySuen/integral-human-pose) and the weakly-supervised 3D network
(xingyizhou/pytorch-pose-hg-3d) train on Human3.6M images (3D: image joints + depth)
mixed with MPII (2D: no depth supervision). This module (pure numpy + OpenCV)

* reads the people of a split into a ``PersonTable`` (one row per person, joints as
  ``(x, y, depth)`` with per-coordinate visibility, the crop box, the camera-frame pose):
  ``h36m_image_people`` for ``h36m_images`` / ``synthetic_people3d`` examples,
  ``mpii_people`` and ``coco_people`` for the 2D datasets (depth visibility 0);
  ``PersonTable.remap`` moves a table into a method's joint set (``joint_maps``);
* makes the samples of each method from a row and its decoded image:
  ``integral_sample`` (``get_single_patch_sample``: box -> patch geometry of
  ``transforms.patch_transform`` with scale, rotation and flip, joint swaps, depth divided
  by the patch's metric size, normalised ``(x, y, z)`` labels and per-coordinate weights,
  colour gains applied on the device) and ``hg3d_sample`` (``datasets/h36m.py`` +
  ``mpii.py`` + ``fusion_3d.py``: square crop, Gaussian heatmaps of the truncated output
  cells, depth targets ``depth / crop size`` at the joints' cells for 3D samples, the
  visibility stand-in for 2D samples);
* wraps both as grain transforms (``SampleTransform``, ``EvalSampleTransform``) for
  ``jaxpose.data.mixing`` and ``pipeline.ordered_batches``.

Depth units: ``joints[..., 2]`` is the depth relative to the root in pixels of the image
at the root's distance (``h36m_images``' ``depth``). Integral regression divides it by
the box width times the augmentation scale (times the patch width): for a box that is the
projection of a 2 m square at the root (integral's Human3.6M loader) that is the
original's ``z_mm / (2000 * scale) * patch_width``, for the challenge's joint boxes its
``depth_in_image`` rule. pytorch-pose-hg-3d divides it by the crop side.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable

import cv2
import grain
import numpy as np

from jaxpose.data import augment, joint_maps, targets, topdown, transforms
from jaxpose.data import keypoints as kp


@dataclasses.dataclass
class PersonTable:
  """One row per person, columns as arrays (``K`` joints of the table's keypoint set).

  Attributes:
    example_index: int64 ``[N]`` example of the split the person is in.
    image_id: int64 ``[N]``.
    annotation_id: int64 ``[N]`` the person's id in its annotation file (MPII: the
      ``gt_valid.mat`` column), else the image id.
    box_center: float64 ``[N, 2]`` the original's crop box centre, pixels.
    box_size: float64 ``[N, 2]`` its (w, h), pixels.
    joints: float64 ``[N, K, 3]`` image x, y and depth relative to the root (pixels at the
      root's distance; 0 for 2D datasets).
    joints_vis: float32 ``[N, K, 3]`` per-coordinate visibility (depth 0 for 2D data).
    positions_3d: float64 ``[N, K, 3]`` camera frame relative to the root, meters (0 for
      2D data).
    has_depth: bool ``[N]``.
    root_position: float64 ``[N, 3]`` camera frame, meters (0 when unknown).
    camera: float64 ``[N, 4]`` ``(f_x, f_y, c_x, c_y)`` pixels (0 when unknown).
    has_camera: bool ``[N]``.
    image_size: int32 ``[N, 2]`` (width, height).
    subject_id, action_id: int32 ``[N]`` (-1 when unknown).
  """
  example_index: np.ndarray
  image_id: np.ndarray
  annotation_id: np.ndarray
  box_center: np.ndarray
  box_size: np.ndarray
  joints: np.ndarray
  joints_vis: np.ndarray
  positions_3d: np.ndarray
  has_depth: np.ndarray
  root_position: np.ndarray
  camera: np.ndarray
  has_camera: np.ndarray
  image_size: np.ndarray
  subject_id: np.ndarray
  action_id: np.ndarray

  def __len__(self) -> int:
    return int(self.example_index.shape[0])

  @property
  def num_joints(self) -> int:
    return int(self.joints.shape[1])

  def row(self, i: int) -> dict[str, np.ndarray]:
    return {f.name: getattr(self, f.name)[i] for f in dataclasses.fields(self)}

  def columns(self) -> dict[str, np.ndarray]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  def take(self, rows: np.ndarray) -> "PersonTable":
    """The rows ``rows`` (indices or a mask), in that order."""
    return PersonTable(**{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)})

  def remap(self, joint_map: joint_maps.JointMap) -> "PersonTable":
    """The table in ``joint_map.target``'s joints (missing joints invisible)."""
    joints, vis = joint_map.apply(self.joints, self.joints_vis)
    positions, _ = joint_map.apply(self.positions_3d, self.joints_vis)
    return dataclasses.replace(self, joints=joints, joints_vis=vis.astype(np.float32),
                               positions_3d=positions)

  def with_joint_boxes(self, aspect_ratio: float, padding: float = 1.25) -> "PersonTable":
    """Boxes recomputed from the visible joints (``transforms.joint_box``)."""
    centers, sizes = [], []
    for joints, vis in zip(self.joints, self.joints_vis):
      c, s = transforms.joint_box(joints, vis[:, 0], aspect_ratio, padding)
      centers.append(c)
      sizes.append(s)
    return dataclasses.replace(self, box_center=np.asarray(centers).reshape(-1, 2),
                               box_size=np.asarray(sizes).reshape(-1, 2))

  def save(self, path: str) -> None:
    np.savez(path, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

  @classmethod
  def load(cls, path: str) -> "PersonTable":
    with np.load(path) as z:
      return cls(**{f.name: z[f.name] for f in dataclasses.fields(cls)})

  @classmethod
  def from_rows(cls, rows: Sequence[Mapping[str, Any]], num_joints: int) -> "PersonTable":
    """Stacks row dicts (every field, as ``row`` returns them)."""
    shapes = {"box_center": (2,), "box_size": (2,), "joints": (num_joints, 3),
              "joints_vis": (num_joints, 3), "positions_3d": (num_joints, 3),
              "root_position": (3,), "camera": (4,), "image_size": (2,)}
    dtypes = {"example_index": np.int64, "image_id": np.int64, "annotation_id": np.int64,
              "joints_vis": np.float32, "has_depth": bool, "has_camera": bool,
              "image_size": np.int32, "subject_id": np.int32, "action_id": np.int32}
    return cls(**{
        f.name: np.asarray([r[f.name] for r in rows], dtypes.get(f.name, np.float64)).reshape(
            (len(rows),) + shapes.get(f.name, ()))
        for f in dataclasses.fields(cls)})


PeopleReader = Callable[[Iterable[tuple[int, Mapping[str, Any]]]],
                        tuple[PersonTable, dict[str, int]]]
"""``examples -> (table in the dataset's own keypoint set, skipped counts)``: how a
dataset's examples become people (named per dataset in ``jaxpose.datasets``)."""


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def h36m_image_people(examples: Iterable[tuple[int, Mapping[str, Any]]]
                      ) -> tuple[PersonTable, dict[str, int]]:
  """People of ``h36m_images`` / ``synthetic_people3d`` examples (Human3.6M's 17 joints);
  every joint is visible, with depth."""
  rows = []
  for index, ex in examples:
    k = len(ex["keypoints_2d"])
    cam = ex["camera"]
    rows.append({
        "example_index": index, "image_id": ex["image/id"], "annotation_id": ex["image/id"],
        "box_center": ex["box"]["center"], "box_size": ex["box"]["size"],
        "joints": np.concatenate([ex["keypoints_2d"], np.asarray(ex["depth"])[:, None]], 1),
        "joints_vis": np.ones((k, 3)), "positions_3d": ex["positions_3d"], "has_depth": True,
        "root_position": cam["root_position"],
        "camera": np.concatenate([cam["focal_length"], cam["center"]]),
        "has_camera": bool(cam["has_intrinsics"]),
        "image_size": (ex["image/width"], ex["image/height"]),
        "subject_id": ex["subject_id"], "action_id": ex["action_id"]})
  return PersonTable.from_rows(rows, kp.H36M_NUM_JOINTS), {}


def _two_d_row(index: int, instance: Mapping[str, Any], box_center, box_size,
               joints: np.ndarray, visible: np.ndarray) -> dict[str, Any]:
  k = len(joints)
  vis = np.zeros((k, 3))
  vis[:, :2] = visible[:, None]
  return {"example_index": index, "image_id": instance["image_id"],
          "annotation_id": instance["annotation_id"], "box_center": box_center,
          "box_size": box_size,
          "joints": np.concatenate([joints, np.zeros((k, 1))], axis=1), "joints_vis": vis,
          "positions_3d": np.zeros((k, 3)), "has_depth": False, "root_position": np.zeros(3),
          "camera": np.zeros(4), "has_camera": False, "image_size": instance["image_size"],
          "subject_id": -1, "action_id": -1}


def mpii_people(examples: Iterable[tuple[int, Mapping[str, Any]]]
                ) -> tuple[PersonTable, dict[str, int]]:
  """People of ``mpii`` examples as both originals crop them: centre moved down by 15 x
  scale, then both shifted to 0-based pixels; a square box of ``scale * 1.25 * 200``
  (integral's ``mpii.gt_db``, pytorch-pose-hg-3d's ``MPII._get_part_info``). Joints are
  0-based pixels (MATLAB's minus 1), visible where the JSON's flag is 1."""
  table = topdown.mpii_instances(examples, "hrnet")
  rows = [_two_d_row(int(table.example_index[i]), table.row(i), table.center[i],
                     table.scale[i] * transforms.PIXEL_STD, table.keypoints[i].astype(np.float64),
                     (table.visibility[i] > 0).astype(np.float64))
          for i in range(len(table))]
  return PersonTable.from_rows(rows, kp.MPII_NUM_JOINTS), {}


def coco_people(examples: Iterable[tuple[int, Mapping[str, Any]]]
                ) -> tuple[PersonTable, dict[str, int]]:
  """People of COCO-format examples (``coco_keypoints``, ``synthetic_people``) with HRNet's
  selection and box (``topdown.ground_truth_instances``, square, x1.25); visible = any
  labelled keypoint."""
  table, skipped = topdown.ground_truth_instances(examples, "hrnet", kp.COCO_NUM_KEYPOINTS, 1.0)
  rows = [_two_d_row(int(table.example_index[i]), table.row(i), table.center[i],
                     table.scale[i] * transforms.PIXEL_STD, table.keypoints[i].astype(np.float64),
                     (table.visibility[i] > 0).astype(np.float64))
          for i in range(len(table))]
  return PersonTable.from_rows(rows, kp.COCO_NUM_KEYPOINTS), skipped


# ----------------------------------------------------------------------------------------
# Integral regression
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IntegralSpec:
  """What an integral sample needs.

  Attributes:
    patch_size: (height, width) of the network input.
    flip_pairs: joint pairs of the table's keypoint set.
    aug: training augmentation.
  """
  patch_size: tuple[int, int]
  flip_pairs: tuple[tuple[int, int], ...]
  aug: augment.IntegralAugment = augment.IntegralAugment()


def flip_joints(joints: np.ndarray, vis: np.ndarray, width: int,
                flip_pairs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
  """``x -> width - 1 - x`` with the pairs (and their visibilities) swapped; depth kept."""
  perm = kp.flip_permutation(len(joints), flip_pairs)
  joints = joints[perm].copy()
  joints[:, 0] = width - joints[:, 0] - 1
  return joints, vis[perm].copy()


def integral_sample(spec: IntegralSpec, row: Mapping[str, Any], image: np.ndarray,
                    draw: augment.PatchAugment = augment.PatchAugment()) -> dict[str, np.ndarray]:
  """One integral regression sample (``get_single_patch_sample``).

  Args:
    spec: patch size, flip pairs.
    row: a ``PersonTable`` row.
    image: the decoded image ``[H, W, 3]`` uint8 (RGB, as the original converts it).
    draw: the augmentation (identity for evaluation).

  Returns:
    ``image`` uint8 ``[ph, pw, 3]``, ``target`` float32 ``[K, 3]``
    (``joint_location_label``), ``target_weight`` float32 ``[K, 3]``, ``color_scale``
    float32 ``[3]`` (the device multiplies and clips before normalising).
  """
  ph, pw = spec.patch_size
  center = np.array(row["box_center"], np.float64)
  box = np.asarray(row["box_size"], np.float64)
  joints = np.array(row["joints"], np.float64)
  vis = np.array(row["joints_vis"], np.float32)
  width = image.shape[1]
  if draw.flip:
    image = image[:, ::-1]
    center[0] = width - center[0] - 1
    joints, vis = flip_joints(joints, vis, width, spec.flip_pairs)
  trans = transforms.patch_transform(center, box, (pw, ph), draw.scale, draw.rotation)
  patch = cv2.warpAffine(np.ascontiguousarray(image), trans, (pw, ph), flags=cv2.INTER_LINEAR)
  joints[:, :2] = transforms.affine_transform_points(joints[:, :2], trans)
  joints[:, 2] = joints[:, 2] / (box[0] * draw.scale) * pw
  return {"image": patch, "target": targets.joint_location_label(joints, pw, ph).astype(np.float32),
          "target_weight": vis, "color_scale": np.asarray(draw.color, np.float32)}


def integral_draw_sample(spec: IntegralSpec, row: Mapping[str, Any], image: np.ndarray,
                         rng: np.random.Generator | None) -> dict[str, np.ndarray]:
  """``integral_sample`` with a fresh augmentation from ``rng`` (None: evaluation)."""
  draw = augment.PatchAugment() if rng is None else augment.integral_augmentation(rng, spec.aug)
  return integral_sample(spec, row, image, draw)


# ----------------------------------------------------------------------------------------
# pytorch-pose-hg-3d
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HG3DSpec:
  """What a pytorch-pose-hg-3d sample needs.

  Attributes:
    input_size, output_size: (height, width) of the crop and of the heatmaps.
    flip_pairs: joint pairs of the table's keypoint set (MPII order).
    sigma: heatmap Gaussian (``opt.hm_gauss`` 2).
    aug: training augmentation.
  """
  input_size: tuple[int, int]
  output_size: tuple[int, int]
  flip_pairs: tuple[tuple[int, int], ...]
  sigma: float = 2.0
  aug: augment.HG3DAugment = augment.HG3DAugment()


def adjust_aspect_ratio(size: np.ndarray, aspect_ratio: float) -> np.ndarray:
  """``utils/image.adjust_aspect_ratio`` (``fit_short_side`` False): grow the short side."""
  w, h = float(size[0]), float(size[1])
  if w > aspect_ratio * h:
    h = w / aspect_ratio
  elif w < aspect_ratio * h:
    w = h * aspect_ratio
  return np.array([w, h])


def hg3d_sample(spec: HG3DSpec, row: Mapping[str, Any], image: np.ndarray,
                draw: tuple[float, float, bool] = (1.0, 0.0, False), joint_shift: float = 0.0
                ) -> dict[str, np.ndarray]:
  """One pytorch-pose-hg-3d sample (``H36M.__getitem__`` for rows with depth,
  ``MPII.__getitem__`` + ``Fusion3D``'s 2D branch for the others).

  The crop is a square of side ``s = max(box) * scale``, capped at the image's longer
  side, centred on the box (``get_affine_transform``). Joints go to the output grid and
  are truncated to integer cells. Rows with depth: joints inside the output get a
  heatmap, ``reg_target = depth / s`` and ``reg_mask`` 1. Other rows: joints with a
  positive x or y (the original's "labelled" test on the raw coordinates; ``joint_shift``
  = 1 gives MPII's 1-based JSON values, as pytorch-pose-hg-3d leaves them) get a heatmap;
  every joint whose cell lies inside the output (an unlabelled one sits at cell (0, 0))
  gets ``reg_target`` 1, the visibility the bone-length loss reads, and ``reg_mask`` 0.

  Args:
    spec: sizes, flip pairs, sigma.
    row: a ``PersonTable`` row (MPII joint order).
    image: decoded ``[H, W, 3]`` uint8 (BGR, as the original reads it).
    draw: ``(scale multiplier, rotation degrees, flip)``.
    joint_shift: added to the 2D rows' x and y first.

  Returns:
    ``image`` uint8 ``[ih, iw, 3]``, ``heatmaps`` float32 ``[oh, ow, K]``, ``reg_mask``
    float32 ``[K]``, ``reg_ind`` int32 ``[K]``, ``reg_target`` float32 ``[K]``, ``gt_2d``
    float32 ``[K, 2]`` (the cells / output height).
  """
  scale, rotation, flip = draw
  ih, iw = spec.input_size
  oh, ow = spec.output_size
  has_depth = bool(row["has_depth"])
  center = np.array(row["box_center"], np.float64)
  pts = np.array(row["joints"], np.float64)
  if not has_depth:
    pts[:, :2] += joint_shift
  s = float(np.max(row["box_size"])) * scale
  s = min(s, max(image.shape[0], image.shape[1]))
  size = adjust_aspect_ratio(np.array([s, s]), iw / ih)
  if flip:
    image = image[:, ::-1]
    center[0] = image.shape[1] - 1 - center[0]
    pts, _ = flip_joints(pts, np.zeros(len(pts)), image.shape[1], spec.flip_pairs)
  crop = cv2.warpAffine(np.ascontiguousarray(image),
                        transforms.get_affine_transform(center, size, rotation, (iw, ih),
                                                        pixel_std=1.0),
                        (iw, ih), flags=cv2.INTER_LINEAR)
  to_out = transforms.get_affine_transform(center, size, rotation, (ow, oh), pixel_std=1.0)
  cells = np.trunc(transforms.affine_transform_points(pts[:, :2], to_out)).astype(np.int64)
  inside = (cells[:, 0] >= 0) & (cells[:, 1] >= 0) & (cells[:, 0] < ow) & (cells[:, 1] < oh)
  k = len(pts)
  if has_depth:
    drawn = inside
    cells = np.where(inside[:, None], cells, 0)
    reg_ind, reg_target = targets.depth_map_targets(cells, inside, pts[:, 2] / size[0], ow)
    reg_mask = inside.astype(np.float32)
  else:
    drawn = (pts[:, 0] > 0) | (pts[:, 1] > 0)
    cells = np.where(drawn[:, None], cells, 0)
    inside = (cells[:, 0] >= 0) & (cells[:, 1] >= 0) & (cells[:, 0] < ow) & (cells[:, 1] < oh)
    reg_ind, reg_target = targets.depth_map_targets(cells, inside, np.ones(k), ow)
    reg_mask = np.zeros(k, np.float32)
  heatmaps, _ = targets.gaussian_targets(cells, drawn.astype(np.float32), (ow, oh), (ow, oh),
                                         sigma=spec.sigma)
  return {"image": crop, "heatmaps": heatmaps, "reg_mask": reg_mask, "reg_ind": reg_ind,
          "reg_target": reg_target, "gt_2d": (cells / oh).astype(np.float32)}


def hg3d_draw_sample(spec: HG3DSpec, joint_shift: float, row: Mapping[str, Any],
                     image: np.ndarray, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
  """``hg3d_sample`` with a fresh augmentation from ``rng`` (None: evaluation); rotation
  for rows without depth only, as the original."""
  draw = ((1.0, 0.0, False) if rng is None
          else augment.hg3d_augmentation(rng, spec.aug, rotate=not bool(row["has_depth"])))
  return hg3d_sample(spec, row, image, draw, joint_shift)


# ----------------------------------------------------------------------------------------
# grain
# ----------------------------------------------------------------------------------------


SampleFn = Callable[[Mapping[str, Any], np.ndarray, np.random.Generator | None],
                    dict[str, np.ndarray]]
"""``(row, decoded image, generator or None for evaluation) -> sample``."""


class SampleTransform(grain.transforms.RandomMap):
  """Decodes an ``InstanceSource`` element and makes one training sample with
  ``sample_fn(row, image, rng)``; ``sample_fn`` must be picklable (worker processes)."""

  def __init__(self, sample_fn: SampleFn, color: str):
    self._sample_fn = sample_fn
    self._color = color

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    image = topdown.decode_image(element["jpeg"], self._color, int(element["image_id"]))
    return self._sample_fn(element, image, rng)


class EvalSampleTransform(grain.transforms.Map):
  """The evaluation variant: ``sample_fn(row, image, None)``."""

  def __init__(self, sample_fn: SampleFn, color: str):
    self._sample_fn = sample_fn
    self._color = color

  def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
    image = topdown.decode_image(element["jpeg"], self._color, int(element["image_id"]))
    return self._sample_fn(element, image, None)
