"""Colour: read the way players read it, written back the same way and tagged.

The reference is :mod:`colour_chart`: numpy from the standard matrix coefficients, never
vidshard's own conversion. A chart goes through the reader, an identity model and the
writer (several segments, then the join); its patches must show the same RGB as the
input does in a player (within 3 levels), and the output must say how to read it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from clips import simulate_pipeline
from colour_chart import (
    CHART_RGB,
    PRI_BT470BG,
    PRI_BT709,
    PRI_BT2020,
    PRI_SMPTE170M,
    RANGE_FULL,
    RANGE_LIMITED,
    SPC_BT470BG,
    SPC_BT709,
    SPC_BT2020_NCL,
    SPC_SMPTE170M,
    TRC_BT709,
    TRC_HLG,
    TRC_PQ,
    TRC_SMPTE170M,
    UNSPECIFIED,
    ChartSpec,
    PlayerView,
    patch_boxes,
    player_patches,
    write_chart,
)
from vidshard.detection.annotate import EMPTY
from vidshard.engine.track import run_annotate
from vidshard.engine.units import AnnotateUnit
from vidshard.media import EncodeSettings, probe, probe_to_dict, read_frames
from vidshard.media.colour import (
    Colour,
    ColourTags,
    colour_notes,
    colour_rule,
    video_colour,
)

LOSSLESS = EncodeSettings(crf=0, preset="ultrafast", threads=1)
TOLERANCE = 3.0  # levels of 255, the bound

CHARTS: dict[str, ChartSpec] = {
    # untagged SD (the size): players read BT.601
    "untagged-sd": ChartSpec((480, 270), encode_matrix=SPC_SMPTE170M),
    # untagged NTSC-rate SD: BT.601, 525-line primaries
    "untagged-sd-ntsc": ChartSpec((640, 480), rate=Fraction(30000, 1001), encode_matrix=6),
    # untagged HD (the case): players read BT.709
    "untagged-hd": ChartSpec((1280, 720), encode_matrix=SPC_BT709),
    # tagged BT.709 at an SD size: the tag wins over the size
    "tagged-709-sd": ChartSpec(
        (640, 360), matrix=1, primaries=1, trc=1, color_range=RANGE_LIMITED, encode_matrix=1
    ),
    # tagged BT.601 at an HD size: the tag wins over the size
    "tagged-601-hd": ChartSpec(
        (1280, 720), matrix=6, primaries=6, trc=6, color_range=RANGE_LIMITED, encode_matrix=6
    ),
    # full range as a JPEG-range format, untagged SD
    "full-range-yuvj": ChartSpec((640, 360), pix_fmt="yuvj420p", encode_matrix=6, full_range=True),
    # full range as a tag on yuv420p, HD BT.709
    "full-range-tagged-hd": ChartSpec(
        (1280, 720), matrix=1, color_range=RANGE_FULL, encode_matrix=1, full_range=True
    ),
    # 10-bit untagged HD: the output stays 10-bit
    "ten-bit-hd": ChartSpec((1280, 720), pix_fmt="yuv420p10le", encode_matrix=SPC_BT709),
    # 4:2:2 and 10-bit 4:4:4: the chroma format stays
    "yuv422p": ChartSpec((640, 360), pix_fmt="yuv422p", encode_matrix=6),
    "yuv444p10le": ChartSpec((640, 360), pix_fmt="yuv444p10le", encode_matrix=6),
    # HDR10: BT.2020 matrix, PQ transfer, carried as tags
    "bt2020-pq": ChartSpec(
        (1280, 720),
        pix_fmt="yuv420p10le",
        matrix=SPC_BT2020_NCL,
        primaries=PRI_BT2020,
        trc=TRC_PQ,
        color_range=RANGE_LIMITED,
        encode_matrix=SPC_BT2020_NCL,
    ),
}
# (matrix, primaries, transfer, range) the output must declare.
EXPECTED_TAGS = {
    "untagged-sd": (SPC_BT470BG, PRI_BT470BG, TRC_SMPTE170M, RANGE_LIMITED),
    "untagged-sd-ntsc": (SPC_SMPTE170M, PRI_SMPTE170M, TRC_SMPTE170M, RANGE_LIMITED),
    "untagged-hd": (SPC_BT709, PRI_BT709, TRC_BT709, RANGE_LIMITED),
    "tagged-709-sd": (SPC_BT709, PRI_BT709, TRC_BT709, RANGE_LIMITED),
    "tagged-601-hd": (SPC_SMPTE170M, PRI_SMPTE170M, TRC_SMPTE170M, RANGE_LIMITED),
    "full-range-yuvj": (SPC_BT470BG, PRI_BT470BG, TRC_SMPTE170M, RANGE_FULL),
    "full-range-tagged-hd": (SPC_BT709, PRI_BT709, TRC_BT709, RANGE_FULL),
    "ten-bit-hd": (SPC_BT709, PRI_BT709, TRC_BT709, RANGE_LIMITED),
    "yuv422p": (SPC_BT470BG, PRI_BT470BG, TRC_SMPTE170M, RANGE_LIMITED),
    "yuv444p10le": (SPC_BT470BG, PRI_BT470BG, TRC_SMPTE170M, RANGE_LIMITED),
    "bt2020-pq": (SPC_BT2020_NCL, PRI_BT2020, TRC_PQ, RANGE_LIMITED),
}


@pytest.fixture(scope="session")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    root = tmp_path_factory.mktemp("charts")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = write_chart(root / f"{name}.mp4", CHARTS[name])
        return made[name]

    return get


def _layout(pix_fmt: str) -> tuple[int, int, int]:
    """(chroma width divisor, chroma height divisor, bits): what a format keeps."""
    import av

    fmt = av.VideoFormat(pix_fmt)
    bits = max(c.bits for c in fmt.components)
    return 1024 // fmt.chroma_width(1024), 1024 // fmt.chroma_height(1024), bits


def assert_same_colours(source: PlayerView, output: PlayerView) -> None:
    for frame_in, frame_out in zip(source.patches, output.patches, strict=True):
        error = np.abs(frame_out - frame_in)
        worst = int(error.max(axis=1).argmax())
        assert error.max() <= TOLERANCE, (
            f"patch {CHART_RGB[worst]}: input shows {frame_in[worst].round(1)}, "
            f"output {frame_out[worst].round(1)}"
        )


@pytest.mark.parametrize("name", list(CHARTS))
def test_the_input_chart_reads_as_made(chart, name):
    """The reference itself: the chart file shows the chart's colours in a player."""
    view = player_patches(chart(name))
    assert np.abs(view.patches[0] - np.array(CHART_RGB)).max() <= 2.0


