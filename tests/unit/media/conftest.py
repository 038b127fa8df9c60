"""Fixtures for the media tests: generated clips (written once per session) and samples."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parents[2]
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from clips import CLIPS, write_clip  # noqa: E402

SAMPLES_DIR = TESTS_DIR.parent / "examples"


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``clip(name)``: the path of the generated clip ``name`` (see ``CLIPS``)."""
    root = tmp_path_factory.mktemp("clips")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = write_clip(root / name, CLIPS[name])
        return made[name]

    return get


@pytest.fixture(scope="session")
def sample() -> Callable[[str], Path]:
    """``sample(name)``: a real sample clip from ``examples/`` (skips when missing)."""

    def get(name: str) -> Path:
        path = SAMPLES_DIR / name
        if not path.is_file():
            pytest.skip(f"sample {name} not found in {SAMPLES_DIR}")
        return path

    return get


@pytest.fixture
def source(clip: Callable[[str], Path], sample: Callable[[str], Path]) -> Callable[[str], Path]:
    """``source(name)``: a generated clip, or a real sample for ``"sample:<file name>"``."""

    def get(name: str) -> Path:
        if name.startswith("sample:"):
            return sample(name.removeprefix("sample:"))
        return clip(name)

    return get
