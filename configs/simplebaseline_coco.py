r"""SimpleBaseline (pose_resnet) on COCO, as experiments/coco/resnet/*.yaml of the original.

    python launch.py --config=configs/simplebaseline_coco.py:depth=50,size=256x192 \
        --workdir=runs/res50_256x192 --config.data.manual_dir=/data/coco \
        --config.init.path=/data/imagenet/resnet50-19c8e357.pth \
        --config.eval.detection_file=/data/coco/COCO_val2017_detections_AP_H_56_person.json

Arguments: ``depth`` (50, 101, 152), ``size`` (256x192 or 384x288). Published val2017 AP
(detection boxes, flip test): res50 70.4 / 72.2, res101 71.4 / 73.6, res152 72.0 / 74.3
(256x192 / 384x288).

Recipe: three 4x4 deconvolutions (256 filters), Adam lr 1e-3 without weight decay, 140
epochs, x0.1 at 90 and 120, 4 GPUs x 32 images; BGR input (COLOR_RGB false) normalised
with the RGB ImageNet statistics as the original does; scale 0.3, rotation 40 (p 0.6),
flip, no half body; sigma 2 (3 at 384x288); torchvision ImageNet ResNet initialisation.
"""
from __future__ import annotations

from configs import common
from jaxpose.models import resnet

IMAGENET = {50: "resnet50-19c8e357.pth", 101: "resnet101-5d3b4d8f.pth",
            152: "resnet152-b121ed2d.pth"}


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, depth=50, size="256x192")
  if args.depth not in IMAGENET:
    raise ValueError(f"depth must be one of {sorted(IMAGENET)}, got {args.depth}")
  large = args.size == "384x288"
  config = common.ml_collections.ConfigDict()
  config.model = resnet.PoseResNetConfig(
      num_layers=args.depth, num_joints=common.num_joints("coco_keypoints")).to_config()
  config.task = "heatmap"
  config.init = common.init("imagenet", IMAGENET[args.depth])
  config.data = common.data(
      "coco_keypoints", args.size, method="hrnet", color="bgr", sigma=3.0 if large else 2.0,
      aug=common.hrnet_augment(scale_factor=0.3, rotation_factor=40, half_body_prob=0.0))
  config.optim = common.adam_multistep(lr=1e-3, milestones=(90, 120))
  config.train = common.train(128, 140, eval_every_epochs=10)
  config.eval = common.coco_eval("detections", batch_size=128)
  return config
