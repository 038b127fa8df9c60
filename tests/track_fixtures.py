"""Builders for tracker tests: synthetic tracks, a scripted SAM2 stand-in, a tiny SAM2.

* :func:`linear_tracks` — hand-made detections of boxes moving in straight lines, with
  slight noise, and gaps where an object is not detected.
* :class:`FakePropagator` — a :class:`~vidshard.models.trackers.MaskPropagator` that
  "segments" each prompted object as its prompt box moved by a fixed velocity, records
  every call, and can hide objects on chosen frames: the tracker's id bookkeeping is
  tested with exact masks, without a model.
* :func:`build_tiny_sam2` — a random-weight ``Sam2VideoModel`` (~1 M parameters, 128 px
  input) and its processor saved to a folder, loadable with ``local_files_only=True``.

Usable from any test suite::

    from track_fixtures import build_tiny_sam2
    folder = build_tiny_sam2(tmp_path / "sam2")
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from vidshard.detection.types import Detections

TINY_SAM2_SIZE = 128  # the model's square input; frames of any size are resized to it


@dataclass(frozen=True)
class Mover:
    """A box ``start`` (xyxy) moving by ``velocity`` (dx, dy) pixels per frame."""

    start: tuple[float, float, float, float]
    velocity: tuple[float, float]
    class_id: int = 0
    class_name: str = "car"
    score: float = 0.9
    absent: frozenset[int] = frozenset()  # frame indices where it is not detected

    def box(self, frame_index: int) -> NDArray[np.float32]:
        dx, dy = self.velocity
        shift = np.array([dx, dy, dx, dy], dtype=np.float32) * frame_index
        return np.asarray(self.start, dtype=np.float32) + shift


def linear_tracks(
    movers: Sequence[Mover],
    num_frames: int,
    *,
    noise_px: float = 0.5,
    seed: int = 0,
    frame_hw: tuple[int, int] | None = None,
) -> list[Detections]:
    """One :class:`Detections` per frame, rows in ``movers`` order (absent ones skipped),
    boxes jittered by up to ``noise_px``; with ``frame_hw``, a filled-box mask per row."""
    rng = np.random.default_rng(seed)
    frames: list[Detections] = []
    for t in range(num_frames):
        present = [m for m in movers if t not in m.absent]
        boxes = np.array([m.box(t) for m in present], dtype=np.float32).reshape(-1, 4)
        boxes += rng.uniform(-noise_px, noise_px, boxes.shape).astype(np.float32)
        masks = None
        if frame_hw is not None:
            masks = np.stack([box_mask(b, frame_hw) for b in boxes]) if present else None
            if masks is None:
                masks = np.zeros((0, *frame_hw), dtype=np.bool_)
        frames.append(
            Detections(
                boxes=boxes,
                scores=np.array([m.score for m in present], dtype=np.float32),
                class_ids=np.array([m.class_id for m in present], dtype=np.int32),
                class_names=tuple(m.class_name for m in present),
                masks=masks,
            )
        )
    return frames


def box_mask(box: NDArray[np.float32], frame_hw: tuple[int, int]) -> NDArray[np.bool_]:
    """A bool (H, W) mask filling the pixels of ``box`` (rounded, clipped to the frame)."""
    h, w = frame_hw
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    mask = np.zeros((h, w), dtype=np.bool_)
    mask[max(y1, 0) : min(y2, h), max(x1, 0) : min(x2, w)] = True
    return mask


def detections(
    boxes: Sequence[Sequence[float]],
    *,
    scores: Sequence[float] | None = None,
    class_ids: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
) -> Detections:
    """Detections from plain lists (defaults: score 0.9, class 0 "car")."""
    n = len(boxes)
    return Detections(
        boxes=np.asarray(boxes, dtype=np.float32).reshape(n, 4),
        scores=np.asarray(scores if scores is not None else [0.9] * n, dtype=np.float32),
        class_ids=np.asarray(class_ids if class_ids is not None else [0] * n, dtype=np.int32),
        class_names=tuple(class_names) if class_names is not None else ("car",) * n,
    )


@dataclass
class StepCall:
    frame_index: int
    prompts: dict[int, list[float]]
    forget: list[int]


@dataclass
class FakePropagator:
    """Each object's mask is its last prompt box moved by ``velocity`` per frame since.

    ``hidden`` maps a frame index to the ids whose mask is empty on that frame.
    """

    velocity: tuple[float, float] = (0.0, 0.0)
    hidden: dict[int, set[int]] = field(default_factory=dict)
    calls: list[StepCall] = field(default_factory=list)
    starts: int = 0
    loaded_on: str | None = None
    _prompts: dict[int, tuple[int, NDArray[np.float32]]] = field(default_factory=dict)

    def load(self, device: str) -> None:
        self.loaded_on = device

    def start(self) -> None:
        self.starts += 1
        self._prompts.clear()

    def step(
        self,
        frame: np.ndarray,
        frame_index: int,
        prompts: Mapping[int, NDArray[np.float32]],
        forget: Collection[int],
    ) -> tuple[list[int], NDArray[np.bool_]]:
        self.calls.append(
            StepCall(
                frame_index, {k: [float(v) for v in b] for k, b in prompts.items()}, list(forget)
            )
        )
        for oid in forget:
            self._prompts.pop(oid, None)
        for oid, box in prompts.items():
            self._prompts[oid] = (frame_index, np.asarray(box, dtype=np.float32).copy())
        hw = (int(frame.shape[0]), int(frame.shape[1]))
        ids = list(self._prompts)
        masks = np.zeros((len(ids), *hw), dtype=np.bool_)
        dx, dy = self.velocity
        for k, oid in enumerate(ids):
            if oid in self.hidden.get(frame_index, set()):
                continue
            since, box = self._prompts[oid]
            moved = box + np.array([dx, dy, dx, dy], dtype=np.float32) * (frame_index - since)
            masks[k] = box_mask(moved, hw)
        return ids, masks


def build_tiny_sam2(folder: Path, *, seed: int = 0) -> Path:
    """Save a random-weight SAM2 video model and its processor to ``folder``; return it.

    The sizes are tied together: ``image_size / 16`` is the last backbone feature size, the
    prompt encoder's embedding size and the memory attention's RoPE size (8); the memory
    encoder's output must be 64 wide (transformers hard-codes the memory attention's key
    width) and narrower than the 128-wide FPN (object pointers are split into 64-wide
    tokens). A stage's first Hiera block must not be a global-attention block.
    """
    from vidshard._compat.torchvision_ops import ensure_torchvision_ops

    ensure_torchvision_ops()
    import torch
    from transformers import (
        Sam2HieraDetConfig,
        Sam2ImageProcessor,
        Sam2VideoConfig,
        Sam2VideoMaskDecoderConfig,
        Sam2VideoModel,
        Sam2VideoProcessor,
        Sam2VideoPromptEncoderConfig,
        Sam2VideoVideoProcessor,
        Sam2VisionConfig,
    )

    size = TINY_SAM2_SIZE
    hidden = 128
    backbone = Sam2HieraDetConfig(
        hidden_size=12,
        image_size=size,
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[12, 24, 48, 96],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        global_attention_blocks=[3],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[96, 48, 24, 12],
        backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2],
        fpn_hidden_size=hidden,
    )
    config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(
            hidden_size=hidden, image_size=size, patch_size=16, mask_input_channels=8
        ),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(
            hidden_size=hidden, mlp_dim=64, num_attention_heads=4, iou_head_hidden_dim=32
        ),
        image_size=size,
        num_maskmem=3,
        max_object_pointers_in_encoder=4,
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[size // 16] * 2,
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=64,
        memory_fuser_num_layers=1,
    )
    torch.manual_seed(seed)
    model = Sam2VideoModel(config).eval()
    processor = Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(
            size={"height": size, "width": size},
            mask_size={"height": size // 4, "width": size // 4},
        ),
        video_processor=Sam2VideoVideoProcessor(size={"height": size, "width": size}),
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
