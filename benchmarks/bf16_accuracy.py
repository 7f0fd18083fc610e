r"""What bfloat16 inference costs in accuracy: conformance fixtures and a trained model's AP.

    python -m benchmarks.bf16_accuracy --fixtures
    python -m benchmarks.bf16_accuracy --checkpoint tests/data/quickstart_hrnet.pth \
        --config configs/quickstart.py

``--fixtures``: every model fixture (``tests/reference`` and ``$JAXPOSE_REFERENCE_DIR``, as
the conformance tests find them) whose outputs are raw heatmaps or poses is converted the
way ``tests/test_reference.py`` converts it (needs torch) and run through the inference
path (``jaxpose.models.inference.prepare_for_inference``, compiled with the entry points'
``compile_options``) in float32 and in bfloat16; the
table shows the max |difference| to the original's float32 outputs, also relative to the
output's max |value|, next to the fixture's float32-vs-float64 noise.

``--checkpoint``: a trained model (a training workdir, a converted directory or an original
``.pth``: what ``--mode=eval`` takes) is evaluated with ``--mode=eval``'s code
(``jaxpose.train.loop.evaluate``: the config's evaluation set, flip test and decoding, the
inference path) with the compute dtype float32 and bfloat16, printing both metric tables.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _timing
from jaxpose import compile_options, convert
from jaxpose.models import inference

IMAGE_FAMILIES = {"pose_resnet": "output", "pose_hrnet": "output", "mspn": "output",
                  "hg3d": "output_hm"}
POSE_FAMILIES = {"videopose3d": "output", "rie": "output"}


def fixture_rows() -> list[dict]:
  from tests import test_reference
  from tests.conformance import fixtures, synth_weights
  rows = []
  for test_id, path in fixtures.discover("models", fixtures.fixture_dirs()):
    manifest = synth_weights.load_manifest(fixtures.require(path))
    family = manifest["family"]
    name = {**IMAGE_FAMILIES, **POSE_FAMILIES}.get(family)
    if name is None or name not in manifest["outputs"]:
      continue  # derived outputs only (integral): not a raw heatmap
    arrays = np.load(path.with_suffix(".npz"))
    x = arrays["input"]
    image = family in IMAGE_FAMILIES
    x = x.transpose(0, 2, 3, 1) if image else x
    want = arrays[name]
    with tempfile.TemporaryDirectory() as tmp:
      ckpt = synth_weights.write_checkpoint(manifest, Path(tmp) / "model.pth")
      user = test_reference.USER_CONFIG[family](manifest["official"]["config"], Path(tmp))
      convert.convert_checkpoint(ckpt, Path(tmp) / "converted", **user)
      model, _ = convert.load_converted(Path(tmp) / "converted")
    model.eval()
    row = {"fixture": test_id, "noise": manifest["fp32_vs_fp64_max_abs"][name],
           "absmax": float(np.max(np.abs(want)))}
    for dtype in ("float32", "bfloat16"):
      fast = inference.prepare_for_inference(model, x.shape, compute_dtype=dtype)
      forward, state = inference.forward_fn(fast, None, output="heatmaps" if image else "poses")
      options = compile_options.for_platform(jax.default_backend(), inference.compute_dtype(fast))
      got = np.asarray(jax.jit(forward, compiler_options=options)(state, jnp.asarray(x)),
                       np.float64)
      got = got.transpose(0, 3, 1, 2) if image else got
      row[dtype] = float(np.max(np.abs(got - want)))
      row[f"{dtype}_rel"] = row[dtype] / row["absmax"]
    rows.append(row)
    print(f"  {test_id}: fp32 {row['float32']:.2e}, bf16 {row['bfloat16']:.2e}", flush=True)
  return rows


def evaluate_run(config, checkpoint: str) -> dict[str, dict[str, float]]:
  """``checkpoint`` evaluated by ``loop.evaluate`` (``--mode=eval``), fp32 and bf16 compute."""
  from jaxpose.train import loop
  results = {}
  for dtype in ("float32", "bfloat16"):
    config.unlock()
    config.train.dtype = dtype
    with tempfile.TemporaryDirectory() as tmp:
      results[dtype] = loop.evaluate(config, tmp, checkpoint=checkpoint)
    print(f"  {dtype}: {results[dtype]}", flush=True)
  return results


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--fixtures", action="store_true",
                      help="the conformance fixtures (tests/reference, $JAXPOSE_REFERENCE_DIR)")
  parser.add_argument("--checkpoint", default=None,
                      help="a trained model: training workdir, converted directory or .pth")
  parser.add_argument("--config", default="configs/quickstart.py",
                      help="the run's config file (with optional :arg)")
  args = parser.parse_args(argv)
  if args.fixtures:
    rows = fixture_rows()
    print(f"\ninference path vs the original's float32 outputs, {_timing.device_description()}\n")
    _timing.print_table(rows, [
        ("fixture", "fixture", ""), ("absmax", "max abs output", ".3g"),
        ("noise", "fp32-vs-fp64 noise", ".2e"), ("float32", "fp32 max abs diff", ".2e"),
        ("bfloat16", "bf16 max abs diff", ".2e"),
        ("bfloat16_rel", "bf16 diff / max output", ".2e")])
  if args.checkpoint:
    config = _load_config(args.config)
    results = evaluate_run(config, os.path.abspath(os.path.expanduser(args.checkpoint)))
    keys = list(results["float32"])
    print(f"\n{args.config}, {args.checkpoint}, --mode=eval (inference path)\n")
    _timing.print_table([{"dtype": d, **r} for d, r in results.items()],
                        [("dtype", "compute", "")] + [(k, k, ".4f") for k in keys])


def _load_config(spec: str):
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("run_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


if __name__ == "__main__":
  main()
