"""Tiny random-weight detectors for tests, built offline in about a second each.

``build_tiny_yolo(path)`` saves an Ultralytics checkpoint (the yolo11n architecture with
3 classes: person, car, dog); ``build_tiny_grounding_dino(folder)`` saves a Grounding DINO
model (ResNet backbone, 1-layer BERT, d_model 32) with its processor (a word-level BERT
tokenizer over :data:`GD_VOCAB`, images resized to 64..96 pixels). Random weights give
random boxes: YOLO scores are about 0.5 and vary with the pixels (and the channel
order); Grounding DINO's vary more, and with ``conf=0`` every one of its 12 queries comes
out. :class:`OneBoxDetector` is a fake class detector (``detect_fixtures:OneBoxDetector``);
:func:`colour_frames` makes frames whose RGB and BGR versions differ.

The ``session_*`` helpers build once per pytest session under its base temp dir, so any
test module can share them::

    from detect_fixtures import session_tiny_yolo

    @pytest.fixture(scope="module")
    def yolo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return session_tiny_yolo(tmp_path_factory)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vidshard.detection.types import Detections

YOLO_NAMES: tuple[str, ...] = ("person", "car", "dog")
GD_VOCAB: tuple[str, ...] = (
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    ".",
    "-",
    "a",
    "car",
    "person",
    "dog",
    "red",
    "traffic",
    "light",
)


def build_tiny_yolo(path: Path, names: tuple[str, ...] = YOLO_NAMES, seed: int = 0) -> Path:
    """Save a random-weight yolo11n-architecture checkpoint with ``names`` to ``path`` (.pt)."""
    import torch

    from vidshard.models.detectors import import_yolo

    yolo = import_yolo()  # offline environment first, then ultralytics
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    cfg = {**yaml_model_load("yolo11n.yaml"), "nc": len(names)}
    model = yolo("yolo11n.yaml", verbose=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = DetectionModel(cfg, nc=len(names), verbose=False)
        # torch's default init shrinks activations layer by layer until the output ignores
        # the image; Kaiming init and zero class biases make it depend on the pixels.
        for layer in network.modules():
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        for head in network.model[-1].cv3:
            head[-1].bias.data.zero_()
    model.model = network
    model.model.names = dict(enumerate(names))
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def build_tiny_grounding_dino(folder: Path, seed: int = 0) -> Path:
    """Save a random-weight Grounding DINO and its processor to ``folder``."""
    from vidshard._compat.torchvision_ops import ensure_torchvision_ops

    ensure_torchvision_ops()
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        ResNetConfig,
    )

    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(GD_VOCAB)}, do_lower_case=True)
    if tokenizer.convert_tokens_to_ids("car") != GD_VOCAB.index("car"):  # transformers 4 API
        raise RuntimeError("BertTokenizerFast ignored vocab=: these fixtures need transformers 5")
    backbone = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=len(GD_VOCAB),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        num_queries=12,
        encoder_layers=1,
        decoder_layers=2,  # the decoder box heads are tied across layers: at least 2
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GroundingDinoForObjectDetection(config).eval()
    images = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    GroundingDinoProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def session_tiny_yolo(factory: Any) -> Path:
    """:func:`build_tiny_yolo` once per session (``factory``: pytest's tmp_path_factory)."""
    path = Path(factory.getbasetemp()) / "detect_fixtures" / "tiny_yolo.pt"
    return _once(path, build_tiny_yolo)


def session_tiny_grounding_dino(factory: Any) -> Path:
    """:func:`build_tiny_grounding_dino` once per session."""
    folder = Path(factory.getbasetemp()) / "detect_fixtures" / "tiny_grounding_dino"
    return _once(folder, build_tiny_grounding_dino)


def _once(path: Path, build: Callable[[Path], Path]) -> Path:
    done = path.with_name(path.name + ".done")
    if not done.is_file():
        build(path)
        done.touch()
    return path


class OneBoxDetector:
    """A fake detector for ``--detector class detect_fixtures:OneBoxDetector``: one
    "person" box (the middle quarter of the frame, score 0.9) per frame, after sleeping
    ``delay_s`` per batch (subclass to change it). Records the devices it was loaded on."""

    name = "one-box"
    delay_s = 0.0

    def __init__(self) -> None:
        self.devices: list[str] = []

    def load(self, device: str) -> None:
        self.devices.append(device)

    def detect(self, frames: np.ndarray) -> list[Detections]:
        if self.delay_s:
            time.sleep(self.delay_s)
        _, h, w, _ = frames.shape
        box = np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], dtype=np.float32)
        one = Detections(boxes=box, scores=[0.9], class_ids=[0], class_names=("person",))
        return [one] * len(frames)


def colour_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8 RGB frames whose three channels differ a lot (red-heavy
    noise), so a detector fed BGR instead of RGB sees another image."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 64, (n, height, width, 3), dtype=np.uint8)
    frames[..., 0] += rng.integers(128, 192, (n, height, width), dtype=np.uint8)
    return frames
