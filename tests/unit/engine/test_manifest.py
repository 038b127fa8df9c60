import itertools
import os

import pytest
from tests.clips import ClipSpec, write_clip

from vidshard.engine.manifest import FINISHED_NAME, MANIFEST_NAME, Manifest, fingerprint
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
    assert sorted(p.name for p in tmp_path.iterdir()) == [FINISHED_NAME, MANIFEST_NAME]


def test_a_finished_unit_appends_one_line_and_leaves_the_plan_alone(tmp_path):
    # Recording a unit costs the same however many came before (no rewrite of the
    # whole record: that made a long job's bookkeeping quadratic).
    manifest = Manifest("abc", list(range(0, 30_001, 30)), 2)
    manifest.save(tmp_path)
    plan = (tmp_path / MANIFEST_NAME).read_bytes()
    sizes = []
    for n in range(1000):
        manifest.mark_finished(f"segment-{n:05d}", tmp_path)
        sizes.append((tmp_path / FINISHED_NAME).stat().st_size)
    assert (tmp_path / MANIFEST_NAME).read_bytes() == plan
    assert {b - a for a, b in itertools.pairwise(sizes)} == {len("segment-00000\n")}
    assert Manifest.load(tmp_path).finished == [f"segment-{n:05d}" for n in range(1000)]


def test_a_line_cut_short_by_a_crash_is_not_a_record(tmp_path):
    Manifest("abc", [0, 5, 12], 2, ["segment-00000"]).save(tmp_path)
    with (tmp_path / FINISHED_NAME).open("a") as out:
        out.write("segment-0000")  # the crash came before the rest and the newline
    assert Manifest.load(tmp_path).finished == ["segment-00000"]
    Manifest.load(tmp_path).mark_finished("segment-00001", tmp_path)
    assert Manifest.load(tmp_path).finished == ["segment-00000", "segment-00001"]


def test_an_older_manifest_with_its_list_inside_is_read(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text(
        '{"fingerprint": "abc", "bounds": [0, 5, 12], "overlap_frames": 2,'
        ' "finished": ["segment-00000"]}'
    )
    assert Manifest.load(tmp_path) == Manifest("abc", [0, 5, 12], 2, ["segment-00000"])


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
