"""Object keypoint similarity (OKS) and OKS-based non-maximum suppression.

Semantics of HRNet's ``lib/nms/nms.py`` (``oks_iou``, ``oks_nms``, ``soft_oks_nms``), which
HRNet and SimpleBaseline apply per image to their COCO predictions before evaluation:

* OKS between a reference instance ``g`` and candidates ``d``:
  ``mean_k exp(-((xd - xg)^2 + (yd - yg)^2) / (2 sigma_k)^2 / ((area_g + area_d) / 2 + eps) / 2)``
  with ``eps = np.spacing(1)``; every keypoint counts (no visibility) unless
  ``in_vis_thre`` is given.
* Greedy NMS: take the highest-scoring instance, drop every remaining one whose OKS with it
  is **above** ``thresh`` (``<= thresh`` survives), repeat.
* Soft NMS: instead of dropping, multiply the remaining scores by
  ``exp(-oks^2 / thresh)`` and re-sort; at most ``max_dets`` (20) instances are kept.

Areas are the original's ``np.prod(scale * 200)``: the area of the padded crop box in
square pixels (see :func:`jaxpose.evaluation.coco.crop_areas`), not the COCO segment area.

Plain numpy, float64 results.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

COCO_SIGMAS: np.ndarray = np.array(
    [.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]
) / 10.0
"""Per-keypoint OKS sigmas of the 17 COCO keypoints (pycocotools' ``kpt_oks_sigmas``)."""
COCO_SIGMAS.setflags(write=False)

_EPS = np.spacing(1)


def check_sigmas(sigmas: ArrayLike | None, num_keypoints: int) -> np.ndarray:
  """The per-keypoint OKS sigmas as float64 ``[K]``; COCO's when ``sigmas`` is None.

  Raises:
    ValueError: ``sigmas`` is not ``[num_keypoints]`` finite positive values, or is None
      while ``num_keypoints != 17``.
  """
  s = COCO_SIGMAS if sigmas is None else np.asarray(sigmas, dtype=np.float64)
  if s.shape != (num_keypoints,):
    if sigmas is None:
      raise ValueError(
          f"the default COCO sigmas are for 17 keypoints; pass `sigmas` of shape "
          f"({num_keypoints},) for {num_keypoints} keypoints")
    raise ValueError(f"sigmas must have shape ({num_keypoints},), got {s.shape}")
  if not np.all(np.isfinite(s)) or np.any(s <= 0):
    raise ValueError(f"sigmas must be finite and positive, got {s}")
  return s


def _nms_inputs(keypoints: ArrayLike, scores: ArrayLike, areas: ArrayLike,
                keypoint_scores: ArrayLike | None, in_vis_thre: float | None,
                what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
  """Checks and converts the arguments shared by :func:`oks_nms` and :func:`soft_oks_nms`."""
  kpts = np.asarray(keypoints)
  if kpts.ndim != 3 or kpts.shape[-1] != 2:
    raise ValueError(f"{what}: keypoints must be [N, K, 2], got shape {kpts.shape}")
  if not np.issubdtype(kpts.dtype, np.floating):
    kpts = kpts.astype(np.float64)
  n = kpts.shape[0]
  scores = np.asarray(scores, dtype=np.float64)
  areas = np.asarray(areas, dtype=np.float64)
  if scores.shape != (n,):
    raise ValueError(f"{what}: scores must have shape ({n},), got {scores.shape}")
  if areas.shape != (n,):
    raise ValueError(f"{what}: areas must have shape ({n},), got {areas.shape}")
  for name, arr in (("keypoints", kpts), ("scores", scores), ("areas", areas)):
    bad = ~np.isfinite(arr.reshape(n, -1)).all(axis=1) if n else np.zeros(0, bool)
    if bad.any():
      raise ValueError(f"{what}: {name} of instance {int(np.argmax(bad))} is not finite")
  kp_scores = None
  if in_vis_thre is not None:
    if keypoint_scores is None:
      raise ValueError(f"{what}: in_vis_thre needs keypoint_scores")
    kp_scores = np.asarray(keypoint_scores)
    if kp_scores.shape != kpts.shape[:2]:
      raise ValueError(
          f"{what}: keypoint_scores must have shape {kpts.shape[:2]}, got {kp_scores.shape}")
  return kpts, scores, areas, kp_scores


def oks_iou(gt_keypoints: ArrayLike,
            keypoints: ArrayLike,
            gt_area: float,
            areas: ArrayLike,
            sigmas: ArrayLike | None = None,
            in_vis_thre: float | None = None,
            keypoint_scores: ArrayLike | None = None) -> np.ndarray:
  """OKS of one reference instance against ``M`` candidates (HRNet ``oks_iou``).

  The squared distances are formed in the keypoints' dtype (float32 predictions stay
  float32 up to ``dx**2 + dy**2``, as in the original), everything after in float64.

  Args:
    gt_keypoints: ``[K, 2]`` reference keypoints (x, y) in image pixels.
    keypoints: ``[M, K, 2]`` candidate keypoints.
    gt_area: area of the reference instance in square pixels.
    areas: ``[M]`` candidate areas in square pixels.
    sigmas: ``[K]`` per-keypoint sigmas; the COCO ones when None (K must be 17).
    in_vis_thre: if given, only keypoints whose **candidate** score exceeds it are
      averaged, and a candidate without such keypoints gets OKS 0. The original intends
      "reference and candidate visible", but its ``list(a) and list(b)`` evaluates to the
      candidate's mask alone; that behaviour is kept.
    keypoint_scores: ``[M, K]`` candidate keypoint scores, needed with ``in_vis_thre``.

  Returns:
    float64 ``[M]`` OKS values in [0, 1].
  """
  g = np.asarray(gt_keypoints)
  d = np.asarray(keypoints)
  if d.ndim != 3 or d.shape[-1] != 2 or g.shape != d.shape[1:]:
    raise ValueError(
        f"oks_iou: expected gt_keypoints [K, 2] and keypoints [M, K, 2], got "
        f"{g.shape} and {d.shape}")
  areas = np.asarray(areas, dtype=np.float64)
  if areas.shape != d.shape[:1]:
    raise ValueError(f"oks_iou: areas must have shape ({d.shape[0]},), got {areas.shape}")
  var = (check_sigmas(sigmas, g.shape[0]) * 2) ** 2
  dx = d[..., 0] - g[:, 0]
  dy = d[..., 1] - g[:, 1]
  sq = dx ** 2 + dy ** 2
  e = sq / var / ((float(gt_area) + areas[:, None]) / 2 + _EPS) / 2
  sim = np.exp(-e)
  if in_vis_thre is None:
    return np.sum(sim, axis=-1) / sim.shape[-1]
  if keypoint_scores is None:
    raise ValueError("oks_iou: in_vis_thre needs keypoint_scores")
  kp_scores = np.asarray(keypoint_scores)
  if kp_scores.shape != d.shape[:2]:
    raise ValueError(
        f"oks_iou: keypoint_scores must have shape {d.shape[:2]}, got {kp_scores.shape}")
  mask = kp_scores > in_vis_thre
  # Row by row over the selected entries only: the same float sums as the original.
  out = np.zeros(d.shape[0], np.float64)
  for m in range(d.shape[0]):
    selected = sim[m][mask[m]]
    if selected.size:
      out[m] = np.sum(selected) / selected.size
  return out


def _descending(scores: np.ndarray) -> np.ndarray:
  """Indices by decreasing score; ties: the later index first (``argsort()[::-1]``)."""
  return np.argsort(scores, kind="stable")[::-1]


def oks_nms(keypoints: ArrayLike,
            scores: ArrayLike,
            areas: ArrayLike,
            thresh: float,
            sigmas: ArrayLike | None = None,
            in_vis_thre: float | None = None,
            keypoint_scores: ArrayLike | None = None) -> np.ndarray:
  """Greedy OKS non-maximum suppression of one image's instances (HRNet ``oks_nms``).

  Ties in ``scores`` are visited later-index first, as the original's
  ``argsort()[::-1]`` does for small arrays (numpy's default sort is stable below 17
  elements; beyond that the original's tie order is unspecified).

  Args:
    keypoints: ``[N, K, 2]`` keypoints (x, y) in image pixels.
    scores: ``[N]`` instance scores (after rescoring).
    areas: ``[N]`` instance areas in square pixels.
    thresh: candidates with OKS ``> thresh`` to a kept instance are removed.
    sigmas: ``[K]`` per-keypoint sigmas (COCO's when None).
    in_vis_thre: see :func:`oks_iou` (HRNet's evaluation leaves it None).
    keypoint_scores: ``[N, K]`` keypoint scores, needed with ``in_vis_thre``.

  Returns:
    int64 indices of the kept instances, highest score first.
  """
  kpts, scores, areas, kp_scores = _nms_inputs(
      keypoints, scores, areas, keypoint_scores, in_vis_thre, "oks_nms")
  order = _descending(scores)
  keep = []
  while order.size > 0:
    i, rest = order[0], order[1:]
    keep.append(i)
    ovr = oks_iou(kpts[i], kpts[rest], areas[i], areas[rest], sigmas, in_vis_thre,
                  None if kp_scores is None else kp_scores[rest])
    order = rest[ovr <= thresh]
  return np.asarray(keep, dtype=np.int64)


def soft_oks_nms(keypoints: ArrayLike,
                 scores: ArrayLike,
                 areas: ArrayLike,
                 thresh: float,
                 sigmas: ArrayLike | None = None,
                 in_vis_thre: float | None = None,
                 keypoint_scores: ArrayLike | None = None,
                 max_dets: int = 20) -> np.ndarray:
  """Soft OKS-NMS with Gaussian decay (HRNet ``soft_oks_nms``, ``TEST.SOFT_NMS``).

  Repeatedly keeps the instance with the highest (decayed) score and multiplies the
  scores of the rest by ``exp(-oks^2 / thresh)``. Only the selection is soft: the kept
  instances keep their original scores in the results.

  Args:
    keypoints: ``[N, K, 2]`` keypoints (x, y) in image pixels.
    scores: ``[N]`` instance scores.
    areas: ``[N]`` instance areas in square pixels.
    thresh: the Gaussian decay parameter (``TEST.OKS_THRE``).
    sigmas: ``[K]`` per-keypoint sigmas (COCO's when None).
    in_vis_thre: see :func:`oks_iou`.
    keypoint_scores: ``[N, K]`` keypoint scores, needed with ``in_vis_thre``.
    max_dets: at most this many instances are kept (20 in the original).

  Returns:
    int64 indices of the kept instances in selection order.
  """
  kpts, scores, areas, kp_scores = _nms_inputs(
      keypoints, scores, areas, keypoint_scores, in_vis_thre, "soft_oks_nms")
  if thresh <= 0:
    raise ValueError(f"soft_oks_nms: thresh must be positive, got {thresh}")
  order = _descending(scores)
  decayed = scores[order]
  keep = []
  while order.size > 0 and len(keep) < max_dets:
    i, rest = order[0], order[1:]
    ovr = oks_iou(kpts[i], kpts[rest], areas[i], areas[rest], sigmas, in_vis_thre,
                  None if kp_scores is None else kp_scores[rest])
    decayed = decayed[1:] * np.exp(-ovr ** 2 / thresh)
    resort = _descending(decayed)
    order, decayed = rest[resort], decayed[resort]
    keep.append(i)
  return np.asarray(keep, dtype=np.int64)
