"""COCO keypoint AP/AR (pycocotools + HRNet post-processing), OKS-NMS and MPII PCKh.

The COCO ground truth is a small hand-made split (persons of several sizes, a person
without keypoints, a crowd region, an image without annotations). The checks: ground
truth fed back as predictions scores 1.0 everywhere; perturbed predictions score exactly
what pycocotools computes on independently built results; rescoring and (soft) OKS-NMS
follow the originals on hand-made cases; bad input is rejected. MPII: ground truth as
predictions gives 100, a known shift gives the hand-counted PCKh.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
import scipy.io
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from jaxpose.data import keypoints as kp_layout
from jaxpose.data.transforms import box_to_center_scale
from jaxpose.evaluation import coco as coco_eval
from jaxpose.evaluation import mpii, nms

K = 17
SIGMAS = nms.COCO_SIGMAS


# ----------------------------------------------------------------------------------------
# a small COCO ground truth
# ----------------------------------------------------------------------------------------


def _person(rng, ann_id, image_id, box, num_labelled):
  x, y, w, h = box
  kpts = np.zeros((K, 3))
  labelled = rng.choice(K, num_labelled, replace=False)
  kpts[labelled, 0] = np.round(x + rng.uniform(0.05, 0.95, num_labelled) * w, 2)
  kpts[labelled, 1] = np.round(y + rng.uniform(0.05, 0.95, num_labelled) * h, 2)
  kpts[labelled, 2] = rng.choice([1, 2], num_labelled)
  return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": list(map(float, box)),
          "area": float(0.7 * w * h), "iscrowd": 0, "num_keypoints": int(num_labelled),
          "keypoints": kpts.reshape(-1).tolist()}


def _ground_truth():
  """4 images: large/medium persons, one without keypoints, a crowd, an empty image."""
  rng = np.random.default_rng(0)
  images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480}
            for i in (1, 2, 3, 4)]
  anns = [
      _person(rng, 11, 1, (50, 50, 100, 200), 15),     # large (area 14000)
      _person(rng, 12, 1, (300, 100, 40, 80), 9),      # medium (2240)
      _person(rng, 13, 1, (450, 300, 30, 60), 0),      # no keypoints: ignored
      _person(rng, 21, 2, (20, 40, 120, 240), 17),     # large
      _person(rng, 22, 2, (400, 60, 50, 70), 6),       # medium
      _person(rng, 31, 3, (200, 150, 60, 90), 12),     # medium
  ]
  crowd = _person(rng, 23, 2, (200, 200, 200, 150), 0)
  crowd["iscrowd"] = 1
  anns.append(crowd)
  category = {"id": 1, "name": "person", "supercategory": "person",
              "keypoints": list(kp_layout.COCO_KEYPOINT_NAMES),
              "skeleton": [[a + 1, b + 1] for a, b in kp_layout.COCO_SKELETON]}
  return {"images": images, "annotations": anns, "categories": [category]}


def _gt_instances(gt):
  """The evaluable persons (not crowd, with keypoints)."""
  return [a for a in gt["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]


def _predictions_from(anns, rng=None, noise=None, scores=None, box_scores=None):
  """Predictions at the annotations' keypoints (unlabelled ones at the box centre)."""
  kpts, ids, centers, scales = [], [], [], []
  for i, ann in enumerate(anns):
    g = np.asarray(ann["keypoints"], np.float64).reshape(K, 3)
    x, y, w, h = ann["bbox"]
    xy = np.where(g[:, 2:] > 0, g[:, :2], [x + w / 2, y + h / 2])
    if noise is not None:
      xy = xy + rng.normal(0.0, noise[i], xy.shape)
    kpts.append(xy)
    ids.append(ann["image_id"])
    c, s = box_to_center_scale(ann["bbox"], 192 / 256)
    centers.append(c)
    scales.append(s)
  scales = np.stack(scales)
  n = len(anns)
  return coco_eval.KeypointPredictions(
      image_ids=np.asarray(ids), keypoints=np.stack(kpts).astype(np.float32),
      keypoint_scores=(np.ones((n, K), np.float32) if scores is None else scores),
      box_scores=np.ones(n) if box_scores is None else box_scores,
      areas=coco_eval.crop_areas(scales), centers=np.stack(centers), scales=scales)


def _quiet(fn, *args, **kwargs):
  with contextlib.redirect_stdout(io.StringIO()):
    return fn(*args, **kwargs)


