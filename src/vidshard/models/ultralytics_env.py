"""Ultralytics, imported offline, and what it changes put back.

Shared by the YOLO detector, the ByteTrack tracker and the model-file checks; importing
this module imports nothing heavy.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vidshard.errors import ModelError


def first_line(exc: BaseException) -> str:
    """``Type: first line`` of an exception from a framework (without its emoji prefix)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text.removeprefix('ERROR ❌️ ').strip()}"


def import_yolo() -> Any:
    """Ultralytics' ``YOLO`` class, imported so that it never reaches the network.

    ``YOLO_OFFLINE`` stops its online check (so no weights, fonts, analytics or pip
    installs), ``YOLO_AUTOINSTALL`` is off, and its settings file goes to a directory in
    the temp dir rather than the user's home, unless ``YOLO_CONFIG_DIR`` is set.
    ultralytics reads these once, when it is first imported.
    """
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    if not os.environ.get("YOLO_CONFIG_DIR"):
        owner = os.getuid() if hasattr(os, "getuid") else os.getpid()
        path = Path(tempfile.gettempdir()) / f"vidshard-ultralytics-{owner}"
        os.environ["YOLO_CONFIG_DIR"] = str(path)
    from vidshard._compat.torchvision_ops import ensure_torchvision_ops

    ensure_torchvision_ops()
    try:
        with _environment_kept("OMP_NUM_THREADS"):  # it sets 1 for itself: workers inherit
            ultralytics = importlib.import_module("ultralytics")
    except ImportError as exc:
        # Not installed, or its OpenCV misses system libraries (libGL.so.1: install libgl1,
        # or opencv-python-headless in place of opencv-python).
        raise ModelError(f"cannot import ultralytics for YOLO: {first_line(exc)}") from exc
    return ultralytics.YOLO


@contextmanager
def _environment_kept(*names: str) -> Iterator[None]:
    """The variables ``names`` as they were before the block, set or unset."""
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def keep_torch_threads() -> Iterator[None]:
    """ultralytics sets torch's CPU thread count when it picks a device; put it back."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
