"""What a job may use, checked: model files only from ``model_dirs`` (a model file is
code), detect recipes with their files. URL inputs are downloaded by :mod:`.download`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vidshard.detect.pipeline import DetectorOptions, DetectRecipe, detector_kind
from vidshard.errors import InputError, ModelError
from vidshard.models.detect_files import is_shipped_config_name
from vidshard.models.registry import (
    ModelRef,
    default_registry,
    names_a_file,
    resolve_model,
    unknown_model_message,
)

from . import security
from .settings import ServiceSettings


class TooLarge(InputError):
    """A body or download is over its size limit (HTTP 413)."""


def check_model(settings: ServiceSettings, name: str, scale: int | None) -> ModelRef:
    """A built-in or plug-in model, or a model file inside ``model_dirs``.

    A name that is neither registered nor file-like is a typo: 422 with the names there
    are and the closest one, not the 403 a file outside ``model_dirs`` gets."""
    if default_registry().get(name) is None:
        if not names_a_file(name):
            raise ModelError(f"params.model: {unknown_model_message(name)}")
        name = model_file(settings, name)
    return resolve_model(name, scale=scale)


def model_file(settings: ServiceSettings, name: str, field: str = "params.model") -> str:
    """``name`` (a file, folder or ``file.py:Class``) as a real path inside one of
    ``model_dirs``; AccessDenied otherwise (a model file is code)."""
    if "\0" in name:
        raise InputError(f"{field}: expected a model name or file, got a NUL byte in {name!r}")
    file_part = name.split(":", 1)[0] if ".py:" in name else name
    path = Path(file_part).expanduser()
    if not path.is_absolute() and settings.model_dirs:
        path = settings.model_dirs[0] / path
    real = Path(os.path.realpath(path))
    if not any(security.is_within(real, d) for d in settings.model_dirs):
        raise security.AccessDenied(
            f"model {name!r}: not a built-in model, and model files are only "
            "taken from the server's model_dirs"
            + ("" if settings.model_dirs else " (none configured)")
        )
    security.stat_path(real, field, name)  # a name the file system refuses: 422, not 500
    return str(real) + (name[len(file_part) :] if file_part != name else "")


def detect_model(settings: ServiceSettings, name: str) -> str:
    """A detector from ``model_dirs``, or one of the model configs Ultralytics ships
    (``yolo11n.yaml``: random weights, nothing read from the server's disk) when no file
    of that name is in ``model_dirs``."""
    if is_shipped_config_name(name) and not any((d / name).exists() for d in settings.model_dirs):
        return name
    return model_file(settings, name)


def detect_recipe(settings: ServiceSettings, task: str, params: dict[str, Any]) -> DetectRecipe:
    """The detect pipeline a ``detect`` or ``track`` job runs, its files checked."""
    model = detect_model(settings, params["model"])
    sam2 = model_file(settings, params["sam2"], "params.sam2") if params.get("sam2") else None
    tracking = task == "track"
    recipe = DetectRecipe(
        detector=detector_kind(model),
        weights=model,
        options=DetectorOptions(
            conf=params["conf"],
            iou=params["iou"],
            classes=tuple(params["classes"]) if params.get("classes") else None,
            imgsz=params["imgsz"],
            half=params["half"],
            batch_size=params["batch_size"],
            prompt=params.get("prompt"),
        ),
        tracker=params["tracker"] if tracking else "none",
        sam2=sam2 if tracking else None,
        detection_frequency=params["detection_frequency"] if tracking else 1,
        masks=bool(params["masks"]) if tracking else False,
    )
    recipe.validate()
    return recipe
