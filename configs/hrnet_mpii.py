r"""HRNet on MPII, as experiments/mpii/hrnet/w{32,48}_256x256_adam_lr1e-3.yaml.

    python launch.py --config=configs/hrnet_mpii.py:w=32 --workdir=runs/hrnet_mpii \
        --config.data.manual_dir=/data/mpii --config.init.path=/data/imagenet/hrnet_w32-36af842e.pth

Published MPII validation PCKh@0.5: w32 90.3, w48 90.1 (Mean@0.1 37.7 / 38.0).

Recipe: 256x256 RGB crops, sigma 2, scale 0.25, rotation 30 (p 0.6), flip, no half body;
Adam lr 1e-3, 210 epochs, x0.1 at 170 and 200; 4 GPUs x 32.
"""
from __future__ import annotations

from configs import common
from configs import hrnet_coco
from jaxpose.models import hrnet


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, w=32)
  config = common.ml_collections.ConfigDict()
  variant = hrnet.PoseHRNetConfig.w32 if args.w == 32 else hrnet.PoseHRNetConfig.w48
  config.model = variant(num_joints=common.num_joints("mpii")).to_config()
  config.task = "heatmap"
  config.init = common.init("imagenet", hrnet_coco.IMAGENET[args.w], hrnet.PRETRAINED_LAYERS)
  config.data = common.data(
      "mpii", "256x256", method="hrnet", color="rgb", sigma=2.0,
      aug=common.hrnet_augment(scale_factor=0.25, rotation_factor=30, half_body_prob=0.0))
  config.optim = common.adam_multistep(lr=1e-3, milestones=(170, 200))
  config.train = common.train(128, 210, eval_every_epochs=10)
  config.eval = common.mpii_eval(batch_size=128)
  return config
