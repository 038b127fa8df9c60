"""Joining per-segment tracks into one video's tracks.

A long video is cut into segments that overlap by a few frames, and each segment is
tracked on its own, so its track ids are local to it. Over each overlap both segments saw
the same objects: a local track takes the global id of the previous segment's track whose
boxes it follows (greedy, highest mean IoU first, one to one); a local track that follows
none gets a fresh id. Each overlapping frame is then taken once: from the previous segment
for the first half of the overlap, from the next for the second half.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vidshard.detection.geometry import box_iou
from vidshard.detection.types import Detections


@dataclass(frozen=True)
class SegmentTracks:
    """One segment's tracked frames: ``frames[i]`` is global frame ``start_frame + i``."""

    start_frame: int
    frames: list[Detections]

    def __post_init__(self) -> None:
        if self.start_frame < 0:
            raise ValueError(f"SegmentTracks: expected start_frame >= 0, got {self.start_frame}")
        if not self.frames:
            raise ValueError(
                f"SegmentTracks at frame {self.start_frame}: expected frames, got none"
            )

    @property
    def end_frame(self) -> int:
        """One past the segment's last global frame."""
        return self.start_frame + len(self.frames)

    def at(self, frame_index: int) -> Detections:
        return self.frames[frame_index - self.start_frame]


def _local_ids(dets: Detections) -> list[int]:
    return [] if dets.track_ids is None else dets.track_ids.tolist()


def _check(segments: Sequence[SegmentTracks]) -> None:
    for k, seg in enumerate(segments):
        for i, dets in enumerate(seg.frames):
            if len(dets) and dets.track_ids is None:
                raise ValueError(
                    f"segment {k}, frame {seg.start_frame + i}: detections without track ids"
                    " (stitching needs tracked segments)"
                )
        if k == 0:
            continue
        prev = segments[k - 1]
        if seg.start_frame > prev.end_frame:
            raise ValueError(
                f"segment {k} starts at frame {seg.start_frame}, after segment {k - 1} ends"
                f" ({prev.end_frame}): frames would be missing"
            )
        if seg.end_frame <= prev.end_frame:
            raise ValueError(
                f"segment {k} ends at frame {seg.end_frame}, not after segment {k - 1}"
                f" ({prev.end_frame})"
            )
        if k >= 2 and seg.start_frame < segments[k - 2].end_frame:
            raise ValueError(
                f"segment {k} starts at frame {seg.start_frame}, inside segment {k - 2}"
                f" (ends {segments[k - 2].end_frame}): a segment may overlap only its predecessor"
            )


def _match(
    prev: SegmentTracks, prev_global: dict[int, int], cur: SegmentTracks, iou_threshold: float
) -> dict[int, int]:
    """``cur``'s local id → global id, for the local tracks that follow a track of ``prev``
    (its local ids mapped to global ones by ``prev_global``) over their overlap."""
    iou_sum: defaultdict[tuple[int, int], float] = defaultdict(float)
    together: Counter[tuple[int, int]] = Counter()
    seen_prev: Counter[int] = Counter()
    seen_cur: Counter[int] = Counter()
    for f in range(cur.start_frame, prev.end_frame):
        a, b = prev.at(f), cur.at(f)
        globals_a = [prev_global[t] for t in _local_ids(a)]
        locals_b = _local_ids(b)
        seen_prev.update(globals_a)
        seen_cur.update(locals_b)
        if not globals_a or not locals_b:
            continue
        iou = box_iou(a.boxes, b.boxes).tolist()
        for i, g in enumerate(globals_a):
            for j, loc in enumerate(locals_b):
                iou_sum[g, loc] += iou[i][j]
                together[g, loc] += 1
    candidates: list[tuple[float, int, int]] = []
    for (g, loc), both in together.items():
        either = seen_prev[g] + seen_cur[loc] - both
        mean = iou_sum[g, loc] / both
        # The same object is seen by both segments for most of the frames either sees it;
        # a newcomer on the spot an object just left shares only a frame or two with it.
        if 2 * both >= either and mean >= iou_threshold:
            candidates.append((mean, g, loc))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    matched: dict[int, int] = {}
    taken: set[int] = set()
    for _, g, loc in candidates:
        if loc not in matched and g not in taken:
            matched[loc] = g
            taken.add(g)
    return matched


def _cuts(segments: Sequence[SegmentTracks]) -> list[int]:
    """Which segment gives each frame: segment k from the middle of its overlap with k-1
    (``cuts[k] <= frame < cuts[k + 1]``)."""
    cuts = [segments[0].start_frame]
    for prev, seg in itertools.pairwise(segments):
        cuts.append(seg.start_frame + (prev.end_frame - seg.start_frame) // 2)
    cuts.append(segments[-1].end_frame)
    return cuts


def frame_owners(segments: Sequence[SegmentTracks]) -> dict[int, int]:
    """frame → the index of the segment :func:`stitch_segments` takes it from."""
    cuts = _cuts(segments)
    return {f: k for k in range(len(segments)) for f in range(cuts[k], cuts[k + 1])}


def stitch_segments(
    segments: Sequence[SegmentTracks], iou_threshold: float = 0.5
) -> list[tuple[int, Detections]]:
    """One ``(frame_index, Detections)`` per frame from the first segment's start to the
    last one's end, each frame once, with track ids unique and consistent over the whole
    video: numbered 1, 2, ... in order of first appearance.

    ``segments`` are in video order; each starts no later than its predecessor ends and
    overlaps only its predecessor. ValueError on another layout, on frames with boxes but
    no track ids, or on an ``iou_threshold`` outside (0, 1].
    """
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"stitch_segments: expected 0 < iou_threshold <= 1, got {iou_threshold}")
    if not segments:
        return []
    _check(segments)

    # Local ids → provisional global ids, segment by segment.
    next_id = 1
    to_global: list[dict[int, int]] = []
    for k, seg in enumerate(segments):
        mapping = {} if k == 0 else _match(segments[k - 1], to_global[-1], seg, iou_threshold)
        for dets in seg.frames:
            for loc in _local_ids(dets):
                if loc not in mapping:
                    mapping[loc] = next_id
                    next_id += 1
        to_global.append(mapping)

    cuts = _cuts(segments)

    # Dense final ids in order of first appearance in the output (a provisional id may
    # belong to a track seen only in frames the other segment gave).
    dense: dict[int, int] = {}
    picked: list[tuple[int, Detections, dict[int, int]]] = []
    for k, seg in enumerate(segments):
        for f in range(cuts[k], cuts[k + 1]):
            dets = seg.at(f)
            for loc in _local_ids(dets):
                dense.setdefault(to_global[k][loc], len(dense) + 1)
            picked.append((f, dets, to_global[k]))
    return [
        (f, dets.with_track_ids(np.array([dense[m[t]] for t in _local_ids(dets)], np.int64)))
        for f, dets, m in picked
    ]
