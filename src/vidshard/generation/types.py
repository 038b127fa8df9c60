"""The data a generation group speaks: its layout, the model it keeps loaded, a request and
its result. All frozen and picklable: the coordinator sends them to every rank."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vidshard.errors import ConfigError

Solver = Literal["unipc", "euler"]


@dataclass(frozen=True)
class Layout:
    """A group's shape, fixed while the group lives."""

    world: int  # ranks = slots of the group (G)
    ulysses: int = 1  # Ulysses sequence-parallel degree
    cfg: int = 1  # 2: conditional / unconditional branch on two ranks
    fsdp: bool = False  # fully_shard the transformer and the text encoder
    vae_parallel: bool = False  # the VAE decode split over the ranks

    def __post_init__(self) -> None:
        if self.ulysses < 1:
            raise ConfigError(f"ulysses: expected >= 1, got {self.ulysses}")
        if self.cfg not in (1, 2):
            raise ConfigError(f"cfg: expected 1 or 2, got {self.cfg}")
        if self.world != self.ulysses * self.cfg:
            raise ConfigError(
                f"devices: expected ulysses x cfg = {self.ulysses} x {self.cfg} = "
                f"{self.ulysses * self.cfg} ranks, got {self.world}"
            )


@dataclass(frozen=True)
class GenerationModel:
    """What a group loads and keeps between requests."""

    path: Path  # a diffusers-format folder (model_index.json)
    dtype: str = "auto"  # auto: float32 on CPU, bfloat16 on CUDA/NPU
    runner: str = "vidshard.generation.rank:WanRunner"  # "module:Class" or "file.py:Class"

    @property
    def name(self) -> str:
        """The folder's name, for slot views."""
        return Path(self.path).name


@dataclass(frozen=True)
class CacheSettings:
    """Seed 002's attention cache: reuse the transformer's output every ``interval`` steps
    from ``start_step`` up to ``end_step`` (None: the last step)."""

    start_step: int
    interval: int
    end_step: int | None


@dataclass(frozen=True)
class GenerationRequest:
    """One video to generate; picklable, sent to every rank of the group."""

    request_id: str
    image: Path  # a local image file (already checked / downloaded)
    prompt: str
    negative_prompt: str
    frames: int  # 4k+1 (Wan)
    size_wh: tuple[int, int]  # multiples of 16
    steps: int
    guidance: float
    seed: int
    solver: Solver
    shift: float
    cache: CacheSettings | None
    output: Path  # the final .mp4; rank 0 writes it atomically (temp + rename)
    fps: int | None = None  # None: the model's (16 for Wan2.1)


@dataclass(frozen=True)
class GenerationResult:
    """What rank 0 returns once the mp4 is in place."""

    request_id: str
    output: Path
    frames: int
    fps: int
    seconds: float  # denoise + decode + encode, rank 0
    load_seconds: float = 0.0  # 0 when the group was already loaded
