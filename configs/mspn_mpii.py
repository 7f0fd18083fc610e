r"""MSPN on MPII, as exps/mspn.2xstg.mpii of megvii-research/MSPN.

    python launch.py --config=configs/mspn_mpii.py:stages=2 --workdir=runs/mspn_mpii \
        --config.data.manual_dir=/data/mpii --config.init.path=/data/imagenet/resnet50-19c8e357.pth

Recipe: 256x256 BGR crops, MSPN's MPII augmentation (rotation 60 p 0.5, half body p 0.5
above 8 joints), coarse-to-fine targets with OHKM; Adam 5e-4 per 32 images, L2 1e-5,
8 x 32 images, warm-up 2400 iterations, linear decay to 0 at 28.8k iterations; test with
flip (no shift) and a 9x9 blur.
"""
from __future__ import annotations

from configs import common
from configs import mspn_coco
from jaxpose.models import mspn


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, stages=2)
  config = common.ml_collections.ConfigDict()
  config.model = mspn.MSPNConfig(num_stages=args.stages, num_joints=common.num_joints("mpii"),
                                 output_shape=(64, 64)).to_config()
  config.task = "mspn"
  config.init = common.init("imagenet", "resnet50-19c8e357.pth")
  config.data = common.data("mpii", "256x256", method="mspn", color="bgr",
                            mean=mspn_coco.BGR_MEAN, std=mspn_coco.BGR_STD,
                            aug=common.mspn_augment("mpii"))
  config.loss = common.ml_collections.ConfigDict(dict(ohkm=True, topk=8, coarse_to_fine=True))
  batch = 8 * 32
  config.optim = common.mspn_optim(batch, max_iter_8gpu=28800)
  config.train = common.train(batch, 0, eval_every_epochs=20,
                              total_steps=config.optim.total_steps)
  config.eval = common.mpii_eval(batch_size=128, shift_heatmap=False, decode_kernel=9)
  return config
