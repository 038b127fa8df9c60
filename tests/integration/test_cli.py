"""The command line: exit codes, one-line errors, nothing left at the output path."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tests.clips import ClipSpec, write_clip
from tests.helpers import EXAMPLES
from typer.testing import CliRunner

from vidshard.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "in.mp4", ClipSpec(frames=10))


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, needle, output_path):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert "Traceback" not in result.stderr
    assert needle in lines[0].lower()
    assert not output_path.exists()
    assert not list(output_path.parent.glob(f".{output_path.name}*"))


def bad_inputs(tmp_path, clip):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    bad_weights = tmp_path / "weights.pth"
    bad_weights.write_bytes(b"\x00garbage" * 100)
    return {
        # a missing file
        "missing": (["upscale", tmp_path / "nope.mp4"], "not found"),
        # a zero-byte file
        "empty": (["upscale", empty], "empty"),
        # a text file named .mp4
        "text": (["upscale", text], "not a"),
        # an unknown model name
        "model": (["upscale", clip, "--model", "esrgan-ultra"], "unknown model"),
        # a weights file spandrel cannot read
        "weights": (["upscale", clip, "--model", bad_weights], "weights"),
        # a device that is not there
        "device": (["upscale", clip, "--devices", "cuda:3"], "cuda"),
        # an encoder that does not exist
        "codec": (["upscale", clip, "--codec", "nocodec"], "codec"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "empty", "text", "model", "weights", "device", "codec"]
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, clip, case):
    args, needle = bad_inputs(tmp_path, clip)[case]
    output = tmp_path / "out.mp4"
    assert_user_error(run(*args, "-o", output), needle, output)


def test_missing_output_directory(tmp_path, clip):
    output = tmp_path / "no" / "such" / "dir" / "out.mp4"
    result = run("upscale", clip, "-o", output)
    assert result.exit_code == 2
    assert "output directory does not exist" in result.stderr


def test_output_equal_to_input(tmp_path, clip):
    before = clip.read_bytes()
    result = run("upscale", clip, "-o", clip)
    assert result.exit_code == 2
    assert "is the input file" in result.stderr
    assert clip.read_bytes() == before  # nothing lost


def test_upscale_json_result(tmp_path, clip):
    output = tmp_path / "out.mp4"
    result = run(
        "upscale", clip, "-o", output, "--devices", "cpu:2", "--json", "--preset", "ultrafast"
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["frames"] == 10
    assert payload["size_wh"] == [128, 96]
    assert output.exists()


def test_probe_json(clip):
    result = run("probe", clip, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["video"]["frame_count"] == 10


def test_devices_json():
    result = run("devices", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert any(d["kind"] == "cpu" for d in payload["devices"])
    assert payload["suggested"]


def test_console_script_runs_as_a_real_process(tmp_path):
    """The installed entry point, in its own process: exit code and message."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidshard",
            "upscale",
            str(tmp_path / "x.mp4"),
            "-o",
            str(tmp_path / "y.mp4"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "input file not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bundled_example_probe():
    result = run("probe", EXAMPLES / "car-detection.mp4")
    assert result.exit_code == 0
    assert "377" in result.stdout
