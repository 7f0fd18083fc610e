r"""Train or evaluate a jaxpose model from an ml-collections config file.

    python launch.py --config=configs/quickstart.py --workdir=/tmp/quickstart
    python launch.py --config=configs/hrnet_coco.py:w=48,size=384x288 --workdir=runs/w48 \
        --config.data.manual_dir=/data/coco --config.eval.detection_file=/data/dets.json
    python launch.py --config=configs/hrnet_coco.py --workdir=runs/w32 --mode=eval \
        --checkpoint=converted/pose_hrnet_w32_256x192        # a jaxpose.convert output

``--mode=train`` resumes from the latest intact checkpoint in ``--workdir`` if there is
one. ``--mode=eval`` evaluates ``--checkpoint`` (default: the latest in ``--workdir``;
'best'; a step; a training workdir or checkpoint; a ``jaxpose.convert`` directory; an
original ``.pth`` file).

Several processes (one per host, or several on one machine): start the same command in
each with ``--coordinator_address=HOST:PORT`` (process 0's machine), ``--num_processes=N``
and ``--process_id=i`` (or the environment variables ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``); ``--local_device_ids`` (``JAX_LOCAL_DEVICE_IDS``)
picks the accelerators of each. On SLURM, Open MPI and cloud TPU clusters JAX finds all of
this by itself. Every process must see the same ``--workdir`` (a shared file system).

Mistakes in the configuration or the command line, an unusable checkpoint and a
non-finite loss end the run with a one-line ``error: ...`` and exit status 1 (2 for
command-line syntax), before any work where they can be seen before it.
"""
from __future__ import annotations

import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (get_config).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (and evaluate) or evaluate.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None,
                                  "For --mode=eval: 'latest', 'best', a step, a training workdir "
                                  "or checkpoint, a converted directory or a .pth file (default: "
                                  "the latest checkpoint in --workdir).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0's coordinator for a multi-process run "
    "(default: $JAX_COORDINATOR_ADDRESS, else auto-detected on SLURM/Open MPI/TPU).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes in the run (default: $JAX_NUM_PROCESSES, else "
    "auto-detected; 1 or unset: a single process).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process, 0..num_processes-1 (default: $JAX_PROCESS_ID).")
_LOCAL_DEVICES = flags.DEFINE_string(
    "local_device_ids", None, "Comma-separated ids of the accelerators this process uses "
    "(default: $JAX_LOCAL_DEVICE_IDS, else all it sees).")
_MULTIHOST = flags.DEFINE_bool("multihost", False,
                               "Call jax.distributed.initialize() even if neither the flags nor "
                               "the environment describe several processes.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(logging.Filter):
  """Drops the INFO chatter of Orbax and TFDS (one line per file they touch); their
  warnings and errors, and everything jaxpose logs, still reach the console."""

  def filter(self, record: logging.LogRecord) -> bool:
    noisy = any(f"{sep}{name}{sep}" in record.pathname
                for name in ("orbax", "tensorflow_datasets") for sep in "/\\")
    return record.levelno >= logging.WARNING or not noisy


def _fail(message: str, status: int = 1) -> None:
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(status)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments: {argv[1:]}", 2)
  logging.getLogger().setLevel(logging.INFO)
  absl_logging.get_absl_handler().addFilter(_QuietLibraries())
  from jaxpose.train import loop, multihost  # after flag parsing: --help stays fast
  try:
    cluster = multihost.cluster_from(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                     _LOCAL_DEVICES.value)
  except ValueError as e:
    _fail(e, 2)
  multihost.initialize_distributed(cluster, force=_MULTIHOST.value)
  try:
    if _MODE.value == "train":
      loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    else:
      loop.evaluate(_CONFIG.value, _WORKDIR.value, _CHECKPOINT.value)
  except loop.USER_ERRORS as e:
    _fail(e)


def run(argv: list[str] | None = None) -> None:
  """``app.run(main)`` with flag and config-override mistakes as one line and exit status 2
  (``--config.train.bogus=1``, ``--config.train.global_batch_size=abc``, a missing
  ``--workdir``, an unknown config argument)."""
  argv = list(sys.argv if argv is None else argv)
  try:
    remaining = flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    _fail(_flag_error(e), 2)
  if _MODE.value == "train":  # training's allocator policy slows evaluation-only runs
    from jaxpose import host_memory
    host_memory.configure()  # before JAX starts its backend
  app.run(main, argv=argv, flags_parser=lambda _: remaining)


def _flag_error(error: BaseException) -> str:
  """One line for a flag parsing error: ``config_flags`` raises a plain ``AttributeError``
  / ``KeyError`` for an unknown ``--config.<field>`` and embeds the whole traceback of an
  error raised by ``get_config`` (e.g. an unknown config argument)."""
  text = str(error.args[0] if error.args else error).strip()
  if isinstance(error, (AttributeError, KeyError)):
    while isinstance(error.__context__, (AttributeError, KeyError)) and error.__context__.args:
      error = error.__context__  # config_flags re-raises the KeyError as AttributeError
    text = " ".join(str(error.args[0]).split()).strip("\"'")
    return (f"unknown config field in a --config.* override: {text} (the config file's "
            "get_config lists the valid fields)")
  lines = [line for line in text.splitlines() if line.strip()]
  if "Traceback (most recent call last)" in text and lines:
    return f"{lines[0].split(':')[0]}: {lines[-1].strip()}"
  return " ".join(text.split())


if __name__ == "__main__":
  run()
