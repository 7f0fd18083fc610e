"""Which family a state dict is, and its complete model config (see ``configuration``).

``detect_family`` picks the family whose module names fit most tensor keys, so a file
with a few missing or extra tensors still reaches its family's exact report of what is
missing or unexpected. ``resolve_model_config`` merges what the user gave (``--model-config``,
``--cfg``, the original's arguments) and what the checkpoint says about itself (saved
arguments, file name) with what the tensors show, and records where every field came from.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from jaxpose import models
from jaxpose.convert import configuration
from jaxpose.convert.configuration import ConfigReport, Given
from jaxpose.convert.core import CheckpointError, Family

# A family is detected when its module names fit at least this share of the keys.
MIN_FIT = 0.5


def detect_family(shapes: Mapping[str, tuple[int, ...]], families: Mapping[str, Family], *,
                  source: str = "checkpoint") -> tuple[Family, int]:
  """``(family, number of keys its module names fit)``.

  Raises:
    CheckpointError: no family fits at least half of the keys, or two fit equally well and
      neither's required tensors are all present (listing them and ``--family``).
  """
  keys = list(shapes)
  fits = {name: len(fam.fitting_keys(keys)) for name, fam in families.items()}
  best = max(fits.values(), default=0)
  if not keys or best < MIN_FIT * len(keys):
    first = ", ".join(keys[:4])
    raise CheckpointError(
        f"{source}: {len(keys)} tensors (first: {first}) match no jaxpose model family "
        f"({', '.join(sorted(families))})")
  leaders = [name for name, fit in fits.items() if fit == best]
  if len(leaders) > 1:
    complete = [n for n in leaders if all(k in shapes for k in families[n].required)]
    if len(complete) != 1:
      raise CheckpointError(
          f"{source}: its {len(keys)} tensor names fit the families {', '.join(leaders)} "
          f"equally ({best} names each) and none of them completely; pass --family "
          "(family=...) with the configuration (--model-config / --cfg)")
    leaders = complete
  return families[leaders[0]], best


def _describe_fit(fam: Family, shapes: Mapping[str, tuple[int, ...]], fit: int) -> str:
  if fit == len(shapes):
    return f"a {fam.name} checkpoint"
  fitting = set(fam.fitting_keys(shapes))
  extra = [k for k in shapes if k not in fitting]
  text = f"looks like a {fam.name} checkpoint ({fit} of {len(shapes)} tensor names fit)"
  if extra:
    shown = ", ".join(extra[:8]) + (f" and {len(extra) - 8} more" if len(extra) > 8 else "")
    text += f"; names outside {fam.name}'s modules: {shown}"
  return text


def _accepts(fam: Family, key: str) -> bool:
  return any(key == k or (k.endswith(".") and key.startswith(k)) for k in fam.original_keys)


def _translate(fam: Family, values: Mapping[str, Any], describe) -> Given:
  """``fam.from_original(values)`` with each field's source described by ``describe(key)``."""
  if fam.from_original is None or not values:
    return {}
  try:
    translated = fam.from_original(values)
  except (ValueError, TypeError, KeyError) as e:
    raise ValueError(f"{fam.name} configuration: {e}") from None
  return {field: (value, describe(key)) for field, (value, key) in translated.items()}


def _coerced(fam: Family, cls: type, given: Given) -> Given:
  out = {}
  for field, (value, source) in given.items():
    if field == "name":
      if value != fam.name:
        raise ValueError(f"{source} describes a {value!r} model; the checkpoint is a "
                         f"{fam.name} checkpoint")
      continue
    out[field] = (configuration.coerce(cls, field, value), source)
  return out


