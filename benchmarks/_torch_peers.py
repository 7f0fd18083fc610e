"""Compact PyTorch peers of jaxpose's released architectures, for the benchmarks only.

Each peer is the original project's architecture at its released configuration, written
from the papers' and original repositories' descriptions (not copied): module names match
the original state dicts, so ``jaxpose.convert.export_state_dict`` loads into a peer with
``strict=True`` and the benchmarks check once that both frameworks agree on the outputs.
NCHW layout and eval mode, as the original code runs.

This module imports torch; ``jaxpose`` never imports it (torch is a benchmark/test-only
dependency). ``PEERS`` maps a jaxpose model family to ``(config) -> torch.nn.Module``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------
# ResNet blocks (torchvision v1.5 layout: the stride sits on the 3x3 convolution)
# ----------------------------------------------------------------------------------------


def _conv(cin: int, cout: int, k: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
  return nn.Conv2d(cin, cout, k, stride, k // 2, bias=bias)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin: int, planes: int, stride: int = 1):
    super().__init__()
    cout = planes * 4
    self.conv1, self.bn1 = _conv(cin, planes, 1), nn.BatchNorm2d(planes)
    self.conv2, self.bn2 = _conv(planes, planes, 3, stride), nn.BatchNorm2d(planes)
    self.conv3, self.bn3 = _conv(planes, cout, 1), nn.BatchNorm2d(cout)
    self.downsample = (nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))
                       if stride != 1 or cin != cout else None)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, cin: int, planes: int, stride: int = 1):
    super().__init__()
    self.conv1, self.bn1 = _conv(cin, planes, 3, stride), nn.BatchNorm2d(planes)
    self.conv2, self.bn2 = _conv(planes, planes, 3), nn.BatchNorm2d(planes)
    self.downsample = (nn.Sequential(_conv(cin, planes, 1, stride), nn.BatchNorm2d(planes))
                       if stride != 1 or cin != planes else None)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def _layer(block, cin: int, planes: int, count: int, stride: int) -> nn.Sequential:
  blocks = [block(cin, planes, stride)]
  blocks += [block(planes * block.expansion, planes) for _ in range(count - 1)]
  return nn.Sequential(*blocks)


# ----------------------------------------------------------------------------------------
# SimpleBaseline (pose_resnet)
# ----------------------------------------------------------------------------------------

RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class PoseResNet(nn.Module):
  """ResNet (bottleneck depths) + three 4x4/2 transposed convolutions + 1x1 heatmap conv."""

  def __init__(self, config):
    super().__init__()
    if config.num_layers not in RESNET_BLOCKS or set(config.deconv_kernels) != {4}:
      raise ValueError(f"peer covers ResNet-{sorted(RESNET_BLOCKS)} with 4x4 deconvolutions")
    self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = 64
    for i, (planes, count) in enumerate(zip((64, 128, 256, 512), RESNET_BLOCKS[config.num_layers])):
      setattr(self, f"layer{i + 1}", _layer(Bottleneck, cin, planes, count, 1 if i == 0 else 2))
      cin = planes * 4
    mods = []
    for planes in config.deconv_filters:
      mods += [nn.ConvTranspose2d(cin, planes, 4, 2, 1, 0, bias=config.deconv_with_bias),
               nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]
      cin = planes
    self.deconv_layers = nn.Sequential(*mods)
    k = config.final_conv_kernel
    self.final_layer = nn.Conv2d(cin, config.num_joints, k, 1, 1 if k == 3 else 0)

  def forward(self, x):
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.final_layer(self.deconv_layers(x))


# ----------------------------------------------------------------------------------------
# HRNet (pose_hrnet)
# ----------------------------------------------------------------------------------------


def _conv_bn(cin: int, cout: int, k: int, stride: int, relu: bool) -> nn.Sequential:
  mods = [_conv(cin, cout, k, stride), nn.BatchNorm2d(cout)]
  return nn.Sequential(*(mods + [nn.ReLU(inplace=True)] if relu else mods))


class HRModule(nn.Module):
  """Parallel branches of blocks, then every output = ReLU(sum of all branches resampled)."""

  def __init__(self, channels, stage, multi_scale: bool):
    super().__init__()
    block = {"basic": BasicBlock, "bottleneck": Bottleneck}[stage.block]
    self.branches = nn.ModuleList(
        _layer(block, c, p, n, 1) for c, p, n in zip(channels, stage.num_channels,
                                                      stage.num_blocks))
    out = stage.out_channels
    n = len(out)
    self.fuse_layers = None
    if n > 1:
      rows = []
      for i in range(n if multi_scale else 1):
        row = []
        for j in range(n):
          if j > i:
            row.append(nn.Sequential(_conv(out[j], out[i], 1), nn.BatchNorm2d(out[i]),
                                     nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
          elif j == i:
            row.append(None)
          else:
            row.append(nn.Sequential(*[
                _conv_bn(out[j], out[i] if k == i - j - 1 else out[j], 3, 2, k < i - j - 1)
                for k in range(i - j)]))
        rows.append(nn.ModuleList(row))
      self.fuse_layers = nn.ModuleList(rows)

  def forward(self, xs):
    xs = [branch(x) for branch, x in zip(self.branches, xs)]
    if self.fuse_layers is None:
      return xs
    outs = []
    for row in self.fuse_layers:
      y = None
      for j, f in enumerate(row):
        term = xs[j] if f is None else f(xs[j])
        y = term if y is None else y + term
      outs.append(F.relu(y))
    return outs


class PoseHRNet(nn.Module):
  """HRNet with the original's fixed 64-wide stem and four-Bottleneck layer1."""

  def __init__(self, config):
    super().__init__()
    stem = config.stem_channels
    self.conv1, self.bn1 = _conv(3, stem, 3, 2), nn.BatchNorm2d(stem)
    self.conv2, self.bn2 = _conv(stem, stem, 3, 2), nn.BatchNorm2d(stem)
    self.layer1 = _layer(Bottleneck, stem, config.layer1_planes, config.layer1_blocks, 1)
    previous = [config.layer1_planes * 4]
    self.num_stages = len(config.stages)
    for s, stage in enumerate(config.stages):
      trans = []
      for i, cout in enumerate(stage.out_channels):
        if i < len(previous):
          trans.append(None if cout == previous[i] else _conv_bn(previous[i], cout, 3, 1, True))
        else:
          steps = i + 1 - len(previous)
          trans.append(nn.Sequential(*[
              _conv_bn(previous[-1], cout if k == steps - 1 else previous[-1], 3, 2, True)
              for k in range(steps)]))
      setattr(self, f"transition{s + 1}", nn.ModuleList(trans))
      modules, channels = [], list(stage.out_channels)
      for m in range(stage.num_modules):
        multi = not (s == self.num_stages - 1 and m == stage.num_modules - 1)
        modules.append(HRModule(channels, stage, multi))
        channels = channels if multi else channels[:1]
      setattr(self, f"stage{s + 2}", nn.Sequential(*modules))
      previous = channels
    k = config.final_conv_kernel
    self.final_layer = nn.Conv2d(previous[0], config.num_joints, k, 1, 1 if k == 3 else 0)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = F.relu(self.bn2(self.conv2(x)))
    ys = [self.layer1(x)]
    for s in range(self.num_stages):
      trans = getattr(self, f"transition{s + 1}")
      xs = [ys[i] if t is None and i < len(ys) else t(ys[-1]) for i, t in enumerate(trans)]
      ys = getattr(self, f"stage{s + 2}")(xs)
    return self.final_layer(ys[0])


