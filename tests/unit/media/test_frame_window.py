"""Work units carry the frames they read, not the whole video's frame lists.

A two-hour video's pts, durations and keyframes are megabytes; a job sends thousands of
units, so whole lists made a job's unit traffic (and each worker's per-unit lookup
table) grow with the square of its length.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from tests.clips import ClipSpec, stream_info, write_clip

from vidshard.engine.upscale import build_plan
from vidshard.errors import MediaError
from vidshard.media import EncodeSettings, probe, read_frames
from vidshard.media.plan import plan_segments
from vidshard.media.reader import reading_window
from vidshard.media.types import FrameWindow, MediaInfo
from vidshard.models import resolve_model


def test_a_window_is_indexed_as_the_whole_list() -> None:
    whole = tuple(range(100, 200))
    window = FrameWindow.of(whole, 40, 60)
    assert len(window) == 100
    assert window[40] == 140 and window[59] == 159
    assert window[0] == 100  # the time origin is always there
    assert window[-60] == 140  # negative positions count from the whole list's end
    assert window[45:50] == whole[45:50]
    assert window[40:60] == whole[40:60]
    assert window.span == (40, 60)
    assert pickle.loads(pickle.dumps(window)) == window
    assert hash(pickle.loads(pickle.dumps(window))) == hash(window)


@pytest.mark.parametrize(
    "read",
    [
        lambda w: w[39],
        lambda w: w[60],
        lambda w: w[-1],
        lambda w: w[30:50],
        lambda w: w[50:70],
        list,
        lambda w: 150 in w,
    ],
)
def test_reading_outside_a_window_is_refused(read) -> None:  # type: ignore[no-untyped-def]
    # Never a silent wrong answer (iterating would otherwise stop at the window's edge).
    with pytest.raises(IndexError, match=r"outside this frame window \[40, 60\) of 100"):
        read(FrameWindow.of(tuple(range(100)), 40, 60))


def test_a_unit_s_size_does_not_grow_with_the_video_s_length(tmp_path: Path) -> None:
    sizes = {}
    for minutes in (1, 60):
        video = stream_info(minutes * 60 * 30)
        info = MediaInfo(tmp_path / "in.mp4", "mp4", 0, video.duration_s, video)
        segments = plan_segments(video, slots=8, overlap_frames=4)
        plan = build_plan(
            info, segments, resolve_model("lanczos"), EncodeSettings(), tmp_path, batch_size=4
        )
        middle = [u for u in plan.units if u.unit_id == "segment-00010"]
        seam = [u for u in plan.units if u.unit_id == "seam-00010"]
        sizes[minutes] = (len(pickle.dumps(middle[0])), len(pickle.dumps(seam[0])))
    assert sizes[60][0] < sizes[1][0] + 64 and sizes[60][1] < sizes[1][1] + 64, sizes
    assert sizes[60][0] < 8_000, sizes  # the segment's ~90 frames, not 108,000


@pytest.mark.parametrize("bframes", [0, 2])
def test_reading_through_a_window_gives_the_frames_the_whole_list_gives(
    tmp_path: Path, bframes: int
) -> None:
    clip = write_clip(tmp_path / "in.mp4", ClipSpec(frames=60, gop=12, bframes=bframes))
    video = probe(clip).video
    ranges = [(0, 5), (3, 17), (12, 24), (13, 14), (25, 49), (50, 60), (59, 60), (0, 60)]
    ranges += [(s.read_range) for s in plan_segments(video, slots=3, segment_seconds=0.5)]
    for start, end in ranges:
        window = reading_window(video, start, end)
        assert isinstance(window.pts, FrameWindow)
        whole = list(read_frames(clip, video, start, end))
        windowed = list(read_frames(clip, window, start, end))
        assert [f.index for f in windowed] == [f.index for f in whole] == list(range(start, end))
        assert [f.pts for f in windowed] == [f.pts for f in whole]
        assert all(np.array_equal(a.image, b.image) for a, b in zip(whole, windowed, strict=True))


def test_reading_beyond_a_unit_s_window_is_a_clear_error(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "in.mp4", ClipSpec(frames=48, gop=12))
    video = probe(clip).video
    window = reading_window(video, 24, 36)
    with pytest.raises(MediaError, match=r"outside the frame window"):
        list(read_frames(clip, window, 30, 45))
    with pytest.raises(MediaError, match=r"outside the frame window"):
        list(read_frames(clip, reading_window(video, 36, 40), 30, 40))
