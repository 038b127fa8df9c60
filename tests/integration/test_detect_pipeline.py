"""Videos → JSONL over several slots, with a fake detector that finds coloured squares.

The synthetic videos have three squares (red, green, blue) moving in straight lines on
black; the fake detector returns each square's bounding box, so every result is known.
A long video is split into overlapping parts over the slots and tracked part by part:
each square must keep one track id across every join.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from tests.clips import ClipSpec, write_clip
from tests.helpers import audio_packets
from tests.squares import COLOURS, FAKE_DETECTOR, SQUARE, square_positions, write_squares

from vidshard.detection.jsonl import read_done, validate_record
from vidshard.detection.pipeline import DetectorOptions, DetectRecipe
from vidshard.engine.detect import (
    DetectOptions,
    read_list,
    run_detect,
    sample_indices,
    split_parts,
)
from vidshard.errors import ConfigError
from vidshard.media import probe


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("detect")
    (root / "fake_detector.py").write_text(FAKE_DETECTOR)
    return {
        "root": root,
        "a": write_squares(root / "a.mp4", 40),
        "b": write_squares(root / "b.mp4", 30),
        "long": write_squares(root / "long.mp4", 200, gop=10),
        "audio": write_clip(
            root / "audio.mp4", ClipSpec(frames=30, size_wh=(64, 48), audio_languages=("eng",))
        ),
        "broken": root / "broken.mp4",
        "detector": root / "fake_detector.py",
    }


def recipe(media: dict[str, Path], tracker: str = "none", cls: str = "Squares") -> DetectRecipe:
    return DetectRecipe(
        detector="class",
        weights=f"{media['detector']}:{cls}",
        options=DetectorOptions(batch_size=4),
        tracker=tracker,
    )


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_line_per_video_with_every_frame(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = run_detect(
        [media["a"], media["b"]], out, recipe(media), DetectOptions(devices="cpu:2")
    )
    assert not result.failed and result.frames == 70
    records = {r["video_path"]: r for r in lines(out)}
    assert set(records) == {str(media["a"]), str(media["b"])}
    for record in records.values():
        validate_record(record)
    a = records[str(media["a"])]
    assert a["video_info"] == {
        "width": 160,
        "height": 96,
        "fps": 25.0,
        "frames": 40,
        "duration": 1.6,
    }
    assert [f["frame_index"] for f in a["frames"]] == list(range(40))
    assert a["frames"][5]["pts_time"] == pytest.approx(0.2)
    for frame in a["frames"]:
        truth = square_positions(frame["frame_index"], 40)
        found = {o["class"]: o["box"] for o in frame["objects"]}
        assert set(found) == set(truth)
        for name, (x, y) in truth.items():
            assert found[name] == pytest.approx([x, y, x + SQUARE, y + SQUARE], abs=1)
        assert all(o["track_id"] is None for o in frame["objects"])


def test_a_long_video_is_split_over_every_slot_and_track_ids_are_stitched(
    media: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "tracks.jsonl"
    result = run_detect(
        [media["long"]],
        out,
        recipe(media, tracker="bytetrack"),
        DetectOptions(devices="cpu:4", overlap_frames=8),
    )
    assert not result.failed
    assert sum(1 for s in result.slots if s.frames > 0) == 4  # one video, four slots busy
    (record,) = lines(out)
    validate_record(record)
    assert [f["frame_index"] for f in record["frames"]] == list(range(200))
    ids_of: dict[str, set[int]] = {name: set() for name in COLOURS}
    for frame in record["frames"][2:]:  # ByteTrack confirms new tracks after a frame
        for obj in frame["objects"]:
            ids_of[obj["class"]].add(obj["track_id"])
    assert all(len(ids) == 1 for ids in ids_of.values()), ids_of
    assert len(set().union(*ids_of.values())) == 3


def test_a_bad_video_is_recorded_and_the_rest_go_on(media: dict[str, Path], tmp_path: Path) -> None:
    media["broken"].write_bytes(b"not a video at all")
    listing = tmp_path / "videos.txt"
    listing.write_text(
        f"# a comment\n{media['a']}\n\n{media['broken']}  # trailing comment\nmissing.mp4\n"
    )
    videos = read_list(listing)
    assert videos == [str(media["a"]), str(media["broken"]), str(tmp_path / "missing.mp4")]
    out = tmp_path / "out.jsonl"
    result = run_detect(videos, out, recipe(media), DetectOptions(devices="cpu:2"))
    assert sorted(v.path for v in result.failed) == sorted(videos[1:])
    records = {r["video_path"]: r for r in lines(out)}
    assert records[videos[0]]["frames"] and "error" not in records[videos[0]]
    assert "no such file" in records[videos[2]]["error"] and records[videos[2]]["frames"] == []
    assert records[videos[1]]["error"]
    # --skip-existing: the finished video is left out, the failed ones are tried again
    again = run_detect(
        videos, out, recipe(media), DetectOptions(devices="cpu:2", skip_existing=True)
    )
    assert again.skipped == (videos[0],)
    assert sorted(v.path for v in again.videos) == sorted(videos[1:])
    assert set(read_done(out)) == {videos[0]}


def test_sampling_by_fps_and_max_frames(media: dict[str, Path], tmp_path: Path) -> None:
    video = probe(media["a"]).video  # 40 frames at 25 fps
    assert sample_indices(video) == list(range(40))
    assert sample_indices(video, fps=5) == [0, 5, 10, 15, 20, 25, 30, 35]
    assert sample_indices(video, fps=5, max_frames=3) == [0, 5, 10]
    assert sample_indices(video, fps=100) == list(range(40))  # never more than there are
    out = tmp_path / "sampled.jsonl"
    run_detect([media["a"]], out, recipe(media), DetectOptions(devices="cpu:1", sample_fps=5))
    (record,) = lines(out)
    assert [f["frame_index"] for f in record["frames"]] == [0, 5, 10, 15, 20, 25, 30, 35]
    assert record["frames"][1]["pts_time"] == pytest.approx(0.2)


def test_split_parts() -> None:
    assert split_parts(100, share=100, overlap=8) == [(0, 100)]
    assert split_parts(120, share=100, overlap=8) == [(0, 120)]  # within the slack
    assert split_parts(400, share=100, overlap=8) == [(0, 100), (92, 200), (192, 300), (292, 400)]
    assert split_parts(10, share=1, overlap=2) == [(0, 10)]  # too short to split


def test_annotated_videos_keep_frames_and_audio(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    folder = tmp_path / "annotated"
    folder.mkdir()
    result = run_detect(
        [media["audio"]],
        out,
        recipe(media, cls="Fixed"),
        DetectOptions(devices="cpu:2", annotate_dir=folder),
    )
    (outcome,) = result.videos
    assert outcome.annotated == folder / "audio.annotated.mp4"
    source, drawn = probe(media["audio"]), probe(outcome.annotated)
    assert drawn.video.pts == source.video.pts
    assert audio_packets(outcome.annotated) == audio_packets(media["audio"])
    with av.open(str(outcome.annotated)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    with av.open(str(media["audio"])) as container:
        original = next(container.decode(video=0)).to_ndarray(format="rgb24")
    edge = first[12, 16:48].astype(int) - original[12, 16:48].astype(int)  # the box's top
    assert np.abs(edge[:, 0]).mean() > 40  # the first palette colour is mostly red
    assert not list(tmp_path.glob(".*.vidshard"))  # the work dir is gone


def test_bad_options_are_typed_errors(media: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="prompt"):
        DetectRecipe(detector="grounding-dino", weights=str(tmp_path)).validate()
    with pytest.raises(ConfigError, match="sam2"):
        DetectRecipe(detector="yolo", weights="y.pt", tracker="sam2").validate()
    with pytest.raises(ConfigError, match="--fps"):
        run_detect([media["a"]], tmp_path / "o.jsonl", recipe(media), DetectOptions(sample_fps=0))


def test_cli_detect_and_errors(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cli.jsonl"
    listing = tmp_path / "list.txt"
    listing.write_text(f"{media['a']}\n{media['b']}\n")
    command = [sys.executable, "-m", "vidshard", "detect", "--list", str(listing), "-o", str(out)]
    model = ["--model", f"{media['detector']}:Squares", "--devices", "cpu:2", "--json"]
    done = subprocess.run([*command, *model], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["videos"] == 2 and summary["failed"] == [] and summary["frames"] == 70
    assert len(lines(out)) == 2
    bad = subprocess.run(
        [*command, "--model", str(tmp_path / "nope.pt")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "nope.pt" in bad.stderr and "Traceback" not in bad.stderr
    no_inputs = subprocess.run(
        [sys.executable, "-m", "vidshard", "detect", "-o", str(out), *model],
        check=False,
        capture_output=True,
        text=True,
    )
    assert no_inputs.returncode == 2 and "no videos" in no_inputs.stderr


def test_a_list_of_only_bad_videos_starts_no_workers(
    media: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vidshard.executors.local import LocalExecutor

    def refuse(*_args: object) -> None:
        raise AssertionError("no worker should start for a list with nothing to do")

    monkeypatch.setattr(LocalExecutor, "start", refuse)
    out = tmp_path / "out.jsonl"
    result = run_detect([tmp_path / "gone.mp4"], out, recipe(media), DetectOptions(devices="cpu:2"))
    assert [v.error for v in result.videos] == [f"{tmp_path / 'gone.mp4'}: no such file"]
    assert json.loads(out.read_text())["error"].endswith("no such file")
