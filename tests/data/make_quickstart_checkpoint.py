r"""Writes the trained quickstart models of the tests in the original projects' layouts.

``tests/data/quickstart_hrnet.pth``: the 2D quickstart, as ``torch.save(model.state_dict())``
of deep-high-resolution-net.pytorch's ``pose_hrnet`` would hold this architecture;
``tests/data/quickstart_3d_vp3d.bin``: the 3D quickstart, as VideoPose3D's ``run.py`` saves
checkpoints (``{"epoch", "model_pos"}``)::

    python launch.py --config=configs/quickstart.py --workdir=/tmp/jaxpose_quickstart
    python tests/data/make_quickstart_checkpoint.py /tmp/jaxpose_quickstart \
        tests/data/quickstart_hrnet.pth
    python launch.py --config=configs/quickstart_3d.py --workdir=/tmp/jaxpose_quickstart_3d
    python tests/data/make_quickstart_checkpoint.py /tmp/jaxpose_quickstart_3d \
        tests/data/quickstart_3d_vp3d.bin

The tests run ``jaxpose predict`` with it (``--model tests/data/quickstart_hrnet.pth
--config configs/quickstart.py``): a trained model whose output can be checked against the
synthetic data's known keypoints, read through the same on-the-fly conversion a user's
``.pth`` goes through. Needs torch (a test dependency) to write the file.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(workdir: str, out: str) -> None:
  import torch
  from jaxpose import convert
  from jaxpose.inference import load_model
  loaded = load_model(workdir, checkpoint="best")
  state = convert.export_state_dict(loaded.model, loaded.model_config)
  tensors = {k: torch.from_numpy(v.copy()) for k, v in state.items()}
  torch.save({"epoch": 0, "model_pos": tensors} if loaded.is_lifter else tensors, out)
  print(f"{workdir} (best) -> {out}: {len(state)} tensors, {os.path.getsize(out) / 1e6:.1f} MB")


if __name__ == "__main__":
  main(*sys.argv[1:3])
