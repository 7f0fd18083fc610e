r"""pytorch-pose-hg-3d: weakly-supervised 3D pose, the three training stages of its readme.

    python launch.py --config=configs/hg3d_h36m.py:stage=1 --workdir=runs/hg3d_mpii \
        --config.data.sources.mpii.manual_dir=/data/mpii \
        --config.eval.datasets.mpii.manual_dir=/data/mpii \
        --config.init.path=/data/imagenet/resnet50-19c8e357.pth
    python launch.py --config=configs/hg3d_h36m.py:stage=2 --workdir=runs/hg3d_fusion \
        --config.init.path=runs/hg3d_mpii --config.data.sources.h36m.manual_dir=/data/h36m ...
    python launch.py --config=configs/hg3d_h36m.py:stage=3 --workdir=runs/hg3d_fusion_var \
        --config.init.path=runs/hg3d_fusion ...
    python launch.py --config=configs/hg3d_h36m.py:stage=3,full_test --workdir=runs/eval \
        --mode=eval --checkpoint=converted/fusion_3d_var   # or fusion_3d_var.pth itself

``src/main.py`` with ``opts.py``'s defaults: ``--arch msra_50`` (ResNet-50, three 256-wide
deconvolutions, 1x1 heads), 256x256 BGR crops normalised as ``(x / 256 - mean) / std``,
64x64 heatmaps (sigma 2) of the 16 MPII joints, scale 0.25, rotation 30 (MPII only), flip
0.5; Adam, batch 32; validation every 5 epochs with the flip test.

* ``stage=1`` (``python main.py --exp_id mpii``): 2D only on MPII (``--task human2d``: no
  depth head), lr 1e-3 for 140 epochs, x0.1 after 90 and 120; ImageNet initialisation;
  scored by PCKh on MPII validation.
* ``stage=2`` (``--task human3d --dataset fusion_3d --ratio_3d 1 --weight_3d 0.1
  --load_model ../exp/mpii/model_last.pth --num_epoch 60 --lr_step 45``): every batch half
  Human3.6M (ECCV'18 challenge data, ``h36m_images/eccv18``), half MPII, an epoch = 2 x
  #MPII (``Fusion3D``); depth regression weighted 0.1; starts from stage 1's weights
  (``init.path`` = its workdir; the depth head it lacks starts fresh, as
  ``load_state_dict(strict=False)``); 60 epochs, x0.1 after 45.
* ``stage=3`` (``--weight_var 0.01 --load_model ../models/fusion_3d.pth --num_epoch 10
  --lr 1e-4``): adds the bone-length-ratio loss of the MPII samples (weight 0.01), lr
  1e-4 for 10 epochs, from stage 2.

Evaluation of stages 2-3 (``train_3d.py``): MPJPE of every 10th Human3.6M validation
image (``full_test``: all), after ``convert_eval_format`` (Human3.6M's 17 joints, total
bone length 4000 mm); PCKh on MPII validation as a second set. The released
``fusion_3d_var.pth``, evaluated with ``full_test`` (``--test --full_test``), gives
64.55 mm by the readme.
"""
from __future__ import annotations

from configs import common
from configs import simplebaseline_coco
from jaxpose.models import hg3d

# stage -> (lr, epochs, lr steps, weight_3d, weight_var)
STAGES = {1: (1e-3, 140, (90, 120), 0.0, 0.0), 2: (1e-3, 60, (45,), 0.1, 0.0),
          3: (1e-4, 10, (), 0.1, 0.01)}


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, stage=3, full_test=False, depth=50)
  if args.stage not in STAGES:
    raise ValueError(f"stage must be one of {sorted(STAGES)}, got {args.stage}")
  lr, epochs, steps, weight_3d, weight_var = STAGES[args.stage]
  with_depth = args.stage > 1
  config = common.ml_collections.ConfigDict()
  config.model = (hg3d.HG3DConfig.fusion_3d(args.depth) if with_depth
                  else hg3d.HG3DConfig.human2d(args.depth)).to_config()
  config.task = "hg3d"
  if args.stage == 1:
    config.init = common.init("imagenet", simplebaseline_coco.IMAGENET[args.depth])
  else:
    config.init = common.init("checkpoint")
    config.init.partial = args.stage == 2  # stage 1 has no depth head
  # pytorch-pose-hg-3d leaves MPII's joints 1-based (it shifts only the centre).
  sources = {"mpii": common.image3d_set("mpii", "train", joint_shift=1.0)}
  mixture = ("mpii",)
  if with_depth:
    sources["h36m"] = common.image3d_set("h36m_images", "train", builder_config="eccv18")
    mixture = ("mpii", "h36m")
  aug = common.ml_collections.ConfigDict(dict(scale_factor=0.25, rotation_factor=30.0,
                                              rotation_prob=0.6, flip_prob=0.5))
  config.data = common.image3d_data(sources, mixture, "256x256", color="bgr", aug=aug, sigma=2.0)
  config.loss = common.ml_collections.ConfigDict(dict(weight_3d=weight_3d,
                                                      weight_var=weight_var))
  config.optim = common.adam_multistep(lr, milestones=steps)
  config.train = common.train(32, epochs, eval_every_epochs=5)
  sets = {"mpii": common.image3d_set("mpii", "validation", joint_shift=1.0)}
  if with_depth:
    sets = {"h36m": common.image3d_set("h36m_images", "validation", builder_config="eccv18",
                                       every=1 if args.full_test else 10), **sets}
  config.eval = common.image3d_eval(sets, protocol=None, align=None, batch_size=32)
  return config
