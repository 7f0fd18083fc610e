r"""What bfloat16 inference costs in accuracy: conformance fixtures and a trained model's AP.

    python -m benchmarks.bf16_accuracy --fixtures ../shared/reference
    python -m benchmarks.bf16_accuracy --workdir /tmp/jaxpose_quickstart \
        --config configs/quickstart.py

``--fixtures``: every model fixture whose outputs are raw heatmaps or poses is converted
(the fixture's ``synth.py`` writes the checkpoint; needs torch) and run through the
inference path (``jaxpose.models.inference.prepare_for_inference``) in float32 and in
bfloat16; the table shows the max |difference| to the original's float32 outputs, also
relative to the output's max |value|, next to the fixture's float32-vs-float64 noise.

``--workdir``: the latest checkpoint of a training run is evaluated (the run's evaluation
set, the config's flip test and decoding) through the inference path in float32 and
bfloat16, printing both AP (or PCKh) tables.
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
from flax import nnx

from benchmarks import _timing
from jaxpose import convert
from jaxpose.fileio import read_json
from jaxpose.models import inference

IMAGE_FAMILIES = {"pose_resnet": "output", "pose_hrnet": "output", "mspn": "output",
                  "hg3d": "output_hm"}
POSE_FAMILIES = {"videopose3d": "output", "rie": "output"}


def fixture_rows(reference_dir: Path) -> list[dict]:
  spec = importlib.util.spec_from_file_location("reference_synth", reference_dir / "synth.py")
  synth = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(synth)
  rows = []
  for path in sorted((reference_dir / "models").glob("*.json")):
    manifest = read_json(path)
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
      ckpt = synth.write_checkpoint(manifest, Path(tmp) / "model.pth")
      model, _ = convert.convert_file(ckpt)[:2]
    model.eval()
    row = {"fixture": path.stem, "noise": manifest["fp32_vs_fp64_max_abs"][name],
           "absmax": float(np.max(np.abs(want)))}
    for dtype in ("float32", "bfloat16"):
      fast = inference.prepare_for_inference(model, x.shape, compute_dtype=dtype)
      forward, state = inference.forward_fn(fast, None, output="heatmaps" if image else "poses")
      got = np.asarray(jax.jit(forward)(state, jnp.asarray(x)), np.float64)
      got = got.transpose(0, 3, 1, 2) if image else got
      row[dtype] = float(np.max(np.abs(got - want)))
      row[f"{dtype}_rel"] = row[dtype] / row["absmax"]
    rows.append(row)
    print(f"  {path.stem}: fp32 {row['float32']:.2e}, bf16 {row['bfloat16']:.2e}", flush=True)
  return rows


def evaluate_run(config, workdir: str) -> dict[str, dict[str, float]]:
  """The run's latest checkpoint evaluated through the inference path, fp32 and bf16."""
  from jaxpose import checkpoint as ckpt_lib
  from jaxpose.train import loop, optim, state as state_lib, topdown as tasks
  data = loop.setup_data(config)
  mesh = state_lib.make_mesh()
  task = tasks.make_task(config, data.keypoint_set["flip_pairs"])
  model = loop.initial_model(config)
  _, eval_def, params, batch_stats = state_lib.split_model(model)
  tx, _ = optim.make_optimizer(config.optim, 1)
  target = jax.device_put(state_lib.init_train_state(params, batch_stats, tx, 0),
                          state_lib.replicated(mesh))
  checkpointer = ckpt_lib.TrainCheckpointer(workdir, best_metric=config.eval.metric)
  restored, _, _ = checkpointer.restore(target, None)
  checkpointer.close()
  trained = nnx.merge(eval_def, restored.params, restored.batch_stats)
  h, w = config.data.input_size
  results = {}
  for dtype in ("float32", "bfloat16"):
    fast = inference.prepare_for_inference(trained, (1, h, w, 3), compute_dtype=dtype)
    forward, state = inference.forward_fn(fast, output="heatmaps")
    predict = jax.jit(lambda s, images: task.predict(
        lambda x: {"heatmaps": forward(s, x)}, task.preprocess(images)))
    step = lambda params, batch_stats, images: predict(state, images)
    with tempfile.TemporaryDirectory() as tmp:
      results[dtype] = loop.run_eval(config, data, step, None, None, mesh, task, tmp, 0)
    print(f"  {dtype}: {results[dtype]}", flush=True)
  return results


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--fixtures", type=Path, default=None,
                      help="the conformance fixture folder (with models/ and synth.py)")
  parser.add_argument("--workdir", default=None, help="a training run's workdir")
  parser.add_argument("--config", default="configs/quickstart.py",
                      help="the run's config file (with optional :arg)")
  args = parser.parse_args(argv)
  if args.fixtures:
    rows = fixture_rows(args.fixtures)
    print(f"\ninference path vs the original's float32 outputs, {_timing.device_description()}\n")
    _timing.print_table(rows, [
        ("fixture", "fixture", ""), ("absmax", "max abs output", ".3g"),
        ("noise", "fp32-vs-fp64 noise", ".2e"), ("float32", "fp32 max abs diff", ".2e"),
        ("bfloat16", "bf16 max abs diff", ".2e"), ("bfloat16_rel", "bf16 diff / max output", ".2e")])
  if args.workdir:
    config = _load_config(args.config)
    results = evaluate_run(config, os.path.expanduser(args.workdir))
    keys = list(results["float32"])
    print(f"\n{args.config} checkpoint in {args.workdir}, inference path\n")
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
