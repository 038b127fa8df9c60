"""Two jobs writing one output: the second is refused with the output's absolute path."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidshard.detection.pipeline import DetectRecipe
from vidshard.engine.detect import DetectOptions, run_detect
from vidshard.engine.upscale import UpscaleOptions, _WorkDir, run_upscale
from vidshard.errors import OutputError


@pytest.mark.parametrize(
    "given",
    [
        "out.jsonl",  # a bare name: its folder is "." (the message used to say just that)
        "./results/../out.jsonl",  # a path with dots: named plainly
    ],
)
def test_the_lock_message_names_the_output(
    given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    with _WorkDir(tmp_path / "out.jsonl"), pytest.raises(OutputError) as caught:
        _WorkDir(Path(given)).__enter__()
    assert str(caught.value) == (
        f"another vidshard job is writing {tmp_path / 'out.jsonl'}: wait for it to finish, "
        "or choose another output"
    )


def test_detect_and_upscale_say_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.clips import ClipSpec, write_clip

    clip = write_clip(tmp_path / "in.mp4", ClipSpec(frames=4))
    monkeypatch.chdir(tmp_path)
    recipe = DetectRecipe("class", "detect_fixtures:OneBoxDetector")
    with _WorkDir(tmp_path / "out.jsonl"), pytest.raises(OutputError, match="writing /"):
        run_detect([clip], "out.jsonl", recipe, DetectOptions(devices="cpu:1"))
    assert not (tmp_path / "out.jsonl").exists()
    with _WorkDir(tmp_path / "up.mp4"), pytest.raises(OutputError) as caught:
        run_upscale(clip, "up.mp4", UpscaleOptions(devices="cpu:1"))
    assert f"another vidshard job is writing {tmp_path / 'up.mp4'}" in str(caught.value)