# ----------------------------------------------------------------------------------------
# MSPN
# ----------------------------------------------------------------------------------------


class ConvBnRelu(nn.Module):
  def __init__(self, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True):
    super().__init__()
    self.conv, self.bn, self.relu = _conv(cin, cout, k, stride, bias=True), nn.BatchNorm2d(cout), relu

  def forward(self, x):
    y = self.bn(self.conv(x))
    return F.relu(y) if self.relu else y


class MSPNBottleneck(nn.Module):
  def __init__(self, cin: int, planes: int, stride: int = 1):
    super().__init__()
    cout = planes * 4
    self.conv_bn_relu1 = ConvBnRelu(cin, planes, 1)
    self.conv_bn_relu2 = ConvBnRelu(planes, planes, 3, stride)
    self.conv_bn_relu3 = ConvBnRelu(planes, cout, 1, relu=False)
    self.downsample = (ConvBnRelu(cin, cout, 1, stride, relu=False)
                       if stride != 1 or cin != cout else None)

  def forward(self, x):
    out = self.conv_bn_relu3(self.conv_bn_relu2(self.conv_bn_relu1(x)))
    return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class MSPNEncoder(nn.Module):
  def __init__(self, num_blocks, has_skip: bool):
    super().__init__()
    self.has_skip, cin = has_skip, 64
    for i, (planes, count) in enumerate(zip((64, 128, 256, 512), num_blocks)):
      blocks = [MSPNBottleneck(cin, planes, 1 if i == 0 else 2)]
      blocks += [MSPNBottleneck(planes * 4, planes) for _ in range(count - 1)]
      setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
      cin = planes * 4

  def forward(self, x, skip1, skip2):
    outs = []
    for i in range(4):
      x = getattr(self, f"layer{i + 1}")(x)
      if self.has_skip:
        x = x + skip1[i] + skip2[i]
      outs.append(x)
    return outs[::-1]


