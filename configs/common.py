"""Building blocks shared by the config files (plain functions, no inheritance).

Every config file's ``get_config(arg)`` assembles a ``ConfigDict`` with these sections:

* ``model``: the architecture (``jaxpose.models.<family>.<Config>.<variant>().to_config()``);
* ``task``: the method's key in ``jaxpose.train.tasks.TASKS``: 'heatmap' (HRNet,
  SimpleBaseline) or 'mspn' -- its data, loss, flip test, decoding and evaluation;
* ``init``: where the initial weights come from ('scratch', 'imagenet', 'checkpoint');
* ``data``: dataset (a key of ``jaxpose.datasets.DATASETS``, which gives its keypoint set
  and evaluator), crop/heatmap sizes, colour order, normalisation, augmentation;
* ``optim``: optimizer and learning-rate schedule (``jaxpose.train.optim``);
* ``train``: global batch, epochs, logging/checkpoint/eval cadence, compute dtype;
* ``eval``: boxes (ground truth or detections), flip test, decoding, COCO post-processing.

Every field can be overridden from the command line, e.g.
``--config.train.global_batch_size=64 --config.optim.lr=5e-4``.
"""
from __future__ import annotations

import os

import ml_collections

from jaxpose import datasets
from jaxpose.data import augment

# ImageNet statistics as the originals use them (RGB order; SimpleBaseline applies these
# same numbers to BGR images, which the configs reproduce).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The detection results used for the published COCO val2017 numbers of HRNet/SimpleBaseline.
COCO_DETECTIONS = "COCO_val2017_detections_AP_H_56_person.json"


def default_data_dir() -> str:
  """``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """``"w=48,size=384x288"`` -> ConfigDict over ``defaults`` (unknown keys raise)."""
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
  for item in arg.split(","):
    key, sep, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; valid: {sorted(defaults)}")
    default = defaults[key]
    if not sep:
      out[key] = True
    elif isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes")
    elif isinstance(default, int):
      out[key] = int(value)
    elif isinstance(default, float):
      out[key] = float(value)
    else:
      out[key] = value
  return out


def input_size(size: str) -> tuple[tuple[int, int], tuple[int, int]]:
  """``"256x192"`` -> ((256, 192), (64, 48)): (h, w) of the crop and of the heatmap."""
  h, w = (int(v) for v in size.lower().split("x"))
  return (h, w), (h // 4, w // 4)


def hrnet_augment(scale_factor: float, rotation_factor: float, half_body_prob: float,
                  half_body_min_joints: int = 8) -> ml_collections.ConfigDict:
  """HRNet/SimpleBaseline ``JointsDataset`` augmentation (rotation p 0.6, flip p 0.5)."""
  return ml_collections.ConfigDict(dict(
      scale_factor=scale_factor, rotation_factor=rotation_factor, rotation_prob=0.6,
      flip_prob=0.5, half_body_prob=half_body_prob,
      half_body_min_joints=half_body_min_joints, half_body_scale=1.5))


MSPN_AUGMENT = {
    "coco": augment.MSPNAugment(),
    "mpii": augment.MSPNAugment(
        basic_ext=0.0, random_ext=False, x_ext=0.25, y_ext=0.25, scale_shrink=1.0,
        rotation_factor=60.0, half_body_min_joints=8, half_body_prob=0.5,
        x_ext_half_body=0.6, y_ext_half_body=0.6, test_x_ext=0.25, test_y_ext=0.25),
}
"""MSPN's ``dataset/attribute.py`` values: its COCO and its MPII recipe."""


def mspn_augment(recipe: str) -> ml_collections.ConfigDict:
  """MSPN's augmentation of its ``recipe`` ('coco' or 'mpii')."""
  if recipe not in MSPN_AUGMENT:
    raise ValueError(f"unknown MSPN recipe {recipe!r}; valid: {sorted(MSPN_AUGMENT)}")
  return ml_collections.ConfigDict(MSPN_AUGMENT[recipe].__dict__)


def num_joints(dataset: str) -> int:
  """``K`` of ``dataset``'s keypoint set (``jaxpose.datasets``): the model's output joints."""
  return datasets.dataset(dataset).keypoints.num_keypoints


