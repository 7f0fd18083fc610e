"""``jaxpose export``: a model's inference function as a file other programs can run.

``export_model(spec, out_dir, fmt)`` writes the eval forward of a 2D model or a lifter,
its weights baked in as constants, with a symbolic batch dimension. The forward is the
inference path ``load_model`` returns (BatchNorms folded into their convolutions: fewer
operations, same outputs within float rounding); it is not micro-batched, since the batch
is symbolic and the artifact may run on any backend:

* ``stablehlo``: ``out_dir/model.stablehlo``, serialized by ``jax.export`` (StableHLO
  with its calling convention). Load and call it with JAX alone, no jaxpose model code::

      exported = jax.export.deserialize(open("model.stablehlo", "rb").read())
      outputs = exported.call(images, center, scale)

* ``savedmodel``: ``out_dir/`` a TensorFlow SavedModel (``jax2tf``, native
  serialization) with the signature ``serving_default``, for TF Serving and the TFLite
  converter::

      model = tf.saved_model.load(out_dir); outputs = model.serving_default(images=...)

``out_dir/signature.json`` names the inputs and outputs with shapes and dtypes and the
preprocessing that is already inside (a 2D model takes uint8 crops in its colour order
and normalises them itself).

2D models: inputs ``images`` uint8 ``[B, h, w, 3]`` (person crops, the model's colour
order: crop with ``PosePredictor.crops``) and, with ``decode``, ``center``/``scale``
float32 ``[B, 2]`` (the crops' HRNet centre/scale); outputs ``keypoints`` ``[B, K, 2]``
(image pixels) and ``scores`` ``[B, K]``, or ``heatmaps`` ``[B, hh, hw, K]`` without
``decode``. The flip test is on when the config says so, unless ``flip_test`` is given.
Lifters: input ``keypoints_2d`` float32 ``[B, T, J_in, 2]`` (normalised screen
coordinates, ``T >= receptive field``; RIE: ``T = receptive field``); output ``poses``
``[B, T - rf + 1, J, 3]``; with ``flip_test`` (needs ``lift_layout``, the input joint
order) the flipped sequence is averaged in, as ``jaxpose predict --lift`` does.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxpose import fileio
from jaxpose.data import keypoints as kp
from jaxpose.inference import loading
from jaxpose.inference.loading import LoadedModel
from jaxpose.train.tasks import lifting as lifting_task

FORMATS = ("stablehlo", "savedmodel")
STABLEHLO_FILE = "model.stablehlo"
SIGNATURE_FILE = "signature.json"


@dataclasses.dataclass
class InferenceFunction:
  """A pure function of arrays (weights closed over) and its input/output description.

  Attributes:
    fn: ``(*inputs) -> {name: array}``.
    inputs: ``[(name, shape with None for the batch, dtype)]``.
    outputs: output names in order.
    notes: what is inside (preprocessing, flip test, decoding, units).
  """
  fn: Callable[..., dict[str, jax.Array]]
  inputs: list[tuple[str, tuple, str]]
  outputs: list[str]
  notes: dict[str, Any]

  def symbolic_shapes(self) -> list[str]:
    """``jax.export``/``jax2tf`` shape strings: ``b`` for the batch, ``t`` for time."""
    return ["(" + ", ".join("b" if d is None else ("t" if d == "t" else str(d))
                            for d in shape) + ")" for _, shape, _ in self.inputs]


def _with_flip_test(config: ml_collections.ConfigDict, flip_test: bool) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())
  config.eval.flip_test = bool(flip_test)
  return config


def pose2d_function(loaded: LoadedModel, *, flip_test: bool | None = None, decode: bool = True
                    ) -> InferenceFunction:
  """The 2D model's eval forward (+ decoding) as a pure function (module docstring)."""
  task = loaded.task
  if flip_test is not None and bool(flip_test) != bool(loaded.config.eval.flip_test):
    task, _ = loading.inference_task(_with_flip_test(loaded.config, flip_test))
  model = loaded.model
  spec = task.spec
  h, w = spec.input_size
  if decode:
    try:
      jax.eval_shape(task.decode_traced, jnp.zeros((1, *spec.heatmap_size, 1)),
                     jnp.zeros((1, 2)), jnp.ones((1, 2)))
    except NotImplementedError as e:
      raise ValueError(str(e)) from None

  def fn(images, center=None, scale=None):
    heatmaps = task.predict(model, images)
    if not decode:
      return {"heatmaps": heatmaps.astype(jnp.float32)}
    keypoints, scores = task.decode_traced(heatmaps, center, scale)
    return {"keypoints": keypoints, "scores": scores.astype(jnp.float32)}

  inputs = [("images", (None, h, w, 3), "uint8")]
  if decode:
    inputs += [("center", (None, 2), "float32"), ("scale", (None, 2), "float32")]
  notes = {"model": loaded.model_config.name, "keypoints": list(loaded.keypoint_set.names),
           "color": spec.color, "input_size": [h, w], "method": spec.method,
           "normalisation": {"mean": list(loaded.config.data.mean),
                             "std": list(loaded.config.data.std), "inside": True},
           "flip_test": bool(task.config.eval.flip_test), "decode": decode,
           "crop": "jaxpose.inference.PosePredictor.crops (HRNet centre/scale, 1.25 padding)"}
  return InferenceFunction(fn, inputs, ["keypoints", "scores"] if decode else ["heatmaps"],
                           notes)


