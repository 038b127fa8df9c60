"""A DetectRecipe builds its models from its own fields (the models never see a recipe),
and travels to a worker as the same classes under the names it always had."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

import vidshard.detection.base as base
import vidshard.detection.pipeline as pipeline
from vidshard.detection.pipeline import DetectorOptions, DetectRecipe
from vidshard.errors import ModelError
from vidshard.models.detectors import ClassDetector
from vidshard.models.trackers import ByteTracker, Sam2Tracker

ONE_BOX = "detect_fixtures:OneBoxDetector"


@pytest.mark.parametrize(
    ("tracker", "extra", "expected"),
    [
        ("none", {}, type(None)),  # a detector alone
        ("bytetrack", {}, ByteTracker),
        # the SAM2 folder, fp16 and masks reach the tracker from the recipe
        ("sam2", {"sam2": "/models/sam2", "masks": True}, Sam2Tracker),
    ],
)
def test_build_passes_the_recipes_fields_to_the_models(
    tracker: str, extra: dict[str, object], expected: type
) -> None:
    options = DetectorOptions(half=True, batch_size=3, conf=0.4)
    recipe = DetectRecipe("class", ONE_BOX, options, tracker=tracker, **extra)
    built = recipe.build()  # constructs, loads nothing: /models/sam2 does not exist
    assert isinstance(built.detector, ClassDetector)
    assert built.detector.options is options and built.recipe is recipe
    assert isinstance(built.tracker, expected)
    if isinstance(built.tracker, Sam2Tracker):
        assert built.tracker.masks is True
        propagator = built.tracker.propagator
        assert propagator.folder == Path("/models/sam2") and propagator.half is True


def test_a_sam2_folder_is_checked_only_for_the_sam2_tracker(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-sam2")
    DetectRecipe("class", ONE_BOX, tracker="bytetrack", sam2=missing).validate()  # unused
    with pytest.raises(ModelError, match="SAM2"):
        DetectRecipe("class", ONE_BOX, tracker="sam2", sam2=missing).validate()


def test_the_shared_types_are_one_class_under_both_names() -> None:
    # the lead's and the old imports get the same objects; pickles name one of them
    for name in ("DetectorOptions", "Detector", "Tracker", "detector_kind", "DETECTORS"):
        assert getattr(pipeline, name) is getattr(base, name)
    recipe = DetectRecipe("class", ONE_BOX, DetectorOptions(classes=("car",)), tracker="bytetrack")
    again = pickle.loads(pickle.dumps(recipe))
    assert again == recipe and type(again.options) is pipeline.DetectorOptions