def data(dataset: str, size: str, *, method: str, color: str, mean=IMAGENET_MEAN,
         std=IMAGENET_STD, aug: ml_collections.ConfigDict, sigma: float = 2.0,
         builder_config: str | None = None, num_workers: int = 4) -> ml_collections.ConfigDict:
  """The ``data`` section of a top-down config (the keypoint set comes with the dataset:
  ``jaxpose.datasets``)."""
  crop, heatmap = input_size(size)
  return ml_collections.ConfigDict(dict(
      dataset=dataset, builder_config=builder_config, data_dir=default_data_dir(),
      manual_dir=ml_collections.FieldReference(None, field_type=str),
      train_split="train", eval_split="validation",
      method=method, input_size=crop, heatmap_size=heatmap,
      color=color, mean=tuple(mean), std=tuple(std), sigma=sigma,
      use_different_joints_weight=False, aug=aug, num_workers=num_workers,
      mspn_kernels=((15, 15), (11, 11), (9, 9), (7, 7), (5, 5))))


def init(kind: str, path: str = "", pretrained_layers=("*",)) -> ml_collections.ConfigDict:
  """``kind``: 'scratch', 'imagenet' (partial load of a classification checkpoint) or
  'checkpoint' (a converted or jaxpose checkpoint directory, or an original .pth)."""
  return ml_collections.ConfigDict(dict(kind=kind, path=path,
                                        pretrained_layers=tuple(pretrained_layers)))


def adam_multistep(lr: float, milestones, factor: float = 0.1) -> ml_collections.ConfigDict:
  """HRNet/SimpleBaseline: Adam, no weight decay, x``factor`` at ``milestones`` (epochs)."""
  return ml_collections.ConfigDict(dict(
      name="adam", lr=lr, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8,
      schedule="multistep", milestones=tuple(milestones), factor=factor))


def adam_warmup_linear(lr: float, *, warmup_epochs: float, total_epochs: float,
                       warmup_factor: float = 0.1) -> ml_collections.ConfigDict:
  """Adam without weight decay, MSPN's schedule shape: linear warm-up from
  ``warmup_factor * lr`` over ``warmup_epochs``, then linear decay to 0 at the end of
  ``total_epochs``."""
  return ml_collections.ConfigDict(dict(
      name="adam", lr=lr, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8,
      schedule="warmup_linear", warmup_epochs=warmup_epochs, warmup_factor=warmup_factor,
      total_epochs=total_epochs))


def mspn_optim(global_batch_size: int, max_iter_8gpu: int = 96000) -> ml_collections.ConfigDict:
  """MSPN ``lib/utils/solver.py``: lr 5e-4 per 32 images, L2 1e-5, warm-up 2400 from 0.1,
  linear decay to 0; ``MAX_ITER`` scales as 8 GPUs x 32 / global batch, warm-up does not."""
  return ml_collections.ConfigDict(dict(
      name="adam", lr=5e-4 * global_batch_size / 32, weight_decay=1e-5, b1=0.9, b2=0.999,
      eps=1e-8, schedule="warmup_linear", warmup_steps=2400, warmup_factor=0.1,
      total_steps=int(max_iter_8gpu * 256 / global_batch_size)))


def train(global_batch_size: int, num_epochs: int, *, eval_every_epochs: int = 10,
          total_steps: int | None = None) -> ml_collections.ConfigDict:
  """The ``train`` section: ``total_steps`` (if set) overrides ``num_epochs``."""
  return ml_collections.ConfigDict(dict(
      global_batch_size=global_batch_size, num_epochs=num_epochs,
      total_steps=ml_collections.FieldReference(total_steps, field_type=int),
      log_every_steps=100, checkpoint_every_steps=2000, keep_checkpoints=3,
      async_checkpoints=True, eval_every_epochs=eval_every_epochs, dtype="float32",
      num_summary_images=4, seed=0))


def coco_eval(boxes: str, *, flip_test: bool = True, batch_size: int = 64,
              detection_file: str = "") -> ml_collections.ConfigDict:
  """HRNet/SimpleBaseline COCO evaluation (``TEST`` of the yamls)."""
  return ml_collections.ConfigDict(dict(
      metric="AP", boxes=boxes, detection_file=detection_file, image_thre=0.0,
      in_vis_thre=0.2, oks_thre=0.9, soft_nms=False, flip_test=flip_test,
      shift_heatmap=True, post_process=True, batch_size=batch_size,
      decode_kernel=5, shift_ratios=(0.25,)))