@pytest.mark.parametrize("name", list(CHARTS))
def test_identity_keeps_the_colours_a_player_shows(chart, tmp_path, name):
    source = chart(name)
    output = tmp_path / "out.mp4"
    simulate_pipeline(source, output, segments=2, settings=LOSSLESS)
    before, after = player_patches(source), player_patches(output)
    assert_same_colours(before, after)
    assert after.tags == EXPECTED_TAGS[name]  # told explicitly, nothing left to guess
    assert _layout(after.pix_fmt) == _layout(before.pix_fmt)  # depth and chroma kept


@pytest.mark.parametrize("name", ["untagged-sd", "untagged-hd", "full-range-yuvj"])
def test_upscaled_chart_keeps_the_colours(chart, tmp_path, name):
    """x2 (nearest) in the media pipeline: the HD output of an SD input stays BT.601."""
    source = chart(name)
    output = tmp_path / "out.mp4"
    simulate_pipeline(source, output, segments=1, settings=LOSSLESS, scale=2)
    width, height = CHARTS[name].size_wh
    after = player_patches(output, size_wh=(width * 2, height * 2))
    assert_same_colours(player_patches(source), after)
    assert after.tags == EXPECTED_TAGS[name]


@pytest.mark.parametrize("name", list(CHARTS))
def test_models_receive_rgb_as_a_player_shows_it(chart, name):
    source = chart(name)
    video = probe(source).video
    reference = player_patches(source)
    for frame, expected in zip(
        read_frames(source, video, 0, video.frame_count), reference.patches, strict=True
    ):
        assert frame.image.dtype == np.uint8  # the model contract stays 8-bit RGB
        got = np.array([_centre(frame.image, box) for box in patch_boxes(video.size_wh)])
        assert np.abs(got - expected).max() <= 1.5


