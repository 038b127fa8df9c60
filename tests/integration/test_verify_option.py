"""``--verify``: packets (the default: each piece checked where it is made, the joined
file by demuxing) or full (the joined file decoded too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import vidshard
from clips import ClipSpec, write_clip
from helpers import frame_hashes
from vidshard.cli.app import app
from vidshard.engine import upscale as engine_upscale
from vidshard.errors import ConfigError


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("verify") / "in.mp4", ClipSpec(frames=24, gop=6))


@pytest.mark.parametrize(("verify", "decoded"), [(None, False), ("packets", False), ("full", True)])
def test_the_join_decodes_only_with_verify_full(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verify: str | None, decoded: bool
) -> None:
    seen: list[bool] = []
    real = engine_upscale.join_segments

    def join(*args: Any, **kwargs: Any) -> None:
        seen.append(kwargs["decode"])
        real(*args, **kwargs)

    monkeypatch.setattr(engine_upscale, "join_segments", join)
    given = {} if verify is None else {"verify": verify}
    out = tmp_path / "out.mp4"
    vidshard.upscale(clip, out, model="identity", devices="cpu:1", crf=0, **given)
    assert seen == [decoded]
    assert len(frame_hashes(out)) == 24


def test_a_bad_verify_is_refused(clip: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"verify"):
        vidshard.upscale(clip, tmp_path / "o.mp4", model="identity", verify="some")
    result = CliRunner().invoke(
        app, ["upscale", str(clip), "-o", str(tmp_path / "o.mp4"), "--verify", "decode"]
    )
    assert result.exit_code == 2 and "verify" in result.output
    assert not list(tmp_path.iterdir())
