"""Reading the temporal convolution stack of the lifters (VideoPose3D, RIE) off its tensors."""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from jaxpose.convert.core import CheckpointError, count_indices

Shapes = Mapping[str, tuple[int, ...]]

# argparse dest -> config field, shared by VideoPose3D's and RIE's run.py (the same names
# appear in a saved ``args`` namespace).
TEMPORAL_ARG_FIELDS = {"architecture": "filter_widths", "causal": "causal",
                       "dropout": "dropout", "channels": "channels", "dense": "dense"}
# Fields of both lifters that the weights cannot show -> why (the assumption warnings).
TEMPORAL_HIDDEN = {
    "causal": "causal and symmetric convolutions have the same weights (run.py --causal); a "
              "causal model converted as symmetric gives wrong poses",
    "dropout": "dropout has no weights (run.py -drop); it matters for fine-tuning only",
}


def _widths(text) -> tuple[int, ...]:
  """``-arc`` ``"3,3,3"`` (or a list) -> ``(3, 3, 3)``."""
  if isinstance(text, str):
    return tuple(int(w) for w in text.split(",") if w.strip())
  return tuple(int(w) for w in text)


def stack_kernels(shapes: Shapes, prefix: str = "", source: str = "checkpoint"
                  ) -> tuple[int, ...]:
  """Kernel sizes of ``expand_conv`` and of each block's wide ``layers_conv.{2i}``."""
  expand = shapes[f"{prefix}expand_conv.weight"]
  count = count_indices(shapes, rf"{re.escape(prefix)}layers_conv\.(\d+)\.weight$")
  if count % 2:
    raise CheckpointError(f"{source}: {prefix}layers_conv has {count} convolutions; "
                          "expected pairs (wide + 1x1) per block")
  kernels = [expand[2]]
  for i in range(0, count, 2):
    wide = shapes[f"{prefix}layers_conv.{i}.weight"]
    point = shapes[f"{prefix}layers_conv.{i + 1}.weight"]
    if len(wide) != 3 or len(point) != 3 or point[2] != 1:
      raise CheckpointError(
          f"{source}: {prefix}layers_conv.{i}/{i + 1} have shapes {wide}/{point}; expected "
          "[C, C, k] and [C, C, 1] Conv1d weights")
    kernels.append(wide[2])
  return tuple(kernels)


def dense_reading(kernels: Sequence[int]) -> tuple[int, ...] | None:
  """The widths of a dense stack with these kernels, or None if they fit none.

  A dense block ``i`` has a kernel of ``(w_i - 1) * d_i + 1`` with ``d_i = w_0 * ... *
  w_{i-1}``; the original supports odd widths only.
  """
  widths = [kernels[0]]
  for k in kernels[1:]:
    d = math.prod(widths)
    if (k - 1) % d or ((k - 1) // d) % 2:
      return None
    widths.append((k - 1) // d + 1)
  return tuple(widths)


def temporal_widths(shapes: Shapes, prefix: str = "", source: str = "checkpoint", *,
                    dense: bool | None = None, filter_widths: Sequence[int] | None = None
                    ) -> tuple[tuple[int, ...], bool]:
  """``(filter_widths, dense)`` of a temporal stack whose keys start with ``prefix``.

  The kernels read as a dilated stack with widths = kernel sizes, or, when they follow the
  dense progression (``dense_reading``) with some kernel wider than its width, also as a
  dense stack: e.g. kernels 3, 7, 19 are dense widths 3, 3, 3 or dilated widths 3, 7, 19.
  ``dense`` / ``filter_widths`` (``--dense`` / ``-arc`` of the original) pick the reading;
  without them an ambiguous stack fails, listing both.

  Raises:
    CheckpointError: even widths, given values that fit no reading, or an ambiguity.
  """
  kernels = stack_kernels(shapes, prefix, source)
  dense_widths = dense_reading(kernels)
  distinct = dense_widths is not None and dense_widths != kernels
  del source  # the caller names the file
  where = f"{prefix}expand_conv/layers_conv kernel sizes {','.join(map(str, kernels))}"
  if filter_widths is not None:
    widths = _widths(filter_widths)
    if widths == kernels and dense is not True:
      result = (kernels, False)
    elif distinct and widths == dense_widths and dense is not False:
      result = (dense_widths, True)
    else:
      readings = f"dilated {','.join(map(str, kernels))}" + (
          f" or dense {','.join(map(str, dense_widths))}" if distinct else "")
      raise CheckpointError(f"{where} do not fit the given filter widths "
                            f"{','.join(map(str, widths))}{' (dense)' if dense else ''}; "
                            f"they read as {readings}")
  elif dense is True:
    if not distinct:
      raise CheckpointError(f"{where} are not those of a dense stack (--dense was given)")
    result = (dense_widths, True)
  elif dense is False or not distinct:
    result = (kernels, False)
  else:
    raise CheckpointError(
        f"{where} fit two architectures: dense filter widths "
        f"{','.join(map(str, dense_widths))} (-arc {','.join(map(str, dense_widths))} --dense) "
        f"or dilated widths {','.join(map(str, kernels))} (-arc "
        f"{','.join(map(str, kernels))}); pass the original's arguments (e.g. -- -arc ... "
        "--dense) or --model-config dense=true|false")
  if any(w % 2 == 0 for w in result[0]):
    raise CheckpointError(f"{where} give filter widths {result[0]} with even widths; the "
                          "original supports odd filter widths only")
  return result


def temporal_from_args(args: Mapping[str, Any], fields: Mapping[str, str]
                       ) -> dict[str, tuple[Any, str]]:
  """argparse values (``architecture="3,3,3"``, ...) -> ``{field: (value, dest)}``."""
  out = {}
  for dest, field in fields.items():
    if dest in args:
      value = args[dest]
      if dest == "architecture":
        value = [int(w) for w in str(value).split(",")] if isinstance(value, str) else value
      out[field] = (value, dest)
  return out