def _pycocotools_stats(gt, results):
  """pycocotools alone on an in-memory ground truth and results list."""
  coco = COCO()
  coco.dataset = copy.deepcopy(gt)
  coco.createIndex()
  dt = coco.loadRes(copy.deepcopy(results))
  ev = COCOeval(coco, dt, "keypoints")
  ev.evaluate()
  ev.accumulate()
  ev.summarize()
  return [float(v) for v in ev.stats[:10]]


# ----------------------------------------------------------------------------------------
# COCO AP/AR
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["dict", "file", "coco"])
def test_ground_truth_as_predictions_gives_ap_one(tmp_path, source):
  gt = _ground_truth()
  if source == "file":
    path = tmp_path / "person_keypoints_val.json"
    path.write_text(json.dumps(gt))
    coco_gt = path
  elif source == "coco":
    coco_gt = _quiet(coco_eval.load_coco_ground_truth, gt)
  else:
    coco_gt = gt
  preds = _predictions_from(_gt_instances(gt))
  stats = _quiet(coco_eval.evaluate_coco, preds, coco_gt, tmp_path / "work")
  assert list(stats) == list(coco_eval.COCO_STATS_NAMES)
  assert list(stats.values()) == [1.0] * 10
  assert gt == _ground_truth()  # the caller's dict is left alone
  written = json.loads(coco_eval.results_path(tmp_path / "work").read_text())
  assert len(written) == len(_gt_instances(gt))
  assert [p.name for p in (tmp_path / "work" / "results").iterdir()] == [
      "keypoints_val2017_results.json"]  # no temporary file left behind


def test_perturbed_predictions_match_pycocotools_directly(tmp_path):
  gt = _ground_truth()
  rng = np.random.default_rng(1)
  # Image 3's person gets no prediction; image 4 (no annotations) and image 1 get a
  # false positive each.
  anns = [a for a in _gt_instances(gt) if a["image_id"] != 3]
  fp = [_person(rng, 0, 4, (100, 100, 80, 160), 17), _person(rng, 0, 1, (500, 20, 60, 120), 17)]
  anns = anns + fp
  n = len(anns)
  noise = [0.0, 3.0, 8.0, 1.5, 0.0, 0.0]
  scores = rng.uniform(0.0, 1.0, (n, K)).astype(np.float32)
  scores[0, :] = 0.1  # no keypoint above in_vis_thre: instance score 0
  box_scores = rng.uniform(0.3, 1.0, n)
  preds = _predictions_from(anns, rng, noise, scores, box_scores)
  stats = _quiet(coco_eval.evaluate_coco, preds, gt, tmp_path)

  results = []
  for i in range(n):  # the original's rescoring, written out
    above = [float(s) for s in scores[i] if float(s) > 0.2]
    kpt_score = sum(above) / len(above) if above else 0.0
    flat = []
    for j in range(K):
      flat += [float(preds.keypoints[i, j, 0]), float(preds.keypoints[i, j, 1]),
               float(scores[i, j])]
    results.append({"image_id": int(preds.image_ids[i]), "category_id": 1, "keypoints": flat,
                    "score": kpt_score * box_scores[i]})
  expected = _quiet(_pycocotools_stats, gt, results)
  assert list(stats.values()) == expected
  assert 0.0 < stats["AP"] < 1.0 and stats["AR"] < 1.0
  written = json.loads(coco_eval.results_path(tmp_path).read_text())
  assert len(written) == n  # nothing suppressed: distinct persons
  assert {(r["image_id"], r["score"]) for r in written} == {
      (r["image_id"], r["score"]) for r in results}


def test_mspn_variant_plain_mean_and_no_nms(tmp_path):
  gt = _ground_truth()
  anns = _gt_instances(gt)
  anns = anns + [anns[0]]  # an exact duplicate: kept without NMS
  rng = np.random.default_rng(2)
  scores = rng.uniform(0.0, 1.0, (len(anns), K))
  preds = _predictions_from(anns, scores=scores, box_scores=np.full(len(anns), 0.5))
  results = coco_eval.coco_keypoint_results(preds, in_vis_thre=None, oks_thre=None)
  assert [r["image_id"] for r in results] == [1, 1, 1, 2, 2, 3]  # grouped per image
  order = [0, 1, 5, 2, 3, 4]
  np.testing.assert_array_equal([r["score"] for r in results],
                                scores.mean(axis=1)[order] * 0.5)


