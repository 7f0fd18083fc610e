"""The lifting pipeline: VideoPose3D's chunked/unchunked windows, the grain stream, loading.

The expected windows below are worked out by hand from VideoPose3D's
``common/generators.py`` (``ChunkedGenerator``: ``n = ceil(T / L)`` chunks, offset ``(n L -
T) // 2``, 2D frames ``[start - pad - shift, end + pad - shift)`` edge padded, flips negate
x and swap ``kps_left``/``kps_right``, cameras negate entries 2 and 7; ``UnchunkedGenerator``:
the whole sequence edge padded by ``(pad + shift, pad - shift)``). During development the
same cases were also compared with the original generators run from a scratch copy: equal
arrays. The frame values encode (frame, joint): 2D ``x = 10 t + k``, ``y = 100 + 10 t + k``;
3D joint ``j`` at ``(10 t + j, 50 + j, 5)``, so the root-relative pose is ``(j, j, 0)`` and
the trajectory ``(10 t, 50, 5)``.
"""
from __future__ import annotations

import numpy as np
import pytest

from jaxpose.data import builders, mocap_format, pipeline, sequences

FLIP = np.array([0, 2, 1])  # joint 0 central, 1 left, 2 right (2D and 3D)
CAMS = np.stack([np.arange(1, 10) + 10 * i for i in range(3)]).astype(np.float32)


def _seqs(lengths=(4, 1), scores=False, with_3d=True):
  kps, pos, sc = [], [], []
  for n in lengths:
    t = np.arange(n)[:, None]
    k = np.arange(3)[None]
    kps.append(np.stack([10 * t + k, 100 + 10 * t + k], -1).astype(np.float32))
    pos.append(np.stack([10 * t + k, 50 + k + 0 * t, 5 + 0 * (t + k)], -1).astype(np.float32))
    sc.append((0.5 + 0.1 * k + 0 * t).astype(np.float32))
  return sequences.from_arrays(kps, CAMS[:len(lengths)], positions_3d=pos if with_3d else None,
                               scores=sc if scores else None, keypoint_flip=FLIP,
                               joint_flip=FLIP, subjects=["S1"] * len(lengths),
                               actions=[f"A{i}" for i in range(len(lengths))])


def _x(frames, joint=0):
  return [10 * f + joint for f in frames]


def test_chunk_pairs_list_each_sequence_unflipped_then_flipped():
  expected = [[0, 0, 2, 0], [0, 2, 4, 0], [0, 4, 6, 0],  # T = 5: 3 chunks, offset 0
              [0, 0, 2, 1], [0, 2, 4, 1], [0, 4, 6, 1],
              [1, 0, 2, 0], [1, 0, 2, 1]]                # T = 2: 1 chunk
  np.testing.assert_array_equal(sequences.chunk_pairs([5, 2], 2, augment=True), expected)
  # T = 4 in chunks of 3: 2 chunks, offset (6 - 4) // 2 = 1
  np.testing.assert_array_equal(sequences.chunk_pairs([4, 0], 3, augment=False),
                                [[0, -1, 2, 0], [0, 2, 5, 0]])


def test_single_frame_windows_are_edge_padded():
  seqs = _seqs()
  spec = sequences.WindowSpec(receptive_field=3)
  pairs = sequences.chunk_pairs(seqs.lengths, 1, augment=False)
  np.testing.assert_array_equal(pairs[:, :3], [[0, 0, 1], [0, 1, 2], [0, 2, 3], [0, 3, 4],
                                               [1, 0, 1]])
  batch = sequences.gather_windows(seqs, pairs, spec)
  assert batch["keypoints_2d"].shape == (5, 3, 3, 2) and batch["positions_3d"].shape == (5, 1, 3, 3)
  windows = [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3], [0, 0, 0]]
  for row, frames in enumerate(windows):
    np.testing.assert_array_equal(batch["keypoints_2d"][row, :, 2, 0], _x(frames, 2))
    np.testing.assert_array_equal(batch["keypoints_2d"][row, :, 2, 1],
                                  [100 + x for x in _x(frames, 2)])
  np.testing.assert_array_equal(batch["positions_3d"][:, 0, :, 0], [[0, 1, 2]] * 5)
  np.testing.assert_array_equal(batch["positions_3d"][:, 0, :, 2], 0)
  np.testing.assert_array_equal(batch["trajectory"][:, 0, 0],
                                [[0, 50, 5], [10, 50, 5], [20, 50, 5], [30, 50, 5], [0, 50, 5]])
  np.testing.assert_array_equal(batch["camera"], CAMS[[0, 0, 0, 0, 1]])
  assert batch["valid"].all() and not batch["flip"].any()
  assert batch["sequence"].tolist() == [0, 0, 0, 0, 1]
  assert batch["start"].tolist() == [0, 1, 2, 3, 0]