def mspn_coco_eval(boxes: str, *, batch_size: int = 64, detection_file: str = ""
                   ) -> ml_collections.ConfigDict:
  """MSPN's COCO test: flip without shift, blur-5 decoding, mean-score rescoring, no NMS."""
  cfg = coco_eval(boxes, batch_size=batch_size, detection_file=detection_file)
  cfg.update(dict(in_vis_thre=None, oks_thre=None, shift_heatmap=False, decode_kernel=5))
  return cfg


def mpii_eval(*, batch_size: int = 64, shift_heatmap: bool = True, decode_kernel: int = 5
              ) -> ml_collections.ConfigDict:
  """PCKh@0.5 on MPII validation (``gt_valid.mat`` attached by the builder). HRNet shifts
  the flipped heatmaps; MSPN does not and blurs with a 9x9 kernel (``shift_heatmap=False,
  decode_kernel=9``)."""
  cfg = coco_eval("gt", batch_size=batch_size)
  cfg.update(dict(metric="Mean", shift_heatmap=shift_heatmap, decode_kernel=decode_kernel))
  return cfg


# ----------------------------------------------------------------------------------------
# The 2D -> 3D lifters (VideoPose3D, Pose3D-RIE): common/arguments.py flags in brackets
# ----------------------------------------------------------------------------------------

H36M_TRAIN_SUBJECTS = "S1,S5,S6,S7,S8"  # -str default
H36M_TEST_SUBJECTS = "S9,S11"  # -ste default


def filter_widths(frames: int) -> tuple[int, ...]:
  """``-arc`` of a receptive field of 3^n frames (27 -> 3,3,3; 243 -> 3,3,3,3,3)."""
  widths, rest = [], int(frames)
  while rest > 1 and rest % 3 == 0:
    widths.append(3)
    rest //= 3
  if rest != 1 or not widths:
    raise ValueError(f"frames={frames}: the lifter configs take receptive fields of 3^n frames "
                     "(27, 81, 243); set --config.model.filter_widths for others")
  return tuple(widths)


def lifting_data(dataset: str, keypoints_2d: str, *, subjects_train: str = H36M_TRAIN_SUBJECTS,
                 subjects_test: str = H36M_TEST_SUBJECTS, subjects_unlabeled: str = "",
                 subset: float = 1.0, stride: int = 1, builder_config: str | None = None
                 ) -> ml_collections.ConfigDict:
  """The ``data`` section of a lifter config (``jaxpose.train.tasks.lifting``).

  Fields: ``keypoints_2d`` the 2D source (-k: any ``data_2d_h36m_<name>.npz`` built into
  ``h36m_poses``; ``gt`` / ``detected`` for ``synthetic_mocap``), ``subjects_train``
  (-str), ``subjects_test`` (-ste), ``subjects_unlabeled`` (-sun, semi-supervised when
  set), ``actions`` (-a, ``'*'`` for all), ``subset`` (--subset), ``downsample``
  (--downsample), ``stride`` (-s), ``augment`` (train-time flips; -no-da sets False),
  ``unlabeled_seed`` (run.py's semi-supervised generator seed 4321).
  """
  return ml_collections.ConfigDict(dict(
      dataset=dataset, builder_config=builder_config, data_dir=default_data_dir(),
      manual_dir=ml_collections.FieldReference(None, field_type=str),
      train_split="train", eval_split="validation", keypoints_2d=keypoints_2d,
      subjects_train=subjects_train, subjects_test=subjects_test,
      subjects_unlabeled=subjects_unlabeled, actions="*", subset=float(subset), downsample=1,
      stride=int(stride), augment=True, unlabeled_seed=4321, num_workers=0))


def amsgrad_exponential(lr: float, decay: float, *, name: str = "adam",
                        weight_decay: float = 0.0) -> ml_collections.ConfigDict:
  """VideoPose3D (``name='adam'``) / RIE (``'adamw'``, weight decay 0.01): PyTorch's
  AMSGrad, lr (-lr) multiplied by ``decay`` (-lrd) after every epoch."""
  return ml_collections.ConfigDict(dict(
      name=name, lr=lr, weight_decay=weight_decay, b1=0.9, b2=0.999, eps=1e-8, amsgrad=True,
      schedule="exponential", decay=decay))