def user_config(fam: Family, *, original_config=None, original_args=None, overrides=None
                ) -> tuple[Given, list[str]]:
  """``({field: (value, source)}, notes)`` of what the user gave, in precedence order.

  Raises:
    ValueError: an unreadable file, an unknown key, a value of the wrong type, or a source
      the family's original does not have (naming the valid ones).
  """
  cls = models.model_class(fam.name).Config
  layers: list[Given] = []
  if original_args is not None:
    if not fam.original_args:
      raise ValueError(f"{fam.name}'s original ({fam.program}) reads its configuration from "
                       "an experiment file: pass it with --cfg (original_config=), not as "
                       "command-line arguments")
    values, sources = configuration.parse_original_args(original_args, fam.original_args,
                                                        fam.program)
    layers.append(_translate(fam, values, lambda key: sources.get(key, key)))
  if original_config is not None:
    flat, name = configuration.read_original_config(original_config)
    layers.append(_translate(fam, flat, lambda key: f"{name}: {key}"))
  if overrides:
    layers.append(_overrides(fam, cls, overrides))
  merged: Given = {}
  notes = []
  for layer in layers:
    for field, (value, source) in _coerced(fam, cls, layer).items():
      if field in merged and merged[field][0] != value:
        notes.append(f"{field}={value!r} ({source}) overrides {merged[field][0]!r} "
                     f"({merged[field][1]})")
      merged[field] = (value, source)
  return merged, notes


def _overrides(fam: Family, cls: type, overrides) -> Given:
  items = (configuration.parse_assignments(overrides)
           if not isinstance(overrides, Mapping) else dict(overrides))
  fields = configuration.config_fields(cls)
  direct: Given = {}
  original: dict[str, Any] = {}
  for key, value in items.items():
    if key == "name" or key in fields:
      direct[key] = (value, f"--model-config {key}")
    elif _accepts(fam, key):
      original[key] = value
    else:
      valid = sorted(fields) + [k + "*" if k.endswith(".") else k for k in fam.original_keys]
      raise ValueError(f"--model-config key {key!r} is neither a field of {fam.name}'s config "
                       f"nor a key of its original configuration; valid keys: {valid}")
  return {**_translate(fam, original, lambda key: f"--model-config {key}"),
          **direct}


def checkpoint_evidence(fam: Family, *, saved_args: tuple[Mapping, str] | None,
                        file_name: str | None) -> tuple[Given, list[str]]:
  """What the checkpoint file says about itself: saved arguments and its name."""
  cls = models.model_class(fam.name).Config
  found: Given = {}
  notes = []
  if saved_args:
    values, entry = saved_args
    try:
      found.update(_coerced(fam, cls, _translate(
          fam, values, lambda key: f"the checkpoint's saved {entry}.{key}")))
    except ValueError as e:
      notes.append(f"saved '{entry}' in the checkpoint ignored: {e}")
  if file_name and fam.file_evidence is not None:
    for field, (value, source) in fam.file_evidence(file_name).items():
      found.setdefault(field, (value, source))
  return found, notes


def _contradictions(config, sources: Given, fam: Family) -> tuple[dict, list[str]]:
  """``(fields to replace, contradictions)`` of the given values against ``config``."""
  replace, problems = {}, []
  for field, (value, source) in sources.items():
    current = getattr(config, field)
    if current == value:
      continue
    if field in fam.hidden or field == "dtype":
      replace[field] = value
    else:
      problems.append(f"{field}={value!r} ({source}) but the tensors give {current!r}")
  return replace, problems


def _from_given_only(fam: Family, given: Mapping[str, Any], reason: str,
                     report: ConfigReport):
  """The config built from the given values and the class defaults (partial loading)."""
  cls = models.model_class(fam.name).Config
  try:
    config = cls(**given)
  except (TypeError, ValueError) as e:
    raise CheckpointError(f"{fam.name} configuration: {e}") from None
  reason = reason if len(reason) <= 120 else reason[:117] + "..."
  for field in configuration.config_fields(cls):
    if field not in given and field != "dtype":
      report.assume(field, getattr(config, field),
                    f"the checkpoint does not describe a whole {fam.name} model ({reason}) "
                    "and the configuration does not give it; the config default is used")
  return config