def test_longer_chunks_stick_out_and_are_edge_padded():
  seqs = _seqs()
  spec = sequences.WindowSpec(receptive_field=3, chunk_length=3)
  pairs = sequences.chunk_pairs(seqs.lengths, 3, augment=False)
  np.testing.assert_array_equal(pairs, [[0, -1, 2, 0], [0, 2, 5, 0], [1, -1, 2, 0]])
  batch = sequences.gather_windows(seqs, pairs, spec)
  for row, frames in enumerate([[0, 0, 0, 1, 2], [1, 2, 3, 3, 3], [0] * 5]):
    np.testing.assert_array_equal(batch["keypoints_2d"][row, :, 0, 0], _x(frames))
  for row, frames in enumerate([[0, 0, 1], [2, 3, 3], [0, 0, 0]]):
    np.testing.assert_array_equal(batch["trajectory"][row, :, 0, 0], _x(frames))
  np.testing.assert_array_equal(batch["valid"], [[False, True, True], [True, True, False],
                                                 [False, True, False]])


def test_causal_windows_end_at_the_output_frame():
  seqs = _seqs()
  spec = sequences.WindowSpec(receptive_field=5, causal=True)  # pad 2, shift 2
  batch = sequences.gather_windows(seqs, np.array([[0, 1, 2, 0], [0, 3, 4, 0]]), spec)
  np.testing.assert_array_equal(batch["keypoints_2d"][0, :, 0, 0], _x([0, 0, 0, 0, 1]))
  np.testing.assert_array_equal(batch["keypoints_2d"][1, :, 0, 0], _x([0, 0, 1, 2, 3]))


def test_flipped_chunks_mirror_2d_3d_and_camera():
  seqs = _seqs(scores=True)
  spec = sequences.WindowSpec(receptive_field=3)
  batch = sequences.gather_windows(seqs, np.array([[0, 1, 2, 1], [0, 1, 2, 0]]), spec)
  flipped, plain = batch["keypoints_2d"]
  for joint, source in ((0, 0), (1, 2), (2, 1)):  # left and right swap
    np.testing.assert_array_equal(flipped[:, joint, 0], [-x for x in _x([0, 1, 2], source)])
    np.testing.assert_array_equal(flipped[:, joint, 1], [100 + x for x in _x([0, 1, 2], source)])
    np.testing.assert_array_equal(plain[:, joint, 0], _x([0, 1, 2], joint))
  np.testing.assert_allclose(batch["scores_2d"][0, 0], [0.5, 0.7, 0.6])
  np.testing.assert_allclose(batch["scores_2d"][1, 0], [0.5, 0.6, 0.7])
  np.testing.assert_array_equal(batch["positions_3d"][0, 0], [[0, 0, 0], [-2, 2, 0], [-1, 1, 0]])
  np.testing.assert_array_equal(batch["trajectory"][0, 0, 0], [-10, 50, 5])
  np.testing.assert_array_equal(batch["camera"][0], [1, 2, -3, 4, 5, 6, 7, -8, 9])
  np.testing.assert_array_equal(batch["camera"][1], CAMS[0])
  assert batch["flip"].tolist() == [True, False]