def lifting_train(batch_frames: int, stride: int, num_epochs: int, *,
                  eval_every_epochs: int = 10) -> ml_collections.ConfigDict:
  """``train`` of a lifter: ``global_batch_size`` windows = -b frames / -s stride;
  ``bn_momentum`` = run.py's (initial, final) BatchNorm momentum, decayed per epoch."""
  cfg = train(batch_frames // stride, num_epochs, eval_every_epochs=eval_every_epochs)
  cfg.bn_momentum = (0.1, 0.001)
  cfg.num_summary_images = 0
  return cfg


def lifting_eval(*, flip_test: bool = True, batch_size: int = 1024,
                 length_multiple: int = 256) -> ml_collections.ConfigDict:
  """``eval`` of a lifter: ``flip_test`` (-no-tta sets False), ``batch_size`` windows per
  batch for window models (RIE), ``length_multiple`` (whole sequences are padded to a
  multiple of it, bounding the compilations), ``original_args`` (the run.py flags of an
  original ``.bin`` given to ``--mode=eval --checkpoint``)."""
  return ml_collections.ConfigDict(dict(
      metric="MPJPE", flip_test=flip_test, batch_size=batch_size,
      length_multiple=length_multiple, original_args=""))


# ----------------------------------------------------------------------------------------
# Image-based 3D methods (integral regression, pytorch-pose-hg-3d)
# ----------------------------------------------------------------------------------------


def image3d_set(dataset: str, split: str, *, builder_config: str | None = None, weight: int = 1,
                box: str = "stored", joint_shift: float = 0.0, every: int = 1
                ) -> ml_collections.ConfigDict:
  """One entry of ``data.sources`` / ``eval.datasets`` of an image-based 3D config: a
  split of ``dataset`` (its ``manual_dir`` set on the command line, e.g.
  ``--config.data.sources.h36m.manual_dir=/data/h36m``), its mixture ``weight``, crop
  ``box`` rule ('stored' | 'joints'), ``joint_shift`` (pytorch-pose-hg-3d's 1-based MPII
  joints) and, for evaluation, ``every`` (evaluate every n-th person)."""
  return ml_collections.ConfigDict(dict(
      dataset=dataset, split=split,
      builder_config=ml_collections.FieldReference(builder_config, field_type=str),
      manual_dir=ml_collections.FieldReference(None, field_type=str),
      weight=weight, box=box, joint_shift=joint_shift, every=every))


def image3d_data(sources: dict[str, ml_collections.ConfigDict], mixture, size: str, *,
                 color: str, aug: ml_collections.ConfigDict, heatmap_size=None,
                 sigma: float = 2.0, num_workers: int = 4) -> ml_collections.ConfigDict:
  """The ``data`` section of an image-based 3D config: ``mixture`` (names of ``sources``;
  the first one's size is an epoch), crop size ``'256x256'``, ImageNet normalisation."""
  crop, heatmap = input_size(size)
  return ml_collections.ConfigDict(dict(
      data_dir=default_data_dir(), sources=ml_collections.ConfigDict(sources),
      mixture=tuple(mixture), input_size=crop, heatmap_size=heatmap_size or heatmap,
      color=color, mean=IMAGENET_MEAN, std=IMAGENET_STD, sigma=sigma, aug=aug,
      num_workers=num_workers))


def integral_augment(scale_factor: float = 0.25, rotation_factor: float = 30.0,
                     color_factor: float = 0.2, flip: bool = True) -> ml_collections.ConfigDict:
  """integral-human-pose's ``aug`` (the hm36 yamls' values by default)."""
  return ml_collections.ConfigDict(dict(
      scale_factor=scale_factor, rotation_factor=rotation_factor, color_factor=color_factor,
      flip=flip, rotation_prob=0.6, flip_prob=0.5))


def image3d_eval(sets: dict[str, ml_collections.ConfigDict], *, protocol: str | None,
                 align: str | None, batch_size: int = 64, flip_test: bool = True,
                 baseline: bool = False) -> ml_collections.ConfigDict:
  """The ``eval`` section of an image-based 3D config: the evaluation sets (the first one's
  metric picks the best checkpoint), the method's protocol and alignment."""
  return ml_collections.ConfigDict(dict(
      sets=tuple(sets), datasets=ml_collections.ConfigDict(sets), batch_size=batch_size,
      flip_test=flip_test, protocol=ml_collections.FieldReference(protocol, field_type=str),
      align=ml_collections.FieldReference(align, field_type=str), baseline=baseline,
      bone_length=4502.881, mean_bone_length=4000.0))
