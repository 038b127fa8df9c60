"""The Python examples of docs/detect.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.helpers import EXAMPLES, need_package

DETECT_DOC = (Path(__file__).resolve().parents[2] / "docs" / "detect.md").read_text()


def python_block(text: str, needle: str) -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL) if needle in b]
    assert len(blocks) == 1, f"expected one python block with {needle!r}"
    return blocks[0]


@pytest.mark.slow
def test_the_detect_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    need_package("ultralytics")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(EXAMPLES)
    exec(compile(python_block(DETECT_DOC, "vidshard.detect("), "detect.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    # 2 frames a second: 377 frames at 12.5 fps are 30 s, 1189 at 29.8 fps are 40 s
    assert "examples/car-detection.mp4 61 of 377 frames ok" in printed, printed
    assert printed[-1].endswith("over 2 slot(s)")
    assert len((tmp_path / "detections.jsonl").read_text().splitlines()) == 2
