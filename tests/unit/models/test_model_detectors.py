"""Detectors: YOLO files, Grounding DINO folders and users' classes, on tiny random models.

Each loader is checked by a round trip (build → save → load through the detector →
detect) and against the library run directly, so the RGB→BGR swap, the box scaling and
the class mapping are checked, not only the shapes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detect_fixtures import (
    OneBoxDetector,
    colour_frames,
    session_tiny_grounding_dino,
    session_tiny_yolo,
)
from vidshard.detection.pipeline import DetectorOptions, DetectRecipe
from vidshard.detection.types import Detections
from vidshard.errors import ConfigError, ModelError
from vidshard.models.detectors import (
    ClassDetector,
    GroundingDinoDetector,
    YoloDetector,
    build_detector,
    match_phrase,
    normalize_prompt,
    resolve_class_ids,
)

H, W = 72, 100  # not square, not a multiple of 32: letterboxing and scaling both matter


@pytest.fixture(scope="module")
def yolo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_tiny_yolo(tmp_path_factory)


@pytest.fixture(scope="module")
def gd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_tiny_grounding_dino(tmp_path_factory)


@pytest.fixture(scope="module")
def yolo(yolo_file: Path) -> YoloDetector:
    detector = YoloDetector(yolo_file, DetectorOptions(conf=0.0, imgsz=128))
    detector.load("cpu")
    return detector


def assert_valid(dets: Detections, names: set[str]) -> None:
    assert dets.boxes.dtype == np.float32 and dets.boxes.shape == (len(dets), 4)
    assert dets.scores.dtype == np.float32 and dets.class_ids.dtype == np.int32
    assert np.all(dets.boxes >= 0)
    assert np.all(dets.boxes[:, [0, 2]] <= W) and np.all(dets.boxes[:, [1, 3]] <= H)
    assert set(dets.class_names) <= names


# -- build_detector ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipe", "kind"),
    [
        (DetectRecipe("yolo", "m.pt"), YoloDetector),
        (
            DetectRecipe("grounding-dino", "gd", DetectorOptions(prompt="car.")),
            GroundingDinoDetector,
        ),
        (DetectRecipe("class", "detect_fixtures:OneBoxDetector"), ClassDetector),
    ],
)
def test_build_detector_picks_the_class_and_loads_nothing(recipe: DetectRecipe, kind: type) -> None:
    # no file is read: m.pt and gd do not exist
    detector = build_detector(recipe.detector, recipe.weights, recipe.options)
    assert isinstance(detector, kind)
    assert detector.options is recipe.options


def test_build_detector_refuses_an_unknown_kind() -> None:
    with pytest.raises(
        ConfigError, match=r"expected one of yolo, grounding-dino, class, got 'rtdetr'"
    ):
        build_detector("rtdetr", "m.pt")


def test_the_recipe_validates_before_building() -> None:
    with pytest.raises(ConfigError, match="prompt"):
        DetectRecipe("grounding-dino", "gd").build()


def test_importing_the_module_imports_no_framework() -> None:
    code = (
        "import sys, vidshard.models.detectors\n"
        "print(sorted(m for m in ('torch', 'ultralytics', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        (("car",), [1]),  # a name
        (("CAR", "person"), [1, 0]),  # case-insensitive, in the order asked
        (("2",), [2]),  # an id as text
        (("dog", "2"), [2]),  # the same class twice counts once
    ],
)
def test_resolve_class_ids(wanted: tuple[str, ...], expected: list[int]) -> None:
    assert resolve_class_ids(wanted, {0: "person", 1: "car", 2: "dog"}, "m") == expected


@pytest.mark.parametrize(
    ("wanted", "message"),
    [
        (("cat",), r"m has no class 'cat' \(did you mean car\?\); its 3 classes: person, car"),
        (("7",), r"expected a class id in 0..2, got 7"),
    ],
)
def test_resolve_class_ids_refuses_unknown(wanted: tuple[str, ...], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        resolve_class_ids(wanted, {0: "person", 1: "car", 2: "dog"}, "m")


# -- YOLO --------------------------------------------------------------------------------


def test_yolo_round_trip(yolo: YoloDetector) -> None:
    frames = colour_frames(3, H, W)
    results = yolo.detect(frames)
    assert len(results) == 3
    for dets in results:
        assert len(dets) > 0  # conf 0: random weights still give boxes
        assert_valid(dets, {"person", "car", "dog"})
    assert yolo.name == "tiny_yolo.pt"


def test_yolo_feeds_bgr_and_matches_ultralytics(yolo: YoloDetector, yolo_file: Path) -> None:
    frames = colour_frames(2, H, W, seed=1)
    seen: list[Any] = []
    predict = yolo._model.predict

    def spy(source: Any, **kwargs: Any) -> Any:
        seen.append((source, kwargs))
        return predict(source, **kwargs)

    yolo._model.predict = spy
    try:
        ours = yolo.detect(frames)
    finally:
        del yolo._model.predict
    source, kwargs = seen[0]
    assert all(np.array_equal(s, f[..., ::-1]) for s, f in zip(source, frames, strict=True))
    assert kwargs["half"] is False and kwargs["verbose"] is False and kwargs["classes"] is None
    assert str(kwargs["device"]) == "cpu"

    from ultralytics import YOLO

    direct = YOLO(str(yolo_file))
    args = {"conf": 0.0, "imgsz": 128, "device": "cpu", "verbose": False}
    bgr = direct.predict([f[..., ::-1].copy() for f in frames], **args)
    rgb = direct.predict(list(frames), **args)
    for mine, want, wrong in zip(ours, bgr, rgb, strict=True):
        # float noise only: ultralytics leaves torch on another thread count than ours
        assert np.allclose(mine.scores, want.boxes.conf.numpy(), atol=1e-5)
        assert np.allclose(mine.boxes, want.boxes.xyxy.numpy(), atol=1e-3)
        assert mine.class_ids.tolist() == want.boxes.cls.int().tolist()
        # the same frames fed as RGB give other scores: the check above can fail
        assert wrong.boxes.conf.shape != want.boxes.conf.shape or not np.allclose(
            wrong.boxes.conf.numpy(), want.boxes.conf.numpy()
        )


@pytest.mark.parametrize(
    ("classes", "ids"),
    [
        (("car",), {1}),  # by name
        (("1",), {1}),  # by id
        (("Dog", "person"), {0, 2}),  # several, any case
    ],
)
def test_yolo_keeps_only_the_asked_classes(
    yolo_file: Path, classes: tuple[str, ...], ids: set[int]
) -> None:
    detector = YoloDetector(yolo_file, DetectorOptions(conf=0.0, imgsz=128, classes=classes))
    detector.load("cpu")
    names = ("person", "car", "dog")
    for dets in detector.detect(colour_frames(2, H, W)):
        assert len(dets) > 0
        assert set(dets.class_ids.tolist()) <= ids
        assert dets.class_names == tuple(names[i] for i in dets.class_ids.tolist())


def test_yolo_unknown_class_is_a_model_error(yolo_file: Path) -> None:
    detector = YoloDetector(yolo_file, DetectorOptions(classes=("cat",)))
    with pytest.raises(ModelError, match=r"no class 'cat' \(did you mean car\?\).*person, car"):
        detector.load("cpu")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.pt", None, "YOLO weights not found"),
        ("empty.pt", b"", "cannot load YOLO weights .*empty.pt"),
        ("corrupt.pt", b"not a checkpoint", "cannot load YOLO weights .*corrupt.pt"),
        ("model.pth", b"x", r"expected a \.pt, \.onnx, .*\.yml file, got \.pth"),
        ("corrupt.onnx", b"not onnx", "YOLO model corrupt.onnx"),  # no runtime, or a bad file
        ("missing.yaml", None, "cannot load YOLO weights"),  # not one ultralytics ships
    ],
)
def test_yolo_bad_files_are_model_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    content: bytes | None,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # a bare name is looked for here
    if content is not None:
        (tmp_path / name).write_bytes(content)
    detector = YoloDetector(name if name.endswith(".yaml") else tmp_path / name)
    with pytest.raises(ModelError, match=message):
        detector.load("cpu")


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # ultralytics' export
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_yolo_torchscript_export_round_trip(yolo_file: Path, tmp_path: Path) -> None:
    from ultralytics import YOLO

    exported = YOLO(str(yolo_file)).export(format="torchscript", imgsz=128, verbose=False)
    path = tmp_path / "tiny.torchscript"
    Path(exported).replace(path)
    detector = YoloDetector(path, DetectorOptions(conf=0.0, imgsz=128, classes=("dog",)))
    detector.load("cpu")
    for dets in detector.detect(colour_frames(2, H, W)):
        assert len(dets) > 0  # the names came with the export: "dog" resolved
        assert_valid(dets, {"dog"})


def test_yolo_architecture_yaml_gives_random_weights() -> None:
    detector = YoloDetector("yolo11n.yaml", DetectorOptions(conf=0.0, imgsz=64))
    detector.load("cpu")
    (dets,) = detector.detect(colour_frames(1, H, W))
    assert_valid(dets, {str(i) for i in range(80)})  # the yaml names classes 0..79


def test_yolo_runs_offline_and_keeps_torch_threads(yolo_file: Path) -> None:
    import torch
    import ultralytics.utils as uu

    before = torch.get_num_threads(), os.environ.get("CUDA_VISIBLE_DEVICES")
    torch.set_num_threads(uu.NUM_THREADS + 1)  # not what ultralytics would set
    try:
        detector = YoloDetector(yolo_file, DetectorOptions(imgsz=64, half=True))
        detector.load("cpu")  # half on the CPU is not asked of ultralytics
        detector.detect(colour_frames(1, H, W))
        assert torch.get_num_threads() == uu.NUM_THREADS + 1
    finally:
        torch.set_num_threads(before[0])
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == before[1]

    assert uu.ONLINE is False
    assert uu.SETTINGS_FILE.parent == Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"


@pytest.mark.parametrize(
    ("module", "detector", "message"),
    [
        ("ultralytics", YoloDetector("yolo11n.yaml"), "cannot import ultralytics for YOLO"),
        (
            "transformers",
            GroundingDinoDetector(".", DetectorOptions(prompt="car")),
            "cannot import transformers for Grounding DINO",
        ),
    ],
)
def test_a_missing_framework_is_a_model_error(
    monkeypatch: pytest.MonkeyPatch, module: str, detector: Any, message: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ModelError, match=message):
        detector.load("cpu")


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((2, H, W, 3), dtype=np.float32),  # not uint8
        np.zeros((H, W, 3), dtype=np.uint8),  # one frame, not a batch
        np.zeros((2, H, W, 4), dtype=np.uint8),  # RGBA
    ],
)
def test_yolo_refuses_bad_frames(yolo: YoloDetector, frames: np.ndarray) -> None:
    with pytest.raises(ModelError, match=r"expected an \(N, H, W, 3\) uint8 batch"):
        yolo.detect(frames)


def test_yolo_empty_batch_and_unloaded(yolo: YoloDetector, yolo_file: Path) -> None:
    assert yolo.detect(np.zeros((0, H, W, 3), dtype=np.uint8)) == []
    with pytest.raises(RuntimeError, match="load"):
        YoloDetector(yolo_file).detect(colour_frames(1, H, W))


# -- Grounding DINO ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "text", "phrases"),
    [
        ("car. person.", "car. person.", ("car", "person")),  # already normal
        ("Car . A  Person", "car. a person.", ("car", "a person")),  # case, spaces, last dot
        ("car.car. dog..", "car. dog.", ("car", "dog")),  # repeats and empty phrases dropped
    ],
)
def test_normalize_prompt(prompt: str, text: str, phrases: tuple[str, ...]) -> None:
    assert normalize_prompt(prompt) == (text, phrases)


def test_normalize_prompt_refuses_an_empty_prompt() -> None:
    with pytest.raises(ModelError, match="text prompt"):
        normalize_prompt(" . . ")


PHRASES = ("car", "person", "red car", "traffic - light", "[UNK]")
SPECIAL = ("[CLS]", "[SEP]", "[PAD]", "[UNK]")


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("car", 0),  # exact
        ("person [SEP]", 1),  # special tokens dropped
        ("red car", 2),  # exact beats the contained "car"
        ("car. person. [SEP]", 0),  # spans several phrases: the first
        ("red", 2),  # part of a phrase
        ("light", 3),  # part of a tokenized phrase
        ("", None),  # no token above the text threshold
        ("[SEP]", None),  # only special tokens
        ("dog", None),  # nothing in the prompt
        ("[UNK]", None),  # a word the vocabulary lacks is no match for another such word
    ],
)
def test_match_phrase(label: str, expected: int | None) -> None:
    assert match_phrase(label, PHRASES, SPECIAL) == expected


def gd(folder: Path, **options: Any) -> GroundingDinoDetector:
    defaults: dict[str, Any] = {"prompt": "car. person.", "conf": 0.0, "text_threshold": 0.0}
    detector = GroundingDinoDetector(folder, DetectorOptions(**(defaults | options)))
    detector.load("cpu")
    return detector


def test_grounding_dino_round_trip_matches_transformers(gd_folder: Path) -> None:
    import torch
    from transformers import AutoModelForZeroShotObjectDetection

    frames = colour_frames(2, H, W)
    results = gd(gd_folder).detect(frames)
    assert len(results) == 2

    # Expected boxes: the model's normalized cxcywh boxes in frame pixels, clipped.
    detector = gd(gd_folder)
    inputs = detector._processor(
        images=list(frames), text=["car. person."] * 2, return_tensors="pt"
    )
    model = AutoModelForZeroShotObjectDetection.from_pretrained(gd_folder, local_files_only=True)
    with torch.inference_mode():
        cx, cy, bw, bh = model.eval()(**inputs).pred_boxes.unbind(-1)
    xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
    expected = (xyxy * torch.tensor([W, H, W, H])).clamp(min=0)
    expected = torch.minimum(expected, torch.tensor([W, H, W, H], dtype=torch.float32)).numpy()
    for i, dets in enumerate(results):
        assert len(dets) == 12  # every query: thresholds 0
        assert_valid(dets, {"car", "person"})
        assert np.allclose(dets.boxes, expected[i], atol=1e-3)
        ids = dict(zip(dets.class_names, dets.class_ids.tolist(), strict=True))
        assert all(ids[name] == ("car", "person").index(name) for name in ids)


@pytest.mark.parametrize(
    ("options", "boxes"),
    [
        ({"classes": ("car",)}, 12),  # every label names car first (thresholds 0)
        ({"classes": ("person",)}, 0),
        ({"classes": ("1",)}, 0),  # person, by id
        ({"text_threshold": 1.0}, 0),  # no token passes: no label, no box
        ({"conf": 1.0}, 0),  # no box scores above 1
        ({"prompt": "Person. CAR"}, 12),  # normalized; person is now class 0
    ],
)
def test_grounding_dino_options(gd_folder: Path, options: dict[str, Any], boxes: int) -> None:
    detector = gd(gd_folder, **options)
    for dets in detector.detect(colour_frames(2, H, W)):
        assert len(dets) == boxes
        if not boxes:
            assert dets == Detections.empty()
        elif options.get("prompt"):
            assert set(dets.class_names) == {"person"} and set(dets.class_ids.tolist()) == {0}


def test_grounding_dino_unknown_class_fails_on_construction(gd_folder: Path) -> None:
    with pytest.raises(ModelError, match=r"no class 'dog'; its 2 classes: car, person"):
        GroundingDinoDetector(gd_folder, DetectorOptions(prompt="car. person.", classes=("dog",)))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "Grounding DINO model folder not found: .*gd"),
        ("", "cannot load Grounding DINO from .*gd: "),  # no config.json
        ('{"model_type": "owlvit"}', r"gd: expected a Grounding DINO model .*got owlvit"),
    ],
)
def test_grounding_dino_bad_folders_are_model_errors(
    tmp_path: Path, config: str | None, message: str
) -> None:
    folder = tmp_path / "gd"
    if config is not None:
        folder.mkdir()
    if config:
        (folder / "config.json").write_text(config)
    detector = GroundingDinoDetector(folder, DetectorOptions(prompt="car."))
    with pytest.raises(ModelError, match=message):
        detector.load("cpu")


def test_grounding_dino_half_is_ignored_on_cpu(gd_folder: Path) -> None:
    import torch

    detector = gd(gd_folder, half=True)
    assert detector._model.dtype == torch.float32
    assert len(detector.detect(colour_frames(1, H, W))) == 1


# -- a user's class ----------------------------------------------------------------------

USER_MODULE = """
import numpy as np
from vidshard.detection.types import Detections

