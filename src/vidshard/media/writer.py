"""Encode one output segment: RGB frames in, each keeping its input frame's pts.

Every segment of a job is encoded with the same :class:`EncodeSettings`, so the join can
remux all segments' packets under the first segment's stream parameters.

Segment files are MP4 (:data:`SEGMENT_SUFFIX`): MP4 keeps the stream's own time base
(its timescale is the time base's denominator, or a multiple of it), so every pts
survives exactly; Matroska rounds every timestamp to a millisecond, which would move
frames of a 1/11456 or 1/90000 time base.

Colour: RGB is encoded with the source's colour reading (:mod:`vidshard.media.colour`:
its matrix and range, its primaries and transfer as tags) and the stream is tagged with
all four, so every player decodes with the matrix that encoded it. Without a source,
BT.709 limited range, tagged as such.

Pixel format: with ``pix_fmt`` unset, the writer keeps the source's bit depth and chroma
subsampling (yuv420p10le stays yuv420p10le, yuv422p stays yuv422p) where the encoder can
(:func:`choose_pix_fmt`), else the nearest it has, saying what was reduced; an explicit
``pix_fmt`` always wins.

Odd sizes: 4:2:0 and 4:2:2 need even dimensions. When ``pix_fmt`` is left unset and the
size is odd, the writer uses a format without chroma subsampling (yuv444p, at the
source's bit depth), so the output keeps the model's exact size and every frame; padding
or cropping would change the picture. An explicit subsampled ``pix_fmt`` with an odd
size is a ConfigError.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import av.codec
import av.container
import av.video.stream
import numpy as np

from vidshard.errors import ConfigError, MediaError, write_failure

from .colour import (
    BT709_LIMITED,
    Colour,
    colour_notes,
    from_rgb,
    is_rgb_format,
    output_colour,
    video_colour,
)
from .formats import choose_format, subsampling
from .probe import bit_depth
from .types import VideoStreamInfo

logger = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".mp4"

# Inclusive crf ranges of the encoders that have a crf option.
CRF_RANGES: dict[str, tuple[int, int]] = {
    "libx264": (0, 51),
    "libx264rgb": (0, 51),
    "libx265": (0, 51),
    "libvpx": (4, 63),
    "libvpx-vp9": (0, 63),
    "libaom-av1": (0, 63),
    "libsvtav1": (1, 63),
}
X26X_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
_X26X = frozenset({"libx264", "libx264rgb", "libx265"})
# Formats written by FFmpeg's mov muxer.
MOV_FORMATS = frozenset({"mp4", "mov", "3gp", "3g2", "ipod", "ismv", "psp", "f4v"})
_MIN_MOV_TIMESCALE = 10000  # the mov muxer's own lower bound for video timescales


@dataclass(frozen=True)
class EncodeSettings:
    """How every segment is encoded. ``threads = 0`` lets the encoder choose; set a fixed
    count for output that is bit-identical across machines with different core counts."""

    codec: str = "libx264"
    crf: int | None = 18
    preset: str | None = "medium"
    pix_fmt: str | None = None  # None: the source's depth and chroma (yuv444p at odd sizes)
    bitrate: int | None = None  # bits per second
    options: tuple[tuple[str, str], ...] = ()
    threads: int = 0

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value the encoder cannot take."""
        codec = _encoder(self.codec)
        if self.crf is not None:
            self._validate_crf()
        if self.bitrate is not None:
            if self.bitrate <= 0:
                raise ConfigError(f"bitrate: expected > 0 bits/s, got {self.bitrate}")
            if self.crf is not None:
                raise ConfigError(
                    f"crf={self.crf} and bitrate={self.bitrate}: expected one of them, "
                    "set crf=None to encode at a bitrate"
                )
        if self.preset is not None and self.codec in _X26X and self.preset not in X26X_PRESETS:
            raise ConfigError(
                f"preset: expected one of {', '.join(X26X_PRESETS)}, got {self.preset!r}"
            )
        if self.pix_fmt is not None:
            supported = _pix_fmts(codec)
            if supported and self.pix_fmt not in supported:
                raise ConfigError(
                    f"pix_fmt: {self.codec} takes {', '.join(supported)}, got {self.pix_fmt!r}"
                )
        if self.threads < 0:
            raise ConfigError(f"threads: expected >= 0 (0 = auto), got {self.threads}")
        for key, value in self.options:
            if not key or not isinstance(value, str):
                raise ConfigError(f"options: expected (name, value) strings, got {key!r}={value!r}")

    def _validate_crf(self) -> None:
        limits = CRF_RANGES.get(self.codec)
        if limits is None:
            raise ConfigError(
                f"crf: {self.codec} has no crf option, got crf={self.crf}; "
                "set crf=None (and a bitrate if wanted)"
            )
        low, high = limits
        if not low <= self.crf <= high:  # type: ignore[operator]
            raise ConfigError(f"crf: {self.codec} takes {low}..{high}, got {self.crf}")