def test_eval_sequences_pad_whole_sequences_and_add_the_flipped_copy():
  seqs = _seqs(lengths=(4, 0, 1))
  out = list(sequences.eval_sequences(seqs, sequences.WindowSpec(receptive_field=5),
                                      flip_test=True))
  assert [o["sequence"] for o in out] == [0, 2]  # the empty sequence is skipped
  first = out[0]
  assert first["keypoints_2d"].shape == (2, 8, 3, 2) and first["num_frames"] == 4
  np.testing.assert_array_equal(first["keypoints_2d"][0, :, 1, 0], _x([0, 0, 0, 1, 2, 3, 3, 3], 1))
  np.testing.assert_array_equal(first["keypoints_2d"][1, :, 1, 0],
                                [-x for x in _x([0, 0, 0, 1, 2, 3, 3, 3], 2)])
  np.testing.assert_array_equal(first["camera"][1], [1, 2, -3, 4, 5, 6, 7, -8, 9])
  np.testing.assert_array_equal(first["positions_3d"][:, 2], [[2, 2, 0]] * 4)  # not flipped
  np.testing.assert_array_equal(first["trajectory"][:, 0, 0], [0, 10, 20, 30])
  causal = next(sequences.eval_sequences(seqs, sequences.WindowSpec(5, causal=True)))
  np.testing.assert_array_equal(causal["keypoints_2d"][0, :, 0, 0], _x([0, 0, 0, 0, 0, 1, 2, 3]))
  padded = next(sequences.eval_sequences(seqs, sequences.WindowSpec(5), length_multiple=3))
  np.testing.assert_array_equal(padded["keypoints_2d"][0, :, 0, 0],
                                _x([0, 0, 0, 1, 2, 3, 3, 3, 3, 3]))
  assert padded["num_frames"] == 4 and padded["positions_3d"].shape == (4, 3, 3)


@pytest.mark.parametrize("hosts", [1, 2])
def test_eval_batches_cover_every_chunk_once_in_order(hosts):
  seqs = _seqs(lengths=(4, 1))
  spec = sequences.WindowSpec(receptive_field=3)
  per_host = [list(sequences.eval_batches(seqs, spec, batch_size=2, flip_test=True,
                                          process_index=h, process_count=hosts))
              for h in range(hosts)]
  steps = len(per_host[0])
  assert all(len(b) == steps for b in per_host)
  rows = []
  for step in range(steps):
    merged = np.empty((2 * hosts, 2), np.int64)
    mask = np.empty(2 * hosts, bool)
    for h in range(hosts):
      merged[h::hosts] = np.stack([per_host[h][step]["sequence"], per_host[h][step]["start"]], 1)
      mask[h::hosts] = per_host[h][step]["mask"]
      batch = per_host[h][step]
      np.testing.assert_array_equal(batch["keypoints_2d_flipped"][..., 0, 0],
                                    -batch["keypoints_2d"][..., 0, 0])
      np.testing.assert_array_equal(batch["camera_flipped"][:, 2], -batch["camera"][:, 2])
    rows += merged[mask].tolist()
  assert rows == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0]]
  assert steps == (3 if hosts == 1 else 2)


def _key(batch):
  return list(zip(batch["sequence"].tolist(), batch["start"].tolist(), batch["flip"].tolist()))


def test_train_stream_shuffles_each_epoch_and_resumes_exactly():
  seqs = _seqs(lengths=(4, 1), scores=True)
  spec = sequences.WindowSpec(receptive_field=3)
  pairs = sequences.chunk_pairs(seqs.lengths, 1, True)
  everything = sorted(map(tuple, pairs[:, [0, 1, 3]].tolist()))
  it = sequences.train_iterator(seqs, spec, batch_size=5, seed=3)
  batches = [next(it) for _ in range(4)]
  epoch1 = _key(batches[0]) + _key(batches[1])
  epoch2 = _key(batches[2]) + _key(batches[3])
  assert sorted(epoch1) == everything and sorted(epoch2) == everything  # 10 chunks per epoch
  assert epoch1 != epoch2
  for b in batches:
    assert set(b) == {"keypoints_2d", "scores_2d", "positions_3d", "trajectory", "camera", "flip",
                      "sequence", "start", "valid"}
    # every sample is the window gather_windows makes for its chunk
    pairs = np.stack([b["sequence"], b["start"], b["start"] + 1, b["flip"]], 1)
    direct = sequences.gather_windows(seqs, pairs, spec)
    for key in b:
      np.testing.assert_array_equal(b[key], direct[key])
  state = it.get_state()
  rest = [next(it) for _ in range(3)]
  again = sequences.train_iterator(seqs, spec, batch_size=5, seed=3)
  again.set_state(state)
  for a, b in zip(rest, [next(again) for _ in range(3)]):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  other = sequences.train_iterator(seqs, spec, batch_size=5, seed=4)
  assert _key(next(other)) + _key(next(other)) != epoch1