def test_duplicates_are_suppressed_per_image(tmp_path):
  gt = _ground_truth()
  anns = _gt_instances(gt)
  dup = copy.deepcopy(anns[0])  # a second detection of person 11, slightly off
  anns = anns + [dup]
  rng = np.random.default_rng(3)
  noise = [0.0] * (len(anns) - 1) + [0.5]
  box_scores = np.ones(len(anns))
  box_scores[-1] = 0.6
  preds = _predictions_from(anns, rng, noise, box_scores=box_scores)
  results = coco_eval.coco_keypoint_results(preds)
  assert len(results) == len(anns) - 1
  assert all(r["score"] == 1.0 for r in results)  # the weaker duplicate went
  soft = coco_eval.coco_keypoint_results(preds, soft_nms=True)
  assert len(soft) == len(anns)  # soft NMS only reorders (fewer than 20 per image)
  stats = _quiet(coco_eval.evaluate_coco, preds, gt, tmp_path)
  assert stats["AP"] == 1.0


def test_results_format_and_grouping():
  gt = _ground_truth()
  anns = _gt_instances(gt)
  order = [3, 0, 2, 1]  # images 2, 1, 2, 1: grouped by first appearance
  preds = _predictions_from([anns[i] for i in order],
                            box_scores=np.array([0.2, 0.9, 0.8, 0.3]))
  results = coco_eval.coco_keypoint_results(preds)
  assert [r["image_id"] for r in results] == [2, 2, 1, 1]
  assert [r["score"] for r in results] == [0.8, 0.2, 0.9, 0.3]  # NMS order within image
  r = results[0]
  assert set(r) == {"image_id", "category_id", "keypoints", "score", "center", "scale"}
  assert r["category_id"] == 1 and len(r["keypoints"]) == 3 * K
  np.testing.assert_array_equal(np.reshape(r["keypoints"], (K, 3))[:, :2], preds.keypoints[2])
  np.testing.assert_array_equal(np.reshape(r["keypoints"], (K, 3))[:, 2], 1.0)


# ----------------------------------------------------------------------------------------
# rescoring and OKS-NMS
# ----------------------------------------------------------------------------------------


def test_rescore_formula():
  s = np.array([[0.1, 0.2, 0.3, 0.9], [0.1, 0.15, 0.2, 0.0], [0.5, 0.5, 0.5, 0.5]])
  got = coco_eval.rescore(s, [0.5, 1.0, 0.8], in_vis_thre=0.2)
  np.testing.assert_array_equal(got, [(0.3 + 0.9) / 2 * 0.5, 0.0, 0.5 * 0.8])
  # The original compared float32 maxima with 0.2 in float64: float32(0.2) counts.
  s32 = np.array([[0.2, 0.4]], np.float32)
  assert coco_eval.rescore(s32, [1.0])[0] == (float(np.float32(0.2)) + float(np.float32(0.4))) / 2
  np.testing.assert_array_equal(coco_eval.rescore(s, [1, 1, 1], None), s.mean(axis=1))


def test_crop_areas():
  _, scale = box_to_center_scale((10, 20, 30, 80), 192 / 256)
  area = coco_eval.crop_areas(scale[None])
  assert area.dtype == np.float64
  # 30x80 widened to 60x80, padded 1.25: (75 x 100) pixels.
  np.testing.assert_allclose(area, [75.0 * 100.0], rtol=1e-6)


def _oks_by_hand(g, d, ag, ad):
  total = 0.0
  for k in range(K):
    dist2 = (d[k, 0] - g[k, 0]) ** 2 + (d[k, 1] - g[k, 1]) ** 2
    total += math.exp(-dist2 / (2 * SIGMAS[k]) ** 2 / ((ag + ad) / 2 + np.spacing(1)) / 2)
  return total / K


