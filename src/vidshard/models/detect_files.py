"""A detect recipe's model files, checked in the coordinator before any worker starts.

vidshard downloads nothing: YOLO weights, a Grounding DINO or SAM2 folder and a user's
detector file must be on disk. These checks read headers only (a zip directory, a
safetensors header, ``config.json``) and import no framework, so a missing or broken
model fails in a moment, with one line naming the file looked for, before any output or
worker exists. The one exception is a YOLO model config (``.yaml``): Ultralytics itself
resolves and parses it here, exactly as the workers will, since it ships its own configs
(``yolo11n.yaml``) and finds them by name.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidshard.errors import ModelError
from vidshard.models.custom import parse_class_target
from vidshard.models.ultralytics_env import import_yolo
from vidshard.pathnames import expand_user, path_name_problem

logger = logging.getLogger(__name__)

YAML_SUFFIXES = (".yaml", ".yml")
RANDOM_WEIGHTS_EXAMPLE = "yolo11n.yaml"  # a config Ultralytics ships: random weights
DETECTOR_TASKS = ("detect", "segment", "pose")  # YOLO tasks whose boxes vidshard uses
CONFIG = "config.json"
# What a save_pretrained folder must hold: (what to call it, the file names that do).
FileGroup = tuple[str, tuple[str, ...]]
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
MODEL_CONFIG: FileGroup = (CONFIG, (CONFIG,))
WEIGHTS: FileGroup = ("weights (model.safetensors or pytorch_model.bin)", WEIGHT_FILES)
PROCESSOR: FileGroup = (
    "processor_config.json or preprocessor_config.json",
    ("processor_config.json", "preprocessor_config.json"),
)
SAM2_PROCESSOR: FileGroup = (
    PROCESSOR[0],
    (*PROCESSOR[1], "video_preprocessor_config.json"),
)
TOKENIZER: FileGroup = ("tokenizer.json or vocab.txt", ("tokenizer.json", "vocab.txt"))
GROUNDING_DINO_TYPES = ("grounding-dino", "mm-grounding-dino")  # transformers model_type
_MAX_HEADER_BYTES = 100 << 20  # a safetensors header (or a torch archive's pickle) past
# this is not one


def is_shipped_config_name(model: str) -> bool:
    """True for a bare YOLO config name (``yolo11n.yaml``) that is no local file: one
    that only Ultralytics' own package can resolve."""
    path = Path(model)
    if path.suffix.lower() not in YAML_SUFFIXES or path.name != model:
        return False
    if path_name_problem(model) is not None:  # no file can have that name; not a config
        return False
    return not path.exists()


def weights_argument(model: str, kind: str) -> str:
    """What a recipe stores for ``--model``: a class target as given, a shipped config's
    bare name (Ultralytics reads the model scale from it), else the absolute path."""
    if kind == "class" or (kind == "yolo" and is_shipped_config_name(model)):
        return model
    return str(expand_user(model).resolve())


def uses_random_weights(detector: str, weights: str) -> bool:
    """A YOLO built from a model config: untrained, its detections mean nothing."""
    return detector == "yolo" and Path(weights).suffix.lower() in YAML_SUFFIXES


def check_detector_files(detector: str, weights: str, sam2: str | None = None) -> None:
    """ModelError, one line, when a file a recipe names is missing or is not a model:
    ``weights`` as the ``detector`` kind reads them, and the ``sam2`` folder if given
    (the recipe passes it when its tracker is SAM2)."""
    if detector == "yolo":
        check_yolo_file(weights)
    elif detector == "grounding-dino":
        check_pretrained_folder(
            weights,
            "Grounding DINO",
            GROUNDING_DINO_TYPES,
            (MODEL_CONFIG, WEIGHTS, PROCESSOR, TOKENIZER),
        )
    elif detector == "class":
        _check_class_file(weights)
    if sam2:
        check_pretrained_folder(sam2, "SAM2", ("sam2",), (MODEL_CONFIG, WEIGHTS, SAM2_PROCESSOR))


def _check_class_file(target: str) -> None:
    parsed = parse_class_target(target)
    if parsed is not None and parsed[0].endswith(".py"):
        path = expand_user(parsed[0])
        if not path.is_file():
            raise ModelError(f"model class file not found: {path.resolve()}")


# -- YOLO ------------------------------------------------------------------------------


def check_yolo_file(weights: str) -> None:
    """A YOLO file that exists and looks like what its suffix says, or a model config
    (a file, or a name Ultralytics ships) of a detector."""
    path = expand_user(weights)
    suffix = path.suffix.lower()
    if suffix in YAML_SUFFIXES:
        check_yolo_config(weights)
        return
    if not path.is_file():
        raise ModelError(
            f"model not found: {path.resolve()}; vidshard downloads nothing: put YOLO "
            f"weights there (or give --model the path of yours), or try random weights "
            f"with --model {RANDOM_WEIGHTS_EXAMPLE}"
        )
    _need_package("ultralytics", "YOLO")
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise ModelError(f"YOLO weights {path}: the file is empty")
    if suffix in (".pt", ".torchscript"):
        _check_torch_file(path, head, "YOLO weights")
        if suffix == ".pt" and zipfile.is_zipfile(path) and b"ultralytics" not in _pickle(path):
            raise ModelError(
                f"YOLO weights {path}: a PyTorch file, but no Ultralytics model in it "
                "(expected a checkpoint saved by Ultralytics, got e.g. a bare state dict)"
            )
    elif suffix == ".onnx" and head[0] != 0x08:  # ModelProto starts with its ir_version
        raise ModelError(f"YOLO weights {path}: not an ONNX model")


