"""A worker's check of each piece it encodes: one packet a frame, each at its time."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from clips import ClipSpec, write_clip
from vidshard.errors import VerificationError
from vidshard.media import probe
from vidshard.media.verify import check_piece


@pytest.fixture(scope="module")
def pieces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pieces")
    return {
        "plain": write_clip(root / "plain.mp4", ClipSpec(frames=20)),
        "bframes": write_clip(root / "bframes.mp4", ClipSpec(frames=20, bframes=2)),
        "vfr": write_clip(
            root / "vfr.mkv",
            ClipSpec(frames=6, time_base=Fraction(1, 1000), pts=(0, 40, 90, 130, 200, 240)),
        ),
    }


@pytest.mark.parametrize("name", ["plain", "bframes", "vfr"])
def test_a_piece_with_its_frames_at_their_times_passes(pieces: dict[str, Path], name: str) -> None:
    video = probe(pieces[name]).video
    check_piece(pieces[name], video.pts, video.time_base)


def test_a_missing_frame_fails(pieces: dict[str, Path]) -> None:
    video = probe(pieces["plain"]).video
    with pytest.raises(VerificationError, match=r"expected 21 frames in the piece, got 20"):
        check_piece(pieces["plain"], (*video.pts, video.pts[-1] + 1), video.time_base)


def test_a_frame_at_another_time_fails(pieces: dict[str, Path]) -> None:
    video = probe(pieces["vfr"]).video
    moved = (*video.pts[:3], video.pts[3] + 5, *video.pts[4:])
    with pytest.raises(VerificationError, match=r"frame 3 of the piece is at 0\.130000 s"):
        check_piece(pieces["vfr"], moved, video.time_base)


def test_the_times_are_compared_across_time_bases(pieces: dict[str, Path]) -> None:
    video = probe(pieces["plain"]).video  # 1/25 s in the source: 1/12800 s or so in MP4
    in_ms = tuple(round(p * video.time_base * 1000) for p in video.pts)
    check_piece(pieces["plain"], in_ms, Fraction(1, 1000))


def test_a_file_that_is_not_a_video_fails(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(VerificationError, match=r"junk\.mp4: the encoded piece does not read back"):
        check_piece(junk, (0,), Fraction(1, 25))