def test_oks_iou_by_hand():
  rng = np.random.default_rng(4)
  g = rng.uniform(0, 100, (K, 2))
  d = g + rng.normal(0, 3, (3, K, 2))
  areas = np.array([900.0, 2500.0, 10000.0])
  got = nms.oks_iou(g, d, 1600.0, areas)
  want = [_oks_by_hand(g, d[i], 1600.0, areas[i]) for i in range(3)]
  np.testing.assert_allclose(got, want, rtol=1e-14)
  np.testing.assert_array_equal(nms.oks_iou(g, g[None], 100.0, [100.0]), [1.0])
  # in_vis_thre: the original's mask is the candidates' scores alone.
  scores = np.zeros((3, K))
  scores[0, :5] = 0.9
  got = nms.oks_iou(g, d, 1600.0, areas, in_vis_thre=0.2, keypoint_scores=scores)
  e = np.sum((d[0, :5] - g[:5]) ** 2, -1) / (2 * SIGMAS[:5]) ** 2 / (
      (1600.0 + areas[0]) / 2 + np.spacing(1)) / 2
  np.testing.assert_allclose(got, [np.exp(-e).mean(), 0.0, 0.0], rtol=1e-14)


def _instances():
  """A, B (a near copy of A), C (elsewhere), D (a near copy of C)."""
  rng = np.random.default_rng(5)
  a = rng.uniform(0, 100, (K, 2))
  c = a + 300.0
  kpts = np.stack([a, a + 0.3, c, c - 0.2])
  return kpts, np.full(4, 5000.0)


def test_oks_nms_drops_duplicates():
  kpts, areas = _instances()
  keep = nms.oks_nms(kpts, [0.9, 0.95, 0.5, 0.4], areas, 0.9)
  np.testing.assert_array_equal(keep, [1, 2])
  assert keep.dtype == np.int64
  np.testing.assert_array_equal(nms.oks_nms(kpts, [0.9, 0.95, 0.5, 0.4], areas, 1.0),
                                [1, 0, 2, 3])  # oks <= thresh survives
  # Ties: the later index first, as argsort()[::-1].
  np.testing.assert_array_equal(nms.oks_nms(kpts, [0.5] * 4, areas, 0.9), [3, 1])
  assert nms.oks_nms(np.zeros((0, K, 2)), [], [], 0.9).size == 0


def test_soft_oks_nms_decays_and_reorders():
  kpts, areas = _instances()
  scores = np.array([0.9, 0.8, 0.7, 0.1])
  keep = nms.soft_oks_nms(kpts, scores, areas, 0.9)
  # B decays to ~0.8 * exp(-1 / 0.9) < 0.7: C comes before it.
  np.testing.assert_array_equal(keep, [0, 2, 1, 3])
  many = np.repeat(kpts[:1], 25, axis=0) + np.arange(25)[:, None, None] * 50.0
  assert nms.soft_oks_nms(many, np.linspace(1, 0.1, 25), np.full(25, 5000.0), 0.9).size == 20


# ----------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------


def test_nan_predictions_are_rejected():
  anns = _gt_instances(_ground_truth())
  preds = _predictions_from(anns)
  kpts = preds.keypoints.copy()
  kpts[2, 5, 0] = np.nan
  with pytest.raises(ValueError, match=r"keypoints of instance 2 \(image_id 2\)"):
    coco_eval.KeypointPredictions(preds.image_ids, kpts, preds.keypoint_scores,
                                  preds.box_scores, preds.areas)
  scores = preds.keypoint_scores.copy()
  scores[4, 0] = np.inf
  with pytest.raises(ValueError, match=r"keypoint_scores of instance 4 \(image_id 3\)"):
    coco_eval.KeypointPredictions(preds.image_ids, preds.keypoints, scores,
                                  preds.box_scores, preds.areas)
  box = preds.box_scores.copy()
  box[1] = np.nan
  with pytest.raises(ValueError, match=r"box_scores of instance 1"):
    coco_eval.KeypointPredictions(preds.image_ids, preds.keypoints, preds.keypoint_scores,
                                  box, preds.areas)


