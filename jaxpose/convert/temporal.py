"""Reading the temporal convolution stack of the lifters (VideoPose3D, RIE) off its tensors."""
from __future__ import annotations

import math
import re
from collections.abc import Mapping

from jaxpose.convert.core import CheckpointError, count_indices

Shapes = Mapping[str, tuple[int, ...]]


def temporal_widths(shapes: Shapes, prefix: str = "", source: str = "checkpoint"
                    ) -> tuple[tuple[int, ...], bool]:
  """``(filter_widths, dense)`` of a temporal stack whose keys start with ``prefix``.

  The width of block ``i`` is the kernel size ``k_i`` of ``layers_conv.{2i-2}``; a dense
  stack instead has ``k_i = (w_i - 1) * d_i + 1`` with ``d_i = w_0 * ... * w_{i-1}``. The
  stack is read as dense when every kernel fits that progression with odd widths and at
  least one kernel is wider than its width; otherwise as dilated. (A dilated model whose
  widths happen to follow the progression, e.g. 3,7,19, needs an explicit config.)
  """
  expand = shapes[f"{prefix}expand_conv.weight"]
  count = count_indices(shapes, rf"{re.escape(prefix)}layers_conv\.(\d+)\.weight$")
  if count % 2:
    raise CheckpointError(f"{source}: {prefix}layers_conv has {count} convolutions; "
                          "expected pairs (wide + 1x1) per block")
  kernels = []
  for i in range(0, count, 2):
    wide = shapes[f"{prefix}layers_conv.{i}.weight"]
    point = shapes[f"{prefix}layers_conv.{i + 1}.weight"]
    if len(wide) != 3 or len(point) != 3 or point[2] != 1:
      raise CheckpointError(
          f"{source}: {prefix}layers_conv.{i}/{i + 1} have shapes {wide}/{point}; expected "
          "[C, C, k] and [C, C, 1] Conv1d weights")
    kernels.append(wide[2])
  first = expand[2]
  dense_widths = [first]
  for k in kernels:
    d = math.prod(dense_widths)
    if (k - 1) % d or ((k - 1) // d) % 2:
      break  # not a dense kernel of an odd width
    dense_widths.append((k - 1) // d + 1)
  dense = (len(dense_widths) == len(kernels) + 1
           and any(k != w for k, w in zip(kernels, dense_widths[1:])))
  widths = tuple(dense_widths) if dense else (first, *kernels)
  if any(w % 2 == 0 for w in widths):
    raise CheckpointError(f"{source}: {prefix} temporal kernel sizes {widths} include even "
                          "widths; the original supports odd filter widths only")
  return widths, dense
