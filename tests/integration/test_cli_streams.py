"""``vidshard streams run`` as a real process, on a real RTSP server (``rtsp_fixtures``):
records and snapshots in ``-o DIR``, a bad URL among good ones, SIGINT and SIGTERM, the
exit statuses, one-line errors for bad input; and the docs' example as written.

The detector is the fake ``Counting`` class (one box a frame) from a ``file.py``; bounds
are generous (CI's two cores are shared), and nothing here measures time.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from helpers import EXAMPLES, need_package
from rtsp_fixtures import RtspServer, rtsp_server_fixture
from stream_fixtures import closed_port, wait_for, write_detectors
from vidshard.cli.app import app
from webhook_receiver import Receiver

WAIT_S = 90.0
RUN_TIMEOUT_S = 240.0  # a whole run: workers starting on a loaded machine, then --duration
DOCS = Path(__file__).resolve().parents[2] / "docs" / "streams.md"
README = DOCS.parents[1] / "README.md"

rtsp_server = rtsp_server_fixture()
runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"{write_detectors(tmp_path_factory.mktemp('models'))}:Counting"


def command(*args: object) -> list[str]:
    return [sys.executable, "-m", "vidshard", "streams", "run", *map(str, args)]


def run(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """Every line of ``--json`` output, parsed (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in stdout.splitlines()]


def states(lines: list[dict[str, Any]], stream: str) -> list[str]:
    return [line["state"] for line in lines if line.get("stream") == stream]


def last(lines: list[dict[str, Any]], stream: str) -> dict[str, Any]:
    return [line for line in lines if line.get("stream") == stream][-1]


def records(folder: Path) -> list[dict[str, Any]]:
    """Every line of a stream's JSONL files, parsed: a torn line fails the test."""
    lines = []
    for path in sorted(folder.glob("*.jsonl")):
        text = path.read_text()
        assert not text or text.endswith("\n"), f"{path}: its last line is not whole"
        lines += [json.loads(line) for line in text.splitlines()]
    return lines


