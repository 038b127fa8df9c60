from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from clips import decode_rgb
from vidshard.errors import MediaError
from vidshard.media import probe, read_frames
from vidshard.media import reader as reader_module


@pytest.mark.parametrize(
    ("name", "start", "end"),
    [
        ("long_gop.mp4", 0, 60),  # the whole clip
        ("long_gop.mp4", 0, 1),  # the first frame only
        ("long_gop.mp4", 7, 19),  # mid-GOP start: decode from keyframe 0, drop 0..6
        ("long_gop.mp4", 49, 52),  # across the keyframe at 50
        ("long_gop.mp4", 50, 51),  # exactly the second keyframe
        ("long_gop.mp4", 55, 60),  # mid-GOP start in the last GOP, up to the end
        ("long_gop.mp4", 59, 60),  # the last frame alone
        ("bframes.mp4", 0, 40),  # B-frames: the whole clip
        ("bframes.mp4", 17, 23),  # B-frames, mid-GOP start after keyframe 16
        ("bframes.mp4", 31, 33),  # B-frames around keyframe 32
        ("bframes.mp4", 39, 40),  # B-frames, last frame
        ("vfr.mkv", 3, 29),  # irregular pts in Matroska
        ("ten_bit.mkv", 5, 20),  # 10-bit with B-frames: still uint8 RGB
        ("data.ts", 13, 24),  # MPEG-TS, timestamps not starting at zero
        ("odd.mp4", 2, 9),  # odd size, 4:4:4
        ("single.mp4", 0, 1),  # one frame
        ("sample:car-detection.mp4", 61, 70),  # real clip: mid-GOP (keyframes every 60)
        ("sample:car-detection.mp4", 370, 377),  # real clip: the tail
        ("sample:bottle-detection.mp4", 251, 256),  # real clip with B-frames, mid-GOP
        ("sample:bottle-detection.mp4", 1185, 1189),  # real clip: the last frames
    ],
)
def test_window_equals_sequential_decode(source, name, start, end):
    path = source(name)
    video = probe(path).video
    frames = list(read_frames(path, video, start, end))
    expected = decode_rgb(path, keep=range(start, end))
    assert [f.index for f in frames] == list(range(start, end))
    assert [f.pts for f in frames] == list(video.pts[start:end])
    assert [f.pts for f in frames] == [pts for pts, _ in expected]
    for frame, (_, image) in zip(frames, expected, strict=True):
        assert frame.image.dtype == np.uint8
        assert frame.image.shape == (video.height, video.width, 3)
        assert np.array_equal(frame.image, image)


@pytest.mark.parametrize(
    ("start", "end", "decoded"),
    [
        (0, 3, 3),  # from the first keyframe: stops right after frame 2
        (55, 58, 8),  # seeks to keyframe 50 (not frame 0), stops after 57
        (10, 10, 0),  # empty range: nothing opened, nothing decoded
    ],
)
def test_decodes_only_what_it_needs(clip, monkeypatch, start, end, decoded):
    path = clip("long_gop.mp4")
    video = probe(path).video
    seen: list[int] = []
    original = reader_module._decoded

    def counting(*args, **kwargs):
        for item in original(*args, **kwargs):
            seen.append(item[0])
            yield item

    monkeypatch.setattr(reader_module, "_decoded", counting)
    frames = list(read_frames(path, video, start, end, threads=1))
    assert len(frames) == end - start
    assert len(seen) == decoded


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (-1, 3),  # negative start
        (5, 3),  # end before start
        (0, 61),  # past the last frame
    ],
)
def test_bad_range(clip, start, end):
    path = clip("long_gop.mp4")
    video = probe(path).video
    with pytest.raises(MediaError, match=r"expected 0 <= start <= end <= 60"):
        list(read_frames(path, video, start, end))


@pytest.mark.parametrize(
    ("extra_pts", "start", "end", "message"),
    [
        (1, 0, 5, "frames 1 were not decoded"),  # a frame the file does not have, mid-range
        (10**6, 29, 31, "frames 30 were not decoded"),  # one past the end of the stream
    ],
)
def test_missing_frames_are_named(clip, extra_pts, start, end, message):
    path = clip("vfr.mkv")
    video = probe(path).video
    pts = tuple(sorted((*video.pts, extra_pts)))
    claimed = dataclasses.replace(video, pts=pts, durations=(*video.durations, 0))
    with pytest.raises(MediaError, match=message):
        list(read_frames(path, claimed, start, end))


def test_seek_that_overshoots_falls_back(clip, monkeypatch):
    # the first seek lands on keyframe 50, after the wanted frame 45 (as a seek by a
    # misleading index would): the reader must retry earlier and still give 45.. exactly
    path = clip("long_gop.mp4")
    video = probe(path).video
    targets: list[int | None] = []
    original = reader_module._seek_target

    def first_too_late(video, key, *, last):
        target = 50 if not targets else original(video, key, last=last)
        targets.append(target)
        return target

    monkeypatch.setattr(reader_module, "_seek_target", first_too_late)
    frames = list(read_frames(path, video, 45, 52))
    assert targets[0] == 50 and len(targets) == 2
    assert [f.index for f in frames] == list(range(45, 52))
    expected = decode_rgb(path, keep=range(45, 52))
    assert all(np.array_equal(f.image, e) for f, (_, e) in zip(frames, expected, strict=True))


def test_segments_cover_every_frame_once(clip):
    # consecutive windows, as the planner hands them out, give the whole clip once
    path = clip("bframes.mp4")
    video = probe(path).video
    indices = []
    for start, end in [(0, 7), (7, 16), (16, 17), (17, 33), (33, 40)]:
        indices += [f.index for f in read_frames(path, video, start, end, threads=2)]
    assert indices == list(range(40))
