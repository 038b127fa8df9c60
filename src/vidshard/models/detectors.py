"""Detectors: Ultralytics YOLO files, Grounding DINO folders and users' own classes.

:func:`build_detector` only constructs; torch, ultralytics and transformers are imported
in ``load(device)``, inside the worker, so importing this module stays cheap. Every
detector takes (N, H, W, 3) uint8 RGB frames and returns one validated
:class:`~vidshard.detection.types.Detections` per frame, boxes in that frame's pixels.

Options apply the same way to all three: ``conf`` is the minimum score, ``classes``
keeps only the named classes (names, case-insensitive, or class ids written as text).
"""

from __future__ import annotations

import difflib
import inspect
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidshard.detection.base import DETECTORS, Detector, DetectorOptions
from vidshard.detection.types import Detections
from vidshard.errors import ConfigError, ModelError, VidshardError
from vidshard.models.classical import check_batch
from vidshard.models.custom import canonical_target, import_object
from vidshard.models.detect_files import GROUNDING_DINO_TYPES, is_shipped_config_name
from vidshard.models.ultralytics_env import first_line, import_yolo, keep_torch_threads
from vidshard.pathnames import expand_user

__all__ = [
    "GROUNDING_DINO_TYPES",
    "YOLO_SUFFIXES",
    "ClassDetector",
    "GroundingDinoDetector",
    "YoloDetector",
    "build_detector",
    "import_yolo",
    "match_phrase",
    "normalize_prompt",
    "resolve_class_ids",
]

logger = logging.getLogger(__name__)

YOLO_SUFFIXES = (".pt", ".onnx", ".engine", ".torchscript", ".yaml", ".yml")


def build_detector(kind: str, weights: str, options: DetectorOptions | None = None) -> Detector:
    """The unloaded detector of ``kind`` (one of :data:`~vidshard.detection.base.DETECTORS`)
    on ``weights``; call ``load(device)`` next. A recipe checks its options first
    (:meth:`~vidshard.detection.pipeline.DetectRecipe.build`)."""
    options = options or DetectorOptions()
    if kind == "yolo":
        return YoloDetector(weights, options)
    if kind == "grounding-dino":
        return GroundingDinoDetector(weights, options)
    if kind == "class":
        return ClassDetector(weights, options)
    raise ConfigError(f"detector: expected one of {', '.join(DETECTORS)}, got {kind!r}")


# -- shared helpers --------------------------------------------------------------------


def resolve_class_ids(wanted: Sequence[str], names: Mapping[int, str], model: str) -> list[int]:
    """The class ids of ``wanted`` (names, case-insensitive, or ids as text) in ``names``.

    An unknown name or id is a ModelError that lists close matches and some valid names.
    """
    by_name: dict[str, int] = {}
    for cid, name in names.items():
        by_name.setdefault(name.lower(), cid)
    ids: list[int] = []
    for item in wanted:
        text = item.strip()
        if text.isdigit() and int(text) in names:
            cid = int(text)
        elif text.lower() in by_name:
            cid = by_name[text.lower()]
        else:
            raise ModelError(_unknown_class(item, names, model))
        if cid not in ids:
            ids.append(cid)
    return ids


def _unknown_class(item: str, names: Mapping[int, str], model: str) -> str:
    valid = list(names.values())
    close = difflib.get_close_matches(item.lower(), [n.lower() for n in valid], n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    shown = ", ".join(valid[:8]) + (", ..." if len(valid) > 8 else "")
    if item.strip().isdigit():
        return f"{model}: expected a class id in 0..{len(valid) - 1}, got {item}"
    return f"{model} has no class {item!r}{hint}; its {len(valid)} classes: {shown}"


def _check_results(results: object, n: int, name: str) -> list[Detections]:
    """``results`` if it is a list of ``n`` Detections, else a ModelError saying what arrived."""
    if not isinstance(results, list | tuple):
        raise ModelError(
            f"detector {name}: expected a list of {n} Detections, got {type(results).__name__}"
        )
    if len(results) != n:
        raise ModelError(f"detector {name}: expected {n} Detections, got {len(results)}")
    for i, item in enumerate(results):
        if not isinstance(item, Detections):
            raise ModelError(
                f"detector {name}: result {i}: expected Detections, got {type(item).__name__}"
            )
    return list(results)


def _finish(dets: Detections, height: int, width: int) -> Detections:
    """Boxes clipped to the frame; the empty result is always ``Detections.empty()``."""
    return dets.clip(width, height) if len(dets) else Detections.empty()


def _torch_device(device: str) -> Any:
    import torch

    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"expected a device like cpu or cuda:0, got {device!r}") from exc


