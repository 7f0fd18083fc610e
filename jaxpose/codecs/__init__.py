"""Encoders and decoders between joint coordinates and network outputs.

One module per method: ``integral`` (soft-argmax over joint volumes, Sun et al.),
``hg3d`` (heatmap argmax + depth maps, Zhou et al.), and the 2D heatmap codecs.
Training targets themselves are built in ``jaxpose.data.targets``.
"""
