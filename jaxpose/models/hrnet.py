"""HRNet for pose estimation (``pose_hrnet``).

Sun et al., "Deep High-Resolution Representation Learning for Human Pose Estimation"
(CVPR'19); leoxiaobin/deep-high-resolution-net.pytorch ``lib/models/pose_hrnet.py``
(``PoseHighResolutionNet``) and its ``experiments/{coco,mpii}/hrnet/*.yaml`` configs.

Architecture (channels-last, every convolution without bias except ``final_layer``):

* stem: two 3x3/2 convolutions with 64 channels, each followed by BatchNorm and ReLU
  (stride 4 in total), then ``layer1``: four Bottlenecks with 64 planes (256 channels out).
* stages 2, 3, 4 (``MODEL.EXTRA.STAGE2..4``): before stage ``s`` a transition turns the
  previous stage's outputs into this stage's branches: an existing branch whose width changes
  gets a 3x3/1 conv + BN + ReLU (the original applies it to the *lowest-resolution* previous
  output, which is that branch's own output only for the last branch; other cases fail with a
  shape error in the original and here); a new branch ``i`` gets a chain of 3x3/2 conv + BN +
  ReLU starting from the lowest-resolution previous output (``i + 1 - n_previous`` convs, all
  but the last keeping the input width). Branch ``i`` runs at stride ``4 * 2^i``.
* a stage is ``NUM_MODULES`` high-resolution modules. Each runs ``NUM_BLOCKS[i]`` Basic or
  Bottleneck blocks on branch ``i``, then fuses: output ``i`` is ``ReLU(sum_j f_ij(x_j))`` with
  ``f_ii`` the identity, ``f_ij`` for a lower-resolution ``j > i`` a 1x1 conv + BN at the low
  resolution followed by nearest upsampling by ``2^(j-i)``, and for a higher-resolution
  ``j < i`` a chain of ``i - j`` 3x3/2 convs (BN + ReLU between them, BN only after the last).
  A single-branch module has no fusion (and no ReLU after it). The last module of the last
  stage fuses only into the highest-resolution output (``multi_scale_output=False``).
* ``final_layer``: a ``FINAL_CONV_KERNEL`` convolution with bias from the highest-resolution
  branch to one heatmap per joint (padding 1 for kernel 3, else 0, as the original).

Module names mirror the PyTorch ones exactly (``stage3/1/fuse_layers/2/0/1/0``), so
checkpoint keys map one to one. Parameters are initialised as the original's
``init_weights``: every conv weight ~ N(0, 0.001^2), the final bias 0, BatchNorm 1 / 0. The
released models start from ImageNet HRNet classification checkpoints restricted to
``PRETRAINED_LAYERS`` (see ``jaxpose.convert.hrnet``).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
from flax import nnx

from jaxpose.models import layers
from jaxpose.models import resnet
from jaxpose.models.base import ModelConfig

# MODEL.EXTRA.PRETRAINED_LAYERS of every released pose HRNet yaml: the ImageNet HRNet
# (HRNet-Image-Classification) tensors that initialise the pose model. Everything except the
# pose head; the classification head (incre_modules, downsamp_modules, final_layer,
# classifier) is left out.
PRETRAINED_LAYERS: tuple[str, ...] = (
    "conv1", "bn1", "conv2", "bn2", "layer1", "transition1", "stage2", "transition2",
    "stage3", "transition3", "stage4")

BLOCKS = resnet.BLOCKS  # "basic" -> BasicBlock (expansion 1), "bottleneck" -> Bottleneck (4)
FUSE_METHODS = ("sum",)
STEM_CHANNELS = 64  # conv1/conv2 width, fixed in the original
LAYER1_PLANES = 64  # layer1: Bottleneck planes, fixed in the original
LAYER1_BLOCKS = 4  # layer1: Bottleneck count, fixed in the original

_INIT = layers.normal_init(0.001)


@dataclasses.dataclass(frozen=True)
class HRNetStage:
  """One ``MODEL.EXTRA.STAGE<k>`` entry of the original yaml.

  Attributes:
    num_modules: ``NUM_MODULES``, high-resolution modules in the stage (>= 1).
    block: ``BLOCK``: ``'basic'`` or ``'bottleneck'`` (lower case).
    num_blocks: ``NUM_BLOCKS``, blocks per branch; ``NUM_BRANCHES`` is its length.
    num_channels: ``NUM_CHANNELS``, planes per branch (a branch carries ``planes *
      expansion`` channels: x1 for basic, x4 for bottleneck blocks).
    fuse_method: ``FUSE_METHOD``; the original only sums (``'sum'``).
  """
  num_modules: int = 1
  block: str = "basic"
  num_blocks: tuple[int, ...] = (4, 4)
  num_channels: tuple[int, ...] = (32, 64)
  fuse_method: str = "sum"

  def __post_init__(self):
    object.__setattr__(self, "num_blocks", tuple(int(b) for b in self.num_blocks))
    object.__setattr__(self, "num_channels", tuple(int(c) for c in self.num_channels))
    object.__setattr__(self, "block", str(self.block).lower())
    object.__setattr__(self, "fuse_method", str(self.fuse_method).lower())
    if self.block not in BLOCKS:
      raise ValueError(f"HRNet stage block {self.block!r} unknown; valid: {sorted(BLOCKS)}")
    if self.fuse_method not in FUSE_METHODS:
      raise ValueError(f"HRNet fuse_method {self.fuse_method!r} unknown; valid: {FUSE_METHODS}")
    if self.num_modules < 1:
      raise ValueError(f"HRNet stage needs num_modules >= 1, got {self.num_modules}")
    if not self.num_blocks or len(self.num_blocks) != len(self.num_channels):
      raise ValueError(
          f"HRNet stage: NUM_BLOCKS {self.num_blocks} and NUM_CHANNELS {self.num_channels} "
          "must be non-empty and of equal length (= NUM_BRANCHES)")
    if min(self.num_blocks) < 1 or min(self.num_channels) < 1:
      raise ValueError(f"HRNet stage: blocks {self.num_blocks} and channels "
                       f"{self.num_channels} must be >= 1")

  @property
  def num_branches(self) -> int:
    return len(self.num_blocks)

  @property
  def out_channels(self) -> tuple[int, ...]:
    """Channels carried by each branch: ``num_channels * expansion``."""
    expansion = BLOCKS[self.block].expansion
    return tuple(c * expansion for c in self.num_channels)

  @classmethod
  def from_original(cls, stage: Mapping[str, Any]) -> "HRNetStage":
    """From a yaml ``STAGE<k>`` mapping (``NUM_MODULES``, ``NUM_BRANCHES``, ``BLOCK``, ...)."""
    missing = [k for k in ("NUM_MODULES", "NUM_BRANCHES", "BLOCK", "NUM_BLOCKS", "NUM_CHANNELS")
               if k not in stage]
    if missing:
      raise ValueError(f"HRNet stage config lacks {missing}")
    branches = int(stage["NUM_BRANCHES"])
    for key in ("NUM_BLOCKS", "NUM_CHANNELS"):
      if len(stage[key]) != branches:
        raise ValueError(f"NUM_BRANCHES({branches}) <> {key}({len(stage[key])})")
    return cls(num_modules=int(stage["NUM_MODULES"]), block=stage["BLOCK"],
               num_blocks=tuple(stage["NUM_BLOCKS"]), num_channels=tuple(stage["NUM_CHANNELS"]),
               fuse_method=stage.get("FUSE_METHOD", "sum"))


def _released_stages(width: int) -> tuple[HRNetStage, ...]:
  """STAGE2..4 of the released w32/w48 yaml files (widths C, 2C, 4C, 8C, Basic blocks)."""
  c = (width, 2 * width, 4 * width, 8 * width)
  return (HRNetStage(1, "basic", (4, 4), c[:2]),
          HRNetStage(4, "basic", (4, 4, 4), c[:3]),
          HRNetStage(3, "basic", (4, 4, 4, 4), c[:4]))


@dataclasses.dataclass(frozen=True)
class PoseHRNetConfig(ModelConfig):
  """HRNet (``MODEL.NAME: pose_hrnet``) hyper-parameters.

  Attributes:
    stages: ``STAGE2``, ``STAGE3``, ``STAGE4`` of ``MODEL.EXTRA`` (the original always has these
      three; any number >= 1 is accepted here). The last module of the last stage keeps only the
      highest-resolution output.
    num_joints: ``MODEL.NUM_JOINTS`` (17 COCO, 16 MPII).
    final_conv_kernel: ``MODEL.EXTRA.FINAL_CONV_KERNEL`` (padding 1 if 3, else 0, as the
      original: kernels other than 1 and 3 shrink the heatmaps by ``k - 1``).
    in_channels: image channels (3 in the original).
    stem_channels, layer1_blocks, layer1_planes: width of the two stride-2 stem convs and
      the Bottleneck count / planes of ``layer1``. Fixed to 64 / 4 / 64 in the original
      (the defaults); smaller values give the light HRNets of ``small()`` (most of a narrow
      HRNet's compute is in this fixed stem at 1/4 resolution).
    dtype: compute dtype ('float32' or 'bfloat16'); params stay float32.
  """
  name: ClassVar[str] = "pose_hrnet"
  stages: tuple[HRNetStage, ...] = _released_stages(32)
  num_joints: int = 17
  final_conv_kernel: int = 1
  in_channels: int = 3
  stem_channels: int = STEM_CHANNELS
  layer1_blocks: int = LAYER1_BLOCKS
  layer1_planes: int = LAYER1_PLANES
  dtype: str = "float32"

  def __post_init__(self):
    stages = tuple(HRNetStage(**s) if isinstance(s, Mapping) else s for s in self.stages)
    object.__setattr__(self, "stages", stages)
    if not stages or not all(isinstance(s, HRNetStage) for s in stages):
      raise ValueError(f"PoseHRNetConfig.stages must be a non-empty tuple of HRNetStage, "
                       f"got {self.stages!r}")
    if self.num_joints < 1 or self.in_channels < 1:
      raise ValueError(f"num_joints ({self.num_joints}) and in_channels ({self.in_channels}) "
                       "must be >= 1")
    if self.final_conv_kernel < 1:
      raise ValueError(f"final_conv_kernel must be >= 1, got {self.final_conv_kernel}")
    if min(self.stem_channels, self.layer1_blocks, self.layer1_planes) < 1:
      raise ValueError("stem_channels, layer1_blocks and layer1_planes must be >= 1, got "
                       f"{self.stem_channels}, {self.layer1_blocks}, {self.layer1_planes}")
    layers.as_dtype(self.dtype)

  @property
  def layer1_channels(self) -> int:
    return self.layer1_planes * resnet.Bottleneck.expansion

  @property
  def size_divisor(self) -> int:
    """``ceil(H / 4)`` and ``ceil(W / 4)`` must be multiples of this (exact fusion sizes)."""
    fused = [s.num_branches for s in self.stages if s.num_branches > 1]
    return 2 ** (max(fused) - 1) if fused else 1

  @classmethod
  def w32(cls, **kw) -> "PoseHRNetConfig":
    """``experiments/{coco,mpii}/hrnet/w32_*.yaml`` (pass ``num_joints=16`` for MPII)."""
    return cls(stages=_released_stages(32), **kw)

  @classmethod
  def w48(cls, **kw) -> "PoseHRNetConfig":
    """``experiments/{coco,mpii}/hrnet/w48_*.yaml`` (pass ``num_joints=16`` for MPII)."""
    return cls(stages=_released_stages(48), **kw)

  @classmethod
  def tiny(cls, blocks: int = 2, **kw) -> "PoseHRNetConfig":
    """Widths 16/32/64/128, one module per stage, ``blocks`` Basic blocks per branch.

    A config the original yaml can express (the fixed stem and layer1 stay), with all four
    branches; for tests and CPU experiments. Inputs need H and W multiples of 32.
    """
    c = (16, 32, 64, 128)
    stages = tuple(HRNetStage(1, "basic", (blocks,) * n, c[:n]) for n in (2, 3, 4))
    return cls(stages=stages, **kw)

  @classmethod
  def small(cls, blocks: int = 2, **kw) -> "PoseHRNetConfig":
    """``tiny(blocks)`` with a light stem: 32-wide convs and one 32-plane Bottleneck.

    About a quarter of ``tiny()``'s training time on a CPU (most of a narrow HRNet's
    compute is in the original's fixed 64-wide stem and 4-Bottleneck layer1 at 1/4
    resolution); the quickstart model.
    """
    kw = {"stem_channels": 32, "layer1_blocks": 1, "layer1_planes": 32, **kw}
    return cls.tiny(blocks, **kw)

  @classmethod
  def from_original(cls, extra: Mapping[str, Any], *, num_joints: int, **kw
                    ) -> "PoseHRNetConfig":
    """From the original yaml's ``MODEL.EXTRA`` mapping (``STAGE2..4``, ``FINAL_CONV_KERNEL``)."""
    missing = [k for k in ("STAGE2", "STAGE3", "STAGE4") if k not in extra]
    if missing:
      raise ValueError(f"MODEL.EXTRA lacks {missing}; pose_hrnet reads STAGE2, STAGE3, STAGE4")
    stages = tuple(HRNetStage.from_original(extra[f"STAGE{k}"]) for k in (2, 3, 4))
    return cls(stages=stages, num_joints=num_joints,
               final_conv_kernel=int(extra.get("FINAL_CONV_KERNEL", 1)), **kw)


