"""Mapping PyTorch state dicts onto jaxpose models.

A PyTorch key ``a.b.3.conv1.weight`` names a module path (``a.b.3.conv1``) and a leaf
(``weight``). A model family supplies only *renames* of module paths (regex table); the
jaxpose module found at the renamed path converts its own leaves (``torch_to_jax``: conv
kernels OIHW -> HWIO, transposed-conv and linear layouts, BatchNorm running statistics).
Every tensor must be consumed and every variable filled; otherwise the conversion fails
once, listing every missing, unexpected and mis-shaped name, unless partial loading was
asked for explicitly (ImageNet-pretrained backbones into a pose model).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpose.convert import configuration
from jaxpose.convert.configuration import ConfigReport, OriginalArg
from jaxpose.convert.torch_pickle import CheckpointError

StateDict = dict[str, np.ndarray]
Path = tuple[Any, ...]

# Keys under which the original projects stored their state dicts, in order of preference.
WRAPPER_KEYS = ("state_dict", "model", "model_pos", "network", "net", "model_state_dict",
                "state_dict_model", "params")
SKIPPED_LEAVES = ("num_batches_tracked",)


@dataclasses.dataclass(frozen=True)
class Rename:
  """Maps PyTorch module paths matching ``pattern`` (full match) to a jaxpose module path.

  ``target`` is a ``re`` replacement template (``r"backbone/\\1"``) or a function of the
  match returning the path. Paths use ``.`` in PyTorch and ``/`` in jaxpose: any ``.`` left
  in the result becomes ``/``. A path matched by no rename maps to itself.
  """
  pattern: str
  target: str | Callable[[re.Match], str]

  def apply(self, torch_path: str) -> str | None:
    match = re.fullmatch(self.pattern, torch_path)
    if match is None:
      return None
    target = self.target(match) if callable(self.target) else match.expand(self.target)
    return target.replace(".", "/")


def rename_module_path(torch_path: str, renames: Sequence[Rename]) -> str:
  for rename in renames:
    target = rename.apply(torch_path)
    if target is not None:
      return target
  return torch_path.replace(".", "/")


def _is_state_dict(obj: Any) -> bool:
  return (isinstance(obj, Mapping) and len(obj) > 0
          and all(isinstance(k, str) for k in obj)
          and sum(isinstance(v, np.ndarray) for v in obj.values()) >= max(1, len(obj) // 2))


@dataclasses.dataclass
class Unwrapped:
  """A state dict taken out of a checkpoint, and how it was found."""
  state_dict: StateDict
  wrapper_key: str | None
  prefix: str
  extra: dict[str, Any]
  args: dict[str, Any] | None = None  # the run's saved arguments (flat), if the file has them
  args_key: str | None = None  # the top-level entry holding them


def unwrap_state_dict(obj: Any, *, key: str | None = None, source: str = "checkpoint") -> Unwrapped:
  """Finds the model state dict inside a loaded checkpoint.

  Handles plain state dicts and the wrappers of the original projects (``state_dict``,
  ``model``, ``model_pos``, ``network``, ...) and strips a common ``module.`` prefix
  (DataParallel). Non-tensor entries of the state dict are dropped.

  Args:
    obj: the object returned by ``torch_pickle.load``.
    key: take the state dict under this top-level key (e.g. ``model_traj``).
    source: file name for error messages.
  """
  wrapper = None
  extra: dict[str, Any] = {}
  if key is not None:
    if not isinstance(obj, Mapping) or key not in obj:
      keys = sorted(map(str, obj)) if isinstance(obj, Mapping) else []
      raise CheckpointError(f"{source}: no entry {key!r} in the checkpoint (top-level keys: {keys})")
    sd, wrapper = obj[key], key
    if not _is_state_dict(sd):
      raise CheckpointError(f"{source}: entry {key!r} is not a state dict of tensors")
  elif _is_state_dict(obj):
    sd = obj
  elif isinstance(obj, Mapping):
    candidates = [k for k in WRAPPER_KEYS if k in obj and _is_state_dict(obj[k])]
    candidates += [k for k in obj if k not in candidates and _is_state_dict(obj[k])]
    if not candidates:
      raise CheckpointError(
          f"{source}: no state dict of tensors found (top-level keys: {sorted(map(str, obj))})")
    wrapper = candidates[0]
    sd = obj[wrapper]
  else:
    raise CheckpointError(f"{source}: holds a {type(obj).__name__}, not a state dict")
  if isinstance(obj, Mapping) and wrapper is not None:
    extra = {k: v for k, v in obj.items()
             if k != wrapper and isinstance(v, (int, float, str, bool))}
  tensors = {k: v for k, v in sd.items() if isinstance(v, np.ndarray)}
  prefix = ""
  while tensors and all(k.startswith("module.") for k in tensors):
    tensors = {k[len("module."):]: v for k, v in tensors.items()}
    prefix += "module."
  saved = configuration.checkpoint_args(obj) if wrapper is not None else None
  args, args_key = saved if saved else (None, None)
  return Unwrapped(tensors, wrapper, prefix, extra, args, args_key)


def layer_modules(model: nnx.Module) -> dict[str, nnx.Module]:
  """``{'a/b/0/conv': module}`` for every sub-module that knows its PyTorch tensors."""
  found = {}
  for path, node in nnx.iter_graph(model):
    if isinstance(node, nnx.Module) and hasattr(type(node), "torch_to_jax"):
      found["/".join(str(p) for p in path)] = node
  return found


def variable_paths(model: nnx.Module) -> dict[str, tuple[int, ...]]:
  """``{'a/b/0/conv/kernel': shape}`` for every Param and BatchStat of ``model``."""
  state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
  out = {}
  for path, var in nnx.to_flat_state(state):
    out["/".join(str(p) for p in path)] = tuple(var.shape)
  return out


@dataclasses.dataclass
class MappingReport:
  """What a conversion consumed, skipped and could not place."""
  assigned: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # jax path -> array
  sources: dict[str, str] = dataclasses.field(default_factory=dict)  # jax path -> torch key
  unexpected: list[str] = dataclasses.field(default_factory=list)  # torch keys with no target
  mismatched: list[str] = dataclasses.field(default_factory=list)  # "key: got X, expected Y"
  missing: list[str] = dataclasses.field(default_factory=list)  # jax paths not filled
  skipped: list[str] = dataclasses.field(default_factory=list)  # num_batches_tracked, filtered
  torch_names: dict[str, str] = dataclasses.field(default_factory=dict)  # jax path -> torch key
  config_report: ConfigReport | None = None  # where the model config came from

  @property
  def ok(self) -> bool:
    return not (self.unexpected or self.mismatched or self.missing)

  def missing_names(self) -> list[str]:
    """``missing`` with the original's key: ``final_layer/kernel (final_layer.weight)``."""
    return [f"{p} ({self.torch_names[p]})" if p in self.torch_names else p
            for p in self.missing]

  def problems(self, limit: int | None = None) -> str:
    lines = []
    for title, items in (("missing (model variables not in the checkpoint)",
                          self.missing_names()),
                         ("unexpected (checkpoint tensors with no place in the model)",
                          self.unexpected),
                         ("mis-shaped", self.mismatched)):
      if items:
        lines.append(f"  {len(items)} {title}:\n    " + "\n    ".join(shorten(items, limit)))
    return "\n".join(lines)

  def partial_summary(self, limit: int = 10) -> list[str]:
    """Lines for a partial load: what kept its initial value, what was ignored or skipped."""
    return partial_lines(len(self.assigned), self.missing_names(), self.unexpected,
                         self.skipped, limit)


