"""Encode one output segment: RGB frames in, each keeping its input frame's pts.

Every segment of a job is encoded with the same :class:`EncodeSettings`, so the join can
remux all segments' packets under the first segment's stream parameters.

Segment files are MP4 (:data:`SEGMENT_SUFFIX`): MP4 keeps the stream's own time base
(its timescale is the time base's denominator, or a multiple of it), so every pts
survives exactly; Matroska rounds every timestamp to a millisecond, which would move
frames of a 1/11456 or 1/90000 time base.

Colour: RGB is converted with the BT.709 matrix (limited range) and the stream is tagged
BT.709, so players decode with the matrix that encoded it; untagged video is guessed by
players (BT.709 for HD, BT.601 for SD), which would shift the colours of an upscaled
SD video.

Odd sizes: 4:2:0 and 4:2:2 need even dimensions. When ``pix_fmt`` is left unset and the
size is odd, the writer uses a format without chroma subsampling (yuv444p), so the
output keeps the model's exact size and every frame; padding or cropping would change
the picture. An explicit subsampled ``pix_fmt`` with an odd size is a ConfigError.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import av.codec
import av.container
import av.video.stream
import numpy as np
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc

from vidshard.errors import ConfigError, MediaError, write_failure

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
    pix_fmt: str | None = None  # None: yuv420p for x264/x265 (yuv444p at odd sizes)
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


def _subsampling(pix_fmt: str) -> tuple[int, int]:
    """How many luma pixels share one chroma sample, horizontally and vertically."""
    fmt = av.VideoFormat(pix_fmt)
    probe_px = 1 << 10
    return probe_px // fmt.chroma_width(probe_px), probe_px // fmt.chroma_height(probe_px)


def resolve_pix_fmt(settings: EncodeSettings, size_wh: tuple[int, int]) -> str:
    """The pixel format a segment of ``size_wh`` is encoded in (see the module docstring)."""
    width, height = size_wh
    codec = _encoder(settings.codec)
    supported = _pix_fmts(codec)
    if settings.pix_fmt is not None:
        sub_w, sub_h = _subsampling(settings.pix_fmt)
        if width % sub_w or height % sub_h:
            raise ConfigError(
                f"pix_fmt {settings.pix_fmt} needs a size divisible by {sub_w}x{sub_h}, "
                f"got {width}x{height}; leave pix_fmt unset to use yuv444p at odd sizes"
            )
        return settings.pix_fmt
    default = "yuv420p" if not supported or "yuv420p" in supported else supported[0]
    sub_w, sub_h = _subsampling(default)
    if width % sub_w == 0 and height % sub_h == 0:
        return default
    for candidate in ("yuv444p", *supported):
        if (not supported or candidate in supported) and _subsampling(candidate) == (1, 1):
            logger.info(
                "%dx%d is odd: encoding %s instead of %s", width, height, candidate, default
            )
            return candidate
    raise ConfigError(
        f"{settings.codec} has no pixel format without chroma subsampling, "
        f"needed for the odd size {width}x{height}"
    )


def to_encoder_frame(image: np.ndarray, pix_fmt: str) -> av.VideoFrame:
    """``image`` (H, W, 3 uint8 RGB) as a ``pix_fmt`` frame, converted as the writer does."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    if av.VideoFormat(pix_fmt).is_rgb:
        return frame.reformat(format=pix_fmt)
    return frame.reformat(
        format=pix_fmt,
        dst_colorspace=Colorspace.ITU709,
        dst_color_range=ColorRange.MPEG,
        dst_color_trc=ColorTrc.BT709,
        dst_color_primaries=ColorPrimaries.BT709,
    )


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
    """Encode RGB frames into ``path``; each frame keeps the pts it is given."""

    def __init__(
        self,
        path: Path,
        settings: EncodeSettings,
        size_wh: tuple[int, int],
        time_base: Fraction,
        rate: Fraction | None,
    ) -> None:
        settings.validate()
        width, height = size_wh
        if width <= 0 or height <= 0:
            raise ConfigError(f"size: expected positive width and height, got {width}x{height}")
        self.path = Path(path)
        self.size_wh = (width, height)
        self.pix_fmt = resolve_pix_fmt(settings, self.size_wh)
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
        if not av.VideoFormat(self.pix_fmt).is_rgb:
            ctx.colorspace = Colorspace.ITU709.value  # same numbers as AVCOL_SPC_BT709
            ctx.color_range = ColorRange.MPEG.value
            ctx.color_primaries = ColorPrimaries.BT709.value
            ctx.color_trc = ColorTrc.BT709.value
        ctx.time_base = time_base
        stream.time_base = time_base
        if settings.threads:
            ctx.thread_count = settings.threads
        if settings.bitrate is not None:
            ctx.bit_rate = settings.bitrate
        options = dict(settings.options)
        if settings.crf is not None:
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
        frame = to_encoder_frame(image, self.pix_fmt)
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
