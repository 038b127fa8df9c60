#!/usr/bin/python3
"""A real RTSP server for the tests: Debian's GStreamer RTSP server, looping video clips.

Run it with the system Python (it needs python3-gi and gir1.2-gst-rtsp-server-1.0, not
vidshard's environment)::

    /usr/bin/python3 tests/rtsp_server.py --port 8554 car=examples/car-detection.mp4

serves ``rtsp://127.0.0.1:8554/car`` (H.264 over RTP, TCP or UDP), and prints one line,
``ready rtsp://127.0.0.1:8554/car ...``, on stdout once every mount can be played. With
``--port 0`` the system picks the port; the ready line names it.

Each clip plays in real time in a pipeline of its own (file -> decoder -> ``intervideosink``)
that seeks back to the start at end of stream, from the moment the server starts. A mount's
media (``intervideosrc`` -> ``x264enc`` -> ``rtph264pay``) is shared by all its clients and
encodes the newest frame of its clip at the clip's frame rate, so a client sees one
continuous live stream while the file restarts underneath, and a client that leaves does
not disturb the others. A keyframe every ``--keyframe-s`` seconds, with the parameter sets
repeated before each, lets a client that joins start decoding at once.

``--check`` reports what this Python lacks to run the server (exit status 1) or nothing
(exit status 0). ``--exit-with-stdin`` stops the server when its stdin closes, so a test
run that dies without stopping it does not leave it behind.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer
except (ImportError, ValueError) as exc:  # no bindings: only --check can run
    BINDINGS_ERROR: Exception | None = exc
else:
    BINDINGS_ERROR = None

LOG = logging.getLogger("rtsp_server")
HOST = "127.0.0.1"
DEFAULT_RATE = Fraction(25)  # for a clip that declares no frame rate (variable rate)
PREROLL_TIMEOUT_S = 20
REPEAT_LAST_NS = 2**64 - 1  # intervideosrc's longest timeout: never black frames
CAN_NOT_LISTEN = 3  # the exit status when the port is taken (argparse's errors exit 2)

# The GStreamer elements the server uses, and the Debian package that has each.
ELEMENTS = {
    "filesrc": "libgstreamer1.0-0",
    "decodebin": "gstreamer1.0-plugins-base",
    "videoconvert": "gstreamer1.0-plugins-base",
    "intervideosink": "gstreamer1.0-plugins-bad",
    "intervideosrc": "gstreamer1.0-plugins-bad",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "rtph264pay": "gstreamer1.0-plugins-good",
}
DECODERS = {"openh264dec": "gstreamer1.0-plugins-bad", "avdec_h264": "gstreamer1.0-libav"}


def missing() -> list[str]:
    """What this Python lacks to run the server: the bindings, or GStreamer elements."""
    if BINDINGS_ERROR is not None:
        return [
            f"the GStreamer RTSP server bindings ({BINDINGS_ERROR}): "
            "python3-gi and gir1.2-gst-rtsp-server-1.0"
        ]
    Gst.init(None)
    lacking = [
        f"GStreamer element {name} ({package})"
        for name, package in ELEMENTS.items()
        if Gst.ElementFactory.find(name) is None
    ]
    if all(Gst.ElementFactory.find(name) is None for name in DECODERS):
        lacking.append(f"an H.264 decoder: one of {', '.join(DECODERS)} ({DECODERS})")
    return lacking


class ClipLoop:
    """Plays one file in real time into ``intervideosink channel=NAME``, forever: at end of
    stream it seeks back to the start. Its mount's media reads the channel."""

    def __init__(self, name: str, path: Path, on_error: Any) -> None:
        self.name = name
        self.path = path
        self.loops = 0
        self._on_error = on_error
        self.pipeline = Gst.parse_launch(
            "filesrc name=file ! decodebin caps=video/x-raw expose-all-streams=false"
            " ! videoconvert ! video/x-raw,format=I420"
            f" ! intervideosink name=sink channel={name}"
        )
        self.pipeline.get_by_name("file").set_property("location", str(path))
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_message)

    def start(self) -> Any:
        """Preroll, start playing; returns the caps the clip's frames have."""
        self.pipeline.set_state(Gst.State.PAUSED)
        result, _, _ = self.pipeline.get_state(PREROLL_TIMEOUT_S * Gst.SECOND)
        caps = self.pipeline.get_by_name("sink").get_static_pad("sink").get_current_caps()
        if result == Gst.StateChangeReturn.FAILURE or caps is None:
            raise RuntimeError(f"cannot play {self.path} (mount /{self.name}): {result}")
        self.pipeline.set_state(Gst.State.PLAYING)
        return caps

    def stop(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)

    def _on_message(self, _bus: Any, message: Any) -> None:
        if message.type == Gst.MessageType.EOS:
            self.loops += 1
            LOG.info("/%s: end of %s, loop %d starts", self.name, self.path.name, self.loops)
            flags = Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT
            if not self.pipeline.seek_simple(Gst.Format.TIME, flags, 0):
                self._on_error(f"/{self.name}: cannot seek {self.path} back to the start")
        elif message.type == Gst.MessageType.ERROR:
            error, debug = message.parse_error()
            self._on_error(f"/{self.name}: {error.message} ({debug})")