def lifter_function(loaded: LoadedModel, *, flip_test: bool = False,
                    lift_layout: str | None = None) -> InferenceFunction:
  """The lifter's eval forward (optionally flip-averaged) as a pure function."""
  from jaxpose.inference import lifting
  cfg = loaded.model_config
  model = loaded.model
  rf = int(model.receptive_field)
  joints_in = getattr(cfg, "num_joints_in", kp.H36M_NUM_JOINTS)
  joint_flip = kp.flip_permutation(kp.H36M_NUM_JOINTS, kp.H36M_FLIP_PAIRS)
  if flip_test:
    if lift_layout not in lifting.INPUT_LAYOUTS:
      raise ValueError("a lifter's flip test needs its input joint order: lift_layout "
                       f"{sorted(lifting.INPUT_LAYOUTS)}")
    layout = lifting.INPUT_LAYOUTS[lift_layout]
    input_flip = kp.flip_permutation(layout.num_keypoints, layout.flip_pairs)
  whole = bool(getattr(model, "predicts_sequences", True))

  def fn(keypoints_2d):
    if not flip_test:
      return {"poses": lifting_task.lift_windows(model, keypoints_2d, None, None)}
    return {"poses": lifting_task.lift_windows(model, keypoints_2d, input_flip, joint_flip)}

  time_dim = "t" if whole else rf
  notes = {"model": cfg.name, "receptive_field": rf, "flip_test": bool(flip_test),
           "input": "normalised screen coordinates (x / w * 2 - 1, y / w * 2 - h / w)",
           "output": "root-relative 3D joints (Human3.6M order), the lifter's units",
           "time": f"T >= {rf}; output frames T - {rf - 1}" if whole else f"T = {rf}"}
  return InferenceFunction(fn, [("keypoints_2d", (None, time_dim, joints_in, 2), "float32")],
                           ["poses"], notes)


def inference_function(loaded: LoadedModel, *, flip_test: bool | None = None,
                       decode: bool = True, lift_layout: str | None = None
                       ) -> InferenceFunction:
  """``pose2d_function`` or ``lifter_function`` for ``loaded``."""
  if loaded.is_lifter:
    return lifter_function(loaded, flip_test=bool(flip_test), lift_layout=lift_layout)
  return pose2d_function(loaded, flip_test=flip_test, decode=decode)


def _specs(f: InferenceFunction, rf: int | None = None) -> list[jax.ShapeDtypeStruct]:
  constraints = () if rf is None else (f"t >= {rf}",)
  shapes = jax.export.symbolic_shape(",".join(s[1:-1] for s in f.symbolic_shapes()),
                                     constraints=constraints)
  out, i = [], 0
  for _, shape, dtype in f.inputs:
    out.append(jax.ShapeDtypeStruct(tuple(shapes[i:i + len(shape)]), jnp.dtype(dtype)))
    i += len(shape)
  return out