def _encoder(name: str) -> av.codec.Codec:
    try:
        codec = av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError) as exc:
        raise ConfigError(f"codec: expected an FFmpeg video encoder, got unknown {name!r}") from exc
    if codec.type != "video":
        raise ConfigError(f"codec: expected a video encoder, got {name!r} ({codec.type})")
    return codec


def _pix_fmts(codec: av.codec.Codec) -> tuple[str, ...]:
    return tuple(f.name for f in codec.video_formats or ())


def choose_pix_fmt(
    settings: EncodeSettings, size_wh: tuple[int, int], source_pix_fmt: str | None = None
) -> tuple[str, str | None]:
    """(the pixel format a segment of ``size_wh`` is encoded in, a one-line note of what it
    cannot keep of ``source_pix_fmt``, or None). See the module docstring."""
    if settings.pix_fmt is not None:
        width, height = size_wh
        sub_w, sub_h = subsampling(settings.pix_fmt)
        if width % sub_w or height % sub_h:
            raise ConfigError(
                f"pix_fmt {settings.pix_fmt} needs a size divisible by {sub_w}x{sub_h}, "
                f"got {width}x{height}; leave pix_fmt unset to use yuv444p at odd sizes"
            )
        return settings.pix_fmt, None
    supported = _pix_fmts(_encoder(settings.codec))
    return choose_format(settings.codec, supported, size_wh, source_pix_fmt)


def resolve_pix_fmt(
    settings: EncodeSettings, size_wh: tuple[int, int], source_pix_fmt: str | None = None
) -> str:
    """The pixel format a segment of ``size_wh`` is encoded in (see :func:`choose_pix_fmt`)."""
    return choose_pix_fmt(settings, size_wh, source_pix_fmt)[0]


def output_notes(
    settings: EncodeSettings, video: VideoStreamInfo, size_wh: tuple[int, int]
) -> list[str]:
    """What an output of ``video`` at ``size_wh`` cannot keep of its pixels or colour, one
    line each: the coordinator logs them once (each segment's writer would repeat them)."""
    _, note = choose_pix_fmt(settings, size_wh, video.pix_fmt)
    return [*colour_notes(video), *([note] if note else [])]


def to_encoder_frame(
    image: np.ndarray, pix_fmt: str, colour: Colour = BT709_LIMITED
) -> av.VideoFrame:
    """``image`` (H, W, 3 uint8 RGB) as a ``pix_fmt`` frame, converted as the writer does."""
    return from_rgb(image, pix_fmt, colour)


def _colour_for(
    source: VideoStreamInfo | None, size_wh: tuple[int, int], rate: Fraction | None, pix_fmt: str
) -> Colour:
    """The colour the writer encodes and tags: the source's reading (BT.709 without one);
    a full-range ``yuvj*`` format chosen explicitly is full range."""
    colour = BT709_LIMITED if source is None else output_colour(video_colour(source), size_wh, rate)
    if pix_fmt.startswith("yuvj") and not colour.full_range:
        colour = replace(colour, full_range=True)
    return colour


def muxer_options(format_name: str, time_base: Fraction) -> dict[str, str]:
    """Muxer options that keep every video pts of ``time_base`` exact.

    MP4 stores a start offset (a segment's first pts) as an edit list in the *movie*
    timescale, 1/1000 s by default, which moves every frame of a 1/11456 time base by
    a fraction of a millisecond. Using the video track's timescale for the movie too
    keeps it exact.
    """
    if format_name not in MOV_FORMATS:
        return {}
    timescale = time_base.denominator
    while timescale < _MIN_MOV_TIMESCALE:
        timescale *= 2
    return {"movie_timescale": str(timescale), "video_track_timescale": str(timescale)}


