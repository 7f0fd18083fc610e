"""Model configs: frozen dataclasses that round-trip through ml-collections.

Every model family defines one ``ModelConfig`` subclass holding every architecture
hyper-parameter (widths, depths, joint counts, ...) plus the compute ``dtype``. The
checkpoint converter infers one of these from a PyTorch state dict and writes it next to
the Orbax checkpoint as an ml-collections config, which ``build_model`` turns back into
the module.
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

import ml_collections


def _freeze(value: Any) -> Any:
  """Lists (and ConfigDict lists) become tuples so that configs are hashable."""
  if isinstance(value, (list, tuple)):
    return tuple(_freeze(v) for v in value)
  return value


def _to_plain(value: Any) -> Any:
  if dataclasses.is_dataclass(value):
    return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
  if isinstance(value, tuple):
    return [_to_plain(v) for v in value]
  return value


def _from_plain(tp: Any, value: Any) -> Any:
  """Rebuilds nested dataclasses (and tuples of them) from plain values using type hints."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
    return from_mapping(tp, value)
  origin = typing.get_origin(tp)
  args = typing.get_args(tp)
  if origin is tuple and isinstance(value, (list, tuple)):
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_from_plain(args[0], v) for v in value)
    if args and len(args) == len(value):
      return tuple(_from_plain(a, v) for a, v in zip(args, value))
  return _freeze(value)


def from_plain(tp: Any, value: Any) -> Any:
  """``value`` (plain lists, dicts, scalars) rebuilt as type ``tp`` (tuples, dataclasses)."""
  return _from_plain(tp, value)


def from_mapping(cls: type, values: Mapping[str, Any]):
  """Builds dataclass ``cls`` from a mapping, rejecting unknown keys by name."""
  values = dict(values.to_dict() if isinstance(values, ml_collections.ConfigDict) else values)
  values.pop("name", None)
  names = {f.name for f in dataclasses.fields(cls) if f.init}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ValueError(
        f"{cls.__name__} has no field(s) {unknown}; valid fields: {sorted(names)}")
  hints = typing.get_type_hints(cls)
  return cls(**{k: _from_plain(hints.get(k, Any), v) for k, v in values.items()})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Base of every family's config. ``name`` is the key of ``jaxpose.models.MODELS``."""

  name: ClassVar[str] = ""

  def to_config(self) -> ml_collections.ConfigDict:
    """This config as an ml-collections ConfigDict with its ``name``."""
    return ml_collections.ConfigDict({"name": self.name, **_to_plain(self)})

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | ml_collections.ConfigDict):
    """Inverse of ``to_config`` (the ``name`` entry, if present, must match)."""
    name = config.get("name") if hasattr(config, "get") else None
    if name and name != cls.name:
      raise ValueError(f"config is for model {name!r}, not {cls.name!r}")
    return from_mapping(cls, config)

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)