BOXES = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]], dtype=np.float32)


class Fixed:
    def __init__(self, options=None):
        self.options = options

    def load(self, device):
        self.device = device

    def detect(self, frames):
        one = Detections(
            boxes=BOXES, scores=[0.9, 0.5, 0.1], class_ids=[0, 1, 1],
            class_names=("person", "car", "car"),
        )
        return [one] * len(frames)


class Short(Fixed):
    def detect(self, frames):
        return super().detect(frames)[1:]


class NotAList(Fixed):
    def detect(self, frames):
        return super().detect(frames)[0]


class Dicts(Fixed):
    def detect(self, frames):
        return [{"boxes": BOXES}] * len(frames)


class NoDetect:
    def load(self, device):
        pass


class Broken:
    def __init__(self):
        raise RuntimeError("no GPU here")
"""


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user") / "my_detectors.py"
    path.write_text(textwrap.dedent(USER_MODULE))
    return path


@pytest.mark.parametrize(
    ("options", "scores"),
    [
        (DetectorOptions(conf=0.0), [0.9, 0.5, 0.1]),  # everything
        (DetectorOptions(), [0.9, 0.5]),  # default conf 0.25
        (DetectorOptions(conf=0.0, classes=("car",)), [0.5, 0.1]),  # by name
        (DetectorOptions(conf=0.3, classes=("1", "person")), [0.9, 0.5]),  # id and name
        (DetectorOptions(conf=0.95), []),  # none left
    ],
)
def test_class_detector_filters_like_the_others(
    user_file: Path, options: DetectorOptions, scores: list[float]
) -> None:
    detector = build_detector("class", f"{user_file}:Fixed", options)
    detector.load("cpu")
    results = detector.detect(colour_frames(2, H, W))
    assert len(results) == 2
    assert [round(float(s), 2) for s in results[0].scores] == scores
    assert detector.name == "Fixed"
    assert isinstance(detector, ClassDetector) and detector.inner.options is options


def test_class_detector_from_a_module_uses_its_name() -> None:
    detector = ClassDetector("detect_fixtures:OneBoxDetector")
    detector.load("cuda:0")
    (dets,) = detector.detect(colour_frames(1, H, W))
    assert detector.name == "one-box" and detector.inner.devices == ["cuda:0"]
    assert isinstance(detector.inner, OneBoxDetector)
    assert dets.class_names == ("person",) and dets.boxes.tolist() == [[25, 18, 75, 54]]


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        ("Short", "expected 2 Detections, got 1"),
        ("NotAList", "expected a list of 2 Detections, got Detections"),
        ("Dicts", "result 0: expected Detections, got dict"),
    ],
)
def test_class_detector_checks_results(user_file: Path, cls: str, message: str) -> None:
    detector = ClassDetector(f"{user_file}:{cls}")
    detector.load("cpu")
    with pytest.raises(ModelError, match=message):
        detector.detect(colour_frames(2, H, W))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("{file}:NoDetect", "expected NoDetect to have load.*without detect"),
        ("{file}:Broken", r"Broken\(\) failed: RuntimeError: no GPU here"),
        ("{file}:Missing", "'Missing' not found"),
        ("{dir}/nope.py:Fixed", "model class file not found"),
        ("not a target", "expected package.module:Class or file.py:Class"),
        ("no_such_module_xyz:Fixed", "cannot import model module"),
    ],
)
def test_class_detector_bad_targets_are_model_errors(
    user_file: Path, target: str, message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        ClassDetector(target.format(file=user_file, dir=user_file.parent))