# -- YOLO ------------------------------------------------------------------------------


class YoloDetector:
    """An Ultralytics YOLO file: ``.pt``, or an export (``.onnx``, ``.engine``,
    ``.torchscript``), or a ``.yaml`` architecture (random weights, for tests and
    benchmarks; a bare name such as ``yolo11n.yaml`` is one ultralytics ships). Boxes
    from detect, segment and pose models are used; exports need their runtime installed."""

    def __init__(self, weights: str | Path, options: DetectorOptions | None = None) -> None:
        self.path = expand_user(weights)
        self.options = options or DetectorOptions()
        self.name = self.path.name
        self._model: Any = None
        self._device = "cpu"
        self._device_arg: Any = "cpu"
        self._names: dict[int, str] = {}
        self._class_ids: list[int] | None = None

    def _source(self) -> str:
        """The path handed to ultralytics, after checking it exists and has a known suffix."""
        suffix = self.path.suffix.lower()
        if suffix not in YOLO_SUFFIXES:
            raise ModelError(
                f"YOLO weights {self.path}: expected a {', '.join(YOLO_SUFFIXES)} file, "
                f"got {suffix or 'no suffix'}"
            )
        if self.path.is_file():
            return str(self.path.resolve())
        if is_shipped_config_name(str(self.path)):
            return self.path.name  # one of ultralytics' own model configs
        raise ModelError(f"YOLO weights not found: {self.path}")

    def load(self, device: str) -> None:
        source = self._source()
        yolo = import_yolo()
        from ultralytics.utils.checks import check_yolov5u_filename

        with tempfile.TemporaryDirectory(prefix="vidshard-yolo-") as scratch:
            if source.endswith(".pt") and check_yolov5u_filename(source, verbose=False) != source:
                # ultralytics would load (and download) yolov5nu.pt in place of a file
                # named yolov5n.pt: hand it the same file under a name it leaves alone
                alias = Path(scratch) / "weights.pt"
                alias.symlink_to(source)
                source = str(alias)
            try:
                model = yolo(source, verbose=False)
            except Exception as exc:  # ultralytics raises TypeError, FileNotFoundError, ...
                raise ModelError(
                    f"cannot load YOLO weights {self.path}: {first_line(exc)}"
                ) from exc
        if model.task not in ("detect", "segment", "pose"):
            raise ModelError(f"YOLO model {self.name} is a {model.task} model, not a detector")
        self._model, self._device, self._class_ids = None, device, None
        # A torch.device, not text: older ultralytics (8.3) rewrote CUDA_VISIBLE_DEVICES
        # from a device string, undoing the worker's visibility, but passes this through.
        kind = device.partition(":")[0]
        self._device_arg = _torch_device(device) if kind in ("cpu", "cuda") else device
        try:  # names and a first run build the backend: a missing runtime fails here
            names = {int(k): str(v) for k, v in dict(model.names).items()}
            self._predict(model, np.zeros((1, 64, 64, 3), dtype=np.uint8))
        except ImportError as exc:
            raise ModelError(f"YOLO model {self.name} needs {first_line(exc)}") from exc
        except Exception as exc:  # onnxruntime / TensorRT / torch errors on a bad export
            raise ModelError(f"cannot run YOLO model {self.name}: {first_line(exc)}") from exc
        classes = self.options.classes
        self._class_ids = resolve_class_ids(classes, names, self.name) if classes else None
        self._model, self._names = model, names
        logger.info("loaded YOLO %s (%d classes) on %s", self.name, len(self._names), device)

    def _predict(self, model: Any, frames: np.ndarray) -> list[Any]:
        bgr = np.ascontiguousarray(frames[..., ::-1])  # ultralytics reads arrays as BGR
        with keep_torch_threads():
            results: list[Any] = model.predict(
                list(bgr),
                conf=self.options.conf,
                iou=self.options.iou,
                imgsz=self.options.imgsz,
                half=self.options.half and not self._device.startswith("cpu"),
                classes=self._class_ids,
                device=self._device_arg,
                verbose=False,
            )
        return results

    def detect(self, frames: np.ndarray) -> list[Detections]:
        if self._model is None:
            raise RuntimeError(f"detector {self.name}: call load(device) before detect()")
        frames = check_batch(frames, self.name)
        if not len(frames):
            return []
        results = self._predict(self._model, frames)
        _, height, width, _ = frames.shape
        out = [_finish(self._convert(r), height, width) for r in results]
        return _check_results(out, len(frames), self.name)

    def _convert(self, result: Any) -> Detections:
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return Detections.empty()
        class_ids = boxes.cls.cpu().numpy().astype(np.int32)
        return Detections(
            boxes=boxes.xyxy.float().cpu().numpy(),
            scores=boxes.conf.float().cpu().numpy(),
            class_ids=class_ids,
            class_names=tuple(self._names.get(c, str(c)) for c in class_ids.tolist()),
        )