def media_caps(clip_caps: Any) -> Any:
    """What the mount's ``intervideosrc`` makes: the clip's format, size, aspect and colour,
    at its frame rate (or ``DEFAULT_RATE`` for a clip of variable rate)."""
    structure = clip_caps.get_structure(0)
    ok, num, den = structure.get_fraction("framerate")
    if not ok or num <= 0 or den <= 0:
        num, den = DEFAULT_RATE.numerator, DEFAULT_RATE.denominator
    _, par_num, par_den = structure.get_fraction("pixel-aspect-ratio")
    fields = [
        f"format={structure.get_string('format')}",
        f"width={structure.get_value('width')}",
        f"height={structure.get_value('height')}",
        f"pixel-aspect-ratio={par_num or 1}/{par_den or 1}",
        f"framerate={num}/{den}",
    ]
    for name in ("interlace-mode", "colorimetry", "chroma-site"):
        if structure.has_field(name):
            fields.append(f"{name}={structure.get_string(name)}")
    return Gst.Caps.from_string(",".join(["video/x-raw", *fields]))


def mount_factory(name: str, caps: Any, args: argparse.Namespace) -> Any:
    """A shared media factory reading channel ``name`` and sending H.264 over RTP."""
    _, num, den = caps.get_structure(0).get_fraction("framerate")
    keyframe_frames = max(1, round(args.keyframe_s * num / den))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        # timeout: when the clip's pipeline lags (a loaded machine, the seek at its end)
        # repeat its last frame rather than send black frames after the default 1 s
        f"( intervideosrc channel={name} timeout={REPEAT_LAST_NS}"
        " ! capsfilter name=caps ! queue max-size-buffers=2"
        # One slice per frame: FFmpeg's RTP depacketizer gives each of x264's threaded
        # slices a packet of its own, which its decoder then takes for a whole frame.
        " ! x264enc tune=zerolatency speed-preset=ultrafast threads=1 sliced-threads=false"
        f" key-int-max={keyframe_frames} bitrate={args.bitrate_kbps}"
        " ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    factory.set_shared(True)

    def configure(_factory: Any, media: Any) -> None:
        media.get_element().get_by_name("caps").set_property("caps", caps)
        LOG.info("/%s: media ready", name)

    factory.connect("media-configure", configure)
    return factory


def log_clients(server: Any) -> None:
    def connected(_server: Any, client: Any) -> None:
        address = client.get_connection().get_ip()
        LOG.info("client %s connected", address)
        client.connect("closed", lambda _client: LOG.info("client %s closed", address))

    server.connect("client-connected", connected)


def serve(args: argparse.Namespace) -> int:
    """Listen, start the clips, serve them; returns the exit status once stopped."""
    loop = GLib.MainLoop()
    failures: list[str] = []

    def fail(reason: str) -> None:
        LOG.error("%s", reason)
        failures.append(reason)
        loop.quit()

    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(args.port))
    if server.attach(None) == 0:  # first, so that a taken port is told at once
        LOG.error("cannot listen on %s:%d (in use?)", HOST, args.port)
        return CAN_NOT_LISTEN
    clips = [ClipLoop(name, path, fail) for name, path in args.mounts.items()]
    try:
        for clip in clips:
            caps = media_caps(clip.start())
            server.get_mount_points().add_factory(
                f"/{clip.name}", mount_factory(clip.name, caps, args)
            )
    except RuntimeError as exc:
        LOG.error("%s", exc)
        failures.append(str(exc))
    if not failures:
        log_clients(server)
        for number in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, number, lambda: loop.quit() or False)
        if args.exit_with_stdin:
            condition = GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR
            GLib.io_add_watch(sys.stdin.fileno(), condition, _stdin(loop))
        port = server.get_bound_port()
        print("ready " + " ".join(f"rtsp://{HOST}:{port}/{c.name}" for c in clips), flush=True)
        loop.run()
    for clip in clips:
        clip.stop()
    return 1 if failures else 0


def _stdin(loop: Any) -> Any:
    """A watch on stdin: quit the main loop once it is closed."""

    def watch(fd: int, _condition: Any) -> bool:
        if not sys.stdin.buffer.raw.read(4096):
            LOG.info("stdin closed: stopping")
            loop.quit()
            return False
        return True

    return watch


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="*", metavar="NAME=PATH", help="mount /NAME plays PATH")
    parser.add_argument("--port", type=int, default=8554, help="TCP port (0: any free one)")
    parser.add_argument("--keyframe-s", type=float, default=0.5, help="seconds per keyframe")
    parser.add_argument("--bitrate-kbps", type=int, default=2000, help="H.264 bit rate")
    parser.add_argument("--exit-with-stdin", action="store_true", help="stop when stdin closes")
    parser.add_argument("--check", action="store_true", help="report what is missing, exit")
    args = parser.parse_args(argv)
    if not args.check and not args.clips:
        parser.error("give at least one NAME=PATH clip")
    mounts: dict[str, Path] = {}
    for item in args.clips:
        name, sep, path = item.partition("=")
        if not sep or not name.replace("-", "").replace("_", "").isalnum() or not path:
            parser.error(f"expected NAME=PATH, NAME of letters, digits, - and _; got {item!r}")
        if name in mounts:
            parser.error(f"mount /{name} given twice")
        if not Path(path).is_file():
            parser.error(f"the clip for /{name} is not a file: {path}")
        mounts[name] = Path(path).resolve()
    args.mounts = mounts
    return args


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="rtsp_server: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    lacking = missing()
    for item in lacking:
        print(f"missing: {item}", file=sys.stderr)
    if args.check or lacking:
        return 1 if lacking else 0
    return serve(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