def test_shape_mismatches_are_named(tmp_path):
  preds = _predictions_from(_gt_instances(_ground_truth()))
  n = preds.num_instances
  with pytest.raises(ValueError, match=r"keypoint_scores must have shape \(5, 17\)"):
    coco_eval.KeypointPredictions(preds.image_ids, preds.keypoints, np.ones((n, 16)),
                                  preds.box_scores, preds.areas)
  with pytest.raises(ValueError, match=r"image_ids must have shape"):
    coco_eval.KeypointPredictions(preds.image_ids[:-1], preds.keypoints,
                                  preds.keypoint_scores, preds.box_scores, preds.areas)
  with pytest.raises(ValueError, match=r"keypoints must be \[N, K, 2\]"):
    coco_eval.KeypointPredictions(preds.image_ids, preds.keypoints[..., :1],
                                  preds.keypoint_scores, preds.box_scores, preds.areas)
  # [N, K, 1] maxima as the decoders return them are accepted.
  p = coco_eval.KeypointPredictions(preds.image_ids, preds.keypoints,
                                    preds.keypoint_scores[..., None], preds.box_scores,
                                    preds.areas)
  assert p.keypoint_scores.shape == (n, K)
  gt = _ground_truth()
  bad_ids = coco_eval.KeypointPredictions(preds.image_ids + 100, preds.keypoints,
                                          preds.keypoint_scores, preds.box_scores, preds.areas)
  with pytest.raises(ValueError, match="not in the ground truth"):
    _quiet(coco_eval.evaluate_coco, bad_ids, gt, tmp_path)
  fewer = coco_eval.KeypointPredictions(preds.image_ids, preds.keypoints[:, :16],
                                        preds.keypoint_scores[:, :16], preds.box_scores,
                                        preds.areas)
  with pytest.raises(ValueError, match="16 keypoints, the ground truth 17"):
    _quiet(coco_eval.evaluate_coco, fewer, gt, tmp_path)
  broken = _ground_truth()
  del broken["annotations"][1]["num_keypoints"]
  with pytest.raises(ValueError, match=r"annotation 12 lacks \['num_keypoints'\]"):
    coco_eval.load_coco_ground_truth(broken)


def test_concatenate_batches():
  preds = _predictions_from(_gt_instances(_ground_truth()))
  parts = [coco_eval.KeypointPredictions(
      preds.image_ids[s], preds.keypoints[s], preds.keypoint_scores[s], preds.box_scores[s],
      preds.areas[s]) for s in (slice(0, 2), slice(2, None))]
  joined = coco_eval.KeypointPredictions.concatenate(parts)
  np.testing.assert_array_equal(joined.keypoints, preds.keypoints)
  assert joined.centers is None


# ----------------------------------------------------------------------------------------
# detections and report
# ----------------------------------------------------------------------------------------


def test_load_person_detections(tmp_path):
  dets = [
      {"image_id": 7, "category_id": 1, "bbox": [10, 20, 30, 80], "score": 0.9},
      {"image_id": 3, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.05},
      {"image_id": 7, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.99},
      {"image_id": 7, "category_id": 1, "bbox": [50.5, 60, 20, 40], "score": 0.4},
      {"image_id": 5, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.3},
  ]
  path = tmp_path / "COCO_val2017_detections_AP_H_56_person.json"
  path.write_text(json.dumps(dets))
  loaded = coco_eval.load_person_detections(path)
  assert list(loaded) == [7, 3, 5]
  np.testing.assert_array_equal(loaded[7].boxes, [[10, 20, 30, 80], [50.5, 60, 20, 40]])
  np.testing.assert_array_equal(loaded[7].scores, [0.9, 0.4])
  assert list(coco_eval.load_person_detections(path, image_thre=0.3)) == [7, 5]
  assert list(coco_eval.load_person_detections(dets, image_ids=[5, 3])) == [3, 5]
  centers, scales = loaded[7].centers_scales(192 / 256)
  c, s = box_to_center_scale([50.5, 60, 20, 40], 192 / 256)
  np.testing.assert_array_equal(centers[1], c)
  np.testing.assert_array_equal(scales[1], s)
  bad = copy.deepcopy(dets)
  bad[3]["bbox"][2] = float("nan")
  with pytest.raises(ValueError, match=r"entry 3 \(image_id 7\) bbox: not finite"):
    coco_eval.load_person_detections(bad)
  with pytest.raises(ValueError, match="lacks"):
    coco_eval.load_person_detections([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1}])
  with pytest.raises(ValueError, match="no detections"):
    coco_eval.load_person_detections([])


def test_name_value_table():
  stats = dict(zip(coco_eval.COCO_STATS_NAMES, np.linspace(0.1, 1.0, 10)))
  lines = []
  text = coco_eval.print_name_value_table(stats, "pose_hrnet", lines.append)
  assert lines == text.splitlines()
  assert lines[0] == ("| Arch | AP | Ap .5 | AP .75 | AP (M) | AP (L) | AR | AR .5 | AR .75 "
                      "| AR (M) | AR (L) |")
  assert lines[1] == "|---" * 11 + "|"
  assert lines[2] == ("| pose_hrnet | 0.100 | 0.200 | 0.300 | 0.400 | 0.500 | 0.600 | 0.700 "
                      "| 0.800 | 0.900 | 1.000 |")
  long = coco_eval.format_name_value_table({"AP": 0.5}, "pose_hrnet_w32_256x192")
  assert long.splitlines()[2] == "| pose_hrn... | 0.500 |"


