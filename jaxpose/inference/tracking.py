"""Person tracks through a video by box overlap (IoU), and the choice of the main person.

``track_boxes`` links each frame's boxes to the tracks of the previous frames: the
Hungarian assignment (``scipy.optimize.linear_sum_assignment``) on ``1 - IoU`` between
the frame's boxes and each live track's last box, pairs below ``iou_threshold`` left
unmatched; an unmatched box starts a new track; a track not matched for more than
``max_gap`` frames ends. ``main_track`` picks the person a single-person method (and
the lifter) should follow: the track with the largest sum of box areas (long and large:
the most consistent, most visible person).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import optimize

from jaxpose.inference.boxes import box_iou


@dataclasses.dataclass
class Track:
  """One person through the video: ``frames`` (int, increasing), ``boxes`` ``[n, 4]``
  (x, y, w, h), ``scores`` ``[n]``, ``index`` within each frame's box list."""
  id: int
  frames: list[int] = dataclasses.field(default_factory=list)
  boxes: list[np.ndarray] = dataclasses.field(default_factory=list)
  scores: list[float] = dataclasses.field(default_factory=list)
  index: list[int] = dataclasses.field(default_factory=list)

  @property
  def total_area(self) -> float:
    return float(sum(b[2] * b[3] for b in self.boxes))


def track_boxes(frames: Sequence[tuple[np.ndarray, np.ndarray]], iou_threshold: float = 0.3,
                max_gap: int = 10) -> list[Track]:
  """Tracks of per-frame boxes ``[(boxes [M_t, 4], scores [M_t]), ...]``, in order of
  their first frame."""
  tracks: list[Track] = []
  live: list[Track] = []
  for t, (boxes, scores) in enumerate(frames):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    live = [tr for tr in live if t - tr.frames[-1] <= max_gap + 1]
    matched: dict[int, Track] = {}
    if live and len(boxes):
      iou = box_iou(np.stack([tr.boxes[-1] for tr in live]), boxes)
      rows, cols = optimize.linear_sum_assignment(-iou)
      for r, c in zip(rows, cols):
        if iou[r, c] >= iou_threshold:
          matched[int(c)] = live[r]
    for i in range(len(boxes)):
      track = matched.get(i)
      if track is None:
        track = Track(id=len(tracks))
        tracks.append(track)
        live.append(track)
      track.frames.append(t)
      track.boxes.append(boxes[i])
      track.scores.append(float(scores[i]))
      track.index.append(i)
  return tracks


def main_track(tracks: Sequence[Track]) -> Track | None:
  """The track with the largest summed box area (ties: the earlier one); None if none."""
  if not tracks:
    return None
  return max(tracks, key=lambda tr: (tr.total_area, -tr.id))


def per_frame(tracks: Sequence[Track], num_frames: int
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """``[(boxes [P, 4], scores [P], track ids [P]), ...]`` per frame for the given tracks."""
  out: list[list] = [[] for _ in range(num_frames)]
  for tr in tracks:
    for f, b, s in zip(tr.frames, tr.boxes, tr.scores):
      out[f].append((b, s, tr.id))
  result = []
  for rows in out:
    if rows:
      result.append((np.stack([r[0] for r in rows]).astype(np.float32),
                     np.asarray([r[1] for r in rows], np.float32),
                     np.asarray([r[2] for r in rows], np.int32)))
    else:
      result.append((np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                     np.zeros(0, np.int32)))
  return result
