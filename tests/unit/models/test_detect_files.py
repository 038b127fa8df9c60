"""Detect models' files, checked before any worker starts (DetectRecipe.validate): a
missing or broken model is one line naming what was looked for, and Ultralytics' own
model configs work by name, never downloading anything."""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from detect_fixtures import session_tiny_grounding_dino, session_tiny_yolo
from vidshard.detection.pipeline import DetectorOptions, DetectRecipe, detector_kind
from vidshard.errors import ModelError
from vidshard.models.detect_files import uses_random_weights, weights_argument
from vidshard.models.detectors import YoloDetector, import_yolo

PROMPT = DetectorOptions(prompt="car.")


def yolo(weights: str | Path) -> DetectRecipe:
    return DetectRecipe("yolo", str(weights))


def gdino(folder: Path) -> DetectRecipe:
    return DetectRecipe("grounding-dino", str(folder), PROMPT)


def sam2(folder: Path, detector: str) -> DetectRecipe:
    return DetectRecipe("class", detector, tracker="sam2", sam2=str(folder))


def refused(recipe: DetectRecipe) -> str:
    with pytest.raises(ModelError) as caught:
        recipe.validate()
    message = str(caught.value)
    assert "\n" not in message  # one line
    return message


@pytest.fixture(scope="module")
def yolo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_tiny_yolo(tmp_path_factory)


@pytest.fixture(scope="module")
def gd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_tiny_grounding_dino(tmp_path_factory)


# -- YOLO files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["yolo11n.pt", "models/best.pt", "yolo11n.onnx"])
def test_missing_weights_name_the_path_and_how_to_try_without(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    kind = detector_kind(name)  # the kind comes from the name: no file needed
    message = refused(yolo(weights_argument(name, kind)))
    assert message.startswith(f"model not found: {tmp_path / name};")
    assert "downloads nothing" in message and "--model yolo11n.yaml" in message
    assert not list(tmp_path.iterdir())  # and nothing was downloaded or written


def write_state_dict(path: Path) -> Path:
    import torch

    torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    return path


@pytest.mark.parametrize(
    ("name", "write", "needle"),
    [
        # a zero-byte file
        ("empty.pt", lambda p: p.write_bytes(b""), "the file is empty"),
        # bytes that are no torch file at all
        ("garbage.pt", lambda p: p.write_bytes(b"\x00garbage" * 64), "not a PyTorch file"),
        # a real torch file, but a bare state dict: no Ultralytics model in it
        ("weights.pt", write_state_dict, "no Ultralytics model"),
        # text named .onnx
        ("model.onnx", lambda p: p.write_text("not protobuf"), "not an ONNX model"),
        # a TorchScript name on text
        ("model.torchscript", lambda p: p.write_text("text"), "not a PyTorch file"),
    ],
)
def test_files_that_are_not_models(name: str, write, needle: str, tmp_path: Path) -> None:
    path = tmp_path / name
    write(path)
    message = refused(yolo(path))
    assert str(path) in message and needle in message


def test_a_real_checkpoint_passes(yolo_file: Path) -> None:
    yolo(yolo_file).validate()
    assert not uses_random_weights("yolo", str(yolo_file))


# -- YOLO model configs ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "yolo11n.yaml",  # the example the errors give
        "yolov8s.yaml",  # another generation and scale, found as yolov8.yaml
        "yolo11n-seg.yaml",  # a segment model: its boxes are used
        "yolo11s-pose.yaml",  # a pose model, likewise
    ],
)
def test_configs_ultralytics_ships_work_by_name(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not a file here: Ultralytics' own package has it
    assert detector_kind(name) == "yolo"
    assert weights_argument(name, "yolo") == name  # kept bare: the name gives the scale
    yolo(name).validate()
    assert uses_random_weights("yolo", name)


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        # no such config anywhere
        ("yolo99z.yaml", "nor a model config Ultralytics ships"),
        # a classifier: no boxes
        ("yolo11n-cls.yaml", "is a classify model config, not a detector"),
        # oriented boxes: not the boxes vidshard writes
        ("yolo11n-obb.yaml", "is a obb model config, not a detector"),
    ],
)
def test_configs_that_are_refused(
    name: str, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert needle in refused(yolo(name))


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\nb: [2, 3]\n",  # a mapping, but no layers
        "- 1\n- 2\n",  # a list
        "backbone: [unclosed\n",  # not YAML at all
        "",  # empty
    ],
)
def test_a_yaml_file_that_is_no_model_config(text: str, tmp_path: Path) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(text)
    message = refused(yolo(path))
    assert message.startswith(f"{path}: not a YOLO model config")


