"""Configuration that the weights cannot reveal, taken from the user as the originals took it.

A checkpoint's tensors fix most of a model's hyper-parameters, but not all: VideoPose3D's
``causal`` flag and dropout leave no trace in the weights, and integral regression's last
convolution holds ``num_joints * depth_dim`` channels that only the experiment yaml and the
dataset split. The converter therefore takes the configuration the way the original code
did. In order of precedence:

1. ``overrides`` (``--model-config KEY=VALUE ...``): jaxpose config fields
   (``depth_dim=72``), ``name``, or the original's own keys (``network.depth_dim=72``,
   ``MODEL.NUM_JOINTS=16``); unknown keys are refused, listing the valid ones.
2. ``original_config`` (``--cfg FILE``): the original experiment yaml (HRNet and
   SimpleBaseline ``experiments/*.yaml``, integral-human-pose ``experiments/*.yaml``; for
   MSPN, whose ``config.py`` is Python and never executed, a yaml or JSON of its
   ``MODEL.*``/``DATASET.*``/``OUTPUT_SHAPE`` values). Keys the file holds are given; keys
   it leaves out are read from the weights. Read with ``yaml.safe_load``.
3. ``original_args`` (``-- ARGS...``): the original's command line (VideoPose3D and
   Pose3D-RIE ``run.py``, pytorch-pose-hg-3d ``main.py`` options). Flags left out take the
   original's argparse defaults, exactly as the original would build the model.
4. Evidence in the checkpoint file: saved arguments (a top-level ``args``/``opt``/
   ``config`` entry), the RIE ``stage_<N>_epoch_<M>.bin`` file name.

Whatever is not given is read from the tensors, then from documented rules (per family);
a property that none of these settle is *assumed* at the original's default and reported
loudly (a warning per assumption, and in ``conversion.json``), or, where the tensors allow
several answers, the conversion fails listing the candidates and the flag to pass. A given
value that contradicts the tensors is an error.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jaxpose.convert.torch_pickle import OpaqueObject
from jaxpose.models import base

MAX_CONFIG_BYTES = 4 << 20  # an experiment yaml is a few KB
MAX_CONFIG_NODES = 100_000  # mapping/sequence nodes walked when flattening (alias bombs)

# Top-level checkpoint entries that may hold the run's arguments.
CHECKPOINT_ARGS_KEYS = ("args", "opt", "opts", "config", "cfg")

Given = dict[str, tuple[Any, str]]  # field -> (value, where it came from)


class AssumptionWarning(UserWarning):
  """A model property the checkpoint does not show and nobody gave: its default was used."""


@dataclasses.dataclass(frozen=True)
class OriginalArg:
  """One command-line flag of the original that shapes the model.

  Attributes:
    flags: the original's option strings (``("-arc", "--architecture")``).
    dest: the argparse destination (``architecture``), as saved in an ``args`` namespace.
    type: the value parser, or None for a ``store_true`` flag.
    default: the original's default.
  """
  flags: tuple[str, ...]
  dest: str
  type: Callable[[str], Any] | None
  default: Any


def parse_original_args(argv: str | Sequence[str], spec: Sequence[OriginalArg], program: str
                        ) -> tuple[dict[str, Any], dict[str, str]]:
  """The original's command line -> ``({dest: value}, {dest: source})``.

  Only the flags in ``spec`` are read, by exact option string (``-arc 3,3`` or
  ``--architecture=3,3``; no prefix matching, since the original parser knows many more
  flags); the rest of a full command line (data paths, training options) is skipped.
  Flags left out take the original's defaults.

  Raises:
    ValueError: a flag of ``spec`` with a missing or malformed value.
  """
  tokens = shlex.split(argv) if isinstance(argv, str) else [str(a) for a in argv]
  by_flag = {flag: arg for arg in spec for flag in arg.flags}
  values: dict[str, Any] = {}
  sources: dict[str, str] = {}
  i = 0
  while i < len(tokens):
    flag, eq, inline = tokens[i].partition("=")
    arg = by_flag.get(flag)
    i += 1
    if arg is None:
      continue
    if arg.type is None:
      if eq:
        raise ValueError(f"{program} flag {flag} takes no value, got {tokens[i - 1]!r}")
      values[arg.dest], sources[arg.dest] = True, f"{program} argument {flag}"
      continue
    if not eq:
      if i >= len(tokens):
        raise ValueError(f"{program} flag {flag} expects a value")
      inline, i = tokens[i], i + 1
    try:
      values[arg.dest] = arg.type(inline)
    except ValueError:
      raise ValueError(f"{program} flag {flag}: invalid value {inline!r}") from None
    sources[arg.dest] = f"{program} argument {flag} {inline}"
  for arg in spec:
    if arg.dest not in values:
      values[arg.dest] = arg.default
      sources[arg.dest] = f"{program} default of {arg.flags[0]} ({arg.default!r})"
  return values, sources


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested mappings -> ``{"a.b.c": value}`` (dotted keys in the input are kept as they are).

  Raises:
    ValueError: more than ``MAX_CONFIG_NODES`` nodes (e.g. a yaml alias bomb) or a
      non-string key.
  """
  out: dict[str, Any] = {}
  budget = [MAX_CONFIG_NODES]

  def spend(depth: int):
    budget[0] -= 1
    if budget[0] < 0 or depth > 32:
      raise ValueError("configuration too large or too deeply nested")

  def count(value: Any, depth: int):  # sequences, walked (aliases count each time)
    spend(depth)
    if isinstance(value, Mapping):
      for item in value.values():
        count(item, depth + 1)
    elif isinstance(value, (list, tuple)):
      for item in value:
        count(item, depth + 1)

  def walk(node: Mapping, at: str, depth: int):
    for key, value in node.items():
      spend(depth)
      if not isinstance(key, (str, int)) or isinstance(key, bool):
        raise ValueError(f"configuration key {key!r:.40} is not a string")
      name = f"{at}.{key}" if at else str(key)
      if isinstance(value, Mapping):
        walk(value, name, depth + 1)
      else:
        count(value, depth + 1)
        out[name] = value

  walk(mapping, prefix, 0)
  return out