# ----------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------


def _conv(cin: int, cout: int, kernel: int, stride: int, dtype, rngs: nnx.Rngs) -> layers.Conv:
  return layers.Conv(cin, cout, kernel, strides=stride, padding=kernel // 2, use_bias=False,
                     dtype=dtype, kernel_init=_INIT, rngs=rngs)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, relu: bool, dtype,
             rngs: nnx.Rngs) -> nnx.List:
  """``Sequential(Conv2d(no bias), BatchNorm2d[, ReLU])`` as a list with the same indices."""
  mods = [_conv(cin, cout, kernel, stride, dtype, rngs), layers.BatchNorm(cout, dtype=dtype)]
  return nnx.List(mods + [layers.ReLU()] if relu else mods)


def _downsampling_chain(cin: int, cout: int, steps: int, last_relu: bool, dtype,
                        rngs: nnx.Rngs) -> nnx.List:
  """``steps`` 3x3/2 conv + BN (+ ReLU) units; all but the last keep ``cin`` channels."""
  return nnx.List([
      _conv_bn(cin, cout if k == steps - 1 else cin, 3, 2,
               last_relu or k < steps - 1, dtype, rngs)
      for k in range(steps)])


def _sequential(mods, x: jax.Array) -> jax.Array:
  """Applies (possibly nested) module lists in order, like ``nn.Sequential``."""
  for mod in mods:
    x = _sequential(mod, x) if isinstance(mod, nnx.List) else mod(x)
  return x