class SegmentWriter:
    """Encode RGB frames into ``path``; each frame keeps the pts it is given.

    ``source`` is the input video the frames come from: the output keeps its bit depth,
    chroma subsampling and colour (see the module docstring).
    """

    def __init__(
        self,
        path: Path,
        settings: EncodeSettings,
        size_wh: tuple[int, int],
        time_base: Fraction,
        rate: Fraction | None,
        *,
        source: VideoStreamInfo | None = None,
    ) -> None:
        settings.validate()
        width, height = size_wh
        if width <= 0 or height <= 0:
            raise ConfigError(f"size: expected positive width and height, got {width}x{height}")
        self.path = Path(path)
        self.size_wh = (width, height)
        self.pix_fmt, note = choose_pix_fmt(
            settings, self.size_wh, None if source is None else source.pix_fmt
        )
        if note:
            logger.debug("%s: %s", self.path.name, note)
        self.colour = _colour_for(source, self.size_wh, rate, self.pix_fmt)
        self.frames_written = 0
        self._last_pts: int | None = None
        self._time_base = time_base
        self._closed = False
        try:
            self._container = av.open(str(self.path), mode="w")
        except (av.FFmpegError, OSError, ValueError) as exc:
            failure = write_failure(exc, str(self.path))
            raise failure or MediaError(f"{self.path}: cannot create segment file ({exc})") from exc
        self._container.container_options.update(
            muxer_options(self._container.format.name, time_base)
        )
        try:
            self._stream = self._add_stream(settings, time_base, rate)
            self._start()
        except BaseException:
            self._container.close()
            self.path.unlink(missing_ok=True)
            raise
        # pts → container ticks; a fraction means the container would round the frame's time
        self._ticks_per_pts = time_base / (self._stream.time_base or time_base)

    def _start(self) -> None:
        """Open the encoder and write the header now, so bad settings fail here."""
        try:
            self._container.start_encoding()
        except (av.FFmpegError, ValueError) as exc:
            if failure := write_failure(exc, str(self.path)):
                raise failure from exc
            raise ConfigError(f"{self.path.name}: the encoder refused the settings: {exc}") from exc

    def _add_stream(
        self, settings: EncodeSettings, time_base: Fraction, rate: Fraction | None
    ) -> av.video.stream.VideoStream:
        try:
            stream = self._container.add_stream(settings.codec, rate=rate)
        except ValueError as exc:
            raise ConfigError(
                f"{self.path.name}: the {self._container.format.name} container "
                f"cannot hold {settings.codec} ({exc})"
            ) from exc
        if not isinstance(stream, av.video.stream.VideoStream):
            raise ConfigError(f"codec: expected a video encoder, got {settings.codec!r}")
        ctx = stream.codec_context
        ctx.width, ctx.height = self.size_wh
        ctx.pix_fmt = self.pix_fmt
        ctx.color_primaries = self.colour.primaries
        ctx.color_trc = self.colour.trc
        if not is_rgb_format(self.pix_fmt):
            ctx.colorspace = self.colour.matrix
            ctx.color_range = self.colour.range
        ctx.time_base = time_base
        stream.time_base = time_base
        if settings.threads:
            ctx.thread_count = settings.threads
        if settings.bitrate is not None:
            ctx.bit_rate = settings.bitrate
        options = dict(settings.options)
        if settings.crf == 0 and settings.codec == "libx264" and bit_depth(self.pix_fmt) > 8:
            options.setdefault("qp", "0")  # lossless; x264's crf 0 is lossless at 8 bits only
        elif settings.crf is not None:
            options.setdefault("crf", str(settings.crf))
        if settings.preset is not None:
            options.setdefault("preset", settings.preset)
        if settings.codec == "libx265":
            options.setdefault("x265-params", "log-level=error")  # no per-segment statistics
        ctx.options = options
        return stream

    def write(self, image: np.ndarray, pts: int) -> None:
        """Encode one (H, W, 3) uint8 RGB frame shown at ``pts`` (in ``time_base``)."""
        width, height = self.size_wh
        if image.shape != (height, width, 3) or image.dtype != np.uint8:
            raise MediaError(
                f"{self.path.name}: expected a ({height}, {width}, 3) uint8 image, "
                f"got {image.shape} {image.dtype}"
            )
        if self._last_pts is not None and pts <= self._last_pts:
            raise MediaError(
                f"{self.path.name}: expected pts > {self._last_pts} (frames in order), got {pts}"
            )
        if (pts * self._ticks_per_pts).denominator != 1:
            raise MediaError(
                f"{self.path.name}: the {self._container.format.name} container counts time "
                f"in units of {self._stream.time_base} s and would move the frame at pts {pts} "
                f"(time base {self._time_base}); write segments as {SEGMENT_SUFFIX}"
            )
        frame = from_rgb(image, self.pix_fmt, self.colour)
        frame.pts = pts
        frame.time_base = self._time_base
        try:
            self._container.mux(self._stream.encode(frame))
        except av.FFmpegError as exc:
            failure = write_failure(exc, str(self.path))
            raise failure or MediaError(
                f"{self.path.name}: encoding the frame at pts {pts} failed: {exc}"
            ) from exc
        self._last_pts = pts
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent); on failure the file is
        removed."""
        if self._closed:
            return
        self._closed = True
        try:
            try:
                self._container.mux(self._stream.encode(None))
            finally:
                self._container.close()  # writes the trailer: may fail on a full disk
        except av.FFmpegError as exc:
            self.path.unlink(missing_ok=True)
            failure = write_failure(exc, str(self.path))
            raise failure or MediaError(
                f"{self.path.name}: finishing the segment failed: {exc}"
            ) from exc

    def abort(self) -> None:
        """Close without flushing and remove the file."""
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            except av.FFmpegError:
                logger.debug("%s: close after abort failed", self.path, exc_info=True)
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
