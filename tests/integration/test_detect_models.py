"""`vidshard detect` / `vidshard track` end to end with real (tiny, random-weight) models
on the bundled sample clips: YOLO from its yaml with ByteTrack, and Grounding DINO with
SAM2 masks. Random weights give arbitrary boxes; what is checked is the plumbing: every
processed frame present once, the schema, masks at the frame's size, annotated videos.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.detect_fixtures import session_tiny_grounding_dino, session_tiny_yolo
from tests.helpers import EXAMPLES
from tests.track_fixtures import build_tiny_sam2
from typer.testing import CliRunner

from vidshard.cli.app import app
from vidshard.detection.jsonl import validate_record
from vidshard.detection.rle import rle_to_mask
from vidshard.engine.detect import sample_indices
from vidshard.media import probe

CAR = EXAMPLES / "car-detection.mp4"
BOTTLE = EXAMPLES / "bottle-detection.mp4"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    sam2 = tmp_path_factory.mktemp("sam2")
    return {
        "yolo": session_tiny_yolo(tmp_path_factory),
        "gdino": session_tiny_grounding_dino(tmp_path_factory),
        "sam2": build_tiny_sam2(sam2 / "model"),
    }


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return result.output


def test_yolo_with_bytetrack_on_both_samples(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "tracks.jsonl"
    summary = json.loads(
        invoke(
            "track",
            str(CAR),
            str(BOTTLE),
            "-o",
            str(out),
            "--model",
            str(models["yolo"]),
            "--conf",
            "0.3",
            "--max-frames",
            "24",
            "--imgsz",
            "128",
            "--devices",
            "cpu:2",
        )
    )
    assert summary["videos"] == 2 and summary["failed"] == [] and summary["frames"] == 48
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["video_path"] for r in records) == sorted([str(CAR), str(BOTTLE)])
    for record in records:
        validate_record(record)
        assert [f["frame_index"] for f in record["frames"]] == list(range(24))
        for frame in record["frames"]:
            for obj in frame["objects"]:
                assert obj["class"] in ("person", "car", "dog")
                assert obj["track_id"] is not None and obj["score"] >= 0.3


def test_grounding_dino_with_sam2_masks(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "masks.jsonl"
    summary = json.loads(
        invoke(
            "track",
            str(CAR),
            "-o",
            str(out),
            "--model",
            str(models["gdino"]),
            "--prompt",
            "car. person.",
            "--conf",
            "0",
            "--tracker",
            "sam2",
            "--sam2",
            str(models["sam2"]),
            "--masks",
            "--detection-frequency",
            "3",
            "--fps",
            "2",
            "--max-frames",
            "6",
            "--devices",
            "cpu:1",
        )
    )
    assert summary["failed"] == [] and summary["frames"] == 6
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    validate_record(record)
    assert record["prompt"] == "car. person."
    info = record["video_info"]
    expected = sample_indices(probe(CAR).video, fps=2, max_frames=6)
    assert [f["frame_index"] for f in record["frames"]] == expected
    objects = [o for f in record["frames"] for o in f["objects"]]
    assert objects, "with conf 0 every query is a detection: SAM2 must follow some"
    for obj in objects:
        assert obj["class"] in ("car", "person")
        mask = rle_to_mask(obj["mask"])
        assert mask.shape == (info["height"], info["width"])


def test_a_config_ultralytics_ships_runs_with_random_weights(tmp_path: Path) -> None:
    """`--model yolo11n.yaml`, no file anywhere: Ultralytics builds the network from its
    own config, offline, and one line on stderr says the weights are random."""
    out = tmp_path / "random.jsonl"
    done = subprocess.run(
        [
            sys.executable, "-m", "vidshard", "detect", str(CAR), "-o", str(out),
            "--model", "yolo11n.yaml", "--imgsz", "64", "--max-frames", "3",
            "--devices", "cpu:1", "--json",
        ],
        cwd=tmp_path,  # no yolo11n.yaml here
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["frames"] == 3
    warnings = [line for line in done.stderr.splitlines() if "random weights" in line]
    assert len(warnings) == 1 and "yolo11n.yaml" in warnings[0]
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    validate_record(record)
    assert [f["frame_index"] for f in record["frames"]] == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random.jsonl"]  # nothing else
