r"""Train or evaluate a jaxpose model from an ml-collections config file.

    python launch.py --config=configs/quickstart.py --workdir=/tmp/quickstart
    python launch.py --config=configs/hrnet_coco.py:w=48,size=384x288 --workdir=runs/w48 \
        --config.data.manual_dir=/data/coco --config.eval.detection_file=/data/dets.json
    python launch.py --config=configs/hrnet_coco.py --workdir=runs/w32 --mode=eval \
        --checkpoint=converted/pose_hrnet_w32_256x192        # a jaxpose.convert output

``--mode=train`` resumes from the latest checkpoint in ``--workdir`` if there is one.
``--mode=eval`` evaluates ``--checkpoint`` (default: the latest in ``--workdir``; 'best';
a step; a ``jaxpose.convert`` directory; an original ``.pth`` file).
"""
from __future__ import annotations

import logging

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from jaxpose.train import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (get_config).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (and evaluate) or evaluate.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None,
                                  "For --mode=eval: 'best', a step, a converted directory or "
                                  "a .pth file (default: the latest checkpoint in --workdir).")
_MULTIHOST = flags.DEFINE_bool("multihost", False,
                               "Call jax.distributed.initialize() even if the environment "
                               "does not describe several processes.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(logging.Filter):
  """Drops the INFO chatter of Orbax and TFDS (one line per file they touch); their
  warnings and errors, and everything jaxpose logs, still reach the console."""

  def filter(self, record: logging.LogRecord) -> bool:
    noisy = any(f"{sep}{name}{sep}" in record.pathname
                for name in ("orbax", "tensorflow_datasets") for sep in "/\\")
    return record.levelno >= logging.WARNING or not noisy


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  absl_logging.get_absl_handler().addFilter(_QuietLibraries())
  loop.maybe_initialize_distributed(force=_MULTIHOST.value)
  if _MODE.value == "train":
    loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  else:
    loop.evaluate(_CONFIG.value, _WORKDIR.value, _CHECKPOINT.value)


if __name__ == "__main__":
  app.run(main)
