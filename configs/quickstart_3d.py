r"""Quickstart 3D: a small VideoPose3D learns the embedded ``synthetic_mocap`` on a CPU.

    python launch.py --config=configs/quickstart_3d.py --workdir=/tmp/jaxpose_quickstart_3d
    python launch.py --config=configs/quickstart_3d.py:epochs=4,channels=256 --workdir=...

Builds ``synthetic_mocap`` (procedural motion seen by the four Human3.6M cameras, no
download: 600 training and 240 validation sequences) on first use, trains VideoPose3D
with a 27-frame receptive field (``-arc 3,3,3``) and 128 channels on the ``detected`` 2D
source (simulated detector noise, limb swaps and outliers) for 6 epochs (4788 steps of
256 windows), evaluates on S9/S11 with the flip test after every epoch and prints the
Human3.6M protocol table with the mean-pose baseline. Expected on 2 CPU cores: about 4
minutes, Protocol #1 about 39 mm against 199 mm for the mean-pose baseline (README.md has
the measured table).

Otherwise VideoPose3D's recipe (``configs/videopose3d_h36m.py``: Adam with AMSGrad,
BatchNorm momentum decay, train-time flips, single-frame training model, whole-sequence
evaluation), with a faster per-epoch lr decay for the short run. Arguments: ``epochs``,
``batch`` (windows), ``channels``, ``frames``, ``lr``, ``lrd`` and ``builder`` (the
``synthetic_mocap`` config; ``tiny`` for tests).
"""
from __future__ import annotations

import ml_collections

from configs import common
from jaxpose.models import videopose3d


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, epochs=6, batch=256, channels=128, frames=27, lr=2e-3, lrd=0.75,
                          builder="default", dropout=0.1)
  joints = common.num_joints("synthetic_mocap")
  config = ml_collections.ConfigDict()
  config.task = "videopose3d"
  config.model = videopose3d.VideoPose3DConfig(
      num_joints_in=joints, num_joints_out=joints, filter_widths=common.filter_widths(args.frames),
      dropout=args.dropout, channels=args.channels).to_config()
  config.init = common.init("scratch")
  # Every subject of the splits (train S1, S5-S8; validation S9, S11; fewer in ``tiny``).
  config.data = common.lifting_data("synthetic_mocap", "detected", subjects_train="",
                                    subjects_test="", builder_config=args.builder)
  config.loss = ml_collections.ConfigDict(dict(warmup=1, projection=True,
                                               linear_projection=False, bone_length=True))
  config.optim = common.amsgrad_exponential(args.lr, args.lrd)
  config.train = common.lifting_train(args.batch, 1, args.epochs, eval_every_epochs=1)
  config.train.log_every_steps = 50
  config.train.checkpoint_every_steps = 1000
  config.eval = common.lifting_eval(length_multiple=64)
  return config