# ----------------------------------------------------------------------------------------
# MPII PCKh
# ----------------------------------------------------------------------------------------


def _mpii_ground_truth(n=12, seed=6):
  rng = np.random.default_rng(seed)
  joints = rng.uniform(50, 500, (n, 16, 2))
  visible = rng.uniform(size=(n, 16)) > 0.2
  visible[:, 9] = True
  joints[~visible] = np.nan  # never read
  top_left = rng.uniform(50, 400, (n, 2))
  headboxes = np.stack([top_left, top_left + rng.uniform(20, 60, (n, 2))], axis=1)
  return mpii.MPIIGroundTruth(joints, visible, headboxes)


def test_mpii_layout_matches_jaxpose_order():
  short = {"right_ankle": "rank", "right_knee": "rkne", "right_hip": "rhip",
           "left_hip": "lhip", "left_knee": "lkne", "left_ankle": "lank", "pelvis": "pelv",
           "thorax": "thrx", "upper_neck": "neck", "head_top": "head",
           "right_wrist": "rwri", "right_elbow": "relb", "right_shoulder": "rsho",
           "left_shoulder": "lsho", "left_elbow": "lelb", "left_wrist": "lwri"}
  assert tuple(short[n] for n in kp_layout.MPII_JOINT_NAMES) == mpii.MPII_EVAL_JOINTS


def test_pckh_ground_truth_as_predictions_is_100():
  gt = _mpii_ground_truth()
  preds = np.where(gt.visible[..., None], gt.joints, 0.0) - 1.0  # 0-based
  result = mpii.evaluate_pckh(preds.astype(np.float32), gt)
  assert list(result) == list(mpii.PCKH_NAMES)
  assert all(v == 100.0 for v in result.values())


def test_pckh_known_shift_by_hand():
  n = 12
  gt = _mpii_ground_truth(n)
  # Head-box diagonals chosen so that a 3-pixel error is 0.105, 0.3, 0.45, 0.6 or 1.2
  # head sizes (head size = 0.6 * diagonal).
  ratios = np.array([0.105, 0.3, 0.45, 0.6, 1.2, 0.105, 0.3, 0.45, 0.6, 1.2, 0.3, 0.45])
  diag = 3.0 / (0.6 * ratios)
  top_left = gt.headboxes[:, 0]
  direction = np.array([0.6, 0.8])
  gt = mpii.MPIIGroundTruth(gt.joints, gt.visible,
                            np.stack([top_left, top_left + diag[:, None] * direction], 1))
  preds = np.nan_to_num(gt.joints) - 1.0 + 3.0 * np.array([0.8, -0.6])
  preds[:, 6:8] += 100.0  # pelvis and thorax: wrong, but outside the table
  result = mpii.evaluate_pckh(preds, gt)

  def pckh(j, threshold):
    visible = [i for i in range(n) if gt.visible[i, j]]
    return 100.0 * sum(ratios[i] <= threshold for i in visible) / len(visible)

  names = mpii.MPII_EVAL_JOINTS
  for part in ("sho", "elb", "wri", "hip", "kne", "ank"):
    expected = 0.5 * (pckh(names.index("l" + part), 0.5) + pckh(names.index("r" + part), 0.5))
    key = {"sho": "Shoulder", "elb": "Elbow", "wri": "Wrist", "hip": "Hip", "kne": "Knee",
           "ank": "Ankle"}[part]
    assert result[key] == pytest.approx(expected, rel=1e-12)
  assert result["Head"] == pytest.approx(pckh(9, 0.5), rel=1e-12)
  used = [j for j in range(16) if j not in (6, 7)]
  visible = [(i, j) for j in used for i in range(n) if gt.visible[i, j]]
  assert result["Mean"] == pytest.approx(
      100.0 * sum(ratios[i] <= 0.5 for i, _ in visible) / len(visible), rel=1e-12)
  # 'Mean@0.1' is the originals' pckAll[11]: threshold 0.11, so 0.105 counts.
  assert mpii.MEAN_AT_01_THRESHOLD == pytest.approx(0.11)
  assert result["Mean@0.1"] == pytest.approx(
      100.0 * sum(ratios[i] <= 0.11 for i, _ in visible) / len(visible), rel=1e-12)
  assert 0 < result["Mean@0.1"] < result["Mean"] < 100


