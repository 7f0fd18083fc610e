r"""Quickstart: a small HRNet learns the embedded ``synthetic_people`` dataset on a CPU.

    python launch.py --config=configs/quickstart.py --workdir=/tmp/jaxpose_quickstart

Builds ``synthetic_people`` (procedural, no download; ~2900 training and ~380 validation
persons) on first use, trains ``PoseHRNetConfig.tiny()`` (widths 16/32/64/128) on 128x96
crops for a few minutes on 2 CPU cores, evaluates with the COCO evaluator on ground-truth
boxes with flip test and prints the AP table. Expected: COCO AP >= 0.5 (see README.md for
the measured curve).

Everything else is HRNet's recipe (``JointsMSELoss`` with target weights, Adam, HRNet's
augmentation, quarter-pixel decoding), scaled down: larger learning rate and sigma for the
short schedule and the 32x24 heatmaps.
"""
from __future__ import annotations

from configs import common
from jaxpose.models import hrnet


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, epochs=12, batch=32, size="128x96", workers=0, builder="default")
  config = common.ml_collections.ConfigDict()
  config.model = hrnet.PoseHRNetConfig.small(num_joints=17).to_config()
  config.task = "heatmap"
  config.init = common.init("scratch")
  config.data = common.data(
      "synthetic_people", args.size, method="hrnet", color="rgb", sigma=2.0,
      aug=common.hrnet_augment(scale_factor=0.25, rotation_factor=30, half_body_prob=0.0),
      builder_config=args.builder, num_workers=args.workers)
  config.optim = common.adam_multistep(lr=2e-3, milestones=(int(args.epochs * 0.75),))
  config.train = common.train(args.batch, args.epochs, eval_every_epochs=args.epochs)
  config.train.log_every_steps = 20
  config.train.checkpoint_every_steps = 500
  config.eval = common.coco_eval("gt", batch_size=64)
  return config
