"""What a detect pipeline is made of: the detector and tracker kinds, the detector's
options, and the protocols every detector and tracker implements.

Plain types with no model behind them. The models (:mod:`vidshard.models.detectors`,
:mod:`vidshard.models.trackers`) implement these protocols and take these options;
:mod:`vidshard.detection.pipeline` builds the models from a ``DetectRecipe``. This module
sits below both and imports neither, so neither imports the other back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from vidshard.errors import ConfigError, ModelError
from vidshard.pathnames import expand_user

from .types import Detections

DETECTORS = ("yolo", "grounding-dino", "class")
WEIGHT_SUFFIXES = (".pt", ".onnx", ".engine", ".yaml", ".yml", ".torchscript")
TRACKERS = ("none", "bytetrack", "sam2")


def detector_kind(model: str) -> str:
    """yolo, grounding-dino or class, from what ``--model`` names."""
    head = model.split(":", 1)[0]
    if ":" in model and (head.endswith(".py") or "/" not in head):
        return "class"
    path = expand_user(model)
    if path.is_dir():
        return "grounding-dino"
    if path.suffix.lower() in WEIGHT_SUFFIXES:
        return "yolo"  # a missing file is named by DetectRecipe.validate, with a hint
    if not path.exists():
        raise ModelError(
            f"model not found: {path.resolve()} (expected YOLO weights, a Grounding DINO "
            "folder, or file.py:Class)"
        )
    raise ModelError(
        f"--model {model}: expected YOLO weights ({', '.join(WEIGHT_SUFFIXES)}), a Grounding "
        "DINO folder, or file.py:Class"
    )


class Detector(Protocol):
    """Finds objects in a batch of frames; holds no state between calls."""

    name: str

    def load(self, device: str) -> None: ...

    def detect(self, frames: np.ndarray) -> list[Detections]:
        """(N, H, W, 3) uint8 RGB → one :class:`Detections` per frame, boxes in pixels."""
        ...


class Tracker(Protocol):
    """Gives detections ids that persist across frames; stateful, frames in order."""

    #: True: it needs detections on every frame (ByteTrack). False: it follows objects
    #: by itself between detection frames (SAM2) and is given None on the others.
    needs_detections_every_frame: bool

    def load(self, device: str) -> None: ...

    def reset(self) -> None:
        """Forget every track: a new segment or video starts."""
        ...

    def update(self, frame: np.ndarray, detections: Detections | None) -> Detections:
        """The tracked objects in ``frame`` (H, W, 3 uint8), with ``track_ids`` set."""
        ...


@dataclass(frozen=True)
class DetectorOptions:
    conf: float = 0.25  # minimum score (Grounding DINO: the box threshold)
    iou: float = 0.7  # NMS IoU (YOLO)
    classes: tuple[str, ...] | None = None  # keep only these class names (or ids as text)
    imgsz: int = 640  # YOLO inference size
    half: bool = False  # fp16 on accelerators
    batch_size: int = 8
    prompt: str | None = None  # Grounding DINO: "car. person."
    text_threshold: float = 0.25  # Grounding DINO

    def validate(self) -> None:
        if not 0.0 <= self.conf <= 1.0:
            raise ConfigError(f"--conf must be in 0..1, got {self.conf}")
        if not 0.0 < self.iou <= 1.0:
            raise ConfigError(f"--iou must be in (0, 1], got {self.iou}")
        if not 32 <= self.imgsz <= 8192 or self.imgsz % 32:
            raise ConfigError(f"--imgsz must be a multiple of 32 in 32..8192, got {self.imgsz}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be 1 or more, got {self.batch_size}")
        if not 0.0 <= self.text_threshold <= 1.0:
            raise ConfigError(f"--text-threshold must be in 0..1, got {self.text_threshold}")
