"""A tiny random-weight Wan2.1 image-to-video pipeline in diffusers format, for tests: the
package's own (:mod:`vidshard.generation.tiny`, which users try the plumbing with).

Usable from any test suite::

    from gen_fixtures import tiny_wan_i2v, test_image
    model_dir = tiny_wan_i2v(tmp_path_factory.mktemp("wan"))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vidshard.generation.tiny import HEADS, TEXT_DIM, VOCAB_WORDS, write_tiny_model

__all__ = ["HEADS", "TEXT_DIM", "VOCAB_WORDS", "test_image", "tiny_wan_i2v"]


def tiny_wan_i2v(folder: Path, *, scheduler: str = "unipc") -> Path:
    """The tiny pipeline under ``folder / "tiny-wan-i2v"`` (written once, then reused)."""
    return write_tiny_model(folder, scheduler=scheduler)


def test_image(path: Path, size_wh: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    """A random RGB PNG of ``size_wh`` at ``path``."""
    from PIL import Image

    width, height = size_wh
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


test_image.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
