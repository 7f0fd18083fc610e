r"""MSPN on COCO keypoints, as exps/mspn.{2,4}xstg.coco of megvii-research/MSPN.

    python launch.py --config=configs/mspn_coco.py:stages=2 --workdir=runs/mspn_2xstg \
        --config.data.manual_dir=/data/coco --config.init.path=/data/imagenet/resnet50-19c8e357.pth \
        --config.eval.detection_file=/data/coco/person_detection_results.json

Arguments: ``stages`` (1-4; the released settings are 2 and 4). Published COCO test-dev
AP: 2-stage 71.5 (no released file), 4-stage 76.1 (with their detector and extra data);
val2017 with the detections they distribute: see the MSPN README.

Recipe (lib/utils/solver.py, config.py): Adam lr 5e-4 per 32 images with L2 weight decay
1e-5, 8 GPUs x 32 images, linear warm-up from 0.1 over 2400 iterations then linear decay
to 0 at 96k iterations; coarse-to-fine Gaussian targets (kernels 15, 11, 9, 7, 5; peak
255), OHKM top-8 on the last unit of every stage; BGR input with BGR ImageNet statistics;
MSPN's own crop augmentation; test: flip without heatmap shift, 5x5 blur, quarter step
toward the second maximum, mean keypoint score rescoring and no OKS-NMS.
"""
from __future__ import annotations

from configs import common
from jaxpose.models import mspn

BGR_MEAN, BGR_STD = (0.406, 0.456, 0.485), (0.225, 0.224, 0.229)


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, stages=2)
  if not 1 <= args.stages <= 4:
    raise ValueError(f"stages must be 1..4, got {args.stages}")
  config = common.ml_collections.ConfigDict()
  config.model = mspn.MSPNConfig(num_stages=args.stages,
                                 num_joints=common.num_joints("coco_keypoints"),
                                 output_shape=(64, 48)).to_config()
  config.task = "mspn"
  config.init = common.init("imagenet", "resnet50-19c8e357.pth")
  config.data = common.data("coco_keypoints", "256x192", method="mspn", color="bgr",
                            mean=BGR_MEAN, std=BGR_STD, aug=common.mspn_augment("coco"))
  config.loss = common.ml_collections.ConfigDict(dict(ohkm=True, topk=8, coarse_to_fine=True))
  batch = 8 * 32
  config.optim = common.mspn_optim(batch, max_iter_8gpu=96000)
  config.train = common.train(batch, 0, eval_every_epochs=20,
                              total_steps=config.optim.total_steps)
  config.eval = common.mspn_coco_eval("detections", batch_size=128)
  return config
