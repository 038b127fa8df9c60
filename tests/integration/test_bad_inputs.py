"""The bad input catalogue: odd, broken and hostile inputs through the real CLI.

Every case either works correctly (valid but unusual input: the output has the input's
frames, timestamps and other streams) or fails with a typed error: exit code 2, one
line on stderr starting with ``error:``, no traceback, and nothing at the output path,
hidden temp and work files included. A few cases also run as a real process
(``python -m vidshard``) to show the exit code and the message end to end.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from tests.clips import ClipSpec, packets_of, variable_rate_pts, write_clip
from tests.helpers import audio_packets, frame_hashes, frame_times
from typer.testing import CliRunner

import vidshard
from models_fixtures import build_compact, write_unreadable_files
from vidshard.cli import console as app_module
from vidshard.cli.app import app
from vidshard.errors import (
    DeviceError,
    InputError,
    ModelError,
    OutputError,
    VidshardError,
)
from vidshard.media import probe

runner = CliRunner()
FAST = ["--preset", "ultrafast", "--devices", "cpu:1"]
SPLIT = [*FAST, "--segment-seconds", "0.3"]  # several segments, joined
CENC_KEY = "00112233445566778899aabbccddeeff"
CENC_KID = "ffeeddccbbaa99887766554433221100"


# --- building bad inputs ---------------------------------------------------------------


def clip(folder: Path, name: str = "in.mp4", **spec: object) -> Path:
    """A tiny generated clip (64x48, 12 frames unless told)."""
    spec.setdefault("frames", 12)
    return write_clip(folder / name, ClipSpec(**spec))


def remux(source: Path, target: Path, *, attachment: bytes = b"", **options: str) -> Path:
    """Copy every packet of ``source`` into ``target`` with muxer ``options`` (and an
    ``attachment``, for Matroska)."""
    with av.open(str(source)) as src, av.open(str(target), "w", options=options) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        if attachment:
            out.add_attachment("blob.bin", "application/octet-stream", attachment)
        for packet in src.demux():
            if packet.size:
                packet.stream = streams[packet.stream_index]
                out.mux(packet)
    return target


def cut(source: Path, target: Path, fraction: float, *, head: bool = False) -> Path:
    """Keep the first ``fraction`` of the bytes (or drop them, with ``head``)."""
    data = source.read_bytes()
    at = int(len(data) * fraction)
    if head:
        at -= at % 188  # whole MPEG-TS packets
    target.write_bytes(data[at:] if head else data[:at])
    return target


def zero_video_payloads(path: Path, indices: tuple[int, ...]) -> Path:
    """Overwrite the payload of the video packets ``indices`` (decode order) with zeros,
    keeping the container intact: the demuxer reads them, the decoder rejects them."""
    data = bytearray(path.read_bytes())
    with av.open(str(path)) as container:
        packets = [bytes(p) for p in container.demux(video=0) if p.size]
    for i in indices:
        at = data.find(packets[i])
        assert at >= 0 and data.find(packets[i], at + 1) < 0, "payload not unique"
        data[at : at + len(packets[i])] = bytes(len(packets[i]))
    path.write_bytes(bytes(data))
    return path


def patch_fourcc(source: Path, target: Path, fourcc: bytes) -> Path:
    """``source`` (H.264 in MP4) with its sample entry renamed to ``fourcc``."""
    data = source.read_bytes()
    assert data.count(b"avc1") >= 1
    target.write_bytes(data.replace(b"avc1", fourcc))
    return target


def big_output(folder: Path, size: int = 256 * 1024) -> Path:
    """An MKV clip carrying a ``size``-byte attachment: its output holds the attachment too,
    so it is at least that big, while every segment (video only) stays a few KiB."""
    blob = np.random.default_rng(0).bytes(size)
    return remux(clip(folder, "plain.mkv"), folder / "attached.mkv", attachment=blob)


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        stream.codec_context.layout = "mono"
        for i in range(8):
            samples = np.zeros((1, 1024), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


# --- the cases -------------------------------------------------------------------------


@dataclass
class Setup:
    """What a case runs: ``vidshard upscale INPUT -o OUTPUT *args``."""

    input: Path
    output: Path
    args: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    make: Callable[[Path], Setup]
    error: type[VidshardError] | None = None  # None: valid but unusual, must work
    needle: str = ""  # words the one-line message must hold (lower case)


def _out(folder: Path, name: str = "out.mp4") -> Path:
    """The output path, in a folder of its own (so leftovers are easy to see)."""
    (folder / "out").mkdir(exist_ok=True)
    return folder / "out" / name


def works(spec_name: str = "in.mp4", args: list[str] | None = None, **spec: object):
    def make(folder: Path) -> Setup:
        source = clip(folder, spec_name, **spec)
        return Setup(source, _out(folder, "out" + source.suffix), list(args or FAST))

    return make


def fails(make_input: Callable[[Path], Path], *extra: str, out_name: str = "out.mp4"):
    def make(folder: Path) -> Setup:
        return Setup(make_input(folder), _out(folder, out_name), [*FAST, *extra])

    return make


def _non_ascii(folder: Path) -> Setup:
    where = folder / "a folder with spaces — ü 日本"
    where.mkdir()
    source = clip(where, "vidéo ñ 出力 #1.mp4", audio_languages=("eng",))
    return Setup(source, where / "sortie é 出力.mp4", FAST)


def _cenc(folder: Path) -> Path:
    base = clip(folder, "plain.mp4")
    options = {
        "encryption_scheme": "cenc-aes-ctr",
        "encryption_key": CENC_KEY,
        "encryption_kid": CENC_KID,
    }
    return remux(base, folder / "clip-cenc.mp4", **options)


def _truncated_faststart(folder: Path) -> Path:
    full = remux(clip(folder, "full.mp4", frames=24), folder / "fs.mp4", movflags="faststart")
    return cut(full, folder / "half.mp4", 0.5)


def _raw_h264(folder: Path) -> Path:
    return clip(folder, "raw.h264")


def _no_frames(folder: Path) -> Path:
    path = folder / "no-frames.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()
    return path


def _image(folder: Path) -> Path:
    path = folder / "picture.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path)
    return path


def _corrupt_mid_file(folder: Path) -> Path:
    return zero_video_payloads(clip(folder, "clip.mp4", frames=24, gop=12), (5, 6, 7))


def _starts_mid_gop(folder: Path) -> Path:
    return cut(clip(folder, "full.ts", frames=24, gop=12), folder / "tail.ts", 0.34, head=True)


def _output_dir_is_file(folder: Path) -> Setup:
    source = clip(folder)
    blocker = folder / "not-a-dir"
    blocker.write_text("a file")
    return Setup(source, blocker / "out.mp4", FAST)


def _output_is_dir(folder: Path) -> Setup:
    source = clip(folder)
    (folder / "out" / "taken.mp4").mkdir(parents=True)
    return Setup(source, folder / "out" / "taken.mp4", FAST)


def _missing_output_dir(folder: Path) -> Setup:
    return Setup(clip(folder), folder / "no" / "such" / "dir" / "out.mp4", FAST)


def _output_is_input(folder: Path) -> Setup:
    source = clip(folder)
    return Setup(source, source, FAST)


def _output_is_hard_link_to_input(folder: Path) -> Setup:
    source = clip(folder)
    (folder / "out").mkdir()
    os.link(source, folder / "out" / "link.mp4")
    return Setup(source, folder / "out" / "link.mp4", FAST)


def _read_only_dir(folder: Path) -> Setup:
    if os.geteuid() == 0:
        pytest.skip("root writes through directory permissions (see the /sys case)")
    source = clip(folder)
    locked = folder / "locked"
    locked.mkdir(mode=0o555)
    return Setup(source, locked / "out.mp4", FAST)


def _sysfs(folder: Path) -> Setup:
    """/sys refuses new files even to root, though os.access says it is writable."""
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no sysfs")
    return Setup(clip(folder), Path("/sys/vidshard-test-out.mp4"), FAST)


def _weights_wrong_scale(folder: Path) -> Setup:
    weights = build_compact(folder / "w", scale=4).path
    return Setup(clip(folder), _out(folder), [*FAST, "--model", str(weights), "--scale", "2"])


def _weights_unknown_arch(folder: Path) -> Setup:
    weights = write_unreadable_files(folder / "w")["unknown_arch"]
    return Setup(clip(folder), _out(folder), [*FAST, "--model", str(weights)])


def _device(spec: str):
    def make(folder: Path) -> Setup:
        return Setup(clip(folder), _out(folder), ["--preset", "ultrafast", "--devices", spec])

    return make


def _input_dir(folder: Path) -> Path:
    (folder / "dir.mp4").mkdir()
    return folder / "dir.mp4"


def _empty(folder: Path) -> Path:
    (folder / "zero.mp4").touch()
    return folder / "zero.mp4"


def _text(folder: Path) -> Path:
    (folder / "notes.mp4").write_text("this is not a video\n" * 50)
    return folder / "notes.mp4"


CASES: dict[str, Case] = {
    # --- valid but unusual: must work, frames and timestamps as in the input -----------
    # a video of one frame
    "single-frame": Case(works(frames=1)),
    # odd width and height (4:2:0 cannot hold them: the source is 4:4:4)
    "odd-size": Case(works(size_wh=(35, 27), frames=10)),
    # 10-bit H.264 with B-frames, in Matroska
    "10-bit": Case(works("in.mkv", pix_fmt="yuv420p10le", bframes=2)),
    # rotation metadata (the display matrix is carried over)
    "rotation": Case(works(rotation=90)),
    # several audio tracks, copied byte for byte
    "three-audio-tracks": Case(works(audio_languages=("eng", "fra", "deu"))),
    # a SubRip subtitle track in Matroska
    "subtitle-srt-mkv": Case(works("in.mkv", subtitle="subrip")),
    # a mov_text subtitle track in MP4
    "subtitle-mov-text": Case(works(subtitle="mov_text", audio_languages=("eng",))),
    # variable frame rate over several segments
    "variable-frame-rate": Case(
        works(args=SPLIT, frames=20, time_base=Fraction(1, 1000), pts=variable_rate_pts(20))
    ),
    # NTSC 29.97 fps: a non-integer frame rate
    "non-integer-rate": Case(works(args=SPLIT, rate=Fraction(30000, 1001), frames=20)),
    # B-frames: decode order differs from display order, over several segments
    "b-frames": Case(works(args=SPLIT, frames=20, bframes=3, gop=8)),
    # MPEG-TS with a KLV data stream and audio (timestamps start after zero)
    "ts-data-stream": Case(works("in.ts", data=True, audio_languages=("eng",))),
    # spaces, non-ASCII letters and a '#' in both paths
    "unicode-paths": Case(_non_ascii),
    # --- the input is not a usable video: InputError --------------------------------------
    # no such file
    "missing-input": Case(fails(lambda d: d / "nope.mp4"), InputError, "not found"),
    # a directory where the video should be
    "input-is-directory": Case(fails(_input_dir), InputError, "directory"),
    # a zero-byte file
    "zero-bytes": Case(fails(_empty), InputError, "empty"),
    # a text file named .mp4
    "text-as-mp4": Case(fails(_text), InputError, "not a media file"),
    # an MP4 cut in half: its index (moov, written last) is gone
    "truncated-mp4": Case(
        fails(lambda d: cut(clip(d, "full.mp4"), d / "half.mp4", 0.5)), InputError, "truncated"
    ),
    # a faststart MP4 cut in half: the index lists frames the file no longer holds
    "truncated-faststart-mp4": Case(fails(_truncated_faststart), InputError, "truncated"),
    # a Matroska file cut in half: its header declares a longer duration than is left
    "truncated-mkv": Case(
        fails(lambda d: cut(clip(d, "full.mkv", frames=24, rate=Fraction(8)), d / "h.mkv", 0.5)),
        InputError,
        "truncated",
    ),
    # audio only: no video stream
    "audio-only": Case(fails(lambda d: audio_only(d / "song.m4a")), InputError, "no video"),
    # a still image
    "image": Case(fails(_image), InputError, "still image"),
    # CENC-encrypted video (no key)
    "encrypted-cenc": Case(fails(_cenc), InputError, "encrypted"),
    # EVC video: FFmpeg demuxes it but this build has no decoder
    "codec-without-decoder": Case(
        fails(lambda d: patch_fourcc(clip(d, "h264.mp4"), d / "evc.mp4", b"evc1")),
        InputError,
        "codec",
    ),
    # a made-up fourcc
    "unknown-fourcc": Case(
        fails(lambda d: patch_fourcc(clip(d, "h264.mp4"), d / "xyz.mp4", b"xyz1")),
        InputError,
        "codec",
    ),
    # a raw H.264 elementary stream: no timestamps
    "raw-h264": Case(fails(_raw_h264), InputError, "no timestamp"),
    # a video stream without a single frame
    "no-frames": Case(fails(_no_frames), InputError, "no streams"),
    # three frames mid-file that do not decode (found by the workers, not the probe)
    "corrupt-frames-mid-file": Case(fails(_corrupt_mid_file), InputError, "corrupt"),
    # an MPEG-TS cut mid-GOP: its first frames reference a keyframe that is gone
    "starts-mid-gop": Case(fails(_starts_mid_gop, out_name="out.ts"), InputError, "keyframe"),
    # --- the output cannot be written as asked: OutputError -------------------------------
    # the output directory does not exist
    "missing-output-dir": Case(_missing_output_dir, OutputError, "does not exist"),
    # the output's directory is a file
    "output-dir-is-file": Case(_output_dir_is_file, OutputError, "not a directory"),
    # the output path is a directory
    "output-is-dir": Case(_output_is_dir, OutputError, "is a directory"),
    # the output is the input
    "output-is-input": Case(_output_is_input, OutputError, "is the input"),
    # the output is a hard link to the input (another name, the same file)
    "output-hard-link-to-input": Case(_output_is_hard_link_to_input, OutputError, "is the input"),
    # an extension no container has
    "unknown-extension": Case(fails(clip, out_name="out.xyz"), OutputError, "extension"),
    # SubRip cannot go into MP4: say so, and name a container that can hold it
    "subtitle-container-mismatch": Case(
        fails(lambda d: clip(d, "in.mkv", subtitle="subrip")), OutputError, "use .mkv"
    ),
    # a directory without write permission (skipped as root)
    "read-only-dir": Case(_read_only_dir, OutputError, "permission"),
    # a directory that refuses new files, even to root
    "sysfs-dir": Case(_sysfs, OutputError, "permission"),
    # --- model and device: ModelError, DeviceError ----------------------------------------
    # a scale that does not match the weights (x4 weights, --scale 2)
    "weights-scale-mismatch": Case(_weights_wrong_scale, ModelError, "x4"),
    # weights of an architecture spandrel does not know
    "weights-unknown-arch": Case(_weights_unknown_arch, ModelError, "not recognised"),
    # a GPU that is not there
    "missing-cuda-device": Case(_device("cuda:3"), DeviceError, "cuda"),
    # an NPU that is not there
    "missing-npu-device": Case(_device("npu:0"), DeviceError, "npu"),
}


# --- running and checking --------------------------------------------------------------


@contextmanager
def recorded_errors(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[VidshardError]]:
    """Record the typed error the CLI turns into its one-line message."""
    seen: list[VidshardError] = []
    original = app_module.user_errors

    @contextmanager
    def recording() -> Iterator[None]:
        with original():
            try:
                yield
            except VidshardError as exc:
                seen.append(exc)
                raise

    monkeypatch.setattr(app_module, "user_errors", recording)
    yield seen


def hidden_beside(output: Path) -> list[Path]:
    """Temp files and work dirs a job keeps beside its output (``.{name}.*``)."""
    return list(output.parent.glob(f".{output.name}.*")) if output.parent.is_dir() else []


def assert_one_line_error(
    stderr: str, exit_code: int, expected_code: int, needle: str, folder: Path
) -> str:
    """Exit code, one ``error:`` line and no traceback; ``needle`` is looked for in the
    message with the test's folder taken out (pytest names folders after tests)."""
    assert exit_code == expected_code, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    message = lines[0].replace(str(folder), "<tmp>")
    assert len(message) > len("error: ") + 10, stderr
    assert needle in message.lower(), stderr
    return message