def test_two_rtsp_streams_write_records_and_snapshots(
    rtsp_server: RtspServer, model: str, tmp_path: Path
) -> None:
    out = tmp_path / "new" / "out"  # created, parents too
    result = run(
        f"squares={rtsp_server.url('squares')}",
        rtsp_server.url("car"),
        "--model",
        model,
        "--devices",
        "cpu:2",
        "-o",
        out,
        "--duration",
        8,
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    summary = lines[-1]
    assert summary["event"] == "summary"
    assert (summary["streams"], summary["failed"], summary["stopped_by"]) == (2, 0, "duration")
    for stream in ("squares", "s2"):  # a name given, and the second URL's own
        seen = states(lines, stream)
        assert "live" in seen, seen
        assert seen[-1] == "stopped"
        final = last(lines, stream)
        assert final["frames_processed"] > 0
        assert final["url"].startswith("rtsp://127.0.0.1:")
        assert final["latency_ms"]["p50"] is not None
        found = records(out / stream)
        assert len(found) >= 5
        assert {r["stream"] for r in found} == {stream}
        assert all(r["objects"] and r["objects"][0]["class"] == "thing" for r in found)
        assert all(r["latency_ms"] >= 0 for r in found)
        with Image.open(out / stream / f"{stream}.jpg") as snapshot:
            assert snapshot.format == "JPEG"
    assert {line["slot"] for line in lines if line.get("state") == "live"} == {"cpu#0", "cpu#1"}


def test_a_bad_url_fails_with_its_reason_and_the_others_go_on(
    rtsp_server: RtspServer, model: str, tmp_path: Path
) -> None:
    port = closed_port()
    result = run(
        rtsp_server.url("squares"),
        "missing=no-such-clip.mp4",
        f"refused=rtsp://127.0.0.1:{port}/cam",
        "scheme=nosuchproto://127.0.0.1/x",
        "--model",
        model,
        "--devices",
        "cpu:1",
        "--max-reconnects",
        0,
        "-o",
        tmp_path / "out",
        "--duration",
        6,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr  # one stream ran to a clean stop
    assert "Traceback" not in result.stderr
    outcomes = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert outcomes.keys() == {"s1", "missing", "refused", "scheme"}
    assert outcomes["missing"].startswith("failed: ")
    assert "no such file: no-such-clip.mp4" in outcomes["missing"]
    assert outcomes["refused"].startswith("failed: ")
    assert "Connection refused" in outcomes["refused"]
    assert outcomes["scheme"].startswith("failed: ")
    assert "unknown URL scheme 'nosuchproto'" in outcomes["scheme"]
    processed = re.match(r"stopped: (\d+) frames processed", outcomes["s1"])
    assert processed is not None and int(processed.group(1)) > 0, outcomes["s1"]
    assert len(records(tmp_path / "out" / "s1")) > 0
    # not a terminal: each change on a line of its own, then the table
    assert "s1 live on cpu#0" in result.stderr
    assert re.search(r"^stream +state +slot +fps +processed", result.stderr, re.MULTILINE)
    assert "3 of 4 streams failed" in result.stderr


def test_every_stream_failed_exits_1_by_itself(model: str, tmp_path: Path) -> None:
    result = run(
        "no-such-clip.mp4",
        f"rtsp://127.0.0.1:{closed_port()}/cam",
        "--model",
        model,
        "--devices",
        "cpu:1",
        "--max-reconnects",
        0,
        "--json",
        cwd=tmp_path,
    )  # no --duration: it ends once every stream has
    assert result.returncode == 1, result.stderr
    lines = json_lines(result.stdout)
    assert [last(lines, s)["state"] for s in ("s1", "s2")] == ["failed", "failed"]
    assert lines[-1] == {**lines[-1], "failed": 2, "stopped_by": "ended", "exit_code": 1}


def test_a_file_played_to_its_end_stops_by_itself(model: str, tmp_path: Path) -> None:
    clip = EXAMPLES / "car-detection.mp4"
    result = run(clip, "--model", model, "--devices", "cpu:1", "--no-realtime", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("s1 stopped: ")
    assert "(the file ended)" in result.stdout


def test_the_webhook_gets_every_streams_records(model: str, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")  # the webhook sender comes with the service's extra
    receiver = Receiver()
    try:
        result = run(
            f"cam={EXAMPLES / 'car-detection.mp4'}",
            "--loop",
            "--model",
            model,
            "--devices",
            "cpu:1",
            "--webhook-url",
            receiver.url,
            "--webhook-interval-s",
            0.2,
            "--webhook-batch",
            5,
            "--duration",
            5,
            "--json",
            cwd=tmp_path,
        )
        taken = receiver.taken()
        bodies = [body for _status, body, _headers in receiver.posts]
    finally:
        receiver.close()
    assert result.returncode == 0, result.stderr
    summary = json_lines(result.stdout)[-1]
    hook = summary["webhooks"]["cam"]
    assert hook["sent"] == len(taken) > 0
    assert (hook["failures"], hook["last_error"]) == (0, None)
    assert all(1 <= len(body) <= 5 for body in bodies)  # batched, --webhook-batch at most
    assert {r["stream"] for r in taken} == {"cam"}
    frames = [r["frame"] for r in taken]
    assert frames == sorted(frames)  # in order
    assert summary["frames_processed"] >= len(taken)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("ftp://127.0.0.1/hook", "url scheme 'ftp' is not allowed"),  # http or https only
        ("http:///hook", "url has no host"),
    ],
)
def test_a_bad_webhook_url_is_exit_2(url: str, needle: str, model: str) -> None:
    pytest.importorskip("fastapi")
    result = runner.invoke(app, ["streams", "run", "x.mp4", "-m", model, "--webhook-url", url])
    assert result.exit_code == 2, result.output
    assert result.stderr.lower().startswith("error: --webhook-url: ")
    assert needle in result.stderr.lower()


def test_a_stream_waits_while_every_slot_is_full(model: str, tmp_path: Path) -> None:
    clip = EXAMPLES / "car-detection.mp4"
    result = run(
        clip,
        clip,
        "--loop",
        "--model",
        model,
        "--devices",
        "cpu:1",
        "--per-slot-limit",
        1,
        "--duration",
        3,
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert "live" in states(lines, "s1")
    assert "live" not in states(lines, "s2")
    waits = [line for line in lines if line.get("stream") == "s2" and line["slot"] is None]
    assert waits and "per-slot limit" in waits[0]["reason"]
    assert last(lines, "s2")["frames_processed"] == 0


class Reader(threading.Thread):
    """Collects a process's stdout lines as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.lines: list[str] = []

    def run(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_every_stream_cleanly(
    rtsp_server: RtspServer, model: str, tmp_path: Path, signum: signal.Signals
) -> None:
    out = tmp_path / "out"
    args = command(
        rtsp_server.url("squares"),
        rtsp_server.url("car"),
        "--model",
        model,
        "--devices",
        "cpu:2",
        "-o",
        out,
        "--json",
        "--rotate-mb",
        0.002,  # a new file every few lines: rotation while it runs, and at the stop
    )
    process = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    reader = Reader(process)
    reader.start()
    try:
        wait_for(lambda: all(len(records(out / s)) >= 10 for s in ("s1", "s2")), WAIT_S, 0.2)
        process.send_signal(signum)
        code = process.wait(RUN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(10)
    assert process.stderr is not None
    stderr = process.stderr.read()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    lines = json_lines("".join(reader.lines))
    assert lines[-1]["stopped_by"] == signum.name
    for stream in ("s1", "s2"):
        final = last(lines, stream)
        assert final["state"] == "stopped"
        found = records(out / stream)  # every line whole, in every file
        assert len(list((out / stream).glob("*.jsonl"))) > 1
        assert len(found) >= 10
        if final["reconnects"] == 0:  # frames count from 0 again at a reconnect
            frames = [r["frame"] for r in found]
            assert frames == sorted(frames)  # across the files, in order
        assert final["frames_processed"] >= len(found)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        # the model is checked before anything starts
        (["rtsp://127.0.0.1/cam", "-m", "missing.pt"], "model not found"),
        # a stream option out of its range, named as the flag
        (["x.mp4", "-m", "{model}", "--max-fps", "0"], "--max-fps: input should be greater"),
        (["x.mp4", "-m", "{model}", "--transport", "sctp"], "--transport: input should be"),
        # the command's own options
        (["x.mp4", "-m", "{model}", "--duration", "0"], "--duration: expected seconds above 0"),
        (["x.mp4", "-m", "{model}", "--per-slot-limit", "0"], "--per-slot-limit: expected 1"),
        (["x.mp4", "-m", "{model}", "--devices", "cuda:7"], "no such device cuda:7"),
        # two streams of one name; a name without its URL
        (["a=x.mp4", "a=y.mp4", "-m", "{model}"], "stream name 'a' is given twice"),
        (["cam=", "-m", "{model}"], "expected name=url, got no url"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], needle: str, model: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    given = [arg.replace("{model}", model) for arg in args]
    result = runner.invoke(app, ["streams", "run", *given, "-o", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0].lower()
    assert not out.exists()  # nothing made before the input was checked


def test_an_output_folder_that_cannot_be_made(model: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["streams", "run", "x.mp4", "-m", model, "-o", str(blocker)])
    assert result.exit_code == 2
    assert "a file is in the way, expected a folder" in result.stderr


def test_probe_a_live_source(rtsp_server: RtspServer) -> None:
    result = runner.invoke(app, ["streams", "probe", rtsp_server.url("squares"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["codec"], info["width"], info["height"]) == ("h264", 320, 240)
    assert info["kind"] == "network"
    assert info["fps"] == pytest.approx(25, abs=0.5)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("no-such-clip.mp4", "no such file: no-such-clip.mp4"),
        (f"rtsp://127.0.0.1:{closed_port()}/cam", "connection refused"),
        ("rtsp://", "expected a host after rtsp://"),
    ],
)
def test_probe_a_source_that_gives_nothing(url: str, needle: str) -> None:
    result = runner.invoke(app, ["streams", "probe", url, "--timeout", "5"])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr.lower()
    assert len(result.stderr.strip().splitlines()) == 1


def docs_blocks(language: str, doc: Path = DOCS) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", doc.read_text(), flags=re.DOTALL)


def docs_commands(doc: Path = DOCS) -> list[list[str]]:
    """Every ``vidshard streams`` command of a doc's bash blocks, without "vidshard"."""
    lines = [
        line
        for block in docs_blocks("bash", doc)
        for line in block.replace("\\\n", " ").splitlines()
        if line.startswith("vidshard streams ")
    ]
    return [shlex.split(line)[1:] for line in lines]


def test_the_docs_have_their_examples() -> None:
    commands = docs_commands()
    runs = [args for args in commands if args[1] == "run"]
    assert len(runs) == 2 and all("examples/car-detection.mp4" in " ".join(a) for a in runs)
    assert any(args[1] == "probe" for args in commands)
    assert len(docs_commands(README)) == 1  # the README's, in its "Live streams"


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [*docs_commands(), *docs_commands(README)],
    ids=lambda args: " ".join(args[:3]),
)
def test_the_docs_examples_run_as_written(args: list[str], tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(EXAMPLES)
    if args[1] == "probe":
        result = runner.invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert "768" in result.stdout and "h264" in result.stdout
        return
    need_package("ultralytics")  # --model yolo11n.yaml
    assert "--loop" in args and "yolo11n.yaml" in args
    # the model loads within the duration: generous on a loaded machine; the last
    # --duration and --devices given win
    args = [*args, "--duration", "15", "--devices", "cpu:1", "--json"]
    result = subprocess.run(
        [sys.executable, "-m", "vidshard", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert lines[-1]["stopped_by"] == "duration"
    assert "live" in states(lines, "car")
    assert last(lines, "car")["frames_processed"] > 0
    if "-o" in args:
        assert records(tmp_path / args[args.index("-o") + 1] / "car")


def test_the_docs_json_examples_have_the_fields_written() -> None:
    """The record and the --json lines the docs show have the real ones' fields."""
    from vidshard.cli.stream_session import view_json
    from vidshard.streams.manager import StreamView
    from vidshard.streams.options import StreamOptions
    from vidshard.streams.types import StreamRecord, StreamState, StreamStatus

    shown = [json.loads(line) for b in docs_blocks("json") for line in b.splitlines() if line]
    record = StreamRecord("car", 0, 0.0, 1.0, 2.0).to_json()
    status = StreamStatus("car", StreamState.LIVE)
    options = StreamOptions(model="x.py:X")  # type: ignore[call-arg]
    view = view_json(StreamView(status, "x.mp4", options, 0.0, "cpu#0", 0, None), 0.0)
    kinds = {tuple(sorted(line)) for line in shown}
    assert tuple(sorted(record)) in kinds
    assert tuple(sorted(view)) in kinds
    summary = [line for line in shown if line.get("event") == "summary"]
    assert len(summary) == 1
