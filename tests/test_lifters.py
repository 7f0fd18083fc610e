"""VideoPose3D and Pose3D-RIE lifters: shapes, semantics, checkpoint round trips."""
from __future__ import annotations

import collections
import math

import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpose import convert
from jaxpose.convert import core
from jaxpose.convert import rie as rie_family
from jaxpose.convert import temporal as temporal_convert
from jaxpose.convert import videopose3d as videopose3d_family
from jaxpose.models import (abstract_model, build_model, inference, resnet, rie, temporal,
                            videopose3d)

VP3D = videopose3d.VideoPose3DConfig
RIE = rie.RIEConfig


def _randomize(model: nnx.Module, seed: int) -> nnx.Module:
  """Every Param ~ N(0, 0.3^2) (BN scales around 1), running variances in [0.5, 1.5]."""
  rng = np.random.RandomState(seed)
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))):
    shape = var.shape
    if path[-1] == "var":
      value = rng.uniform(0.5, 1.5, shape)
    elif path[-1] == "scale":
      value = 1.0 + 0.2 * rng.standard_normal(shape)
    else:
      value = 0.3 * rng.standard_normal(shape)
    var.set_value(jnp.asarray(value, jnp.float32))
  return model


def _model(config, seed: int = 0) -> nnx.Module:
  """The model in eval mode with random weights (set from numpy: no init compilation)."""
  graphdef, state = nnx.split(abstract_model(config))
  model = nnx.merge(graphdef, nnx.map_state(lambda _, v: np.zeros(v.shape, v.dtype), state))
  model = _randomize(model, seed)
  model.eval()
  return model


_CALL = nnx.jit(lambda model, x: model(x)["poses"])
_SINGLE = nnx.jit(lambda model, x: model.single_frame(x)["poses"])


def _poses(model: nnx.Module, x, single: bool = False) -> np.ndarray:
  """``model(x)["poses"]`` (or ``single_frame``), jitted: one compilation per model."""
  return np.asarray((_SINGLE if single else _CALL)(model, jnp.asarray(x)))


def _keypoints(shape, seed: int = 1) -> np.ndarray:
  return np.random.RandomState(seed).standard_normal(shape).astype(np.float32)


def _close_tol(reference: np.ndarray, ulps: float = 64) -> float:
  """Float32 rounding of differently ordered sums: ``ulps`` x eps x the output magnitude."""
  return ulps * np.finfo(np.float32).eps * float(np.max(np.abs(reference)))


VP3D_CONFIGS = {
    "w333": VP3D.tiny(filter_widths=(3, 3, 3)),
    "w33333": VP3D.tiny(filter_widths=(3, 3, 3, 3, 3), channels=8),
    "w111": VP3D.tiny(filter_widths=(1, 1, 1)),
    "w5_3": VP3D.tiny(filter_widths=(5, 3), num_joints_in=4, num_joints_out=6),
    "w1_3": VP3D.tiny(filter_widths=(1, 3)),
    "w3": VP3D.tiny(filter_widths=(3,)),
    "causal": VP3D.tiny(filter_widths=(3, 5, 3), causal=True),
    "dense": VP3D.tiny(filter_widths=(3, 3, 3), dense=True),
    "dense_causal": VP3D.tiny(filter_widths=(3, 3), dense=True, causal=True),
    "trajectory": VP3D.tiny(num_joints_out=1),
    "xyz_in": VP3D.tiny(in_features=3, num_joints_out=2),
}