def assert_same_video(source: Path, output: Path, scale: int) -> None:
    """Frames, timestamps, size, rotation and every other stream as in the input."""
    src, out = probe(source), probe(output)
    assert out.video.frame_count == src.video.frame_count
    assert frame_times(output) == frame_times(source)
    assert len(frame_hashes(output)) == src.video.frame_count  # every frame decodes
    assert out.video.size_wh == (src.video.width * scale, src.video.height * scale)
    assert out.video.rotation == src.video.rotation
    assert audio_packets(output) == audio_packets(source)
    for kind in ("subtitle", "data"):
        assert packets_of(output, kind) == packets_of(source, kind), kind
    assert [s.kind for s in out.streams] == [s.kind for s in src.streams]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(tmp_path, monkeypatch, name):
    case = CASES[name]
    setup = case.make(tmp_path)
    before = setup.input.read_bytes() if setup.input.is_file() else None
    existed = setup.output.exists()  # output-is-input, hard link, output-is-dir
    args = ["upscale", str(setup.input), "-o", str(setup.output), *setup.args]
    with recorded_errors(monkeypatch) as seen:
        result = runner.invoke(app, args)
    if case.error is None:
        assert result.exit_code == 0, result.output
        assert_same_video(setup.input, setup.output, scale=2)
        assert not list(setup.output.parent.glob(".*"))  # no temp file or work dir left
    else:
        assert_one_line_error(
            result.stderr, result.exit_code, case.error.exit_code, case.needle, tmp_path
        )
        assert len(seen) == 1 and type(seen[0]) is case.error, seen
        assert setup.output.exists() == existed  # nothing new at the output path
        assert not hidden_beside(setup.output)
    if before is not None:
        assert setup.input.read_bytes() == before  # the input is never touched


