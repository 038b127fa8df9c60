"""Detection and tracking inside a worker: a detector, an optional tracker, one recipe.

A :class:`DetectRecipe` is the small picklable description the coordinator sends to a
worker (like ``ModelRef`` for upscaling); the worker calls :meth:`DetectRecipe.build`,
then :meth:`DetectPipeline.load` on its device, then feeds frames in order.

Detectors are batched and stateless; trackers are stateful and see frames in order,
one at a time, and are reset at the start of every segment.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from vidshard.errors import ConfigError, ModelError

from .types import Detections

DETECTORS = ("yolo", "grounding-dino", "class")
WEIGHT_SUFFIXES = (".pt", ".onnx", ".engine", ".yaml", ".yml", ".torchscript")
TRACKERS = ("none", "bytetrack", "sam2")


def detector_kind(model: str) -> str:
    """yolo, grounding-dino or class, from what ``--model`` names."""
    head = model.split(":", 1)[0]
    if ":" in model and (head.endswith(".py") or "/" not in head):
        return "class"
    path = Path(model).expanduser()
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


@dataclass(frozen=True)
class DetectRecipe:
    """What a worker builds: which detector from which weights, and which tracker."""

    detector: str  # one of DETECTORS
    weights: str  # a file or folder path; for "class", "file.py:Class" or "pkg.mod:Class"
    options: DetectorOptions = field(default_factory=DetectorOptions)
    tracker: str = "none"  # one of TRACKERS
    sam2: str | None = None  # SAM2 model folder, for tracker "sam2"
    detection_frequency: int = 1  # with sam2: detect every N frames, propagate between
    masks: bool = False  # keep (and write) masks

    def validate(self) -> None:
        """The coordinator's one check, before any output or worker exists: the options,
        then the model files (there, and models; read without importing a framework,
        see :mod:`vidshard.models.detect_files`)."""
        from vidshard.models.detect_files import check_detector_files

        self.validate_options()
        check_detector_files(self)

    def validate_options(self) -> None:
        """The options alone (a worker's check: it reads no file before ``load``)."""
        if self.detector not in DETECTORS:
            raise ConfigError(f"detector: expected one of {', '.join(DETECTORS)}")
        if self.tracker not in TRACKERS:
            raise ConfigError(f"--tracker: expected one of {', '.join(TRACKERS)}")
        if self.tracker == "sam2" and not self.sam2:
            raise ConfigError("--tracker sam2 needs --sam2 MODEL_DIR")
        if self.detection_frequency < 1:
            raise ConfigError(
                f"--detection-frequency must be 1 or more, got {self.detection_frequency}"
            )
        if self.detector == "grounding-dino" and not self.options.prompt:
            raise ConfigError('Grounding DINO needs a text prompt: --prompt "car. person."')
        self.options.validate()

    @property
    def name(self) -> str:
        base = self.weights.rstrip("/").rsplit("/", 1)[-1]
        return base if self.tracker == "none" else f"{base}+{self.tracker}"

    def build(self) -> DetectPipeline:
        """Construct (not load) the pipeline; runs in the worker."""
        from vidshard.models.detectors import build_detector
        from vidshard.models.trackers import build_tracker

        tracker = build_tracker(self) if self.tracker != "none" else None
        return DetectPipeline(build_detector(self), tracker, self)


class DetectPipeline:
    """A detector and an optional tracker, run over frames in order."""

    def __init__(self, detector: Detector, tracker: Tracker | None, recipe: DetectRecipe) -> None:
        self.detector = detector
        self.tracker = tracker
        self.recipe = recipe
        self.name = recipe.name

    def load(self, device: str) -> None:
        self.detector.load(device)
        if self.tracker is not None:
            self.tracker.load(device)

    def run(
        self, frames: Iterable[tuple[int, np.ndarray]], fps: float | None = None
    ) -> Iterator[tuple[int, Detections]]:
        """(index, image) in order → (index, detections), in the same order.

        Detection runs in batches; tracking one frame at a time. The tracker is reset
        first: each call is a segment on its own. ``fps`` is the rate of the frames the
        tracker sees (after sampling), for trackers that count time in frames.
        """
        if self.tracker is not None:
            set_fps = getattr(self.tracker, "set_fps", None)
            if fps is not None and fps > 0 and set_fps is not None:
                set_fps(fps)
            self.tracker.reset()
        every = 1
        if self.tracker is not None and not self.tracker.needs_detections_every_frame:
            every = self.recipe.detection_frequency
        batch: list[tuple[int, int, np.ndarray]] = []  # (position, index, image)
        for position, (index, image) in enumerate(frames):
            batch.append((position, index, image))
            if len(batch) == self.recipe.options.batch_size:
                yield from self._flush(batch, every)
                batch = []
        if batch:
            yield from self._flush(batch, every)

    def _flush(
        self, batch: list[tuple[int, int, np.ndarray]], every: int
    ) -> Iterator[tuple[int, Detections]]:
        wanted = [item for item in batch if item[0] % every == 0]
        found: dict[int, Detections] = {}
        if wanted:
            results = self.detector.detect(np.stack([image for _, _, image in wanted]))
            if len(results) != len(wanted):
                raise ConfigError(
                    f"detector {self.detector.name!r} returned {len(results)} results "
                    f"for {len(wanted)} frames"
                )
            found = {position: dets for (position, _, _), dets in zip(wanted, results, strict=True)}
        for position, index, image in batch:
            detections = found.get(position)
            if self.tracker is None:
                yield index, detections if detections is not None else Detections.empty()
            else:
                yield index, self.tracker.update(image, detections)
