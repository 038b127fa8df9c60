import os

import pytest
from tests.clips import ClipSpec, write_clip

from vidshard.engine.manifest import MANIFEST_NAME, Manifest, fingerprint
from vidshard.media import probe
from vidshard.models import resolve_model

OPTIONS = {"crf": 0, "scale": 2}


@pytest.fixture
def clip(tmp_path):
    return write_clip(tmp_path / "in.mp4", ClipSpec(frames=12))


def test_round_trip_and_atomic_save(tmp_path):
    manifest = Manifest("abc", [0, 5, 12], 2, ["segment-00000"])
    manifest.save(tmp_path)
    manifest.mark_finished("segment-00001", tmp_path)
    manifest.mark_finished("segment-00001", tmp_path)  # twice: recorded once
    assert Manifest.load(tmp_path) == Manifest(
        "abc", [0, 5, 12], 2, ["segment-00000", "segment-00001"]
    )
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME]  # no temp file left


@pytest.mark.parametrize(
    "content",
    [
        "",  # empty (a crash mid-write of an old, non-atomic version)
        "{not json",  # garbage
        '{"fingerprint": "x"}',  # fields missing
    ],
)
def test_unreadable_manifest_means_start_over(tmp_path, content):
    (tmp_path / MANIFEST_NAME).write_text(content)
    assert Manifest.load(tmp_path) is None


def test_no_manifest(tmp_path):
    assert Manifest.load(tmp_path) is None


def test_fingerprint_follows_input_model_and_options(clip):
    lanczos, bicubic = resolve_model("lanczos"), resolve_model("bicubic")
    base = fingerprint(probe(clip), lanczos, OPTIONS)
    assert fingerprint(probe(clip), lanczos, dict(OPTIONS)) == base  # same job: same digest
    assert fingerprint(probe(clip), bicubic, OPTIONS) != base  # another model
    assert fingerprint(probe(clip), lanczos, {**OPTIONS, "crf": 10}) != base  # another option
    stat = clip.stat()
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fingerprint(probe(clip), lanczos, OPTIONS) != base  # the input was rewritten


def test_fingerprint_follows_a_model_file(tmp_path, clip):
    model_file = tmp_path / "m.py"
    model_file.write_text(
        "from vidshard.models import ModelSpec\n"
        "class M:\n"
        "    def __init__(self):\n"
        "        self.spec = ModelSpec(name='m', scale=1)\n"
        "    def load(self, device): pass\n"
        "    def run(self, batch): return batch\n"
    )
    model = resolve_model(f"{model_file}:M")
    before = fingerprint(probe(clip), model, OPTIONS)
    model_file.write_text(model_file.read_text() + "# changed\n")
    assert fingerprint(probe(clip), model, OPTIONS) != before  # an edited model class
