r"""Pose3D-RIE on Human3.6M: the three-stage training of paTRICK-swk/Pose3D-RIE's README.

    python launch.py --config=configs/rie_h36m.py:stage=1,lfd=256,keypoints=gt \
        --workdir=runs/rie_gt_s1 --config.data.manual_dir=/data/h36m
    python launch.py --config=configs/rie_h36m.py:stage=2,lfd=256,keypoints=gt \
        --workdir=runs/rie_gt_s2 --config.init.path=runs/rie_gt_s1
    python launch.py --config=configs/rie_h36m.py:stage=3,lfd=256,keypoints=gt \
        --workdir=runs/rie_gt_s3 --config.init.path=runs/rie_gt_s2
    python launch.py --config=configs/rie_h36m.py:stage=3,lfd=512 --workdir=runs/eval \
        --mode=eval --checkpoint=converted/cpn_pretrained      # a jaxpose.convert output

Stage 1 (``run.py -k gt --stage 1 -lfd 256``) trains the encoders and decoders for 80
epochs; stage 2 (``--stage 2 -p stage_1_best.bin``) loads the five temporal encoders and
``GlobalInfo`` from the stage-1 run's best checkpoint (``init.path``: its workdir),
freezes them and trains the feature fusion blocks and decoders; stage 3 (``--stage 3 -ft
stage_2_best.bin -lr 0.0005 -e 80``) fine-tunes everything from the stage-2 run's best
checkpoint. ``init.path`` may also be a converted directory or the original's
``stage_N_epoch_M.bin``. Expected: the errors of the paper's Human3.6M tables for the
released ``cpn_pretrained.bin`` (``lfd=512``) and ``gt_pretrained.bin`` (``lfd=256``)
after stage 3 (not reproduced here: no Human3.6M data on the development machines).

Arguments (run.py flags in brackets): ``stage`` (``--stage`` 1/2/3), ``lfd``
(``-lfd`` 256; the CPN model uses 512), ``keypoints`` (``-k`` cpn_ft_h36m_dbb), ``frames``
(``-arc`` 3,3,3,3,3: 243), ``channels`` (``-ch`` 256), ``dropout`` (``-drop`` 0.2),
``causal``, ``epochs`` (``-e`` 80), ``batch`` (``-b`` 1024 windows), ``lr`` (``-lr``:
1e-3, 5e-4 in stage 3 as the README's command), ``lrd`` (``-lrd`` 0.95), ``init`` (the
previous stage: ``-p``/``-ft``), ``dataset``. Fixed as in run.py: AdamW (AMSGrad, weight
decay 0.01) over the trained parameters, BatchNorm momentum of the temporal encoders
0.1 -> 0.001 per epoch, train-time and test-time flips, evaluation of every frame's
window in batches of 1024, per action. RIE's run.py prints protocols #1 and #2; the
table here adds #3 and MPJVE.
"""
from __future__ import annotations

import ml_collections

from configs import common
from jaxpose.models import rie

DEFAULTS = dict(stage=1, lfd=256, keypoints="cpn_ft_h36m_dbb", frames=243, channels=256,
                dropout=0.2, causal=False, epochs=80, batch=1024, lr=0.0, lrd=0.95, init="",
                dataset="h36m_poses", builder="")
STAGE_LR = {1: 1e-3, 2: 1e-3, 3: 5e-4}  # -lr default; README's stage-3 command: -lr 0.0005


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, **DEFAULTS)
  if args.stage not in STAGE_LR:
    raise ValueError(f"stage must be 1, 2 or 3 (run.py --stage), got {args.stage}")
  config = ml_collections.ConfigDict()
  config.task = "rie"
  config.model = rie.RIEConfig(
      filter_widths=common.filter_widths(args.frames), causal=args.causal,
      dropout=args.dropout, latent_features=args.lfd, channels=args.channels,
      stage=args.stage).to_config()
  # Stages 2 and 3 start from the previous stage's best checkpoint (init.path).
  config.init = common.init("scratch" if args.stage == 1 else "checkpoint", args.init)
  config.data = common.lifting_data(args.dataset, args.keypoints,
                                    builder_config=args.builder or None)
  config.optim = common.amsgrad_exponential(args.lr or STAGE_LR[args.stage], args.lrd,
                                            name="adamw", weight_decay=0.01)
  config.train = common.lifting_train(args.batch, 1, args.epochs)
  config.eval = common.lifting_eval(batch_size=1024)
  return config