def partial_lines(loaded: int, missing: Sequence[str], unexpected: Sequence[str],
                  skipped: Sequence[str], limit: int | None = 10) -> list[str]:
  """Counts and (the first ``limit``) names of a partial load's categories."""
  lines = [f"{loaded} variables loaded from the checkpoint"]
  filtered = [k for k in skipped if k.rpartition(".")[2] not in SKIPPED_LEAVES]
  for title, items in (("variables keep their initial value", missing),
                       ("checkpoint tensors ignored (no place in the model)", unexpected),
                       ("checkpoint tensors skipped by the layer filter", filtered)):
    if items:
      lines.append(f"{len(items)} {title}: " + ", ".join(shorten(items, limit)))
  return lines


def shorten(items: Sequence[str], limit: int | None) -> list[str]:
  """The first ``limit`` items and ``... and N more``."""
  if limit is None or len(items) <= limit:
    return list(items)
  return list(items[:limit]) + [f"... and {len(items) - limit} more"]


def map_state_dict(model: nnx.Module, state_dict: Mapping[str, np.ndarray],
                   renames: Sequence[Rename] = (),
                   select: Callable[[str], bool] | None = None) -> MappingReport:
  """Places each PyTorch tensor at its jaxpose variable path and checks shapes.

  Args:
    model: the target model (abstract from ``nnx.eval_shape`` or concrete).
    state_dict: PyTorch key -> numpy array (prefix/wrapper already removed).
    renames: the family's module-path renames.
    select: optional predicate on PyTorch keys; keys it rejects are skipped (PyTorch
      ``PRETRAINED_LAYERS``-style partial initialisation).

  Returns:
    A report whose ``assigned`` maps jax variable paths to arrays in jax layout; the
    caller decides whether missing/unexpected entries are fatal.
  """
  modules = layer_modules(model)
  shapes = variable_paths(model)
  report = MappingReport()
  for key, array in state_dict.items():
    module_path, _, leaf = key.rpartition(".")
    if leaf in SKIPPED_LEAVES or (select is not None and not select(key)):
      report.skipped.append(key)
      continue
    target_module = rename_module_path(module_path, renames)
    module = modules.get(target_module)
    if module is None:
      report.unexpected.append(key)
      continue
    try:
      jax_leaf, value = type(module).torch_to_jax(leaf, np.asarray(array))
    except KeyError:
      report.unexpected.append(key)
      continue
    path = f"{target_module}/{jax_leaf}"
    if path not in shapes:
      report.unexpected.append(key)
      continue
    if tuple(value.shape) != shapes[path]:
      report.mismatched.append(
          f"{key} {tuple(np.shape(array))} -> {path}: got {tuple(value.shape)}, "
          f"model expects {shapes[path]}")
      continue
    if path in report.assigned:
      report.unexpected.append(f"{key} (duplicate source for {path}, also {report.sources[path]})")
      continue
    report.assigned[path] = value
    report.sources[path] = key
  report.missing = [p for p in shapes if p not in report.assigned]
  return report