def test_hosts_and_workers_read_the_same_global_stream():
  seqs = _seqs(lengths=(4, 3, 2))
  spec = sequences.WindowSpec(receptive_field=3)
  single = sequences.train_iterator(seqs, spec, batch_size=4, seed=0)
  hosts = [sequences.train_iterator(seqs, spec, batch_size=2, seed=0, process_index=h,
                                    process_count=2) for h in range(2)]
  workers = sequences.train_iterator(seqs, spec, batch_size=4, seed=0, num_workers=2)
  for _ in range(6):  # several epochs of 18 chunks
    whole = next(single)
    parts = [next(h) for h in hosts]
    merged = [None] * 4
    merged[0::2] = _key(parts[0])
    merged[1::2] = _key(parts[1])
    assert merged == _key(whole)  # each step covers the global batch exactly once
    np.testing.assert_array_equal(next(workers)["keypoints_2d"], whole["keypoints_2d"])


def test_unlabeled_stream_has_no_3d():
  seqs = _seqs(with_3d=False)
  batch = next(sequences.train_iterator(seqs, sequences.WindowSpec(3), batch_size=3, seed=4321))
  assert "positions_3d" not in batch and "trajectory" not in batch
  assert batch["camera"].shape == (3, 9) and batch["keypoints_2d"].shape == (3, 3, 3, 2)


def test_frame_selection_matches_run_py_fetch():
  # (T, downsample, subset) -> frames kept by run.py's fetch (values from VideoPose3D's
  # deterministic_random, which hashes str(T) with sha256)
  assert sequences.frame_selection(100, 2, 0.5) == slice(20, 70, 2)
  assert sequences.frame_selection(37, 1, 0.3) == slice(5, 16, 1)
  assert sequences.frame_selection(10, 3, 0.5) == slice(0, 6, 3)  # round(1.5) == 2
  assert sequences.frame_selection(10, 3) == slice(0, 10, 3)
  with pytest.raises(ValueError, match="subset"):
    sequences.frame_selection(10, 1, 0.0)


# ----------------------------------------------------------------------------------------
# Loading a built dataset
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  builders.build_dataset("synthetic_mocap", data_dir, config="tiny")
  return data_dir


def test_load_sequences_normalises_and_orders(tiny):
  ref = pipeline.DatasetRef("synthetic_mocap", tiny, "train", "tiny")
  seqs = sequences.load_sequences(ref, "gt")
  source = pipeline.prepared_builder(ref).as_data_source("train")
  examples = {(e["action"].decode(), int(e["camera"]["index"])): e
              for e in (source[i] for i in range(len(source)))}
  assert list(zip(seqs.actions, seqs.camera_index.tolist())) == sorted(examples)
  assert seqs.scores is None and seqs.source == "gt"
  for i, key in enumerate(zip(seqs.actions, seqs.camera_index.tolist())):
    ex = examples[key]
    lo, hi = seqs.offsets[i], seqs.offsets[i + 1]
    pixels, _, _ = mocap_format.source_keypoints(ex["keypoints_2d"], "gt")
    w, h = int(ex["camera"]["res_w"]), int(ex["camera"]["res_h"])
    np.testing.assert_allclose(seqs.keypoints[lo:hi], pixels / w * 2 - [1, h / w], atol=1e-6)
    np.testing.assert_array_equal(seqs.positions[lo:hi], ex["positions_3d_camera"])
    np.testing.assert_array_equal(seqs.cameras[i], ex["camera"]["intrinsic"])
  detected = sequences.load_sequences(ref, "detected", actions=["Walk", "Sit"], with_3d=False,
                                      with_scores=True)
  assert set(detected.actions) == {"Walking", "Sitting"} and detected.positions is None
  assert detected.scores is not None and detected.scores.shape == detected.keypoints.shape[:2]
  assert sequences.load_sequences(ref, "detected").scores is None
  with pytest.raises(ValueError, match="'gt' has no scores"):
    sequences.load_sequences(ref, "gt", with_scores=True)
  half = sequences.load_sequences(ref, "gt", subset=0.5, downsample=2)
  expected = sum(len(range(n)[sequences.frame_selection(n, 2, 0.5)]) for n in seqs.lengths)
  assert half.num_frames == expected
  with pytest.raises(KeyError, match="no 2D source 'cpn'; the dataset has gt, detected"):
    sequences.load_sequences(ref, "cpn")
  with pytest.raises(ValueError, match="subjects S9 are not in the split"):
    sequences.load_sequences(ref, "gt", subjects=["S9"])