def _time_constraint(f: InferenceFunction) -> int | None:
  """The receptive field when the time axis is symbolic (``t >= rf``), else None."""
  symbolic = any(d == "t" for _, shape, _ in f.inputs for d in shape)
  return f.notes.get("receptive_field") if symbolic else None


def export_stablehlo(f: InferenceFunction) -> jax.export.Exported:
  """The function exported by ``jax.export`` with a symbolic batch (and time) size."""
  return jax.export.export(jax.jit(f.fn))(*_specs(f, _time_constraint(f)))


def _signature(f: InferenceFunction, fmt: str, source: str) -> dict[str, Any]:
  return {"format": fmt, "source": source,
          "inputs": [{"name": n, "shape": [("batch" if d is None else d) for d in s],
                      "dtype": t} for n, s, t in f.inputs],
          "outputs": f.outputs, "notes": f.notes}


def save_savedmodel(f: InferenceFunction, out_dir: str) -> None:
  """A TensorFlow SavedModel of ``f`` (``jax2tf``) with signature ``serving_default``."""
  import tensorflow as tf
  from jax.experimental import jax2tf
  tf.config.set_visible_devices([], "GPU")
  rf = _time_constraint(f)
  converted = jax2tf.convert(f.fn, polymorphic_shapes=f.symbolic_shapes(),
                             polymorphic_constraints=() if rf is None else (f"t >= {rf}",),
                             with_gradient=False)
  signature = [tf.TensorSpec([None if (d is None or d == "t") else d for d in shape],
                             getattr(tf, dtype), name=name) for name, shape, dtype in f.inputs]
  module = tf.Module()
  module.serve = tf.function(lambda *args: converted(*args), input_signature=signature,
                             autograph=False)
  tf.saved_model.save(module, out_dir, signatures={"serving_default": module.serve})


def export_model(spec: str | LoadedModel, out_dir: str, fmt: str = "stablehlo", *,
                 config=None, checkpoint=None, flip_test: bool | None = None,
                 decode: bool = True, lift_layout: str | None = None) -> str:
  """Exports the model named by ``spec`` (see ``load_model``) into ``out_dir``.

  Returns:
    The artifact's path (``model.stablehlo``, or the SavedModel directory).

  Raises:
    ValueError: unknown format, ``out_dir`` not empty, or an export the model does not
      support (e.g. MSPN with decoding).
  """
  if fmt not in FORMATS:
    raise ValueError(f"unknown export format {fmt!r}; valid: {list(FORMATS)}")
  if os.path.isdir(out_dir) and os.listdir(out_dir):
    raise ValueError(f"{out_dir}: exists and is not empty; choose a new output directory")
  loaded = spec if isinstance(spec, LoadedModel) else loading.load_model(
      spec, config=config, checkpoint=checkpoint)
  f = inference_function(loaded, flip_test=flip_test, decode=decode, lift_layout=lift_layout)
  os.makedirs(out_dir, exist_ok=True)
  if fmt == "stablehlo":
    data = export_stablehlo(f).serialize()
    path = os.path.join(out_dir, STABLEHLO_FILE)
    fileio.atomic_write(path, lambda fh: fh.write(bytes(data)), binary=True)
  else:
    save_savedmodel(f, out_dir)
    path = out_dir
  fileio.write_json(os.path.join(out_dir, SIGNATURE_FILE), _signature(f, fmt, loaded.source),
                    indent=1)
  return path


def load_stablehlo(path: str) -> Callable[..., Any]:
  """``inputs -> outputs`` of an exported ``model.stablehlo`` (a file or its folder)."""
  if os.path.isdir(path):
    path = os.path.join(path, STABLEHLO_FILE)
  with open(path, "rb") as fh:
    exported = jax.export.deserialize(bytearray(fh.read()))
  return exported.call

