from fractions import Fraction

import pytest

from vidshard.errors import ConfigError
from vidshard.media.plan import plan_segments
from vidshard.media.types import VideoStreamInfo


def make_video(frames: int, keyframe_every: int | None = 25, fps: int = 25) -> VideoStreamInfo:
    keyframes = (0,) if keyframe_every is None else tuple(range(0, frames, keyframe_every))
    return VideoStreamInfo(
        index=0,
        codec="h264",
        width=64,
        height=48,
        pix_fmt="yuv420p",
        time_base=Fraction(1, fps),
        pts=tuple(range(frames)),
        keyframes=keyframes,
        durations=(1,) * frames,
        avg_rate=Fraction(fps),
    )


def covered(segments):
    frames = []
    for s in segments:
        frames.extend(range(s.start, s.end))
    return frames


@pytest.mark.parametrize(
    ("frames", "keyframe_every", "slots", "overlap"),
    [
        (1000, 25, 1, 0),  # regular GOP, one slot: still several segments
        (1000, 25, 8, 0),  # eight slots
        (1000, None, 4, 0),  # a single keyframe: must still spread over slots
        (1000, 250, 8, 0),  # sparse keyframes
        (1, None, 4, 0),  # a single frame: one segment
        (7, 1, 4, 0),  # fewer frames than a minimum segment
        (1000, 25, 4, 3),  # overlap: seams between segments
        (37, 1, 8, 5),  # short clip, overlap larger than segments allow
    ],
)
def test_every_frame_exactly_once(frames, keyframe_every, slots, overlap):
    segments = plan_segments(
        make_video(frames, keyframe_every), slots=slots, overlap_frames=overlap
    )
    assert covered(segments) == list(range(frames))
    assert [s.index for s in segments] == list(range(len(segments)))
    assert segments[0].is_first and segments[-1].is_last


def test_spreads_over_every_slot_even_with_one_keyframe():
    segments = plan_segments(make_video(2000, None), slots=8)
    assert len(segments) >= 8 * 4  # several segments per slot


def test_snaps_to_nearby_keyframes():
    segments = plan_segments(make_video(1000, 25), slots=2)
    assert all(s.start % 25 == 0 for s in segments)


def test_explicit_segment_seconds_sets_length():
    segments = plan_segments(make_video(1000, 25), slots=1, segment_seconds=10)
    assert len(segments) == 4  # 1000 frames at 25 fps = 40 s


def test_pieces_with_overlap_tile_the_video():
    # cores and seams, in join order, cover every frame exactly once
    segments = plan_segments(make_video(500, 10), slots=4, overlap_frames=2)
    pieces = []
    for s in segments:
        pieces.append(s.core_range)
        if s.seam_right is not None:
            pieces.append(s.seam_right)
    frames = [f for a, b in pieces for f in range(a, b)]
    assert frames == list(range(500))
    for s in segments:
        start, end = s.read_range
        assert start <= s.start and end >= s.end
        if s.seam_left:
            assert start == s.seam_left[0]
        if s.seam_right:
            assert end == s.seam_right[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slots": 0}, "slots"),  # no slot
        ({"slots": 1, "segment_seconds": 0}, "segment-seconds"),  # zero length
        ({"slots": 1, "overlap_frames": -1}, "overlap-frames"),  # negative overlap
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        plan_segments(make_video(100), **kwargs)


@pytest.mark.parametrize(
    ("frames", "keyframe_every", "slots"),
    [(900, 60, 4), (900, 250, 4), (900, None, 2), (1000, 25, 2), (2000, None, 8)],
)
def test_segments_shrink_towards_the_end(frames, keyframe_every, slots):
    segments = plan_segments(make_video(frames, keyframe_every), slots=slots)
    sizes = [s.frames for s in segments]
    assert covered(segments) == list(range(frames))
    full = max(sizes)
    # the last round hands every slot a short piece: the job ends within one of them
    assert max(sizes[-slots:]) <= full / 2 + 2
    assert min(sizes[: len(sizes) // 3]) >= full * 0.75  # the bulk keeps its length


def test_an_explicit_length_is_not_tapered():
    segments = plan_segments(make_video(1000, 25), slots=4, segment_seconds=2)
    assert {s.frames for s in segments} == {50}