def _resize(x, size):
  return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class MSPNUnit(nn.Module):
  def __init__(self, index: int, cin: int, ch: int, joints: int, gen_skip: bool, gen_cross: bool):
    super().__init__()
    self.u_skip = ConvBnRelu(cin, ch, 1, relu=False)
    self.up_conv = ConvBnRelu(ch, ch, 1, relu=False) if index > 0 else None
    if gen_skip:
      self.skip1, self.skip2 = ConvBnRelu(cin, cin, 1), ConvBnRelu(ch, cin, 1)
    else:
      self.skip1 = self.skip2 = None
    self.cross_conv = ConvBnRelu(ch, 64, 1) if index == 3 and gen_cross else None
    self.res_conv1 = ConvBnRelu(ch, ch, 1)
    self.res_conv2 = ConvBnRelu(ch, joints, 3, relu=False)

  def forward(self, x, up_x, size):
    out = self.u_skip(x)
    if self.up_conv is not None:
      out = out + self.up_conv(_resize(up_x, x.shape[2:]))
    out = F.relu(out)
    res = _resize(self.res_conv2(self.res_conv1(out)), size)
    skip1 = self.skip1(x) if self.skip1 is not None else None
    skip2 = self.skip2(out) if self.skip2 is not None else None
    cross = self.cross_conv(out) if self.cross_conv is not None else None
    return out, res, skip1, skip2, cross


class MSPNDecoder(nn.Module):
  def __init__(self, joints: int, ch: int, gen_skip: bool, gen_cross: bool):
    super().__init__()
    for i, cin in enumerate((2048, 1024, 512, 256)):
      setattr(self, f"up{i + 1}", MSPNUnit(i, cin, ch, joints, gen_skip, gen_cross))

  def forward(self, feats, size):
    out, res, skip1, skip2, cross = None, [], [], [], None
    for i, x in enumerate(feats):
      out, r, s1, s2, cross = getattr(self, f"up{i + 1}")(x, out, size)
      res.append(r)
      skip1.append(s1)
      skip2.append(s2)
    return res, skip1[::-1], skip2[::-1], cross


class MSPNStage(nn.Module):
  def __init__(self, config, has_skip: bool, last: bool):
    super().__init__()
    self.downsample = MSPNEncoder(config.num_blocks, has_skip)
    self.upsample = MSPNDecoder(config.num_joints, config.upsample_channels, not last, not last)

  def forward(self, x, skip1, skip2, size):
    return self.upsample(self.downsample(x, skip1, skip2), size)


class MSPNTop(nn.Module):
  def __init__(self):
    super().__init__()
    self.conv = ConvBnRelu(3, 64, 7, 2)

  def forward(self, x):
    return F.max_pool2d(self.conv(x), 3, 2, 1)


