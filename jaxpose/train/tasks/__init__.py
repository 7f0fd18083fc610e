"""Training methods: one task object per method, named by ``config.task``.

``TASKS`` is the one explicit table from ``config.task`` to the task class;
``make_task(config)`` builds the run's task. The interface every task implements, with
each method's contract, is ``base.Task``; ``topdown.TopDownTask`` is what the top-down 2D
methods share, ``image3d.Image3DTask`` what the image-based 3D ones share,
``lifting.LiftingTask`` what the 2D -> 3D lifters share.

| ``config.task`` | class | methods |
|---|---|---|
| ``'heatmap'`` | ``heatmap.HeatmapTask`` | HRNet, SimpleBaseline |
| ``'mspn'`` | ``mspn.MSPNTask`` | MSPN |
| ``'integral'`` | ``integral.IntegralTask`` | integral regression (image-based 3D) |
| ``'hg3d'`` | ``hg3d.HG3DTask`` | pytorch-pose-hg-3d (weakly-supervised 3D) |
| ``'videopose3d'`` | ``videopose3d.VideoPose3DTask`` | VideoPose3D (supervised, semi-supervised) |
| ``'rie'`` | ``rie.RIETask`` | Pose3D-RIE (three training stages) |

A new method: a file here with a ``base.Task`` subclass and one entry in ``TASKS``.
"""
from __future__ import annotations

import ml_collections

from jaxpose.train.tasks import base
from jaxpose.train.tasks.heatmap import HeatmapTask
from jaxpose.train.tasks.hg3d import HG3DTask
from jaxpose.train.tasks.integral import IntegralTask
from jaxpose.train.tasks.mspn import MSPNTask
from jaxpose.train.tasks.rie import RIETask
from jaxpose.train.tasks.videopose3d import VideoPose3DTask

TASKS: dict[str, type[base.Task]] = {
    "heatmap": HeatmapTask,
    "mspn": MSPNTask,
    "integral": IntegralTask,
    "hg3d": HG3DTask,
    "videopose3d": VideoPose3DTask,
    "rie": RIETask,
}


def task_class(name: str) -> type[base.Task]:
  """The class of ``config.task`` ``name``; ``ValueError`` listing the valid names."""
  try:
    return TASKS[name]
  except KeyError:
    raise ValueError(f"unknown task {name!r}; valid: {sorted(TASKS)}") from None


def make_task(config: ml_collections.ConfigDict) -> base.Task:
  """The task of a run (``config.task``), validated against its config."""
  return task_class(config.task).from_config(config)
