"""Opening a job's input as the file that was checked (media/source.py), and the probe and
reader refusing any other file at the same path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from clips import ClipSpec, write_clip
from vidshard.errors import InputChanged
from vidshard.media import probe, read_frames
from vidshard.media.source import FileIdentity, file_identity, identified_source, opened_source


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    video = write_clip(root / "video.mp4", ClipSpec(frames=6, size_wh=(32, 24)))
    other = write_clip(outside / "secret.mp4", ClipSpec(frames=9, size_wh=(48, 32)))
    return {"root": root, "outside": outside, "video": video, "other": other}


def _swap_for_link(path: Path, target: Path) -> None:
    """Replace ``path`` by a symlink to ``target`` in one rename, as an attacker would."""
    link = path.with_name(path.name + ".link")
    link.symlink_to(target)
    os.replace(link, path)


def _swap_for_copy(path: Path, source: Path) -> None:
    """Replace ``path`` by another regular file (a new inode) in one rename."""
    tmp = path.with_name(path.name + ".new")
    shutil.copyfile(source, tmp)
    os.replace(tmp, path)


def test_identity_round_trips_through_a_dict(files: dict[str, Path]) -> None:
    identity = file_identity(files["video"])
    assert FileIdentity.from_dict(identity.to_dict()) == identity


def test_the_same_file_opens_by_descriptor(files: dict[str, Path]) -> None:
    expected = file_identity(files["video"])
    with opened_source(files["video"], expected) as name:
        assert name != str(files["video"])  # FFmpeg gets the open file, not the path
        assert Path(name).read_bytes() == files["video"].read_bytes()


def test_without_an_identity_the_path_itself(files: dict[str, Path]) -> None:
    with opened_source(files["video"], None) as name:
        assert name == str(files["video"])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        # a symlink to a file outside the checked folder swapped in for the file
        (lambda f: _swap_for_link(f["video"], f["other"]), "names another file"),
        # another regular file renamed over it (same name, a new inode)
        (lambda f: _swap_for_copy(f["video"], f["other"]), "names another file"),
        # the same file rewritten in place (same inode, new size and time)
        (lambda f: f["video"].write_bytes(f["other"].read_bytes()), "was modified"),
        # the file removed
        (lambda f: f["video"].unlink(), "is gone"),
        # its folder swapped for a link to another folder holding a file of that name
        (
            lambda f: (
                shutil.copyfile(f["other"], f["outside"] / "video.mp4"),
                os.rename(f["root"], f["root"].with_name("moved")),
                f["root"].symlink_to(f["outside"]),
            ),
            "names another file",
        ),
    ],
    ids=["symlink", "replaced", "rewritten", "removed", "folder-swapped"],
)
def test_any_other_file_at_the_path_is_refused(
    files: dict[str, Path], change: object, reason: str
) -> None:
    expected = file_identity(files["video"])
    change(files)  # type: ignore[operator]
    with pytest.raises(InputChanged, match=reason), opened_source(files["video"], expected):
        pass
    with pytest.raises(InputChanged, match=reason):
        probe(files["video"], expected)


def test_the_probe_records_what_it_read(files: dict[str, Path]) -> None:
    info = probe(files["video"])
    assert info.identity == file_identity(files["video"])
    assert info.size_bytes == files["video"].stat().st_size


def test_a_reader_refuses_a_file_swapped_after_the_probe(files: dict[str, Path]) -> None:
    info = probe(files["video"])
    assert info.identity is not None
    frames = list(read_frames(files["video"], info.video, 0, 6, identity=info.identity))
    assert len(frames) == 6
    _swap_for_link(files["video"], files["other"])
    with pytest.raises(InputChanged):
        list(read_frames(files["video"], info.video, 0, 6, identity=info.identity))


def test_identified_source_names_an_unreadable_file(files: dict[str, Path]) -> None:
    with (
        pytest.raises(InputChanged, match="is gone"),
        identified_source(files["root"] / "missing.mp4", file_identity(files["video"])),
    ):
        pass