def _centre(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    w3, h3 = (right - left) // 3, (bottom - top) // 3
    return image[top + h3 : bottom - h3, left + w3 : right - w3].reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("name", ["untagged-hd", "full-range-yuvj", "ten-bit-hd"])
def test_annotation_writes_with_the_same_rule(chart, tmp_path, name):
    """Annotated videos (nothing drawn here) keep the colours and the tags too."""
    source = chart(name)
    video = probe(source).video
    out = tmp_path / "annotated.mp4"
    unit = AnnotateUnit(
        unit_id="annotate-0",
        source=source,
        video=video,
        frame_range=(0, video.frame_count),
        drawings=(EMPTY,) * video.frame_count,
        out_path=out,
        settings=LOSSLESS,
    )
    run_annotate(unit, lambda _n: None)
    after = player_patches(out)
    assert_same_colours(player_patches(source), after)
    assert after.tags == EXPECTED_TAGS[name]


@pytest.mark.parametrize(
    ("tags", "size_wh", "rate", "pix_fmt", "expected"),
    [
        # untagged HD by height, by width, and at 4K: BT.709 limited
        (ColourTags(), (1280, 720), Fraction(25), "yuv420p", Colour(1, 1, 1, False)),
        (ColourTags(), (960, 720), Fraction(25), "yuv420p", Colour(1, 1, 1, False)),
        (ColourTags(), (1280, 540), Fraction(25), "yuv420p", Colour(1, 1, 1, False)),
        (ColourTags(), (3840, 2160), None, "yuv420p10le", Colour(1, 1, 1, False)),
        # untagged SD: BT.601, 625-line primaries at 25 and 50 fps, 525-line otherwise
        (ColourTags(), (720, 576), Fraction(25), "yuv420p", Colour(5, 5, 6, False)),
        (ColourTags(), (1024, 576), Fraction(50), "yuv420p", Colour(5, 5, 6, False)),
        (ColourTags(), (720, 480), Fraction(30000, 1001), "yuv420p", Colour(6, 6, 6, False)),
        (ColourTags(), (480, 270), Fraction(24), "yuv420p", Colour(6, 6, 6, False)),
        (ColourTags(), (720, 576), None, "yuv420p", Colour(5, 5, 6, False)),  # rate unknown
        # tags win over the size, one by one
        (ColourTags(6, 6, 6, 1), (1920, 1080), Fraction(25), "yuv420p", Colour(6, 6, 6, False)),
        (ColourTags(1, 1, 1, 1), (640, 360), Fraction(25), "yuv420p", Colour(1, 1, 1, False)),
        (ColourTags(matrix=6), (1920, 1080), None, "yuv420p", Colour(6, 1, 1, False)),
        (ColourTags(primaries=9), (640, 360), Fraction(25), "yuv420p", Colour(5, 9, 6, False)),
        # reserved values are guessed like unspecified ones
        (ColourTags(3, 3, 3, 1), (1280, 720), None, "yuv420p", Colour(1, 1, 1, False)),
        # the range: full when tagged so or a yuvj format, limited otherwise
        (ColourTags(range=2), (1280, 720), None, "yuv420p", Colour(1, 1, 1, True)),
        (ColourTags(), (640, 480), None, "yuvj420p", Colour(6, 6, 6, True)),
        (ColourTags(range=1), (640, 480), None, "yuv420p", Colour(6, 6, 6, False)),
        # HDR: BT.2020 with PQ or HLG, carried as they are
        (ColourTags(9, 9, 16, 1), (3840, 2160), None, "yuv420p10le", Colour(9, 9, 16, False)),
        (ColourTags(9, 9, 18, 1), (1920, 1080), None, "yuv420p10le", Colour(9, 9, TRC_HLG, False)),
        # a matrix swscale cannot convert (YCgCo): the size's guess
        (ColourTags(8, 1, 1, 1), (1280, 720), None, "yuv420p", Colour(1, 1, 1, False)),
        # RGB samples have no matrix
        (ColourTags(0, 1, 13, 2), (640, 480), None, "gbrp", Colour(0, 1, 13, True)),
    ],
)
def test_colour_rule(tags, size_wh, rate, pix_fmt, expected):
    assert colour_rule(tags, size_wh, rate, pix_fmt) == expected


@pytest.mark.parametrize(
    ("matrix", "noted"),
    [
        (UNSPECIFIED, False),  # guessed, as players do: nothing to say
        (SPC_BT709, False),  # converted as tagged
        (SPC_SMPTE170M, False),
        (8, True),  # YCgCo: swscale has no such matrix
        (14, True),  # ICtCp likewise
    ],
)
def test_colour_notes_name_what_cannot_be_read(chart, matrix, noted):
    import dataclasses

    video = probe(chart("untagged-hd")).video
    video = dataclasses.replace(video, colour_tags=ColourTags(matrix=matrix))
    notes = colour_notes(video)
    assert bool(notes) == noted
    if noted:
        assert notes[0].endswith("frames are read as bt709")
        assert video_colour(video).matrix == SPC_BT709


@pytest.mark.parametrize(
    ("scale", "warned"),
    [
        (3, True),  # 1440x810: players guess BT.709 for the untagged output, it is BT.601
        (1, False),  # 480x270: their guess is what was encoded
    ],
)
def test_an_output_without_colour_tags_is_named(chart, tmp_path, caplog, scale, warned):
    """MPEG-4 part 2 in AVI has nowhere for the tags: say when players will then decode
    the output with another matrix than it was encoded with."""
    output = tmp_path / "out.avi"
    settings = EncodeSettings(codec="mpeg4", crf=None, preset=None, threads=1)
    simulate_pipeline(chart("untagged-sd"), output, segments=1, settings=settings, scale=scale)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert bool(lines) == warned
    if warned:
        (line,) = lines
        assert line.endswith(
            "players decode it with the bt709 matrix, limited range, "
            "it was encoded with the bt470bg matrix, limited range"
        )


@pytest.mark.parametrize(
    ("name", "declared", "read_as"),
    [
        (
            "untagged-hd",
            ("unknown", "unknown", "unknown", "unknown"),
            ("bt709",) * 3 + ("limited",),
        ),
        ("tagged-601-hd", ("smpte170m",) * 3 + ("limited",), ("smpte170m",) * 3 + ("limited",)),
        (
            "full-range-yuvj",
            ("unknown",) * 3 + ("full",),
            ("bt470bg", "bt470bg", "smpte170m", "full"),
        ),
    ],
)
def test_probe_reports_declared_and_read_colour(chart, name, declared, read_as):
    colour = probe_to_dict(probe(chart(name)))["video"]["colour"]
    keys = ("matrix", "primaries", "transfer", "range")
    assert tuple(colour["declared"][k] for k in keys) == declared
    assert tuple(colour["read_as"][k] for k in keys) == read_as