# ---------------------------------------------------------------------------------------
# VideoPose3D
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VP3D_CONFIGS))
def test_videopose3d_shapes_and_single_frame(name):
  config = VP3D_CONFIGS[name]
  model = _model(config)
  rf = math.prod(config.filter_widths)
  assert model.receptive_field == rf
  assert model.total_causal_shift == ((rf - 1) // 2 if config.causal else 0)
  x = _keypoints((2, rf + 4, config.num_joints_in, config.in_features))
  poses = _poses(model, x)
  assert poses.shape == (2, 5, config.num_joints_out, 3) and poses.dtype == np.float32
  # The strided form on each window equals the dilated output frame for that window.
  for t in (0, 4):
    single = _poses(model, x[:, t:t + rf], single=True)
    assert single.shape == (2, 1, config.num_joints_out, 3)
    np.testing.assert_allclose(single[:, 0], poses[:, t], rtol=0, atol=_close_tol(poses))


def _primitives(model: nnx.Module, x, dropout: bool = False) -> set[str]:
  """The primitives ``model(x)`` runs, inside custom-gradient and other sub-jaxprs too
  (``layers.conv`` wraps XLA's convolution in a custom VJP)."""
  graphdef, state = nnx.split(model)
  fn = lambda state, x: nnx.merge(graphdef, state)(
      x, rngs=nnx.Rngs(dropout=0) if dropout else None)["poses"]

  def walk(jaxpr) -> set[str]:
    names = set()
    for eqn in jaxpr.eqns:
      names.add(eqn.primitive.name)
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          sub = sub.jaxpr if isinstance(sub, jax_core.ClosedJaxpr) else sub
          if isinstance(sub, jax_core.Jaxpr):
            names |= walk(sub)
    return names

  return walk(jax.make_jaxpr(fn)(state, x).jaxpr)


@pytest.mark.parametrize("name", ["w333", "w5_3", "causal", "trajectory", "dense"])
def test_videopose3d_eval_on_one_receptive_field_runs_the_strided_form(name):
  """A batch of windows (T == RF) in eval mode runs ``TemporalModelOptimized1f`` (matmuls
  only, every BatchNorm foldable) with the dilated form's outputs; train mode and dense
  stacks keep the dilated convolutions."""
  config = VP3D_CONFIGS[name]
  model = _model(config)
  rf = model.receptive_field
  x = jnp.asarray(_keypoints((3, rf, config.num_joints_in, config.in_features)))
  dilated = np.asarray(model.dilated(model._flatten(x)))
  got = _poses(model, x)
  assert got.shape == (3, 1, config.num_joints_out, 3)
  np.testing.assert_allclose(got.reshape(dilated.shape), dilated, rtol=0,
                             atol=_close_tol(dilated))
  strided = "conv_general_dilated" not in _primitives(model, x)
  assert strided == (not config.dense)
  # The strided path tags its convolutions: prepare_for_inference folds every BatchNorm.
  pairs = inference.conv_batch_norm_pairs(model, tuple(x.shape))
  assert len(pairs) == len(model.batch_norms())
  model.train()
  assert "conv_general_dilated" in _primitives(model, x, dropout=True)


def test_videopose3d_output_frame_sees_only_its_window():
  config = VP3D.tiny(filter_widths=(3, 3, 3))
  model = _model(config)
  x = _keypoints((1, 40, 5, 2))
  base = _poses(model, x)
  t = 6
  y = x.copy()
  y[:, t + 27:] += 5.0  # after frame t's window ([t, t + 26])
  y[:, :t] -= 5.0  # before it
  assert np.array_equal(_poses(model, y)[:, t], base[:, t])
  y = x.copy()
  y[:, t + 26] += 1.0
  assert not np.allclose(_poses(model, y)[:, t], base[:, t])


def test_videopose3d_causal_residual_is_the_last_frames():
  """With every residual branch silenced (BN scale = bias = 0) the output is the shrunken
  expand features at the crop position: the window centre, or its end when causal."""
  widths = (3, 3, 3)
  outputs = {}
  for causal in (False, True):
    model = _model(VP3D.tiny(filter_widths=widths, causal=causal), seed=0)
    for bn in model.layers_bn:
      bn.scale.set_value(jnp.zeros_like(bn.scale[...]))
      bn.bias.set_value(jnp.zeros_like(bn.bias[...]))
    outputs[causal] = _poses(model, _keypoints((1, 60, 5, 2)))
  lag = sum(temporal.temporal_pads(widths)[1:])  # 3 + 9 expand frames
  np.testing.assert_array_equal(outputs[True][:, :-lag], outputs[False][:, lag:])
  assert not np.allclose(outputs[True], outputs[False])


def test_videopose3d_dense_equals_zero_inserted_dilation():
  """A dense kernel with zeros between the dilated taps is the dilated convolution."""
  widths = (3, 3, 3)
  dilated = _model(VP3D.tiny(filter_widths=widths))
  dense = _model(VP3D.tiny(filter_widths=widths, dense=True))
  nnx.update(dense, nnx.state(dilated, nnx.Not(nnx.PathContains("layers_conv"))))
  for i, d in enumerate(temporal.dilations(widths)):
    kernel = np.asarray(dilated.layers_conv[2 * i].kernel[...])
    wide = np.zeros(dense.layers_conv[2 * i].kernel.shape, np.float32)
    wide[::d] = kernel
    dense.layers_conv[2 * i].kernel.set_value(jnp.asarray(wide))
    dense.layers_conv[2 * i + 1].kernel.set_value(dilated.layers_conv[2 * i + 1].kernel[...])
  x = _keypoints((2, 30, 5, 2))
  want = _poses(dilated, x)
  np.testing.assert_allclose(_poses(dense, x), want, rtol=0, atol=_close_tol(want))


@pytest.mark.parametrize("name", ["w333", "w33333", "w111", "w5_3", "w3", "dense", "trajectory"])
def test_videopose3d_export_convert_round_trip(name):
  config = VP3D_CONFIGS[name]
  model = _model(config, seed=5)
  state_dict = convert.export_state_dict(model, config)
  assert "expand_conv.weight" in state_dict and "expand_bn.num_batches_tracked" in state_dict
  assert state_dict["expand_conv.weight"].shape == (
      config.channels, config.num_joints_in * 2, config.filter_widths[0])
  # Dense kernels 3,7,19 also read as dilated widths 3,7,19: the user says which.
  user = {"original_args": ["-arc", "3,3,3", "--dense", "-ch", "32"]} if config.dense else {}
  restored, inferred, report = convert.convert_state_dict(state_dict, **user)
  assert inferred == config and report.ok
  restored.eval()
  x = _keypoints((2, model.receptive_field + 2, config.num_joints_in, 2))
  np.testing.assert_array_equal(_poses(restored, x), _poses(model, x))


def test_videopose3d_causal_and_dropout_come_from_the_config():
  config = VP3D_CONFIGS["causal"].replace(dropout=0.1)
  model = _model(config)
  state_dict = convert.export_state_dict(model, config)
  _, inferred, _ = convert.convert_state_dict(state_dict)
  assert inferred == config.replace(causal=False, dropout=0.25)  # invisible in the weights
  restored, _, _ = convert.convert_state_dict(state_dict, config)
  restored.eval()
  x = _keypoints((1, 50, 5, 2))
  np.testing.assert_array_equal(_poses(restored, x), _poses(model, x))


def test_odd_input_channels_need_a_config():
  config = VP3D_CONFIGS["xyz_in"]  # 5 joints x 3 features = 15 input channels
  model = _model(config)
  state_dict = convert.export_state_dict(model, config)
  with pytest.raises(convert.CheckpointError, match="15 input channels"):
    convert.convert_state_dict(state_dict)
  restored, _, _ = convert.convert_state_dict(state_dict, config)
  restored.eval()
  x = _keypoints((1, 9, 5, 3))
  np.testing.assert_array_equal(_poses(restored, x), _poses(model, x))


def test_dense_detection_from_kernel_sizes():
  shapes = {"expand_conv.weight": (8, 10, 3), "shrink.weight": (15, 8, 1)}
  for i, k in enumerate((7, 19)):
    shapes[f"layers_conv.{2 * i}.weight"] = (8, 8, k)
    shapes[f"layers_conv.{2 * i + 1}.weight"] = (8, 8, 1)
  # Kernels 3, 7, 19 are dense widths 3, 3, 3 or dilated widths 3, 7, 19: not guessed.
  with pytest.raises(core.CheckpointError, match="fit two architectures: dense filter widths "
                     "3,3,3 .-arc 3,3,3 --dense. or dilated widths 3,7,19"):
    temporal_convert.temporal_widths(shapes)
  assert temporal_convert.temporal_widths(shapes, dense=True) == ((3, 3, 3), True)
  assert temporal_convert.temporal_widths(shapes, dense=False) == ((3, 7, 19), False)
  assert temporal_convert.temporal_widths(shapes, filter_widths="3,3,3") == ((3, 3, 3), True)
  assert temporal_convert.temporal_widths(shapes, filter_widths=(3, 7, 19)) == ((3, 7, 19), False)
  with pytest.raises(core.CheckpointError, match="do not fit the given filter widths 3,3"):
    temporal_convert.temporal_widths(shapes, filter_widths=(3, 3))
  shapes["layers_conv.2.weight"] = (8, 8, 5)  # (5 - 1) / 9 is no width: dilated 3, 7, 5
  assert temporal_convert.temporal_widths(shapes) == ((3, 7, 5), False)
  shapes["layers_conv.2.weight"] = (8, 8, 4)
  with pytest.raises(core.CheckpointError, match="odd"):
    temporal_convert.temporal_widths(shapes)


def test_trajectory_model_converts_from_its_key(tmp_path):
  torch = pytest.importorskip("torch")
  pos_config, traj_config = VP3D.tiny(), VP3D.tiny(num_joints_out=1)
  pos, traj = _model(pos_config, 1), _model(traj_config, 2)
  to_torch = lambda sd: collections.OrderedDict(
      (k, torch.from_numpy(np.array(v))) for k, v in sd.items())
  path = tmp_path / "semi.bin"
  torch.save({"epoch": 3, "model_pos": to_torch(convert.export_state_dict(pos, pos_config)),
              "model_traj": to_torch(convert.export_state_dict(traj, traj_config))}, path)
  restored, config, _ = convert.convert_file(path, key="model_traj")
  assert config == traj_config
  restored.eval()
  x = _keypoints((1, 12, 5, 2))
  assert _poses(restored, x).shape == (1, 4, 1, 3)
  np.testing.assert_array_equal(_poses(restored, x), _poses(traj, x))
  _, config, _ = convert.convert_file(path)  # model_pos is the default wrapper
  assert config == pos_config


def test_videopose3d_bad_input():
  model = _model(VP3D.tiny())  # 5 joints, 9 frames
  with pytest.raises(ValueError, match=r"\[B, T, 5, 2\]"):
    model(jnp.zeros((2, 12, 17, 2)))
  with pytest.raises(ValueError, match=r"\[B, T, 5, 2\]"):
    model(jnp.zeros((2, 12, 5, 3)))
  with pytest.raises(ValueError, match=r"\[B, T, 5, 2\]"):
    model(jnp.zeros((12, 5, 2)))
  with pytest.raises(ValueError, match="at least 9 frames"):
    model(jnp.zeros((2, 8, 5, 2)))
  with pytest.raises(ValueError, match="exactly 9 frames"):
    model.single_frame(jnp.zeros((2, 10, 5, 2)))
  for bad in ({"filter_widths": (3, 2)}, {"filter_widths": ()}, {"dropout": 1.0}):
    with pytest.raises(ValueError):
      build_model(VP3D.tiny(**bad))


def test_train_mode_needs_rngs_and_is_random_per_key():
  model = _model(VP3D.tiny(dropout=0.5))
  model.train()
  x = _keypoints((2, 9, 5, 2))
  with pytest.raises(ValueError, match="rngs=nnx.Rngs"):
    model(x)
  run = nnx.jit(lambda m, x, rngs: m.single_frame(x, rngs=rngs)["poses"])
  a = run(model, x, nnx.Rngs(dropout=0))
  b = run(model, x, nnx.Rngs(dropout=0))
  c = run(model, x, nnx.Rngs(dropout=1))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_jit_train_step_updates_batch_norm_and_matches_eager():
  model = _model(VP3D.tiny())
  model.train()
  graphdef, state = nnx.split(model)
  x = _keypoints((4, 9, 5, 2))

  @jax.jit
  def forward(state, x, key):
    m = nnx.merge(graphdef, state)
    out = m.single_frame(x, rngs=nnx.Rngs(dropout=key))["poses"]
    return out, nnx.state(m)

  out, new_state = forward(state, x, jax.random.key(0))
  assert out.shape == (4, 1, 5, 3)
  old_mean = np.asarray(model.expand_bn.mean[...])
  nnx.update(model, new_state)
  assert not np.allclose(np.asarray(model.expand_bn.mean[...]), old_mean)
  model.set_bn_momentum(0.001)
  assert model.expand_bn.momentum == pytest.approx(0.999)
  model.eval()
  eager = np.asarray(model(x)["poses"])
  jitted = _poses(model, x)
  np.testing.assert_allclose(jitted, eager, rtol=0, atol=_close_tol(eager))


@pytest.mark.parametrize("family", ["videopose3d", "rie"])
def test_bfloat16_close_to_float32(family):
  config = VP3D.tiny() if family == "videopose3d" else RIE.tiny()
  model = _model(config)
  low = _model(config.replace(dtype="bfloat16"))
  nnx.update(low, nnx.state(model))
  x = _keypoints((2, 9, 5 if family == "videopose3d" else 17, 2))
  want = _poses(model, x)
  got = _poses(low, x)
  assert got.dtype == np.float32
  # bfloat16 keeps 8 significant bits (relative rounding 2^-8 ~ 0.4% per operation).
  err = float(np.max(np.abs(np.asarray(got) - want)))
  assert err <= 0.05 * float(np.max(np.abs(want))), err


# ---------------------------------------------------------------------------------------
# RIE
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_rie_stages_shapes_and_strided_equals_dilated(stage):
  config = RIE.tiny(stage=stage)
  model = _model(config)
  assert model.receptive_field == 9
  assert (model.FuseBlocks is None) == (stage == 1)
  assert model.Integration_Torso.fc_1.in_features == (2 if stage == 1 else 3) * 8
  x = _keypoints((3, 9, 17, 2))
  strided = _poses(model, x)
  assert strided.shape == (3, 1, 17, 3) and strided.dtype == np.float32
  dilated_model = _model(config.replace(optimize_1f=False))
  nnx.update(dilated_model, nnx.state(model))
  dilated = _poses(dilated_model, x)
  np.testing.assert_allclose(dilated, strided, rtol=0, atol=_close_tol(strided))


def test_rie_decoders_write_their_own_joints_in_input_order():
  model = _model(RIE.tiny())
  x = _keypoints((2, 9, 17, 2))
  base = _poses(model, x)
  for group, joints in rie.RIE_GROUPS:
    fc_2 = getattr(model, f"Integration_{group}").fc_2
    old = fc_2.bias[...]
    fc_2.bias.set_value(old + 1.0)
    changed = np.any(_poses(model, x) != base, axis=(0, 1, 3))
    fc_2.bias.set_value(old)
    assert sorted(np.flatnonzero(changed)) == sorted(joints), group


def test_rie_joint_reordering_traces_in_float32_and_float64_in_one_process():
  """One process may jit the model in float32 and later under ``jax.enable_x64`` (the
  float64 checks of the inference path do, after other tests). The model's final joint
  reordering once failed to lower there (MLIR verifier error, an int64 index meeting the
  other mode's cached lowering of ``jnp.take``); with either mode first."""
  reorder = lambda grouped: jnp.take(grouped, rie._RIE_UNGROUP, axis=1)
  grouped = np.arange(2 * 17 * 3, dtype=np.float32).reshape(2, 17, 3)
  want = grouped[:, np.argsort(np.concatenate([j for _, j in rie.RIE_GROUPS]))]
  np.testing.assert_array_equal(jax.jit(reorder)(grouped), want)
  with jax.enable_x64(True):
    np.testing.assert_array_equal(jax.jit(reorder)(grouped.astype(np.float64)), want)
  np.testing.assert_array_equal(jax.jit(reorder)(grouped), want)


def test_rie_relative_encodings():
  """Group inputs in the original's channel layout (channel = 2 * joint + coordinate)."""
  model = _model(RIE.tiny())
  x = _keypoints((2, 9, 17, 2))
  flat = x.reshape(2, 9, 34)
  minus_root = flat - np.tile(flat[:, :, 0:2], (1, 1, 17))
  minus_centre = flat - flat[:, 4:5]
  inputs = [np.asarray(g) for g in model._group_inputs(jnp.asarray(x))]
  larm = np.concatenate([e[:, :, 28:34] for e in (flat, minus_root, minus_centre)], -1)
  torso = np.concatenate([e[:, :, s] for e in (flat, minus_root, minus_centre)
                          for s in (slice(0, 2), slice(14, 22))], -1)
  np.testing.assert_allclose(inputs[1], larm, rtol=0, atol=1e-6)
  np.testing.assert_allclose(inputs[0], torso, rtol=0, atol=1e-6)
  # Only the centre frame reaches GlobalInfo: moving the others changes only local terms.
  y = x.copy()
  y[:, :4] += 1.0
  assert not np.allclose(_poses(model, y), _poses(model, x))


def test_rie_dense_and_causal():
  x = _keypoints((2, 15, 17, 2))
  dense = _model(RIE.tiny(filter_widths=(5, 3), dense=True, optimize_1f=False))
  assert dense.total_causal_shift == 0
  assert dense.LocalLayer_Torso.layers_conv[0].kernel.shape[0] == 11  # (3 - 1) * 5 + 1
  assert _poses(dense, x).shape == (2, 1, 17, 3)
  # Causal: the strided crops (last frame of each group) agree with the dilated ones. The
  # original crashes here because its strided crops reuse the dilated shifts.
  config = RIE.tiny(filter_widths=(5, 3), causal=True, stage=1)
  strided, dilated = _model(config), _model(config.replace(optimize_1f=False))
  nnx.update(dilated, nnx.state(strided))
  assert strided.total_causal_shift == 7
  want = _poses(dilated, x)
  np.testing.assert_allclose(_poses(strided, x), want, rtol=0, atol=_close_tol(want))
  # ... and differ from the symmetric model on the same weights.
  symmetric = _model(config.replace(causal=False))
  nnx.update(symmetric, nnx.state(strided))
  assert not np.allclose(_poses(symmetric, x), want)


@pytest.mark.parametrize("config", [
    RIE.tiny(stage=1), RIE.tiny(stage=3), RIE.tiny(filter_widths=(3, 3, 3), latent_features=6),
    RIE.tiny(filter_widths=(3, 3, 3), dense=True, optimize_1f=False),
], ids=["stage1", "stage3", "w333", "dense"])
def test_rie_export_convert_round_trip(config):
  model = _model(config, seed=7)
  state_dict = convert.export_state_dict(model, config)
  assert state_dict["GlobalInfo.layers.1.batch_norm2.running_var"].shape == (32,)
  assert ("FuseBlocks.4.fc_2.bias" in state_dict) == (config.stage != 1)
  user = {"overrides": {"dense": True}} if config.dense else {}
  restored, inferred, report = convert.convert_state_dict(state_dict, **user)
  assert inferred == config and report.ok
  restored.eval()
  x = _keypoints((2, model.receptive_field, 17, 2))
  np.testing.assert_array_equal(_poses(restored, x), _poses(model, x))


def test_rie_stage2_reads_as_stage3_with_identical_results():
  config = RIE.tiny(stage=2)
  model = _model(config)
  restored, inferred, _ = convert.convert_state_dict(convert.export_state_dict(model, config))
  assert inferred == config.replace(stage=3)
  restored.eval()
  x = _keypoints((1, 9, 17, 2))
  np.testing.assert_array_equal(_poses(restored, x), _poses(model, x))


def test_rie_trainable_per_stage_and_stage2_initialisation():
  def paths(model, stage):
    return {"/".join(map(str, p)) for p, _ in
            nnx.to_flat_state(nnx.state(model, rie.rie_trainable(stage)))}

  stage1 = _model(RIE.tiny(stage=1), seed=1)
  all_params = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(stage1, nnx.Param))}
  assert paths(stage1, 1) == all_params
  # What convert_state_dict(stage1_sd, stage2_config, allow_partial=True, select=...) does,
  # on a randomly initialised stage-2 model (eager RIE initialisation is slow on CPU).
  stage2 = _model(RIE.tiny(stage=2), seed=2)
  report = core.map_state_dict(stage2, convert.export_state_dict(stage1, stage1.config),
                               select=rie_family.rie_encoders_select)
  assert not report.unexpected and not report.mismatched
  core.apply_assignments(stage2, report.assigned)
  trained = paths(stage2, 2)
  assert trained and all(p.startswith(("FuseBlocks/", "Integration_")) for p in trained)
  assert not any(p.startswith(("LocalLayer_", "GlobalInfo/")) for p in trained)
  assert all(p.startswith(("FuseBlocks/", "Integration_")) for p in report.missing)
  assert all(k.startswith("Integration_") for k in report.skipped if "num_batches" not in k)
  np.testing.assert_array_equal(stage2.LocalLayer_RLeg.shrink.kernel[...],
                                stage1.LocalLayer_RLeg.shrink.kernel[...])
  full = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(stage2, nnx.Param))}
  assert paths(stage2, 3) == full
  # Gradients only for the stage's parameters.
  stage2.eval()
  x = _keypoints((2, 9, 17, 2))
  grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(x)["poses"] ** 2),
                           argnums=nnx.DiffState(0, rie.rie_trainable(2))))(stage2)
  assert {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(grads)} == trained
  with pytest.raises(ValueError, match="stage"):
    rie.rie_trainable(4)


