r"""HRNet (pose_hrnet) on COCO keypoints, as experiments/coco/hrnet/*.yaml of the original.

    python launch.py --config=configs/hrnet_coco.py --workdir=runs/hrnet_w32_256x192 \
        --config.data.manual_dir=/data/coco \
        --config.init.path=/data/imagenet/hrnet_w32-36af842e.pth \
        --config.eval.detection_file=/data/coco/COCO_val2017_detections_AP_H_56_person.json
    python launch.py --config=configs/hrnet_coco.py:w=48,size=384x288 ...

Arguments: ``w`` (32 or 48), ``size`` (256x192 or 384x288). Published val2017 AP with
detection boxes (``COCO_val2017_detections_AP_H_56_person.json``) and flip test:
w32 256x192 74.4, w32 384x288 75.8, w48 256x192 75.1, w48 384x288 76.3.

Recipe: Adam lr 1e-3, no weight decay, 210 epochs, x0.1 at 170 and 200; 4 GPUs x 32
images (x24 for w48 384x288); RGB input; scale 0.35, rotation 45 (p 0.6), flip, half body
p 0.3; sigma 2 (3 at 384x288); ImageNet-pretrained HRNet (HRNet-Image-Classification)
loaded into PRETRAINED_LAYERS.
"""
from __future__ import annotations

from configs import common
from jaxpose.models import hrnet

IMAGENET = {32: "hrnet_w32-36af842e.pth", 48: "hrnet_w48-8ef0771d.pth"}


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, w=32, size="256x192")
  if args.w not in IMAGENET:
    raise ValueError(f"w must be 32 or 48, got {args.w}")
  large = args.size == "384x288"
  config = common.ml_collections.ConfigDict()
  variant = hrnet.PoseHRNetConfig.w32 if args.w == 32 else hrnet.PoseHRNetConfig.w48
  config.model = variant(num_joints=common.num_joints("coco_keypoints")).to_config()
  config.task = "heatmap"
  config.init = common.init("imagenet", IMAGENET[args.w], hrnet.PRETRAINED_LAYERS)
  config.data = common.data(
      "coco_keypoints", args.size, method="hrnet", color="rgb", sigma=3.0 if large else 2.0,
      aug=common.hrnet_augment(scale_factor=0.35, rotation_factor=45, half_body_prob=0.3))
  config.optim = common.adam_multistep(lr=1e-3, milestones=(170, 200))
  batch = 4 * (24 if (args.w == 48 and large) else 32)
  config.train = common.train(batch, 210, eval_every_epochs=10)
  config.eval = common.coco_eval("detections", batch_size=128)
  return config
