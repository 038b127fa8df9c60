"""Names the file system refuses (a part over 255 bytes, a path over 4096, a NUL byte)
are a user's mistake like any other: one line and exit 2 from the CLI, a typed error from
the Python API, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.clips import ClipSpec, write_clip

import vidshard
from vidshard.errors import InputError, ModelError, OutputError
from vidshard.pathnames import path_name_problem

LONG = "a" * 300  # one name over 255 bytes
DEEP = "/".join(["d" * 200] * 25)  # a path over 4096 bytes made of valid names


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("ok.mp4", None),
        (LONG, "300 bytes"),
        ("é" * 200, "400 bytes"),  # 200 characters, but 400 bytes in UTF-8
        (DEEP, "bytes long"),
        ("a\0b", "NUL"),
    ],
    ids=["fine", "long-name", "long-in-bytes", "long-path", "nul"],
)
def test_path_name_problem(raw: str, problem: str | None) -> None:
    found = path_name_problem(raw)
    assert (found is None) if problem is None else (problem in (found or ""))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("names") / "in.mp4", ClipSpec(frames=4))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidshard", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["upscale", f"{LONG}.mp4", "-o", "{tmp}/out.mp4"],
        ["upscale", f"{DEEP}.mp4", "-o", "{tmp}/out.mp4"],
        ["upscale", "{clip}", "-o", f"{{tmp}}/{LONG}.mp4"],
        ["upscale", "{clip}", "-o", "{tmp}/out.mp4", "--model", LONG],
        ["upscale", "{clip}", "-o", "{tmp}/out.mp4", "--model", f"{LONG}.pth"],
        ["upscale", "{clip}", "-o", "{tmp}/out.mp4", "--model", f"{LONG}.py:Model"],
        ["probe", f"{LONG}.mp4"],
        ["detect", "{clip}", "-o", f"{{tmp}}/{LONG}.jsonl", "--model", "yolo11n.yaml"],
        ["detect", "{clip}", "-o", "{tmp}/x.jsonl", "--annotate-dir", f"{{tmp}}/{LONG}"],
        ["detect", "--list", f"{LONG}.txt", "-o", "{tmp}/x.jsonl"],
    ],
    ids=[
        "input",
        "input-path",
        "output",
        "model-name",
        "model-weights",
        "model-class-file",
        "probe",
        "detect-output",
        "annotate-dir",
        "list-file",
    ],
)
def test_the_cli_says_one_line_and_exits_2(args: list[str], clip: Path, tmp_path: Path) -> None:
    proc = _cli(*(a.format(tmp=tmp_path, clip=clip) for a in args))
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    ("source", "output", "model", "error"),
    [
        (f"{LONG}.mp4", "out.mp4", "lanczos", InputError),
        (None, f"{LONG}.mp4", "lanczos", OutputError),
        (None, "out.mp4", f"{LONG}.pth", ModelError),
        (None, "out.mp4", "lan\0czos.pth", ModelError),  # a NUL in a weights file's name
    ],
    ids=["input", "output", "model", "model-nul"],
)
def test_the_api_raises_a_typed_error(
    source: str | None, output: str, model: str, error: type[Exception], clip: Path, tmp_path: Path
) -> None:
    with pytest.raises(error, match="cannot name a file"):
        vidshard.upscale(
            source or clip, tmp_path / output, model=model, devices="cpu:1", preset="ultrafast"
        )
