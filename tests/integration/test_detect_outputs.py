"""`vidshard detect` / `track` as a new user meets them: a bad model fails at once and
leaves nothing behind, output folders are created, and the frame counts printed per
video are the JSONL's."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
from tests.clips import ClipSpec, write_clip
from typer.testing import CliRunner

from vidshard.cli.app import app
from vidshard.detection.pipeline import DetectorOptions, DetectRecipe
from vidshard.engine.detect import DetectOptions, run_detect
from vidshard.errors import OutputError
from vidshard.executors.local import LocalExecutor

ONE_BOX = f"{Path(__file__).resolve().parents[1] / 'detect_fixtures.py'}:OneBoxDetector"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {
        "short": write_clip(root / "short.mp4", ClipSpec(frames=24)),
        "long": write_clip(root / "long.mp4", ClipSpec(frames=200, gop=10)),  # 8 s at 25 fps
    }


def invoke(*args: object) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- 16: a model that is not there fails before anything starts ---------------------------


def _garbage(folder: Path) -> Path:
    (folder / "bad.pt").write_bytes(b"\x00garbage" * 64)
    return folder / "bad.pt"


def _not_a_config(folder: Path) -> Path:
    (folder / "net.yaml").write_text("name: my dataset\npath: /data\n")
    return folder / "net.yaml"


def _folder(folder: Path, *files: str) -> Path:
    model = folder / "gd"
    model.mkdir()
    for name in files:
        (model / name).write_text(json.dumps({"model_type": "grounding-dino"}))
    return model


# Each case: the model arguments (built in the test's folder), and what the one line says.
BAD_MODELS = {
    # the default model, yolo11n.pt, not there: where it was looked for, and what to try
    "default": (lambda d: [], ["model not found: {d}/yolo11n.pt", "--model yolo11n.yaml"]),
    # a weights path that is not there
    "missing": (lambda d: ["--model", d / "w" / "best.pt"], ["model not found: {d}/w/best.pt"]),
    # a .pt that is not a model
    "garbage": (lambda d: ["--model", _garbage(d)], ["{d}/bad.pt: not a PyTorch file"]),
    # a .yaml that is not a model config
    "yaml": (lambda d: ["--model", _not_a_config(d)], ["{d}/net.yaml: not a YOLO model config"]),
    # an empty Grounding DINO folder: every missing file named
    "empty-gd": (
        lambda d: ["--model", _folder(d), "--prompt", "car."],
        ["{d}/gd lacks config.json; weights", "tokenizer.json"],
    ),
    # a Grounding DINO folder with its config only
    "config-only": (
        lambda d: ["--model", _folder(d, "config.json"), "--prompt", "car."],
        ["{d}/gd lacks weights (model.safetensors or pytorch_model.bin)"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
@pytest.mark.parametrize("command", ["detect", "track"])
def test_a_bad_model_fails_at_once_and_leaves_nothing(
    case: str,
    command: str,
    clips: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_args: object) -> None:
        raise AssertionError("no worker may start for a model that is not there")

    monkeypatch.setattr(LocalExecutor, "start", refuse)
    monkeypatch.chdir(tmp_path)
    build, needles = BAD_MODELS[case]
    out, drawn = tmp_path / "out.jsonl", tmp_path / "drawn"
    model = build(tmp_path)
    before = set(tmp_path.iterdir())
    result = invoke(command, clips["short"], "-o", out, "--annotate-dir", drawn, *model)
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]  # one line
    for needle in needles:
        assert needle.format(d=tmp_path) in line
    assert set(tmp_path.iterdir()) == before  # no JSONL (not even empty), no folder


def test_an_empty_sam2_folder_fails_at_once(clips: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "sam2").mkdir()
    out = tmp_path / "out.jsonl"
    result = invoke(
        "track", clips["short"], "-o", out, "--model", ONE_BOX,
        "--tracker", "sam2", "--sam2", tmp_path / "sam2",
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"SAM2 model folder {tmp_path / 'sam2'} lacks config.json" in result.stderr
    assert not out.exists()


def test_a_model_that_fails_in_its_workers_leaves_no_jsonl(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    # Passes the checks (a torch archive naming ultralytics), but cannot be unpickled:
    # every worker fails to load it.
    weights = tmp_path / "broken.pt"
    with zipfile.ZipFile(weights, "w") as archive:
        archive.writestr("broken/data.pkl", b"ultralytics but no pickle")
    out = tmp_path / "out.jsonl"
    result = invoke(
        "detect", clips["short"], "-o", out, "--model", weights,
        "--devices", "cpu:1", "--annotate-dir", tmp_path / "drawn",
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "cannot load YOLO weights" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pt"]


# -- 17: output folders are created ------------------------------------------------------


def test_annotate_dir_is_created_with_its_parents(clips: dict[str, Path], tmp_path: Path) -> None:
    drawn = tmp_path / "results" / "2024" / "drawn"
    result = run_detect(
        [clips["short"]],
        tmp_path / "out.jsonl",
        DetectRecipe("class", ONE_BOX, DetectorOptions(batch_size=8)),
        DetectOptions(devices="cpu:1", annotate_dir=drawn),
    )
    (video,) = result.videos
    assert video.error is None and video.annotated == drawn / "short.annotated.mp4"
    assert video.annotated.is_file()


@pytest.mark.parametrize(
    ("where", "needle"),
    [
        # the folder's name is a file
        ("notes.txt", "a file is in the way, expected a folder"),
        # a file where a parent folder would go
        ("notes.txt/drawn", "notes.txt is a file, not a folder"),
    ],
)
def test_annotate_dir_that_cannot_be_created(
    where: str, needle: str, clips: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    out = tmp_path / "out.jsonl"
    recipe = DetectRecipe("class", ONE_BOX)
    with pytest.raises(OutputError, match=re.escape(needle)):
        run_detect([clips["short"]], out, recipe, DetectOptions(annotate_dir=tmp_path / where))
    assert not out.exists() and (tmp_path / "notes.txt").read_text() == "keep me"


def test_annotate_dir_the_disk_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vidshard.engine.output_dirs import ensure_dir

    def no(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", no)
    with pytest.raises(OutputError, match=r"cannot create --annotate-dir .*: permission denied"):
        ensure_dir(tmp_path / "drawn", "--annotate-dir")


def test_no_annotate_dir_when_nothing_is_drawn(tmp_path: Path) -> None:
    drawn = tmp_path / "drawn"
    run_detect(
        [tmp_path / "gone.mp4"],  # fails its probe: nothing to draw
        tmp_path / "out.jsonl",
        DetectRecipe("class", ONE_BOX),
        DetectOptions(devices="cpu:1", annotate_dir=drawn),
    )
    assert not drawn.exists()


# -- 21: the frame counts printed are the JSONL's ----------------------------------------


DONE = re.compile(r"^done (?P<video>\S+): (?P<frames>\d+) of (?P<total>\d+) frames processed$")


@pytest.mark.parametrize(
    "args",
    [
        # tracked at 5 fps over two slots: the long clip is cut into parts that overlap
        ["track", "--fps", "5", "--tracker", "bytetrack"],
        # detected at 5 fps
        ["detect", "--fps", "5"],
        # at most 7 frames a video
        ["detect", "--max-frames", "7"],
        # every frame, tracked
        ["track"],
    ],
)
def test_printed_counts_are_the_jsonl_counts(
    args: list[str], clips: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    result = invoke(
        args[0], clips["short"], clips["long"], "-o", out, "--model", ONE_BOX,
        "--devices", "cpu:2", *args[1:],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = {
        m["video"]: (int(m["frames"]), int(m["total"]))
        for m in map(DONE.match, result.stderr.splitlines())
        if m is not None
    }
    records = {r["video_path"]: r for r in lines(out)}
    assert set(printed) == set(records) == {str(clips["short"]), str(clips["long"])}
    for video, (frames, total) in printed.items():
        assert frames == len(records[video]["frames"])
        assert total == records[video]["video_info"]["frames"]
    summary = re.search(r"\((\d+) frames processed\)", result.stdout)
    assert summary is not None and int(summary[1]) == sum(f for f, _ in printed.values())