def test_catalogue_is_complete():
    """The issue asks for at least 25 cases."""
    assert len(CASES) >= 25


# --- end to end, in a real process -----------------------------------------------------


def vidshard_process(
    *args: object,
    file_size_limit: int | None = None,
    wrapper: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m vidshard ARGS`` as its own process, optionally under a file size limit
    (writes past it fail with EFBIG, as Python ignores SIGXFSZ) or inside ``wrapper``."""

    def limit() -> None:
        assert file_size_limit is not None
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [*wrapper, sys.executable, "-m", "vidshard", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=limit if file_size_limit is not None else None,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.mark.parametrize(
    ("make_input", "needle"),
    [
        (_empty, "empty"),  # refused by the probe, in the coordinator
        (_cenc, "encrypted"),  # refused by the probe, with a reason
        (_starts_mid_gop, "keyframe"),  # found by a worker while decoding
    ],
    ids=["zero-bytes", "encrypted-cenc", "starts-mid-gop"],
)
def test_real_process_one_line_exit_2(tmp_path, make_input, needle):
    """Only the message reaches stderr: no traceback, no log line from a worker."""
    source = make_input(tmp_path)
    output = _out(tmp_path, "out" + source.suffix)
    proc = vidshard_process("upscale", source, "-o", output, *FAST)
    assert_one_line_error(proc.stderr, proc.returncode, 2, needle, tmp_path)
    assert not output.exists()
    assert not hidden_beside(output)


def test_disk_full_in_workers_and_in_the_join(tmp_path):
    """A file size limit (EFBIG, as on a full disk) hit while the workers write their
    segments (1 KiB), then while the coordinator writes the joined output (128 KiB: every
    segment fits, the output and its 256 KiB attachment do not)."""
    source = big_output(tmp_path)
    for limit, stage in ((1024, "workers"), (128 * 1024, "join")):
        output = _out(tmp_path, f"full-{stage}.mkv")
        proc = vidshard_process("upscale", source, "-o", output, *FAST, file_size_limit=limit)
        message = assert_one_line_error(proc.stderr, proc.returncode, 2, "file too large", tmp_path)
        assert message.startswith("error: cannot write "), (stage, message)
        assert not output.exists(), stage
        assert not hidden_beside(output), stage


def _can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        return False
    probe_cmd = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c"]
    probe_cmd += ['mount -t tmpfs -o size=64k tmpfs "$0"', str(where)]
    return subprocess.run(probe_cmd, capture_output=True, check=False).returncode == 0


def test_no_space_left_on_a_real_tiny_file_system(tmp_path):
    """A 128 KiB tmpfs (in a private mount namespace): real ENOSPC, in the join (every
    segment fits, the output and its 256 KiB attachment do not)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _can_mount_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    source = big_output(tmp_path)
    output = disk / "out.mkv"
    left = tmp_path / "left.txt"  # what the tmpfs holds afterwards, seen from inside
    script = 'mount -t tmpfs -o size=128k tmpfs "$0" && "$@"; rc=$?; ls -A "$0" > "$LEFT"; exit $rc'
    wrapper = ("unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, str(disk))
    proc = vidshard_process(
        "upscale", source, "-o", output, *FAST, wrapper=wrapper, env={"LEFT": str(left)}
    )
    assert_one_line_error(proc.stderr, proc.returncode, 2, "no space left on device", tmp_path)
    assert left.read_text() == ""  # no output, no temp file, no work dir


def test_no_write_permission_through_the_api(tmp_path, monkeypatch):
    """A directory the user may not write to (as root, permissions do not stop writes,
    so os.access is made to say no)."""
    source = clip(tmp_path)
    output = _out(tmp_path)
    real_access = os.access

    def access(path, mode, **kwargs):
        return False if Path(path) == output.parent else real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(OutputError, match="no permission to write in"):
        vidshard.upscale(source, output, devices="cpu:1")
    assert not output.exists()
    assert not hidden_beside(output)


def test_write_failure_errnos():
    """Which OS errors become an OutputError (the disk's problem) and which do not."""
    from vidshard.errors import write_failure

    for code, words in (
        (errno.ENOSPC, "no space left"),
        (errno.EFBIG, "file too large"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permission denied"),
        (errno.EDQUOT, "quota"),
    ):
        failure = write_failure(OSError(code, os.strerror(code)), "/x/out.mp4")
        assert isinstance(failure, OutputError)
        assert str(failure).startswith("cannot write /x/out.mp4: ")
        assert words in str(failure)
    assert write_failure(OSError(errno.EIO, "I/O error"), "/x") is None
    assert write_failure(ValueError("no errno"), "/x") is None


def test_cli_turns_a_stray_refused_write_into_one_line(tmp_path, monkeypatch):
    """An OSError saying the disk refused a write, raised where no typed error caught it,
    still ends as one line and exit code 2; any other OSError keeps its traceback."""
    import vidshard.engine.upscale as upscale_module

    source = clip(tmp_path)
    output = _out(tmp_path)

    def refused(*_args, **_kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(output.parent / "x"))

    monkeypatch.setattr(upscale_module, "run_upscale", refused)
    result = runner.invoke(app, ["upscale", str(source), "-o", str(output)])
    message = assert_one_line_error(result.stderr, result.exit_code, 2, "permission", tmp_path)
    assert message == "error: <tmp>/out/x: permission denied"

    def broken(*_args, **_kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(upscale_module, "run_upscale", broken)
    result = runner.invoke(app, ["upscale", str(source), "-o", str(output)])
    assert isinstance(result.exception, OSError)  # a bug or a broken disk: not hidden