class HighResolutionModule(nnx.Module):
  """Parallel branches of residual blocks followed by the all-to-all fusion.

  Attributes:
    branches: ``[branch][block]`` Basic/Bottleneck blocks.
    fuse_layers: ``[output i][input j]``: None for ``i == j``; ``[conv1x1, BN]`` for ``j > i``
      (nearest upsampling by ``2^(j-i)`` follows at call time); for ``j < i`` a list of
      ``i - j`` ``[conv3x3/2, BN(, ReLU)]`` units. None for a single-branch module.
  """

  def __init__(self, in_channels: Sequence[int], stage: HRNetStage, multi_scale_output: bool,
               *, dtype=None, rngs: nnx.Rngs):
    if len(in_channels) != stage.num_branches:
      raise ValueError(f"NUM_BRANCHES({stage.num_branches}) <> NUM_INCHANNELS({len(in_channels)})")
    block = BLOCKS[stage.block]
    self.num_branches = stage.num_branches
    branches = []
    for cin, planes, count in zip(in_channels, stage.num_channels, stage.num_blocks):
      blocks = [block(cin, planes, dtype=dtype, kernel_init=_INIT, rngs=rngs)]
      blocks += [block(planes * block.expansion, planes, dtype=dtype, kernel_init=_INIT,
                       rngs=rngs) for _ in range(count - 1)]
      branches.append(nnx.List(blocks))
    self.branches = nnx.List(branches)
    channels = stage.out_channels
    self.out_channels = channels if multi_scale_output else channels[:1]
    if self.num_branches == 1:
      self.fuse_layers = None
      return
    rows = []
    for i in range(self.num_branches if multi_scale_output else 1):
      row = []
      for j in range(self.num_branches):
        if j > i:
          row.append(_conv_bn(channels[j], channels[i], 1, 1, False, dtype, rngs))
        elif j == i:
          row.append(None)
        else:
          row.append(_downsampling_chain(channels[j], channels[i], i - j, False, dtype, rngs))
      rows.append(nnx.List(row))
    self.fuse_layers = nnx.List(rows)

  def _fused_input(self, i: int, j: int, x: jax.Array) -> jax.Array:
    """Branch ``j``'s features brought to branch ``i``'s resolution and width."""
    if i == j:
      return x
    y = _sequential(self.fuse_layers[i][j], x)
    return layers.upsample_nearest(y, 2 ** (j - i)) if j > i else y

  def __call__(self, xs: Sequence[jax.Array]) -> list[jax.Array]:
    """``xs[i]``: ``[B, H_i, W_i, C_i]`` -> one array per output branch (all, or only 0)."""
    if len(xs) != self.num_branches:
      raise ValueError(f"HighResolutionModule expects {self.num_branches} inputs, got {len(xs)}")
    xs = [_sequential(branch, x) for branch, x in zip(self.branches, xs)]
    if self.fuse_layers is None:
      return xs
    outputs = []
    for i in range(len(self.fuse_layers)):
      y = self._fused_input(i, 0, xs[0])
      for j in range(1, self.num_branches):
        term = self._fused_input(i, j, xs[j])
        if term.shape != y.shape:
          raise ValueError(
              f"HRNet fusion: branch {j} brought to branch {i} has shape {tuple(term.shape)}, "
              f"expected {tuple(y.shape)}; branch resolutions must halve exactly (input H and "
              "W with ceil(H/4), ceil(W/4) divisible by 2^(branches-1))")
        y = y + term
      outputs.append(layers.materialize(jax.nn.relu(y)))  # read by several branches
    return outputs