# -- Grounding DINO --------------------------------------------------------------------


def normalize_prompt(prompt: str) -> tuple[str, tuple[str, ...]]:
    """``"Car. a Person"`` → ``("car. a person.", ("car", "a person"))``: lowercase, one
    phrase per dot, each ending with a dot, as Grounding DINO was trained."""
    phrases: list[str] = []
    for part in prompt.lower().split("."):
        phrase = " ".join(part.split())
        if phrase and phrase not in phrases:
            phrases.append(phrase)
    if not phrases:
        raise ModelError(f'expected a text prompt such as "car. person.", got {prompt!r}')
    return " ".join(f"{p}." for p in phrases), tuple(phrases)


def match_phrase(label: str, phrases: Sequence[str], ignore: Sequence[str] = ()) -> int | None:
    """Which of ``phrases`` a Grounding DINO text label names, or None.

    The label is the decoded prompt tokens that scored above the text threshold, e.g.
    ``"car"``, ``"car person [SEP]"`` or ``""``. Tokens in ``ignore`` (special tokens)
    and dots are dropped; then an exact match wins, else the first phrase that the label
    contains or that contains the label, as whole words. Nothing left (no token above
    the threshold) gives None, and so does a label matching no phrase. Never a new
    class: ids must mean the same in every worker, whatever it saw first.
    """
    dropped = set(ignore)

    def padded(text: str) -> str:
        return f" {' '.join(w for w in text.replace('.', ' ').split() if w not in dropped)} "

    text = padded(label)
    if not text.strip():
        return None
    forms = [padded(p) for p in phrases]
    if text in forms:
        return forms.index(text)
    for i, form in enumerate(forms):
        if form.strip() and (form in text or text in form):
            return i
    return None


class GroundingDinoDetector:
    """Grounding DINO (transformers) from a local folder holding the model and its
    processor (``save_pretrained`` of both), prompted with ``options.prompt``.

    Class ids are the positions of the prompt's phrases, class names the phrases. A box
    whose text label names no phrase (no token above ``text_threshold``) is dropped; a
    label spanning several phrases goes to the first (see :func:`match_phrase`).
    """

    def __init__(self, folder: str | Path, options: DetectorOptions | None = None) -> None:
        self.folder = expand_user(folder)
        self.options = options or DetectorOptions()
        self.name = self.folder.name or str(self.folder)
        self.prompt, self.phrases = normalize_prompt(self.options.prompt or "")
        names = dict(enumerate(self.phrases))
        classes = self.options.classes
        self._keep = set(resolve_class_ids(classes, names, self.name)) if classes else None
        self._model: Any = None
        self._processor: Any = None
        self._device: Any = None
        self._dtype: Any = None
        self._forms: tuple[str, ...] = self.phrases
        self._ignore: tuple[str, ...] = ()

    def load(self, device: str) -> None:
        if not self.folder.is_dir():
            raise ModelError(f"Grounding DINO model folder not found: {self.folder}")
        from vidshard._compat.torchvision_ops import ensure_torchvision_ops

        ensure_torchvision_ops()
        import torch

        try:
            from transformers import (
                AutoConfig,
                AutoModelForZeroShotObjectDetection,
                AutoProcessor,
            )
        except ImportError as exc:
            raise ModelError(
                f"cannot import transformers for Grounding DINO: {first_line(exc)}"
            ) from exc
        dev = _torch_device(device)
        try:
            kind = AutoConfig.from_pretrained(self.folder, local_files_only=True).model_type
            if kind not in GROUNDING_DINO_TYPES:  # OWL-ViT & co. post-process differently
                raise ModelError(
                    f"{self.folder}: expected a Grounding DINO model "
                    f"({', '.join(GROUNDING_DINO_TYPES)}), got {kind}"
                )
            processor = AutoProcessor.from_pretrained(self.folder, local_files_only=True)
            model = AutoModelForZeroShotObjectDetection.from_pretrained(
                self.folder, local_files_only=True
            )
        except ModelError:
            raise
        except Exception as exc:  # OSError, ValueError, KeyError from a partial folder
            raise ModelError(
                f"cannot load Grounding DINO from {self.folder}: {first_line(exc)}"
            ) from exc
        dtype = torch.float16 if self.options.half and dev.type != "cpu" else torch.float32
        self._model = model.to(dev, dtype=dtype).eval()
        self._processor, self._device, self._dtype = processor, dev, dtype
        tokenizer = processor.tokenizer
        # The text labels come out as decoded tokens: compare phrases in that form too.
        self._forms = tuple(
            tokenizer.decode(tokenizer(p, add_special_tokens=False)["input_ids"])
            for p in self.phrases
        )
        self._ignore = tuple(tokenizer.all_special_tokens)
        logger.info("loaded Grounding DINO %s on %s (%s)", self.name, device, self.prompt)

    def detect(self, frames: np.ndarray) -> list[Detections]:
        if self._model is None:
            raise RuntimeError(f"detector {self.name}: call load(device) before detect()")
        frames = check_batch(frames, self.name)
        if not len(frames):
            return []
        import torch

        n, height, width, _ = frames.shape
        inputs = self._processor(
            images=list(frames),
            text=[self.prompt] * n,
            return_tensors="pt",
            input_data_format="channels_last",
        )
        inputs = {  # pixel values in the model's dtype; ids and masks stay integers
            k: v.to(self._device, self._dtype if v.is_floating_point() else v.dtype)
            for k, v in inputs.items()
        }
        with torch.inference_mode():
            outputs = self._model(**inputs)
            results = self._processor.post_process_grounded_object_detection(
                outputs,
                inputs["input_ids"],
                threshold=self.options.conf,
                text_threshold=self.options.text_threshold,
                target_sizes=[(height, width)] * n,
            )
        out = [_finish(self._convert(r), height, width) for r in results]
        return _check_results(out, n, self.name)

    def _convert(self, result: Mapping[str, Any]) -> Detections:
        ids = [match_phrase(t, self._forms, self._ignore) for t in result["text_labels"]]
        keep = [i is not None and (self._keep is None or i in self._keep) for i in ids]
        if not any(keep):
            return Detections.empty()
        mask = np.asarray(keep, dtype=np.bool_)
        class_ids = [i for i, k in zip(ids, keep, strict=True) if k and i is not None]
        return Detections(
            boxes=result["boxes"].float().cpu().numpy()[mask],
            scores=result["scores"].float().cpu().numpy()[mask],
            class_ids=np.asarray(class_ids, dtype=np.int32),
            class_names=tuple(self.phrases[i] for i in class_ids),
        )


