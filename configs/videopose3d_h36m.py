r"""VideoPose3D on Human3.6M (facebookresearch/VideoPose3D, README "Training from scratch").

    python launch.py --config=configs/videopose3d_h36m.py --workdir=runs/vp3d_243 \
        --config.data.manual_dir=/data/h36m          # run.py -e 80 -k cpn_ft_h36m_dbb -arc 3,3,3,3,3
    python launch.py --config=configs/videopose3d_h36m.py:frames=27,keypoints=gt ...
    python launch.py --config=configs/videopose3d_h36m.py:frames=81,causal=1 ...
    python launch.py --config=configs/videopose3d_h36m.py:semi=1 ...   # semi-supervised
    python launch.py --config=configs/videopose3d_h36m.py --workdir=runs/eval --mode=eval \
        --checkpoint=converted/pretrained_h36m_cpn       # a jaxpose.convert output directory
    python launch.py --config=configs/videopose3d_h36m.py --workdir=runs/eval --mode=eval \
        --checkpoint=checkpoint/pretrained_h36m_cpn.bin --config.eval.original_args="-arc 3,3,3,3,3"

Expected (the original's README): Protocol #1 46.8 mm with 243 frames on the fine-tuned
CPN detections (``pretrained_h36m_cpn.bin``), 47.7 mm with 81 frames, 48.8 mm with 27;
semi-supervised (``semi=1``: 10% of S1 labeled, S5-S8 unlabeled, ground-truth 2D) about
65.2 mm, against 80.7 mm for the same labeled data alone (``semi=1,unlabeled=``).
``h36m_poses`` is built from VideoPose3D's ``data_3d_h36m.npz`` and
``data_2d_h36m_<keypoints>.npz`` in ``data.manual_dir`` on first use.

Arguments (run.py flags in brackets; everything else is run.py's default):

* ``frames``: receptive field 27, 81 or 243 (``-arc 3,3,3`` / ``3,3,3,3`` / ``3,3,3,3,3``);
* ``keypoints``: the 2D source (``-k``), any ``data_2d_h36m_<name>.npz`` that was built;
* ``causal`` (``--causal``), ``channels`` (``-ch`` 1024), ``dropout`` (``-drop`` 0.25),
  ``stride`` (``-s`` 1: training uses the single-frame ``TemporalModelOptimized1f``);
* ``epochs`` (``-e``; 80 in the README), ``batch`` (``-b`` 1024 output frames: ``batch //
  stride`` windows), ``lr`` (``-lr`` 1e-3), ``lrd`` (``-lrd`` 0.95 per epoch);
* ``semi`` (``-sun`` given): the README's semi-supervised command ``-k gt
  --subjects-train S1 --subset 0.1 --subjects-unlabeled S5,S6,S7,S8 -e 200 -lrd 0.98
  -arc 3,3,3 --warmup 5 -b 64`` becomes the defaults of ``keypoints, train, subset,
  unlabeled, epochs, lrd, frames, warmup, batch`` (arguments given still win);
* ``train`` (``-str``), ``unlabeled`` (``-sun``), ``subset`` (``--subset``), ``warmup``
  (``--warmup``); ``dataset`` (``h36m_poses``; ``synthetic_mocap`` works the same).

Fixed as in run.py: Adam with AMSGrad, BatchNorm momentum 0.1 -> 0.001 exponentially
per epoch, train-time and test-time flips, evaluation of the full model on whole
sequences, per action (protocols #1-#3 and MPJVE). Semi-supervised: trajectory model,
depth-weighted trajectory loss, reprojection through the intrinsics, bone-length term
(``config.loss``). ``train.eval_every_epochs`` is 10 (run.py evaluates every epoch, but
only approximately; the last epoch is always evaluated).
"""
from __future__ import annotations

import ml_collections

from configs import common
from jaxpose.models import videopose3d

# common/arguments.py defaults + README's H36M command (-e 80 -k cpn_ft_h36m_dbb -arc 3x5).
SUPERVISED = dict(frames=243, keypoints="cpn_ft_h36m_dbb", causal=False, channels=1024,
                  dropout=0.25, stride=1, epochs=80, batch=1024, lr=1e-3, lrd=0.95, semi=False,
                  train=common.H36M_TRAIN_SUBJECTS, unlabeled="", subset=1.0, warmup=1,
                  dataset="h36m_poses", builder="")
# README's semi-supervised command.
SEMI = dict(SUPERVISED, frames=27, keypoints="gt", epochs=200, batch=64, lrd=0.98, semi=True,
            train="S1", unlabeled="S5,S6,S7,S8", subset=0.1, warmup=5)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  semi = common.parse_arg(arg, **SUPERVISED).semi
  args = common.parse_arg(arg, **(SEMI if semi else SUPERVISED))
  config = ml_collections.ConfigDict()
  config.task = "videopose3d"
  config.model = videopose3d.VideoPose3DConfig(
      num_joints_in=common.num_joints(args.dataset),
      num_joints_out=common.num_joints(args.dataset),
      filter_widths=common.filter_widths(args.frames), causal=args.causal,
      dropout=args.dropout, channels=args.channels).to_config()
  config.init = common.init("scratch")
  config.data = common.lifting_data(
      args.dataset, args.keypoints, subjects_train=args.train,
      subjects_unlabeled=args.unlabeled if args.semi else "", subset=args.subset,
      stride=args.stride, builder_config=args.builder or None)
  config.loss = ml_collections.ConfigDict(dict(
      warmup=args.warmup,  # --warmup: supervised-only epochs before the semi-supervised terms
      projection=True,  # not --no-proj
      linear_projection=False,  # --linear-projection
      bone_length=True))  # not --no-bone-length
  config.optim = common.amsgrad_exponential(args.lr, args.lrd)
  config.train = common.lifting_train(args.batch, args.stride, args.epochs)
  config.eval = common.lifting_eval()
  return config
