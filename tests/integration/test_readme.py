"""The README's examples run as written, so the docs cannot drift from the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from tests.clips import ClipSpec, write_clip
from tests.helpers import EXAMPLES, need_package
from typer.testing import CliRunner

from vidshard.cli.app import app
from vidshard.media import probe

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def block_containing(language: str, needle: str) -> str:
    matches = [b for b in code_blocks(language) if needle in b]
    assert len(matches) == 1, f"expected one {language} block with {needle!r}"
    return matches[0]


def test_quick_start_has_exactly_two_commands():
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert commands[1] in ci  # CI runs the README's test command


def test_own_model_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_model.py").write_text(block_containing("python", "class NearestUpscaler"))
    command = block_containing("bash", "my_model.py:NearestUpscaler").strip()
    args = shlex.split(command)[1:]  # drop "vidshard"
    source = write_clip(tmp_path / "clip.mp4", ClipSpec(frames=6, size_wh=(32, 24)))
    args[args.index("examples/car-detection.mp4")] = str(source)
    result = CliRunner().invoke(app, [*args, "--preset", "ultrafast"])
    assert result.exit_code == 0, result.output
    assert probe(tmp_path / "out.mp4").video.size_wh == (96, 72)  # --scale 3


@pytest.mark.slow
def test_python_api_example(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(EXAMPLES)
    exec(compile(block_containing("python", "vidshard.upscale("), "README", "exec"), {})
    printed = capsys.readouterr().out
    assert "car-x2.mp4 377" in printed
    assert probe(tmp_path / "car-x2.mp4").video.frame_count == 377


@pytest.mark.slow
def test_job_service_example(tmp_path, monkeypatch, capsys):
    from tests.service_helpers import running_server

    serve = block_containing("bash", "vidshard serve").splitlines()[1]
    args = shlex.split(serve)[2:]  # drop "vidshard serve"
    args[args.index("--data-dir") + 1] = str(tmp_path / "data")
    args[args.index("--input-root") + 1] = str(EXAMPLES)
    args[args.index("--devices") + 1] = "cpu:2"
    monkeypatch.chdir(tmp_path)
    with running_server(tmp_path / "data", *args) as server:
        code = block_containing("python", "vidshard.Client(")
        exec(compile(code.replace("http://127.0.0.1:8000", server.url), "README", "exec"), {})
    assert capsys.readouterr().out.strip().endswith("succeeded 377")
    assert probe(tmp_path / "car-x2-served.mp4").video.frame_count == 377


@pytest.mark.slow
def test_python_detect_and_track_example(tmp_path, monkeypatch, capsys):
    need_package("ultralytics")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(EXAMPLES)
    exec(compile(block_containing("python", "vidshard.track("), "README", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert "tracks.jsonl 2 videos 60 frames" in printed
    assert "examples/car-detection.mp4 30 ok" in printed
    assert sum(line.startswith("done ") for line in printed) == 2
    lines = (tmp_path / "tracks.jsonl").read_text().splitlines()
    assert len(lines) == 2
