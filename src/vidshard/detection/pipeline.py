"""Detection and tracking inside a worker: a detector, an optional tracker, one recipe.

A :class:`DetectRecipe` is the small picklable description the coordinator sends to a
worker (like ``ModelRef`` for upscaling); the worker calls :meth:`DetectRecipe.build`,
then :meth:`DetectPipeline.load` on its device, then feeds frames in order.

Detectors are batched and stateless; trackers are stateful and see frames in order,
one at a time, and are reset at the start of every segment.

This module is where the recipe meets the models: it builds them, and they know nothing
of it. What both sides need (the kinds, :class:`DetectorOptions`, the :class:`Detector`
and :class:`Tracker` protocols, :func:`detector_kind`) lives in
:mod:`vidshard.detection.base` and is importable from here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from vidshard.errors import ConfigError
from vidshard.models.detect_files import check_detector_files
from vidshard.models.detectors import build_detector
from vidshard.models.trackers import build_tracker

from .base import (
    DETECTORS,
    TRACKERS,
    WEIGHT_SUFFIXES,
    Detector,
    DetectorOptions,
    Tracker,
    detector_kind,
)
from .types import Detections

__all__ = [
    "DETECTORS",
    "TRACKERS",
    "WEIGHT_SUFFIXES",
    "DetectPipeline",
    "DetectRecipe",
    "Detector",
    "DetectorOptions",
    "Tracker",
    "detector_kind",
]


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
        self.validate_options()
        check_detector_files(
            self.detector, self.weights, sam2=self.sam2 if self.tracker == "sam2" else None
        )

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
        """Construct (not load) the pipeline; runs in the worker, which checks the options
        again (it reads no file before ``load``)."""
        self.validate_options()
        detector = build_detector(self.detector, self.weights, self.options)
        tracker: Tracker | None = None
        if self.tracker != "none":
            tracker = build_tracker(
                self.tracker, self.sam2, half=self.options.half, masks=self.masks
            )
        return DetectPipeline(detector, tracker, self)


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