def test_pckh_rejects_bad_predictions():
  gt = _mpii_ground_truth()
  preds = np.zeros((gt.num_persons, 16, 2))
  preds[3, 10, 1] = np.nan
  with pytest.raises(ValueError, match=r"person 3, joint rwri \(10\)"):
    mpii.evaluate_pckh(preds, gt)
  with pytest.raises(ValueError, match=r"preds hold 5 persons, the ground truth 12"):
    mpii.evaluate_pckh(np.zeros((5, 16, 2)), gt)
  with pytest.raises(ValueError, match=r"preds must be \[N, 16, 2\]"):
    mpii.evaluate_pckh(np.zeros((12, 17, 2)), gt)
  boxes = gt.headboxes.copy()
  boxes[2, 1] = boxes[2, 0]
  with pytest.raises(ValueError, match="head box of person 2"):
    mpii.MPIIGroundTruth(gt.joints, gt.visible, boxes)


def test_load_mpii_ground_truth_and_save_predictions(tmp_path):
  gt = _mpii_ground_truth()
  names = np.empty((1, 16), dtype=object)  # a MATLAB cell array, as in gt_valid.mat
  for j, name in enumerate(mpii.MPII_EVAL_JOINTS):
    names[0, j] = np.array([name])
  mat = {"dataset_joints": names,
         "jnt_missing": (~gt.visible).T.astype(np.uint8),
         "pos_gt_src": np.transpose(np.nan_to_num(gt.joints), (1, 2, 0)),
         "headboxes_src": np.transpose(gt.headboxes, (1, 2, 0))}
  path = tmp_path / "gt_valid.mat"
  scipy.io.savemat(path, mat)
  loaded = mpii.load_mpii_ground_truth(path)
  np.testing.assert_array_equal(loaded.visible, gt.visible)
  np.testing.assert_array_equal(loaded.headboxes, gt.headboxes)
  np.testing.assert_array_equal(loaded.joints[gt.visible], gt.joints[gt.visible])
  names[0, 0], names[0, 5] = np.array(["lank"]), np.array(["rank"])
  scipy.io.savemat(path, mat)
  with pytest.raises(ValueError, match="dataset_joints must be"):
    mpii.load_mpii_ground_truth(path)

  preds = np.random.default_rng(7).uniform(0, 100, (4, 16, 2)).astype(np.float32)
  out = mpii.save_mpii_predictions(preds, tmp_path / "out" / "pred.mat")
  np.testing.assert_array_equal(scipy.io.loadmat(out)["preds"], preds + 1.0)


def test_pckh_table_columns():
  gt = _mpii_ground_truth()
  result = mpii.evaluate_pckh(np.nan_to_num(gt.joints) - 1.0, gt)
  lines = mpii.format_name_value_table(result, "pose_hrnet_w32").splitlines()
  assert lines[0] == ("| Arch | Head | Shoulder | Elbow | Wrist | Hip | Knee | Ankle | Mean "
                      "| Mean@0.1 |")
  assert lines[2].startswith("| pose_hrnet_w32 | 100.000 |")


def test_other_keypoint_counts_need_sigmas(tmp_path):
  gt = _ground_truth()
  for ann in gt["annotations"]:  # drop the right ankle: 16 keypoints
    ann["keypoints"] = ann["keypoints"][:-3]
    ann["num_keypoints"] = int(np.count_nonzero(np.asarray(ann["keypoints"])[2::3]))
  anns = _gt_instances(gt)
  full = _predictions_from([dict(a, keypoints=a["keypoints"] + [0.0, 0.0, 0.0]) for a in anns])
  preds = coco_eval.KeypointPredictions(full.image_ids, full.keypoints[:, :16],
                                        full.keypoint_scores[:, :16], full.box_scores,
                                        full.areas)
  with pytest.raises(ValueError, match="default COCO sigmas are for 17 keypoints"):
    _quiet(coco_eval.evaluate_coco, preds, gt, tmp_path)
  stats = _quiet(coco_eval.evaluate_coco, preds, gt, tmp_path, sigmas=SIGMAS[:16])
  assert list(stats.values()) == [1.0] * 10