def subtree(flat: Mapping[str, Any], prefix: str) -> dict[str, Any]:
  """``{"NUM_MODULES": 1, ...}`` from ``{"MODEL.EXTRA.STAGE2.NUM_MODULES": 1, ...}``."""
  start = prefix + "."
  return {k[len(start):]: v for k, v in flat.items() if k.startswith(start)}


def read_original_config(source: str | os.PathLike | Mapping[str, Any]
                         ) -> tuple[dict[str, Any], str]:
  """``(flat dotted-key mapping, name for messages)`` of an experiment yaml/JSON or mapping."""
  if isinstance(source, Mapping):
    return flatten(source), "the original configuration"
  import yaml  # PyYAML; safe_load builds only plain mappings, lists and scalars
  path = os.fspath(source)
  if not os.path.isfile(path):
    raise ValueError(f"{path}: no such configuration file")
  if os.path.getsize(path) > MAX_CONFIG_BYTES:
    raise ValueError(f"{path}: {os.path.getsize(path)} bytes is too large for an experiment "
                     "configuration")
  try:
    with open(path, encoding="utf-8") as f:
      data = yaml.safe_load(f)
  except (yaml.YAMLError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not a valid yaml file ({str(e).splitlines()[0]})") from None
  if not isinstance(data, Mapping):
    raise ValueError(f"{path}: expected a mapping of configuration keys, got "
                     f"{type(data).__name__}")
  try:
    return flatten(data), os.path.basename(path)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
  """``["depth_dim=72", "filter_widths=3,3,3"]`` -> ``{"depth_dim": 72, ...}``.

  Values are yaml scalars or flow sequences (``72``, ``true``, ``[3, 3, 3]``); anything
  else stays a string (``3,3,3`` is split by the field's type later).
  """
  import yaml
  out: dict[str, Any] = {}
  for item in items:
    key, sep, raw = str(item).partition("=")
    key = key.strip()
    if not sep or not key:
      raise ValueError(f"--model-config expects KEY=VALUE items, got {item!r}")
    if key in out:
      raise ValueError(f"--model-config gives {key!r} twice")
    try:
      value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
      value = raw
    out[key] = value if isinstance(value, (int, float, bool, str, list, type(None))) else raw
  return out


def checkpoint_args(obj: Any) -> tuple[dict[str, Any], str] | None:
  """``(flat mapping, entry name)`` of the run's arguments saved in a checkpoint, if any.

  Recognises a top-level ``args``/``opt``/``opts``/``config``/``cfg`` entry holding a
  dict or an ``argparse.Namespace``-like object (read from its pickled state, never run).
  """
  if not isinstance(obj, Mapping):
    return None
  for key in CHECKPOINT_ARGS_KEYS:
    value = obj.get(key)
    if isinstance(value, OpaqueObject) and isinstance(value.state, Mapping):
      value = value.state
    if isinstance(value, Mapping) and value and all(isinstance(k, str) for k in value):
      try:
        return flatten(value), key
      except ValueError:
        return None
  return None


# ----------------------------------------------------------------------------------------
# Field values
# ----------------------------------------------------------------------------------------


def config_fields(cls: type) -> dict[str, Any]:
  """``{field name: type hint}`` of a ``ModelConfig`` class."""
  hints = typing.get_type_hints(cls)
  return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _tuple_of_ints(hint: Any) -> bool:
  return typing.get_origin(hint) is tuple and all(
      a in (int, Ellipsis) for a in typing.get_args(hint))


def _as_int(value: Any) -> int:
  if isinstance(value, bool):
    raise TypeError
  if isinstance(value, str):
    return int(value.strip())
  if int(value) != float(value):
    raise TypeError
  return int(value)


def _as_bool(value: Any) -> bool:
  if isinstance(value, str) and value.strip().lower() in ("true", "false"):
    return value.strip().lower() == "true"
  if not isinstance(value, bool):
    raise TypeError
  return value


def coerce(cls: type, field: str, value: Any) -> Any:
  """``value`` as ``cls.field``'s type (``"3,3,3"`` -> ``(3, 3, 3)``, ``"none"`` -> None).

  Raises:
    ValueError: naming the field, for a value of the wrong kind.
  """
  hint = config_fields(cls)[field]
  allows_none = type(None) in typing.get_args(hint)
  target = next(a for a in typing.get_args(hint) if a is not type(None)) if allows_none else hint
  raw = value
  try:
    if allows_none and (value is None or (isinstance(value, str)
                                          and value.strip().lower() in ("none", "null", ""))):
      return None
    if _tuple_of_ints(target):
      if isinstance(value, str):
        value = [v for v in value.strip().strip("()[]").split(",") if v.strip()]
      if not isinstance(value, (list, tuple)):
        raise TypeError
      return tuple(_as_int(v) for v in value)
    if target is bool:
      return _as_bool(value)
    if target is int:
      return _as_int(value)
    if target is float:
      if isinstance(value, bool):
        raise TypeError
      return float(value)
    if target is str:
      return str(value)
    return base.from_plain(target, value)
  except (TypeError, ValueError):
    raise ValueError(f"{cls.name} field {field!r}: {raw!r:.60} is not a valid "
                     f"{getattr(target, '__name__', target)}") from None


# ----------------------------------------------------------------------------------------
# What was given, inferred and assumed
# ----------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
  if dataclasses.is_dataclass(value):
    return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
  if isinstance(value, (tuple, list)):
    return [_plain(v) for v in value]
  return value


@dataclasses.dataclass
class ConfigReport:
  """Where every field of a converted model's config came from.

  Attributes:
    given: field -> ``{"value", "from"}``: set by the user (``--model-config``, ``--cfg``,
      the original's arguments).
    inferred: field -> ``{"value", "from"}``: read from the tensors, from a documented rule,
      or from evidence inside the checkpoint file.
    assumed: field -> ``{"value", "why"}``: nobody said and the file cannot tell; the
      original's default was used. Each is a warning.
    notes: other remarks (e.g. a given value overriding another source).
  """
  given: dict[str, dict] = dataclasses.field(default_factory=dict)
  inferred: dict[str, dict] = dataclasses.field(default_factory=dict)
  assumed: dict[str, dict] = dataclasses.field(default_factory=dict)
  notes: list[str] = dataclasses.field(default_factory=list)

  def give(self, field: str, value: Any, source: str) -> None:
    self.given[field] = {"value": _plain(value), "from": source}

  def infer(self, field: str, value: Any, evidence: str) -> None:
    if field not in self.given:
      self.inferred[field] = {"value": _plain(value), "from": evidence}

  def assume(self, field: str, value: Any, why: str) -> None:
    if field not in self.given:
      self.inferred.pop(field, None)
      self.assumed[field] = {"value": _plain(value), "why": why}

  def warning_lines(self) -> list[str]:
    """One line per assumption: ``assumed causal=False: ...``."""
    return [f"assumed {field}={entry['value']!r}: {entry['why']}"
            for field, entry in self.assumed.items()]

  def warn(self) -> None:
    for line in self.warning_lines():
      warnings.warn(line, AssumptionWarning, stacklevel=4)

  def to_json(self) -> dict:
    return {"given": self.given, "inferred": self.inferred, "assumed": self.assumed,
            "notes": self.notes}
