"""Drawing results on frames: boxes, labels with track ids, masks (Pillow, no OpenCV)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .rle import rle_to_mask
from .types import Detections

# Distinct, readable colours; a track keeps its colour for the whole video.
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (0, 0, 128),
)
MASK_ALPHA = 0.45


@dataclass(frozen=True)
class FrameDrawing:
    """What to draw on one frame: small and picklable (masks stay RLE until drawn)."""

    boxes: tuple[tuple[float, float, float, float], ...]
    labels: tuple[str, ...]
    colour_keys: tuple[int, ...]  # track id, or class id when untracked
    masks: tuple[dict[str, Any], ...] | None = None

    @classmethod
    def of(cls, dets: Detections, rles: tuple[dict[str, Any], ...] | None = None) -> FrameDrawing:
        ids = dets.track_ids
        labels = []
        keys = []
        for i in range(len(dets)):
            name = dets.class_names[i]
            score = float(dets.scores[i])
            if ids is not None:
                labels.append(f"{name} #{int(ids[i])} {score:.2f}")
                keys.append(int(ids[i]))
            else:
                labels.append(f"{name} {score:.2f}")
                keys.append(int(dets.class_ids[i]))
        boxes = tuple(tuple(float(v) for v in box) for box in dets.boxes)
        return cls(boxes, tuple(labels), tuple(keys), rles)  # type: ignore[arg-type]


EMPTY = FrameDrawing((), (), ())


def colour(key: int) -> tuple[int, int, int]:
    return PALETTE[key % len(PALETTE)]


def draw(image: np.ndarray, drawing: FrameDrawing) -> np.ndarray:
    """A copy of ``image`` (H, W, 3 uint8 RGB) with the drawing on it."""
    if not drawing.boxes:
        return image
    out = image.copy()
    if drawing.masks:
        for rle, key in zip(drawing.masks, drawing.colour_keys, strict=True):
            mask = rle_to_mask(rle)
            if mask.shape != out.shape[:2]:
                continue
            tint = np.array(colour(key), np.float32)
            region = out[mask].astype(np.float32)
            out[mask] = np.clip(region * (1 - MASK_ALPHA) + tint * MASK_ALPHA, 0, 255).astype(
                np.uint8
            )
    picture = Image.fromarray(out)
    pen = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    width = max(1, round(min(out.shape[:2]) / 240))
    for box, label, key in zip(drawing.boxes, drawing.labels, drawing.colour_keys, strict=True):
        rgb = colour(key)
        pen.rectangle(box, outline=rgb, width=width)
        left, top = box[0], box[1]
        text_box = pen.textbbox((left, top), label, font=font)
        height = text_box[3] - text_box[1] + 2
        y = top - height if top - height >= 0 else top
        pen.rectangle((left, y, left + text_box[2] - text_box[0] + 4, y + height), fill=rgb)
        pen.text((left + 2, y), label, fill=(0, 0, 0), font=font)
    return np.asarray(picture)
