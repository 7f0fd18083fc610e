"""Model families of jaxpose and the one dict that names them.

``MODELS`` maps a config ``name`` to the model class; each class has a ``Config``
dataclass (``jaxpose.models.base.ModelConfig``) holding every architecture
hyper-parameter. ``build_model`` turns an ml-collections config (or a ``Config``) into a
module::

    cfg = hrnet.PoseHRNetConfig.w32()           # or ConfigDict(name="pose_hrnet", ...)
    model = build_model(cfg, seed=0)
    out = model(images)                          # images [B, H, W, 3] -> {"heatmaps": ...}
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
from flax import nnx

from jaxpose.models import hg3d, hrnet, integral, mspn, resnet, rie, videopose3d
from jaxpose.models.base import ModelConfig

MODELS: dict[str, type[nnx.Module]] = {
    "pose_resnet": resnet.PoseResNet,
    "pose_hrnet": hrnet.PoseHRNet,
    "integral": integral.IntegralPoseNet,
    "hg3d": hg3d.HG3DPoseNet,
    "mspn": mspn.MSPN,
    "videopose3d": videopose3d.VideoPose3D,
    "rie": rie.RIEModel,
}


def model_class(name: str) -> type[nnx.Module]:
  try:
    return MODELS[name]
  except KeyError:
    raise ValueError(f"unknown model {name!r}; valid names: {sorted(MODELS)}") from None


def model_config(config: ModelConfig | Mapping[str, Any] | ml_collections.ConfigDict) -> ModelConfig:
  """The family ``Config`` dataclass for a config dict with a ``name`` (or passes one through)."""
  if isinstance(config, ModelConfig):
    return config
  name = config.get("name")
  if not name:
    raise ValueError(f"model config needs a 'name' (one of {sorted(MODELS)})")
  return model_class(name).Config.from_config(config)


def build_model(config: ModelConfig | Mapping[str, Any] | ml_collections.ConfigDict, *,
                seed: int = 0, rngs: nnx.Rngs | None = None) -> nnx.Module:
  """Instantiates the model described by ``config`` with freshly initialised parameters."""
  cfg = model_config(config)
  return model_class(cfg.name)(cfg, rngs=rngs if rngs is not None else nnx.Rngs(seed))


class _ShapeOnlyKeys:
  """Stands in for ``nnx.Rngs`` where only shapes are wanted: every stream's every call
  returns one fixed key.

  Under ``nnx.eval_shape`` each ``nnx.Rngs`` stream call writes its counter variable
  with a tracer, and flax's write asks the tracer for its ``sharding``, which JAX answers
  with an ``AttributeError`` whose message walks every equation traced so far: quadratic
  in the parameter count (profiled, HRNet-w32's 294 kernel and bias draws took 5.2 of the
  7.5 s its abstract model took to build; 2.0 s with this stand-in. Unprofiled: 3.5 ->
  1.0 s).
  """

  def __init__(self):
    self._key = jax.random.key(0)

  def __getattr__(self, stream: str):
    if stream.startswith("__"):
      raise AttributeError(stream)
    return lambda: self._key


def abstract_model(config: ModelConfig | Mapping[str, Any] | ml_collections.ConfigDict) -> nnx.Module:
  """The model with ``ShapeDtypeStruct`` variables (no memory, no initialisation compute)."""
  cfg = model_config(config)
  return nnx.eval_shape(lambda: model_class(cfg.name)(cfg, rngs=_ShapeOnlyKeys()))
