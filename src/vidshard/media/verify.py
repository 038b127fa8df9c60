"""Check a joined output against its input: frame count, every frame's time, duration.

Times are compared as exact fractions of a second. When the output container stores
a coarser time base than the input (Matroska: 1 ms, MPEG-TS: 1/90000 s), a frame's time
must be the input time rounded to the nearest tick of that time base.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av

from vidshard.errors import InputError, VerificationError

from .probe import probe
from .types import VideoStreamInfo

MAX_REPORTED_MISMATCHES = 3


def same_time(src_pts: int, src_tb: Fraction, out_pts: int, out_tb: Fraction) -> bool:
    """True when ``out_pts`` is ``src_pts`` expressed in ``out_tb`` (exact or rounded)."""
    diff = abs(Fraction(out_pts) * out_tb - Fraction(src_pts) * src_tb)
    return diff * 2 <= out_tb


def verify_output(
    path: str | Path,
    source_video: VideoStreamInfo,
    *,
    expected_size_wh: tuple[int, int] | None = None,
    expected_pts: Sequence[int] | None = None,
    decode: bool = True,
) -> VideoStreamInfo:
    """Raise :class:`VerificationError` unless ``path`` holds the input's frames and times;
    returns the output's video stream as probed.

    ``expected_pts`` (in the source's time base) defaults to every source frame. With
    ``decode`` every frame is also decoded (no colour conversion), so a bitstream that
    probes well but does not decode is caught too.
    """
    file = Path(path)
    try:
        out = probe(file).video
    except InputError as exc:
        raise VerificationError(f"{file.name}: the joined output does not probe: {exc}") from exc
    want = tuple(source_video.pts if expected_pts is None else expected_pts)
    if out.frame_count != len(want):
        raise VerificationError(
            f"{file.name}: expected {len(want)} frames (as in the input), got {out.frame_count}"
        )
    if expected_size_wh is not None and out.size_wh != tuple(expected_size_wh):
        raise VerificationError(
            f"{file.name}: expected {expected_size_wh[0]}x{expected_size_wh[1]}, "
            f"got {out.width}x{out.height}"
        )
    _check_times(file, want, source_video.time_base, out)
    _check_duration(file, want, source_video, out)
    if out.rotation != source_video.rotation:
        raise VerificationError(
            f"{file.name}: expected rotation {source_video.rotation}°, got {out.rotation}°"
        )
    if decode:
        _check_decodes(file, out)
    return out


def check_piece(path: str | Path, expected_pts: Sequence[int], time_base: Fraction) -> None:
    """Raise :class:`VerificationError` unless the encoded piece ``path`` holds one video
    packet for each of ``expected_pts`` (in ``time_base``), at those times.

    A worker checks each piece it writes so, before it is committed: the demux costs a
    small part of the encode, and the join then needs no decode of its own (``--verify
    full`` keeps one)."""
    file = Path(path)
    try:
        with av.open(str(file), mode="r") as container:
            stream = container.streams.video[0]
            found = sorted(
                packet.pts
                for packet in container.demux(stream)
                if packet.pts is not None and packet.size
            )
            piece_tb = stream.time_base or time_base
    except (av.FFmpegError, IndexError) as exc:
        problem = f"{file.name}: the encoded piece does not read back: {exc}"
        raise VerificationError(problem) from exc
    if len(found) != len(expected_pts):
        raise VerificationError(
            f"{file.name}: expected {len(expected_pts)} frames in the piece, got {len(found)}"
        )
    for index, (want, got) in enumerate(zip(sorted(expected_pts), found, strict=True)):
        if not same_time(want, time_base, got, piece_tb):
            raise VerificationError(
                f"{file.name}: frame {index} of the piece is at {float(got * piece_tb):.6f} s, "
                f"expected {float(want * time_base):.6f} s"
            )


def _check_decodes(file: Path, out: VideoStreamInfo) -> None:
    """Every frame the probe lists decodes, in order, and nothing else does."""
    decoded: list[int | None] = []
    try:
        with av.open(str(file), mode="r") as container:
            stream = next(s for s in container.streams.video if s.index == out.index)
            stream.codec_context.thread_type = "AUTO"
            decoded = [frame.pts for frame in container.decode(stream)]
    except av.FFmpegError as exc:
        raise VerificationError(f"{file.name}: the joined video does not decode: {exc}") from exc
    if decoded != list(out.pts):
        lost = len(set(out.pts) - set(decoded))
        raise VerificationError(
            f"{file.name}: expected {out.frame_count} decodable frames, "
            f"decoded {len(decoded)} ({lost} listed frames missing)"
        )


def _check_times(file: Path, want: Sequence[int], src_tb: Fraction, out: VideoStreamInfo) -> None:
    bad = [
        i
        for i, (src_pts, out_pts) in enumerate(zip(want, out.pts, strict=True))
        if not same_time(src_pts, src_tb, out_pts, out.time_base)
    ]
    if not bad:
        return
    details = "; ".join(
        f"frame {i}: expected {float(want[i] * src_tb):.6f} s, "
        f"got {float(out.pts[i] * out.time_base):.6f} s"
        for i in bad[:MAX_REPORTED_MISMATCHES]
    )
    raise VerificationError(f"{file.name}: {len(bad)} frames moved in time ({details})")


def _check_duration(
    file: Path, want: Sequence[int], source: VideoStreamInfo, out: VideoStreamInfo
) -> None:
    tb = source.time_base
    frame_s = _frame_duration_s(source)
    last_duration = source.durations[-1] if source.durations else 0
    want_s = float((want[-1] + last_duration - want[0]) * tb)
    if abs(out.duration_s - want_s) > frame_s:
        raise VerificationError(
            f"{file.name}: expected a duration of {want_s:.3f} s (±{frame_s:.3f}), "
            f"got {out.duration_s:.3f} s"
        )


def _frame_duration_s(video: VideoStreamInfo) -> float:
    """A typical frame's duration: from the average rate, else the median duration."""
    if video.avg_rate:
        return float(1 / video.avg_rate)
    if video.durations:
        return float(statistics.median(video.durations) * video.time_base)
    return 0.0
