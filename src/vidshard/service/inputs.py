"""What a job may use, checked: model files only from ``model_dirs`` (a model file is
code), detect recipes with their files; and URL inputs, downloaded with a size limit."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from typing import Any

from vidshard.detect.pipeline import DetectorOptions, DetectRecipe, detector_kind
from vidshard.errors import InputError
from vidshard.models.registry import ModelRef, default_registry, resolve_model

from . import security
from .settings import ServiceSettings


class TooLarge(InputError):
    """A body or download is over its size limit (HTTP 413)."""


def check_model(settings: ServiceSettings, name: str, scale: int | None) -> ModelRef:
    """A built-in or plug-in model, or a model file inside ``model_dirs``."""
    if default_registry().get(name) is None:
        name = model_file(settings, name)
    return resolve_model(name, scale=scale)


def model_file(settings: ServiceSettings, name: str) -> str:
    """``name`` (a file, folder or ``file.py:Class``) as a real path inside one of
    ``model_dirs``; AccessDenied otherwise (a model file is code)."""
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
    return str(real) + (name[len(file_part) :] if file_part != name else "")


def detect_recipe(settings: ServiceSettings, task: str, params: dict[str, Any]) -> DetectRecipe:
    """The detect pipeline a ``detect`` or ``track`` job runs, its files checked."""
    model = model_file(settings, params["model"])
    sam2 = model_file(settings, params["sam2"]) if params.get("sam2") else None
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


def download(url: str, folder: Path, limit: int) -> Path:
    """A URL input as a local file in ``folder`` (kept for a rerun), at most ``limit``
    bytes; a partial download never stays."""
    name = security.safe_filename(url.rsplit("/", 1)[-1].split("?", maxsplit=1)[0], "input.mp4")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"input-{name}"
    if target.exists():
        return target
    partial = target.with_name(target.name + ".partial")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, partial.open("wb") as out:
            size = 0
            while chunk := response.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"input_url: the file is over {limit} bytes")
                out.write(chunk)
    except OSError as exc:  # urllib's errors are OSErrors: refused, 404, timeout
        partial.unlink(missing_ok=True)
        raise InputError(f"input_url: cannot download {url}: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return target