def apply_assignments(model: nnx.Module, assigned: Mapping[str, np.ndarray]) -> None:
  """Writes ``assigned`` (jax path -> array) into the model's variables, casting dtypes."""
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))):
    name = "/".join(str(p) for p in path)
    if name in assigned:
      value = np.asarray(assigned[name])
      if not np.issubdtype(value.dtype, np.floating) and value.dtype.kind not in "V":
        raise CheckpointError(f"{name}: non-float tensor of dtype {value.dtype}")
      var.set_value(jnp.array(value, dtype=var.dtype))  # a copy: callers keep their arrays


def shape_table(state_dict: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
  return {k: tuple(np.shape(v)) for k, v in state_dict.items()}


def count_indices(keys: Iterable[str], pattern: str) -> int:
  """Number of distinct integer groups matched by ``pattern`` (one group) in ``keys``.

  ``count_indices(keys, r"layer1\\.(\\d+)\\.")`` is the number of blocks in layer1.
  """
  found = set()
  for key in keys:
    m = re.match(pattern, key)
    if m:
      found.add(int(m.group(1)))
  if found and found != set(range(len(found))):
    raise CheckpointError(f"non-contiguous indices {sorted(found)} for pattern {pattern!r}")
  return len(found)


@dataclasses.dataclass(frozen=True)
class Family:
  """How to recognise and map one model family's PyTorch checkpoints.

  Attributes:
    name: the model name in ``jaxpose.models.MODELS``.
    infer_config: shapes of a state dict (``{key: shape}``) -> the family's ``ModelConfig``
      with every architecture hyper-parameter read off the tensors, or ``None`` if the keys
      are not this family's. Raises ``CheckpointError`` for a state dict that is this
      family's but inconsistent.
    renames: config -> module-path renames (``Rename``) from PyTorch to jaxpose names.
    export_renames: config -> the inverse renames (jaxpose ``/`` paths to PyTorch paths),
      used by ``export_state_dict`` to write weights the original code loads.
    description: one line naming the original implementation.
    key_pattern: regex matched at the start of a PyTorch key: the family's top-level
      modules. Family detection picks the family whose pattern fits most keys, so a file
      with a few missing or extra tensors still gets its family's exact differences.
    required: the keys ``infer_config`` needs (named when a file lacks them).
    hidden: config fields the tensors cannot show -> why (the warning when one is assumed).
    from_original: the original's configuration (flat ``{dotted key or argparse dest:
      value}``) -> ``{field: (value, key it came from)}``; None if the family has nothing
      to translate. May give ``name`` to check the family.
    original_keys: the original keys ``from_original`` reads (accepted by
      ``--model-config``).
    original_args: the original's command-line flags that shape the model.
    program: the original's entry point, for messages (``VideoPose3D run.py``).
    file_evidence: checkpoint file name -> ``{field: (value, evidence)}``.

  ``infer_config(shapes, hints=None, report=None)``: ``hints`` maps fields to values the
  user (or the checkpoint's own evidence) gave; the family uses those the tensors cannot
  settle and records its inferences and assumptions in ``report`` (a ``ConfigReport``).
  """
  name: str
  infer_config: Callable[..., Any]
  renames: Callable[[Any], Sequence[Rename]]
  export_renames: Callable[[Any], Sequence[Rename]]
  description: str = ""
  key_pattern: str = ""
  required: tuple[str, ...] = ()
  hidden: Mapping[str, str] = dataclasses.field(default_factory=dict)
  from_original: Callable[[Mapping[str, Any]], dict[str, tuple[Any, str]]] | None = None
  original_keys: tuple[str, ...] = ()
  original_args: tuple[OriginalArg, ...] = ()
  program: str = ""
  file_evidence: Callable[[str], dict[str, tuple[Any, str]]] | None = None

  def fitting_keys(self, keys: Iterable[str]) -> list[str]:
    """The keys whose top-level module is one of this family's."""
    if not self.key_pattern:
      return []
    pattern = re.compile(self.key_pattern)
    return [k for k in keys if pattern.match(k)]


def torch_names(model: nnx.Module, export_renames: Sequence[Rename]) -> dict[str, str]:
  """``{jax variable path: PyTorch key}`` of a model (zero-sized probes, no weights needed)."""
  shapes = variable_paths(model)
  out = {}
  for module_path, module in layer_modules(model).items():
    torch_path = _export_path(module_path, export_renames)
    prefix = f"{module_path}/"
    for path, shape in shapes.items():
      if path.startswith(prefix) and "/" not in path[len(prefix):]:
        probe = np.zeros((0,) * len(shape), np.float32)
        try:
          leaf, _ = type(module).jax_to_torch(path[len(prefix):], probe)
        except (KeyError, ValueError):
          continue
        out[path] = f"{torch_path}.{leaf}"
  return out


def _export_path(module_path: str, export_renames: Sequence[Rename]) -> str:
  for rename in export_renames:
    match = re.fullmatch(rename.pattern, module_path)
    if match is not None:
      target = rename.target(match) if callable(rename.target) else match.expand(rename.target)
      return target.replace("/", ".")
  return module_path.replace("/", ".")


def export_state_dict(model: nnx.Module, export_renames: Sequence[Rename]) -> dict[str, np.ndarray]:
  """The PyTorch state dict (original key names and layouts) of a jaxpose model.

  BatchNorm layers also get the ``num_batches_tracked`` buffer (int64 zero) that PyTorch's
  strict ``load_state_dict`` expects.
  """
  out: dict[str, np.ndarray] = {}
  values = {"/".join(str(p) for p in path): var.get_value()
            for path, var in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))}
  for module_path, module in layer_modules(model).items():
    torch_path = _export_path(module_path, export_renames)
    prefix = f"{module_path}/"
    for name, value in values.items():
      if name.startswith(prefix) and "/" not in name[len(prefix):]:
        leaf, array = type(module).jax_to_torch(name[len(prefix):], np.asarray(value))
        out[f"{torch_path}.{leaf}"] = array
    if hasattr(module, "mean") and hasattr(module, "var"):
      out[f"{torch_path}.num_batches_tracked"] = np.zeros((), np.int64)
  return out