def test_rie_bad_input_and_config():
  model = _model(RIE.tiny())
  with pytest.raises(ValueError, match="17 Human3.6M joints"):
    model(jnp.zeros((2, 9, 16, 2)))
  with pytest.raises(ValueError, match="17 Human3.6M joints"):
    model(jnp.zeros((2, 9, 17, 3)))
  with pytest.raises(ValueError, match="exactly receptive_field=9"):
    model(jnp.zeros((2, 11, 17, 2)))
  with pytest.raises(ValueError, match="optimize_1f=False"):
    build_model(RIE.tiny(dense=True))
  with pytest.raises(ValueError, match="stage"):
    build_model(RIE.tiny(stage=0))
  model.train()
  with pytest.raises(ValueError, match="rngs=nnx.Rngs"):
    model(jnp.zeros((2, 9, 17, 2)))
  run = nnx.jit(lambda m, x, rngs: m(x, rngs=rngs)["poses"])
  x = _keypoints((4, 9, 17, 2))
  a, b = run(model, x, nnx.Rngs(dropout=0)), run(model, x, nnx.Rngs(dropout=1))
  assert a.shape == (4, 1, 17, 3) and not np.allclose(a, b)


# ---------------------------------------------------------------------------------------
# Checkpoint refusal and family recognition
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [VP3D.tiny(), RIE.tiny()], ids=["videopose3d", "rie"])
def test_bad_checkpoints_are_refused_by_name(config):
  state_dict = convert.export_state_dict(_model(config), config)
  prefix = "" if config.name == "videopose3d" else "LocalLayer_LArm."
  missing = dict(state_dict)
  del missing[f"{prefix}layers_bn.1.running_var"]
  with pytest.raises(convert.CheckpointError, match=f"{prefix.replace('.', '/')}layers_bn/1/var"):
    convert.convert_state_dict(missing)
  extra = {**state_dict, f"{prefix}layers_conv.9.bias": np.zeros(3, np.float32)}
  with pytest.raises(convert.CheckpointError, match=f"{prefix}layers_conv.9.bias"):
    convert.convert_state_dict(extra, config)
  shaped = dict(state_dict)
  shaped[f"{prefix}shrink.bias"] = np.zeros(7, np.float32)
  with pytest.raises(convert.CheckpointError, match=f"{prefix}shrink.bias"):
    convert.convert_state_dict(shaped)
  odd = dict(state_dict)
  del odd[f"{prefix}layers_conv.1.weight"]
  with pytest.raises(convert.CheckpointError, match="layers_conv"):
    convert.convert_state_dict(odd)