# -- a user's class --------------------------------------------------------------------


class ClassDetector:
    """A user's detector class, ``file.py:Class`` or ``package.module:Class``.

    The class is built with no arguments (plus ``options=`` the :class:`DetectorOptions`
    if its constructor has an ``options`` parameter); its constructor must be cheap and
    touch no device. It has ``load(device)`` and ``detect(frames) -> list[Detections]``.
    Its results are checked (one Detections per frame), then filtered by ``conf`` and
    ``classes`` like every other detector's.
    """

    def __init__(self, target: str, options: DetectorOptions | None = None) -> None:
        self.target = canonical_target(target)
        self.options = options or DetectorOptions()
        factory = import_object(self.target)
        label = target.rpartition(":")[2]
        if not callable(factory):
            raise ModelError(f"expected {label} to be a class, got {type(factory).__name__}")
        try:
            self.inner: Any = factory(**self._kwargs(factory))
        except VidshardError:
            raise
        except Exception as exc:  # user code
            raise ModelError(f"{label}() failed: {type(exc).__name__}: {exc}") from exc
        missing = [a for a in ("load", "detect") if not callable(getattr(self.inner, a, None))]
        if missing:
            raise ModelError(
                f"expected {label} to have load(device) and detect(frames), "
                f"got {type(self.inner).__name__} without {', '.join(missing)}"
            )
        own_name = getattr(self.inner, "name", None)
        self.name = own_name if isinstance(own_name, str) and own_name else label

    def _kwargs(self, factory: Any) -> dict[str, Any]:
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):  # some builtins have no signature
            return {}
        return {"options": self.options} if "options" in params else {}

    def load(self, device: str) -> None:
        self.inner.load(device)

    def detect(self, frames: np.ndarray) -> list[Detections]:
        frames = check_batch(frames, self.name)
        if not len(frames):
            return []
        results = _check_results(self.inner.detect(frames), len(frames), self.name)
        return [self._filter(d) for d in results]

    def _filter(self, dets: Detections) -> Detections:
        if not len(dets):
            return Detections.empty()
        keep = dets.scores >= self.options.conf
        if self.options.classes:
            wanted = {c.strip().lower() for c in self.options.classes}
            names = np.array([n.lower() in wanted for n in dets.class_names], dtype=np.bool_)
            ids = np.array([str(c) in wanted for c in dets.class_ids.tolist()], dtype=np.bool_)
            keep &= names | ids
        if keep.all():
            return dets
        return dets.filter(keep) if keep.any() else Detections.empty()
