r"""Integral regression on Human3.6M + MPII, as JimmySuen/integral-human-pose's experiments.

    python launch.py --config=configs/integral_h36m.py --workdir=runs/integral_r50 \
        --config.data.sources.h36m.manual_dir=/data/hm36 \
        --config.data.sources.mpii.manual_dir=/data/mpii \
        --config.eval.datasets.h36m.manual_dir=/data/hm36 \
        --config.eval.datasets.mpii.manual_dir=/data/mpii \
        --config.init.path=/data/imagenet/resnet50-19c8e357.pth
    python launch.py --config=configs/integral_h36m.py:challenge ...          # ResNet-152
    python launch.py --config=configs/integral_h36m.py:layout=eccv18 ...      # challenge data

Default: ``integral_human_pose/experiments/hm36/resnet50v1_ft/
d-mh_ps-256_deconv256x3_min-int-l1_adam_bs32-4gpus_x300-270-290/lr1e-3.yaml``: ResNet-50
(ImageNet torchvision weights, loaded partially through the converter), 3 deconvolutions of
256 filters (kernel 4), a 1x1 convolution to 18 joints x 64 depth bins, 256x256 RGB
patches, integral L1 loss on x, y and z; Adam lr 1e-3, 300 epochs, x0.1 at the yaml's
270 and 290 (its MultiStepLR counts epochs from 1, so the 270th epoch already trains at
1e-4: milestones 269, 289 here); batch 4 GPUs x 32; augmentation scale 0.25, rotation 30,
colour 0.2, flips; every batch half MPII (2D: no depth supervision), half Human3.6M, an
epoch = 2 x #MPII (``mpii_hm36_Dataset``). Data ``layout=hm36`` (default): the project's
own frames and caches (``h36m_images/hm36``; train = ``train``, evaluation = the yaml's
``validmin``); evaluation with the flip test (``test.py``), back-projection with the true
root depth (Human3.6M protocol), MPJPE per action, "align" (rigid) as P-MPJPE; PCKh on MPII
validation. Paper: 49.6 mm (ResNet-50, MPII + Human3.6M, protocol #1; the released yaml
trains on a 200-frame sample of every video).

``layout=eccv18``: the ECCV'18 challenge data (``h36m_images/eccv18``), boxes around the
joints (1.25x, the patch's aspect), the challenge protocol (total bone length 4502.881 mm,
rigid "align" without re-rooting). ``challenge``: ``hm36_challenge/experiments/hm36/
resnet152v1_ft/d-mh_ps-256_deconv256x3_min-int-l1_adam_bs24-4gpus_x300-270-290/
lr1e-3.yaml``: ResNet-152, 4 x 24 per batch, on the challenge data. ``schedule=x140``:
140 epochs with steps at 90 and 120 (the project's other released hm36 folder, ``..._dj_l1
_adam_bs32-4gpus_x140-90-120``, whose direct-regression network shares the recipe).
"""
from __future__ import annotations

from configs import common
from configs import simplebaseline_coco
from jaxpose.data import keypoints
from jaxpose.models import integral

# Released schedules: epochs and the yaml's lr_epoch_step (1-based epochs).
SCHEDULES = {"x300": (300, (270, 290)), "x140": (140, (90, 120))}
# h36m_images layout -> (builder config, box rule, protocol, alignment).
LAYOUTS = {"hm36": ("hm36", "stored", "backproject", "rigid_root"),
           "eccv18": ("eccv18", "joints", "bone_length", "rigid")}


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, challenge=False, layout="", schedule="x300", depth=50)
  layout = args.layout or ("eccv18" if args.challenge else "hm36")
  if layout not in LAYOUTS or args.schedule not in SCHEDULES:
    raise ValueError(f"layout must be one of {sorted(LAYOUTS)} and schedule one of "
                     f"{sorted(SCHEDULES)}, got {args.layout!r}, {args.schedule!r}")
  depth = 152 if args.challenge else args.depth
  builder, box, protocol, align = LAYOUTS[layout]
  config = common.ml_collections.ConfigDict()
  config.model = integral.IntegralConfig(
      num_layers=depth, num_joints=keypoints.H36M18_NUM_JOINTS, depth_dim=64,
      num_deconv_layers=3, num_deconv_filters=256, num_deconv_kernel=4,
      final_conv_kernel=1).to_config()
  config.task = "integral"
  config.init = common.init("imagenet", simplebaseline_coco.IMAGENET[depth])
  sources = {"mpii": common.image3d_set("mpii", "train"),
             "h36m": common.image3d_set("h36m_images", "train", builder_config=builder, box=box)}
  config.data = common.image3d_data(sources, ("mpii", "h36m"), "256x256", color="rgb",
                                    aug=common.integral_augment())
  config.loss = common.ml_collections.ConfigDict(dict(type="L1"))
  epochs, steps = SCHEDULES[args.schedule]
  config.optim = common.adam_multistep(1e-3, milestones=tuple(m - 1 for m in steps))
  config.train = common.train(96 if args.challenge else 128, epochs, eval_every_epochs=10)
  config.eval = common.image3d_eval(
      {"h36m": common.image3d_set("h36m_images", "validation", builder_config=builder, box=box),
       "mpii": common.image3d_set("mpii", "validation")},
      protocol=protocol, align=align, batch_size=128)
  return config
