r"""Quickstart 3D from images: a small integral regression network learns synthetic people.

    python launch.py --config=configs/quickstart_3d_image.py --workdir=/tmp/jaxpose_quick3d

Builds ``synthetic_people3d`` (procedural people posed in 3D and photographed; 6000
training and 600 validation images of 128x128, no download) on first use, trains integral
regression (ResNet-18 at a quarter of its width, three 32-wide deconvolutions, 64x64
patches, 16 depth bins: 16x16x16 volumes per joint) for 10 epochs of 375 steps of 16 with
its L1 integral loss and (milder) augmentation, and evaluates Human3.6M's protocol on the
validation subjects (S9, S11) after epochs 5 and 10: back-projection through the camera
with the true root depth, MPJPE per action and overall, the rigid "align" number as
P-MPJPE, and the mean-pose baseline of the training set.

Measured on the 2-core development machine (alone on it, dataset already built): 6.0 min
of training; Protocol #1 (MPJPE) 159.0 mm after epoch 5, **148.7 mm** after epoch 10
(P-MPJPE 109.2 mm) against **205.9 mm** for the mean-pose baseline (README.md has the table).

Arguments: ``epochs``, ``batch``, ``lr``, ``width`` (deconvolution filters), ``trunk``
(ResNet-18's first width; 64 is the full network), ``size``
(patch side), ``builder`` ('default' | 'tiny') and ``workers``.
"""
from __future__ import annotations

from configs import common
from jaxpose.data import keypoints
from jaxpose.models import integral


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, epochs=10, batch=16, lr=1e-3, width=32, trunk=16, size=64,
                          builder="default", workers=0)
  config = common.ml_collections.ConfigDict()
  config.model = integral.IntegralConfig(
      num_layers=18, num_joints=keypoints.H36M18_NUM_JOINTS, depth_dim=args.size // 4,
      num_deconv_layers=3, num_deconv_filters=args.width,
      backbone_width=args.trunk).to_config()
  config.task = "integral"
  config.init = common.init("scratch")
  sources = {"people3d": common.image3d_set("synthetic_people3d", "train",
                                            builder_config=args.builder)}
  config.data = common.image3d_data(sources, ("people3d",), f"{args.size}x{args.size}",
                                    color="rgb",
                                    aug=common.integral_augment(scale_factor=0.15,
                                                                rotation_factor=15.0),
                                    num_workers=args.workers)
  config.loss = common.ml_collections.ConfigDict(dict(type="L1"))
  config.optim = common.adam_warmup_linear(args.lr, warmup_epochs=0.25, total_epochs=args.epochs)
  config.train = common.train(args.batch, args.epochs, eval_every_epochs=max(1, args.epochs // 2))
  config.train.log_every_steps = 20
  config.train.checkpoint_every_steps = 500
  config.eval = common.image3d_eval(
      {"people3d": common.image3d_set("synthetic_people3d", "validation",
                                      builder_config=args.builder)},
      protocol="backproject", align="rigid_root", baseline=True)
  return config