def test_families_recognise_only_their_checkpoints():
  shapes = {
      "videopose3d": core.shape_table(convert.export_state_dict(_model(VP3D.tiny()), VP3D.tiny())),
      "rie": core.shape_table(convert.export_state_dict(_model(RIE.tiny()), RIE.tiny())),
  }
  pose_resnet = resnet.PoseResNetConfig.tiny(num_joints=3)
  shapes["pose_resnet"] = core.shape_table(
      convert.export_state_dict(_model(pose_resnet), pose_resnet))
  for name, family in (("videopose3d", videopose3d_family.VIDEOPOSE3D),
                       ("rie", rie_family.RIE)):
    for other, table in shapes.items():
      inferred = family.infer_config(table)
      assert (inferred is not None) == (other == name), (name, other)
  for name, table in shapes.items():
    assert convert.infer_model_config({k: np.zeros(s) for k, s in table.items()}).name == name


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_saved_checkpoints_convert_identically(tmp_path, legacy):
  torch = pytest.importorskip("torch")
  config = RIE.tiny(stage=1)
  model = _model(config, seed=3)
  state_dict = convert.export_state_dict(model, config)
  path = tmp_path / "rie.bin"
  torch.save({"epoch": 80, "lr": 1e-3, "model_pos": collections.OrderedDict(
      (k, torch.from_numpy(np.array(v))) for k, v in state_dict.items())},
             path, _use_new_zipfile_serialization=not legacy)
  out_dir = tmp_path / "converted"
  assert convert.convert_checkpoint(path, out_dir) == config
  restored, loaded_config = convert.load_converted(out_dir)
  assert loaded_config == config
  restored.eval()
  x = _keypoints((1, 9, 17, 2))
  np.testing.assert_array_equal(_poses(restored, x), _poses(model, x))