class MSPN(nn.Module):
  """Multi-stage network; eval output = the last stage's finest heatmaps."""

  def __init__(self, config):
    super().__init__()
    self.top = MSPNTop()
    self.num_stages = config.num_stages
    for s in range(config.num_stages):
      setattr(self, f"stage{s}", MSPNStage(config, s > 0, s == config.num_stages - 1))

  def forward(self, x):
    x = self.top(x)
    size = x.shape[2:]
    skip1 = skip2 = None
    for s in range(self.num_stages):
      res, skip1, skip2, x = getattr(self, f"stage{s}")(x, skip1, skip2, size)
    return res[-1]


# ----------------------------------------------------------------------------------------
# VideoPose3D (TemporalModel, dilated convolutions; TemporalModelOptimized1f at T == RF)
# ----------------------------------------------------------------------------------------


class VideoPose3D(nn.Module):
  """Temporal convolutions over ``(N, T, J, 2)`` keypoints -> ``(N, T', J_out, 3)``."""

  def __init__(self, config):
    super().__init__()
    widths, ch = tuple(config.filter_widths), config.channels
    if config.causal or config.dense:
      raise ValueError("peer covers the symmetric, dilated TemporalModel")
    self.joints_out = config.num_joints_out
    self.expand_conv = nn.Conv1d(config.num_joints_in * 2, ch, widths[0], bias=False)
    self.expand_bn = nn.BatchNorm1d(ch)
    convs, bns, self.pads = [], [], []
    d = widths[0]
    for w in widths[1:]:
      self.pads.append((w - 1) * d // 2)
      convs += [nn.Conv1d(ch, ch, w, dilation=d, bias=False), nn.Conv1d(ch, ch, 1, bias=False)]
      bns += [nn.BatchNorm1d(ch), nn.BatchNorm1d(ch)]
      d *= w
    self.layers_conv, self.layers_bn = nn.ModuleList(convs), nn.ModuleList(bns)
    self.shrink = nn.Conv1d(ch, config.num_joints_out * 3, 1)
    self.receptive_field = math.prod(widths)

  def forward(self, keypoints):
    n, t = keypoints.shape[:2]
    x = keypoints.reshape(n, t, -1).permute(0, 2, 1)
    if t == self.receptive_field and not self.training:
      return self.forward_1f(x).reshape(n, 1, self.joints_out, 3)
    x = F.relu(self.expand_bn(self.expand_conv(x)))
    for i, pad in enumerate(self.pads):
      res = x[:, :, pad:x.shape[2] - pad]
      x = F.relu(self.layers_bn[2 * i](self.layers_conv[2 * i](x)))
      x = res + F.relu(self.layers_bn[2 * i + 1](self.layers_conv[2 * i + 1](x)))
    x = self.shrink(x).permute(0, 2, 1)
    return x.reshape(n, -1, self.joints_out, 3)

  def forward_1f(self, x):
    """``TemporalModelOptimized1f`` (same weights, strided undilated convolutions) on one
    receptive field ``[N, C, RF]``: what jaxpose's eval-mode call runs at ``T == RF``, so
    the two compare the same arithmetic."""
    w0 = self.expand_conv.kernel_size[0]
    x = F.relu(self.expand_bn(F.conv1d(x, self.expand_conv.weight, stride=w0)))
    for i in range(len(self.pads)):
      w = self.layers_conv[2 * i].kernel_size[0]
      res = x[:, :, w // 2::w]
      x = F.relu(self.layers_bn[2 * i](F.conv1d(x, self.layers_conv[2 * i].weight, stride=w)))
      x = res + F.relu(self.layers_bn[2 * i + 1](self.layers_conv[2 * i + 1](x)))
    return self.shrink(x).permute(0, 2, 1)


PEERS = {"pose_resnet": PoseResNet, "pose_hrnet": PoseHRNet, "mspn": MSPN,
         "videopose3d": VideoPose3D}


def build(config, state_dict: dict) -> nn.Module:
  """The eval-mode peer of jaxpose ``config`` with ``state_dict`` loaded strictly."""
  if config.name not in PEERS:
    raise KeyError(f"no PyTorch peer for {config.name!r}; peers: {sorted(PEERS)}")
  model = PEERS[config.name](config)
  model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state_dict.items()},
                        strict=True)
  return model.eval()