def test_a_model_config_file_of_ones_own(tmp_path: Path) -> None:
    import_yolo()
    from ultralytics.utils.checks import check_yaml

    own = tmp_path / "mynet.yaml"
    shutil.copy(check_yaml("yolo11.yaml"), own)
    recipe = yolo(weights_argument(str(own), "yolo"))
    recipe.validate()
    assert recipe.weights == str(own)
    message = refused(yolo(tmp_path / "missing.yaml"))
    assert message == f"model config not found: {tmp_path / 'missing.yaml'}"


@pytest.fixture
def legacy_named(yolo_file: Path) -> Iterator[Path]:
    """The tiny checkpoint named yolov5n.pt, in a folder with no "u" in its path (with
    one, Ultralytics leaves the name alone)."""
    folder = Path(tempfile.gettempdir()) / "vidshard-v5-test"
    folder.mkdir(exist_ok=True)
    path = folder / "yolov5n.pt"
    shutil.copy(yolo_file, path)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


def test_a_file_named_like_a_legacy_model_loads_without_a_download(
    legacy_named: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_yolo()
    import ultralytics.utils.downloads as downloads
    from ultralytics.utils.checks import check_yolov5u_filename

    # Ultralytics would look for yolov5nu.pt instead, and download it
    assert check_yolov5u_filename(str(legacy_named), verbose=False) != str(legacy_named)
    calls: list[object] = []

    def no_download(*args: object, **kwargs: object) -> None:
        calls.append(kwargs.get("url", args))
        raise AssertionError("vidshard must never download a model")

    monkeypatch.setattr(downloads, "safe_download", no_download)
    yolo(legacy_named).validate()
    detector = YoloDetector(legacy_named)
    detector.load("cpu")
    assert calls == []
    assert len(detector.detect(np.zeros((1, 64, 64, 3), dtype=np.uint8))) == 1


# -- transformers folders --------------------------------------------------------------


def write_safetensors(path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 4)


def folder_with(root: Path, files: dict[str, object]) -> Path:
    """A model folder holding ``files``: a dict is written as JSON, bytes as they are,
    ``"safetensors"`` as a valid one-tensor file."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if content == "safetensors":
            write_safetensors(root / name)
        elif isinstance(content, bytes):
            (root / name).write_bytes(content)
        else:
            (root / name).write_text(json.dumps(content))
    return root


GD_CONFIG = {"model_type": "grounding-dino"}
GD_FILES = {
    "config.json": GD_CONFIG,
    "model.safetensors": "safetensors",
    "preprocessor_config.json": {},
    "vocab.txt": b"[PAD]\ncar\n",
}


def test_an_empty_grounding_dino_folder_names_every_missing_file(tmp_path: Path) -> None:
    folder = folder_with(tmp_path / "gd", {})
    message = refused(gdino(folder))
    assert message.startswith(f"Grounding DINO model folder {folder} lacks config.json;")
    for needed in ("model.safetensors", "preprocessor_config.json", "tokenizer.json"):
        assert needed in message
    assert "save_pretrained" in message


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        # only the config: the rest is named, the config is not
        ({k: None for k in GD_FILES if k != "config.json"}, "lacks weights"),
        # no tokenizer
        ({"vocab.txt": None}, "lacks tokenizer.json or vocab.txt"),
        # a config that is not JSON
        ({"config.json": b"{not json"}, "config.json: not a model config (invalid JSON"),
        # a config without a model type
        ({"config.json": {"hidden_size": 8}}, "not a model config (no model_type)"),
        # another kind of model
        ({"config.json": {"model_type": "owlvit"}}, "expected a Grounding DINO model"),
        # weights that are no safetensors file
        ({"model.safetensors": b"\x00" * 64}, "model.safetensors: not a safetensors file"),
        # a sharded index naming a shard that is not there
        (
            {
                "model.safetensors": None,
                "model.safetensors.index.json": {"weight_map": {"w": "part-1.safetensors"}},
            },
            "lacks part-1.safetensors, named in model.safetensors.index.json",
        ),
        # pytorch_model.bin that is garbage
        (
            {"model.safetensors": None, "pytorch_model.bin": b"\x00junk"},
            "not a PyTorch file",
        ),
    ],
)
def test_grounding_dino_folders_that_are_refused(
    changes: dict[str, object], needle: str, tmp_path: Path
) -> None:
    files = {k: v for k, v in {**GD_FILES, **changes}.items() if v is not None}
    message = refused(gdino(folder_with(tmp_path / "gd", files)))
    assert needle in message
    if "config.json" in files:
        assert "lacks config.json" not in message


def test_a_complete_folder_passes(tmp_path: Path, gd_folder: Path) -> None:
    gdino(folder_with(tmp_path / "gd", GD_FILES)).validate()
    gdino(gd_folder).validate()  # a real one, saved by transformers
    sharded = {
        **{k: v for k, v in GD_FILES.items() if k != "model.safetensors"},
        "model.safetensors.index.json": {"weight_map": {"a": "s1.safetensors"}},
        "s1.safetensors": "safetensors",
    }
    gdino(folder_with(tmp_path / "sharded", sharded)).validate()


def test_a_missing_folder(tmp_path: Path) -> None:
    message = refused(gdino(tmp_path / "grounding-dino-tiny"))
    assert message == f"Grounding DINO model folder not found: {tmp_path / 'grounding-dino-tiny'}"
    with pytest.raises(ModelError, match=r"model not found: .*grounding-dino-tiny"):
        detector_kind(str(tmp_path / "grounding-dino-tiny"))  # no suffix: no kind either


SAM2_FILES = {
    "config.json": {"model_type": "sam2_video"},
    "model.safetensors": "safetensors",
    "processor_config.json": {},
}


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        # an empty folder
        ({}, "lacks config.json; weights (model.safetensors or pytorch_model.bin)"),
        # a Grounding DINO folder given as --sam2
        ({**SAM2_FILES, "config.json": GD_CONFIG}, "expected a SAM2 model (sam2), got grounding"),
        # no processor config
        (
            {"config.json": SAM2_FILES["config.json"], "model.safetensors": "safetensors"},
            "lacks processor_config.json",
        ),
    ],
)
def test_sam2_folders_that_are_refused(
    files: dict[str, object], needle: str, tmp_path: Path
) -> None:
    detector = tmp_path / "det.py"
    detector.write_text("class Det: ...\n")
    folder = folder_with(tmp_path / "sam2", files)
    message = refused(sam2(folder, f"{detector}:Det"))
    assert message.startswith("SAM2") or str(folder) in message
    assert needle in message


def test_a_sam2_folder_passes(tmp_path: Path) -> None:
    detector = tmp_path / "det.py"
    detector.write_text("class Det: ...\n")
    sam2(folder_with(tmp_path / "sam2", SAM2_FILES), f"{detector}:Det").validate()


# -- a user's class ----------------------------------------------------------------------


def test_a_missing_class_file(tmp_path: Path) -> None:
    message = refused(DetectRecipe("class", f"{tmp_path / 'mine.py'}:Mine"))
    assert message == f"model class file not found: {tmp_path / 'mine.py'}"
    DetectRecipe("class", "detect_fixtures:OneBoxDetector").validate()  # a module: imported later