def check_yolo_config(name: str) -> None:
    """A ``.yaml`` detector config: a file, or one Ultralytics ships (found by name, as
    ``YOLO(name)`` finds it; never downloaded). Imports Ultralytics."""
    path = expand_user(name)
    shipped = is_shipped_config_name(name)
    if not shipped and not path.is_file():
        raise ModelError(f"model config not found: {path.resolve()}")
    import_yolo()  # the offline environment first
    from ultralytics.nn.tasks import guess_model_task, yaml_model_load

    try:
        config: Any = yaml_model_load(name if shipped else str(path.resolve()))
    except FileNotFoundError:
        raise ModelError(
            f"model not found: {name} is no file here, nor a model config Ultralytics "
            f"ships (such as {RANDOM_WEIGHTS_EXAMPLE}, yolov8s.yaml, yolo11n-seg.yaml)"
        ) from None
    except Exception as exc:  # a YAML error, or a document that is not a mapping
        raise ModelError(
            f"{name}: not a YOLO model config ({type(exc).__name__}: {exc})".splitlines()[0]
        ) from None
    layers = [config.get(key) for key in ("backbone", "head")]
    if not all(isinstance(layer, list) and layer for layer in layers):
        raise ModelError(
            f"{name}: not a YOLO model config (expected 'backbone' and 'head' layer lists)"
        )
    task = guess_model_task(config)
    if task is not None and task not in DETECTOR_TASKS:
        raise ModelError(f"{name} is a {task} model config, not a detector")


def _check_torch_file(path: Path, head: bytes, what: str) -> None:
    """A torch.save archive (a zip) or a legacy pickle file."""
    if not (zipfile.is_zipfile(path) or head.startswith(b"\x80")):
        raise ModelError(f"{what} {path}: not a PyTorch file (expected a torch.save archive)")


def _pickle(path: Path) -> bytes:
    """The pickle of a torch.save archive (``*/data.pkl``), at most ~100 MiB of it."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if not names:
                return b""
            with archive.open(names[0]) as handle:
                return handle.read(_MAX_HEADER_BYTES)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelError(f"YOLO weights {path}: cannot read the archive: {exc}") from None


# -- transformers folders ---------------------------------------------------------------


def check_pretrained_folder(
    folder: str,
    what: str,
    model_types: Sequence[str],
    wanted: Sequence[FileGroup],
) -> None:
    """A ``save_pretrained`` folder: one file of each group in ``wanted``, a config whose
    ``model_type`` is one of ``model_types`` (or a variant: ``sam2_video``), and weight
    files with valid headers."""
    path = expand_user(folder).resolve()
    if not path.is_dir():
        raise ModelError(f"{what} model folder not found: {path}")
    missing = [label for label, names in wanted if not _first(path, names)]
    if missing:
        raise ModelError(
            f"{what} model folder {path} lacks {'; '.join(missing)} "
            "(save the model and its processor there with save_pretrained)"
        )
    _need_package("transformers", what)
    kind = _model_type(path / CONFIG)
    if not any(kind == t or kind.startswith(f"{t}_") for t in model_types):
        raise ModelError(f"{path}: expected a {what} model ({', '.join(model_types)}), got {kind}")
    weights = _first(path, WEIGHT_FILES)
    assert weights is not None  # checked with the other groups
    for file in _weight_files(weights):
        _check_weights(file)


def _first(folder: Path, names: Sequence[str]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _model_type(config: Path) -> str:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{config}: not a model config (invalid JSON: {exc})") from None
    kind = data.get("model_type") if isinstance(data, dict) else None
    if not isinstance(kind, str):
        raise ModelError(f"{config}: not a model config (no model_type)")
    return kind


def _weight_files(weights: Path) -> list[Path]:
    """The weight files themselves: the shards a ``*.index.json`` names, or the file."""
    if not weights.name.endswith(".index.json"):
        return [weights]
    try:
        index = json.loads(weights.read_text(encoding="utf-8"))
        shards = sorted(set(index["weight_map"].values()))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise ModelError(f"{weights}: not a weights index (expected a weight_map)") from None
    files = [weights.parent / str(s) for s in shards]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise ModelError(f"{weights.parent} lacks {', '.join(absent)}, named in {weights.name}")
    return files


def _check_weights(file: Path) -> None:
    with file.open("rb") as handle:
        head = handle.read(8)
        if file.suffix == ".safetensors":
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            header = handle.read(size) if 1 < size < _MAX_HEADER_BYTES else b""
            if not _is_json_object(header):
                raise ModelError(f"{file}: not a safetensors file (no valid header)")
            return
    if not head:
        raise ModelError(f"{file}: the file is empty")
    _check_torch_file(file, head, "weights")


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False


def _need_package(name: str, what: str) -> None:
    if importlib.util.find_spec(name) is None:
        raise ModelError(f"{what} needs {name}: pip install 'vidshard[detect]'")
