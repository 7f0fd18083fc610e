r"""SimpleBaseline on MPII, as experiments/mpii/resnet/res{50,101,152}_256x256_*.yaml.

    python launch.py --config=configs/simplebaseline_mpii.py:depth=50 --workdir=runs/res50_mpii \
        --config.data.manual_dir=/data/mpii --config.init.path=/data/imagenet/resnet50-19c8e357.pth

Published MPII validation PCKh@0.5: res50 88.5, res101 89.1, res152 89.6.

Recipe: 256x256 BGR crops, sigma 2, scale 0.25, rotation 30 (p 0.6), flip, no half body;
Adam lr 1e-3, 140 epochs, x0.1 at 90 and 120; 4 GPUs x 32.
"""
from __future__ import annotations

from configs import common
from configs import simplebaseline_coco
from jaxpose.models import resnet


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, depth=50)
  config = common.ml_collections.ConfigDict()
  config.model = resnet.PoseResNetConfig(
      num_layers=args.depth, num_joints=common.num_joints("mpii")).to_config()
  config.task = "heatmap"
  config.init = common.init("imagenet", simplebaseline_coco.IMAGENET[args.depth])
  config.data = common.data(
      "mpii", "256x256", method="hrnet", color="bgr", sigma=2.0,
      aug=common.hrnet_augment(scale_factor=0.25, rotation_factor=30, half_body_prob=0.0))
  config.optim = common.adam_multistep(lr=1e-3, milestones=(90, 120))
  config.train = common.train(128, 140, eval_every_epochs=10)
  config.eval = common.mpii_eval(batch_size=128)
  return config