# ----------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------


class PoseHRNet(nnx.Module):
  """HRNet -> heatmaps at 1/4 of the input resolution.

  Attributes (PyTorch names): ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``layer1``,
  ``transition{s}`` and ``stage{s+1}`` for ``s = 1..len(stages)``, ``final_layer``.
  ``transition{s}[i]`` is None (branch passed through), ``[conv3x3, BN, ReLU]`` (existing
  branch changing width) or a list of ``[conv3x3/2, BN, ReLU]`` units (new branch).
  """
  Config = PoseHRNetConfig

  def __init__(self, config: PoseHRNetConfig, *, rngs: nnx.Rngs):
    self.config = config
    dtype = layers.as_dtype(config.dtype)
    stem = config.stem_channels
    self.conv1 = _conv(config.in_channels, stem, 3, 2, dtype, rngs)
    self.bn1 = layers.BatchNorm(stem, dtype=dtype)
    self.conv2 = _conv(stem, stem, 3, 2, dtype, rngs)
    self.bn2 = layers.BatchNorm(stem, dtype=dtype)
    self.layer1 = nnx.List([
        resnet.Bottleneck(stem if b == 0 else config.layer1_channels, config.layer1_planes,
                          dtype=dtype, kernel_init=_INIT, rngs=rngs)
        for b in range(config.layer1_blocks)])
    previous = (config.layer1_channels,)
    last = len(config.stages) - 1
    for s, stage in enumerate(config.stages):
      setattr(self, f"transition{s + 1}",
              self._transition(previous, stage.out_channels, dtype, rngs))
      modules = []
      channels = stage.out_channels
      for m in range(stage.num_modules):
        multi_scale = not (s == last and m == stage.num_modules - 1)
        modules.append(HighResolutionModule(channels, stage, multi_scale, dtype=dtype, rngs=rngs))
        channels = modules[-1].out_channels
      setattr(self, f"stage{s + 2}", nnx.List(modules))
      previous = channels
    k = config.final_conv_kernel
    self.final_layer = layers.Conv(
        previous[0], config.num_joints, k, padding=1 if k == 3 else 0, dtype=dtype,
        kernel_init=_INIT, bias_init=layers.zeros_init, rngs=rngs)

  @staticmethod
  def _transition(previous: Sequence[int], current: Sequence[int], dtype,
                  rngs: nnx.Rngs) -> nnx.List:
    entries = []
    for i, cout in enumerate(current):
      if i < len(previous):
        entries.append(None if cout == previous[i] else
                       _conv_bn(previous[i], cout, 3, 1, True, dtype, rngs))
      else:
        entries.append(_downsampling_chain(previous[-1], cout, i + 1 - len(previous), True,
                                           dtype, rngs))
    return nnx.List(entries)

  def _check_size(self, shape: Sequence[int]) -> None:
    divisor = self.config.size_divisor
    quarter = [math.ceil(math.ceil(n / 2) / 2) for n in shape[1:3]]
    if any(q % divisor for q in quarter):
      raise ValueError(
          f"PoseHRNet fusing branches down to 1/{4 * divisor} resolution needs images whose "
          f"ceil(H/4), ceil(W/4) are multiples of {divisor} (e.g. H, W multiples of "
          f"{4 * divisor}); got H, W = {tuple(shape[1:3])}")

  def features(self, images: jax.Array) -> list[jax.Array]:
    """Outputs of the last stage: ``[[B, H/4, W/4, C_0]]`` (only the highest resolution)."""
    layers.check_image_input(images, self.config.in_channels, "PoseHRNet")
    self._check_size(images.shape)
    x = jax.nn.relu(self.bn1(self.conv1(images)))
    x = jax.nn.relu(self.bn2(self.conv2(x)))
    x = _sequential(self.layer1, x)
    ys = [x]
    for s, stage in enumerate(self.config.stages):
      transition = getattr(self, f"transition{s + 1}")
      xs = []
      for i in range(stage.num_branches):
        if transition[i] is None:
          xs.append(ys[i])
        else:  # as the original: transitions read the lowest-resolution previous output
          xs.append(_sequential(transition[i], ys[-1]))
      for module in getattr(self, f"stage{s + 2}"):
        xs = module(xs)
      ys = xs
    return ys

  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    """images ``[B, H, W, in_channels]`` (normalised RGB) -> ``{"heatmaps": [B, H/4, W/4, K]}``.

    ``H/4`` means ``ceil(ceil(H/2)/2)``; heatmaps are float32 whatever the compute dtype
    (float64 for float64 inputs and parameters).
    """
    heatmaps = self.final_layer(self.features(images)[0])
    return {"heatmaps": layers.at_least_float32(heatmaps)}
