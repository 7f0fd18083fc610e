"""Training checkpoints: checksums, damaged files, fall-back to the previous checkpoint."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxpose import checkpoint as ckpt_lib
from jaxpose.train import loop, state as state_lib, tasks
from tests import fake_task


def _state(scale: float = 1.0, rows: int = 300):
  params = {"w": jnp.arange(rows * 100, dtype=jnp.float32).reshape(rows, 100) * scale,
            "b": jnp.ones(5)}
  return state_lib.init_train_state(params, {}, optax.adam(1e-3), 0)


def _two_checkpoints(workdir: Path):
  """Checkpoints of steps 1 and 2 (different values) in ``workdir``."""
  checkpointer = ckpt_lib.TrainCheckpointer(workdir, async_save=True)
  for step in (1, 2):
    state = _state(step).replace(step=jnp.int32(step))
    checkpointer.save(step, state, {"position": step}, {"epoch": step})
  checkpointer.wait()
  checkpointer.close()


def _largest_array_file(step_dir: Path) -> Path:
  """The biggest data file of the state item (OCDBT: ``ocdbt.process_<i>/d/<hash>``)."""
  files = list((step_dir / "state").glob("ocdbt.process_*/d/*"))
  return max(files, key=lambda p: p.stat().st_size)


def _flip_bytes(step_dir: Path) -> None:
  path = _largest_array_file(step_dir)
  data = bytearray(path.read_bytes())
  for i in range(len(data) // 2, len(data) // 2 + 4):
    data[i] ^= 0x40  # exponent bits: a float becomes ~1e38, as a disk error would make it
  path.write_bytes(bytes(data))


def _flip_every_array_file(step_dir: Path) -> None:
  """Flips bytes in every data file of the state item (small arrays live in the OCDBT
  index file itself)."""
  for path in (step_dir / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      data = bytearray(path.read_bytes())
      data[len(data) // 2] ^= 0x40
      path.write_bytes(bytes(data))


def _truncate(step_dir: Path) -> None:
  path = _largest_array_file(step_dir)
  with open(path, "r+b") as f:
    f.truncate(path.stat().st_size // 2)


DAMAGE = {
    "flipped bytes in an array file": (_flip_bytes, "do not match their checksums"),
    "truncated array file": (_truncate, "its arrays cannot be read"),
    "deleted array file": (lambda d: _largest_array_file(d).unlink(), "cannot be read"),
    "deleted state metadata": (lambda d: (d / "state" / "_METADATA").unlink(),
                               "state metadata cannot be read"),
    "garbled meta JSON": (lambda d: (d / "meta" / "metadata").write_text("{bad"),
                          "its meta item cannot be read"),
    "edited data position": (lambda d: (d / "data" / "metadata").write_text('{"position": 7}'),
                             "its data item does not match its checksum"),
    "deleted state item": (lambda d: shutil.rmtree(d / "state"), "cannot be read"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_named_and_skipped(damage, tmp_path, caplog):
  _two_checkpoints(tmp_path)
  mutate, reason = DAMAGE[damage]
  mutate(tmp_path / "checkpoints" / "2")
  target = _state()
  checkpointer = ckpt_lib.TrainCheckpointer(tmp_path, async_save=False)
  with pytest.raises(ckpt_lib.DamagedCheckpointError) as error:
    checkpointer.restore(target, 2)
  message = str(error.value)
  assert f"{tmp_path}/checkpoints/2 is damaged" in message and reason in message
  assert "\n" not in message and len(message) < 600
  with caplog.at_level(logging.WARNING, logger="jaxpose.checkpoint"):
    state, data, meta = checkpointer.restore_latest_intact(target, set_aside=True)
  assert int(state.step) == 1 and data == {"position": 1} and meta == {"epoch": 1}
  np.testing.assert_array_equal(np.asarray(state.params["w"]), np.asarray(_state(1).params["w"]))
  assert any(f"{tmp_path}/checkpoints/2 is damaged" in r.getMessage() for r in caplog.records)
  assert (tmp_path / "damaged" / "checkpoints_2").is_dir()
  assert list(checkpointer.latest.all_steps()) == [1]
  checkpointer.save(2, _state(2), {"position": 2}, {"epoch": 2})  # the step can be redone
  checkpointer.wait()
  assert list(checkpointer.latest.all_steps()) == [1, 2]
  assert checkpointer.restore(target, 2)[1] == {"position": 2}
  checkpointer.close()


def test_without_a_fallback_every_damaged_checkpoint_is_reported(tmp_path):
  _two_checkpoints(tmp_path)
  for step in (1, 2):
    _flip_bytes(tmp_path / "checkpoints" / str(step))
  checkpointer = ckpt_lib.TrainCheckpointer(tmp_path, async_save=False)
  with pytest.raises(ckpt_lib.DamagedCheckpointError, match="every checkpoint .* is damaged"):
    checkpointer.restore_latest_intact(_state(), set_aside=False)
  assert sorted(checkpointer.latest.all_steps()) == [1, 2]  # read-only: nothing moved
  checkpointer.close()


def test_another_model_is_not_damage_and_moves_nothing(tmp_path):
  _two_checkpoints(tmp_path)
  checkpointer = ckpt_lib.TrainCheckpointer(tmp_path, async_save=False)
  with pytest.raises(ckpt_lib.CheckpointError, match="holds other arrays") as error:
    checkpointer.restore_latest_intact(_state(rows=10), set_aside=True)
  assert not isinstance(error.value, ckpt_lib.DamagedCheckpointError)
  assert "params/w is (300, 100) float32, expected (10, 100) float32" in str(error.value)
  assert sorted(checkpointer.latest.all_steps()) == [1, 2] and not (tmp_path / "damaged").exists()
  with pytest.raises(ckpt_lib.MissingCheckpointError, match=r"no checkpoint of step 5 .* \[1, 2\]"):
    checkpointer.restore(_state(), 5)
  checkpointer.close()


def test_a_damaged_best_checkpoint_is_replaced(tmp_path, caplog):
  checkpointer = ckpt_lib.TrainCheckpointer(tmp_path, async_save=False, best_metric="AP")
  assert checkpointer.maybe_save_best(1, _state(), {}, {}, {"AP": 0.5})
  checkpointer.close()
  (tmp_path / "best" / "1" / "meta" / "metadata").write_text("{bad")
  checkpointer = ckpt_lib.TrainCheckpointer(tmp_path, async_save=False, best_metric="AP")
  with caplog.at_level(logging.WARNING, logger="jaxpose.checkpoint"):
    assert checkpointer.maybe_save_best(2, _state(), {}, {}, {"AP": 0.1})
  assert "best/1 is damaged" in caplog.text
  assert list(checkpointer.best.all_steps()) == [2] and (tmp_path / "damaged" / "best_1").is_dir()
  checkpointer.close()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8", "bool", "uint32", "int32"])
def test_digests_see_one_flipped_bit_and_moved_values(dtype):
  rs = np.random.RandomState(0)
  if dtype == "bool":
    x = rs.rand(64) > 0.5
  elif dtype == "bfloat16":
    x = rs.randn(64).astype(jnp.bfloat16)
  else:
    x = (rs.randn(64) * 50).astype(dtype)
  base = ckpt_lib.tree_digests({"x": jnp.asarray(x)})
  assert base == ckpt_lib.tree_digests({"x": jnp.asarray(x.copy())})
  bits = np.ascontiguousarray(x).view(np.uint8).copy()
  for byte, bit in ((0, 0), (17, 7), (len(bits) - 1, 3)):
    flipped = bits.copy()
    flipped[byte] ^= 1 << bit
    if dtype == "bool":
      flipped[byte] = 1 - bits[byte]
    changed = flipped.view(x.dtype).reshape(x.shape)
    assert ckpt_lib.tree_digests({"x": jnp.asarray(changed)}) != base, (byte, bit)
  swapped = x.copy()
  swapped[[3, 40]] = swapped[[40, 3]]
  if not np.array_equal(swapped, x):
    assert ckpt_lib.tree_digests({"x": jnp.asarray(swapped)}) != base


def test_a_checkpoint_without_checksums_still_restores(tmp_path, caplog):
  """Checkpoints written before the checksums existed: restored, with a warning."""
  _two_checkpoints(tmp_path)
  shutil.rmtree(tmp_path / "checkpoints" / "2" / "checksums")
  checkpointer = ckpt_lib.TrainCheckpointer(tmp_path, async_save=False)
  with caplog.at_level(logging.WARNING, logger="jaxpose.checkpoint"):
    state, data, _ = checkpointer.restore(_state())
  assert int(state.step) == 2 and data == {"position": 2} and "no checksums" in caplog.text
  checkpointer.close()


# ----------------------------------------------------------------------------------------
# The loop: resume and evaluation past a damaged latest checkpoint
# ----------------------------------------------------------------------------------------


def _restore(workdir: Path, config, step=None):
  return fake_task.restore(workdir, config, step)[0]


def test_resume_and_eval_fall_back_past_a_damaged_latest_checkpoint(tmp_path, monkeypatch,
                                                                      caplog):
  monkeypatch.setitem(tasks.TASKS, "fake", fake_task.FakeTask)
  config = fake_task.config()  # 9 steps; checkpoints 2, 4, 6, 8, 9
  loop.train_and_evaluate(config, str(tmp_path))
  want = _restore(tmp_path, config)
  _flip_every_array_file(tmp_path / "checkpoints" / "9")
  with pytest.raises(ckpt_lib.DamagedCheckpointError) as error:
    loop.evaluate(config, str(tmp_path), "9")
  assert isinstance(error.value, loop.USER_ERRORS) and "\n" not in str(error.value)
  assert f"{tmp_path}/checkpoints/9 is damaged" in str(error.value)
  with caplog.at_level(logging.WARNING, logger="jaxpose.checkpoint"):
    metrics = loop.evaluate(config, str(tmp_path))  # the latest intact one: step 8
  assert "checkpoints/9 is damaged" in caplog.text and set(metrics) >= {"MPJPE"}
  assert (tmp_path / "checkpoints" / "9").is_dir()  # evaluation moves nothing
  loop.train_and_evaluate(config, str(tmp_path))  # resumes from 8, redoes step 9
  assert (tmp_path / "damaged" / "checkpoints_9").is_dir()
  got = _restore(tmp_path, config)
  for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert os.path.isfile(tmp_path / "final_metrics.json")