def resolve_model_config(state_dict: Mapping[str, Any], families: Mapping[str, Family], *,
                         family: str | None = None, original_config=None, original_args=None,
                         overrides=None, saved_args: tuple[Mapping, str] | None = None,
                         file_name: str | None = None, source: str = "checkpoint",
                         allow_partial: bool = False) -> tuple[Any, ConfigReport]:
  """The family ``ModelConfig`` of ``state_dict`` and where each field came from.

  Args:
    state_dict: PyTorch key -> array (unwrapped).
    families: the known families (``jaxpose.convert.FAMILIES``).
    family: the family name, if known (else detected from the tensor names).
    original_config: the original experiment yaml (path) or an equivalent mapping.
    original_args: the original's command line (string or list of arguments).
    overrides: ``--model-config`` items (``["depth_dim=72"]``) or a mapping.
    saved_args: ``(flat mapping, entry)`` of arguments saved in the checkpoint.
    file_name: the checkpoint's file name (RIE names its files after the stage).
    source: name for messages.
    allow_partial: a file that does not describe a whole model (an ImageNet backbone) is
      converted into the model the given configuration describes (class defaults for the
      rest, each reported as assumed).

  Raises:
    CheckpointError: no family fits, the configuration contradicts the tensors, a
      property is ambiguous, or required tensors are missing (each named).
    ValueError: an unreadable or invalid configuration (naming the key).
  """
  shapes = {k: tuple(getattr(v, "shape", v)) for k, v in state_dict.items()}
  overrides = _overrides_mapping(overrides)
  name = overrides.pop("name", None)
  if family is not None and name is not None and name != family:
    raise ValueError(f"--family {family} and --model-config name={name} disagree")
  family = family or name
  if family is not None:
    if family not in families:
      raise ValueError(f"unknown model family {family!r}; valid names: {sorted(families)}")
    fam, fit = families[family], len(families[family].fitting_keys(shapes))
  else:
    fam, fit = detect_family(shapes, families, source=source)
  report = ConfigReport()
  given, notes = user_config(fam, original_config=original_config,
                             original_args=original_args, overrides=overrides)
  evidence, evidence_notes = checkpoint_evidence(fam, saved_args=saved_args,
                                                 file_name=file_name)
  report.notes.extend(notes + evidence_notes)
  for field, (value, where) in given.items():
    report.give(field, value, where)
  for field, (value, where) in evidence.items():
    if field not in given:
      report.infer(field, value, where)
  hints = {**{f: v for f, (v, _) in evidence.items()}, **{f: v for f, (v, _) in given.items()}}
  try:
    config = fam.infer_config(shapes, hints, report)
    failure = None if config is not None else (
        "it lacks " + ", ".join(k for k in fam.required if k not in shapes))
  except CheckpointError as e:
    config, failure = None, str(e)
  if config is None:
    if not allow_partial:
      raise CheckpointError(f"{source}: {_describe_fit(fam, shapes, fit)}; {failure}")
    config = _from_given_only(fam, hints, failure, report)
  else:
    replace, problems = _contradictions(
        config, {**evidence, **given}, fam)
    if problems:
      raise CheckpointError(f"{source}: the configuration contradicts the tensors of this "
                            f"{fam.name} checkpoint: " + "; ".join(problems))
    config = config.replace(**replace)
  _record_the_rest(config, fam, report)
  return config, report


def _overrides_mapping(overrides) -> dict[str, Any]:
  if overrides is None:
    return {}
  if isinstance(overrides, Mapping):
    return dict(overrides)
  if isinstance(overrides, (str, os.PathLike)):
    overrides = [overrides]
  return configuration.parse_assignments(list(overrides))


def _record_the_rest(config, fam: Family, report: ConfigReport) -> None:
  for field in dataclasses.fields(config):
    name = field.name
    if name in report.given or name in report.inferred or name in report.assumed:
      continue
    if name in fam.hidden:
      report.assume(name, getattr(config, name), fam.hidden[name])
    elif name != "dtype":
      report.infer(name, getattr(config, name), "read from the tensors")


def given_everything(config) -> ConfigReport:
  """The report of a complete config passed by the caller."""
  report = ConfigReport()
  for field in dataclasses.fields(config):
    report.give(field.name, getattr(config, field.name), "the config passed")
  return report
