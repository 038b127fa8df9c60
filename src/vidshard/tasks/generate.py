"""The ``generate`` task: an image and a prompt in, a video out (Wan2.1 image-to-video),
on a group of slots with Ulysses and CFG parallelism, FSDP and a parallel VAE decode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from vidshard.engine.generate import GenerateResult, GenerateSettings, check_image, run_generate
from vidshard.errors import ConfigError
from vidshard.generation.types import CacheSettings, GenerationModel, Layout
from vidshard.media.source import FileIdentity
from vidshard.pathnames import expand_user, shown

from .base import ModelAccess, Outcome, Task, TaskRun
from .options import Cli, Naming, Served, TaskOptions, option_label

MAX_PROMPT = 4000
MAX_SIDE = 4096


def parse_size(value: str) -> tuple[int, int]:
    """``832x480`` (or seed 002's ``1280*720``): width and height in pixels."""
    text = value.strip().lower().replace("*", "x")
    width, sep, height = text.partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit():
        raise ValueError(f"expected WIDTHxHEIGHT such as 832x480, got {value!r}")
    return int(width), int(height)


class GenerateParams(TaskOptions):
    """The options of a ``generate`` job (seed 002's parameters, by their meaning)."""

    model: Annotated[
        str | None,
        Field(
            None,
            min_length=1,
            max_length=4096,
            description="A Wan2.1 image-to-video model folder in diffusers format "
            "(model_index.json beside its parts).",
        ),
        Cli(flags=("--model", "-m")),
        Served(default_setting="default_generate_model"),
    ]
    prompt: Annotated[
        str,
        Field(min_length=1, max_length=MAX_PROMPT, description="What the video shows."),
    ]
    negative_prompt: Annotated[
        str, Field("", max_length=MAX_PROMPT, description="What it should not show.")
    ]
    frames: Annotated[
        int,
        Field(81, ge=5, le=1025, description="Frames of the video: 4k+1 (81 = 5 s at 16 fps)."),
    ]
    size: Annotated[
        str,
        Field(
            "832x480",
            max_length=20,
            description="Width x height, multiples of 16: 832x480, 1280x720 (or 1280*720).",
        ),
        Cli(metavar="WxH"),
    ]
    steps: Annotated[int, Field(30, ge=1, le=1000, description="Denoising steps.")]
    guidance: Annotated[
        float, Field(5.0, ge=0, le=50, description="Classifier-free guidance scale.")
    ]
    seed: Annotated[
        int | None,
        Field(
            None, ge=0, lt=2**31, description="The same seed gives the same video (none: random)."
        ),
    ]
    solver: Annotated[
        Literal["unipc", "euler"],
        Field("unipc", description="Sampler: unipc (UniPC multistep) or euler (flow matching)."),
    ]
    shift: Annotated[
        float, Field(5.0, gt=0, le=100, description="Flow shift (Wan: 3 for 480p, 5 for 720p).")
    ]
    fps: Annotated[
        int | None, Field(None, ge=1, le=120, description="Frame rate (none: the model's, 16).")
    ]
    ulysses: Annotated[int, Field(1, ge=1, le=64, description="Ulysses sequence-parallel ranks.")]
    cfg_parallel: Annotated[
        bool,
        Field(False, description="The conditional and unconditional passes on two ranks each."),
    ]
    fsdp: Annotated[
        bool, Field(False, description="Shard the transformer and the text encoder (FSDP).")
    ]
    vae_parallel: Annotated[
        bool, Field(False, description="Split the VAE decode over the group's ranks.")
    ]
    attention_cache: Annotated[
        bool,
        Field(False, description="Reuse the transformer's output between cache steps."),
    ]
    cache_start_step: Annotated[
        int, Field(12, ge=0, le=1000, description="The attention cache's first step.")
    ]
    cache_interval: Annotated[
        int, Field(4, ge=2, le=1000, description="Compute once every this many steps.")
    ]
    cache_end_step: Annotated[
        int | None,
        Field(None, ge=1, le=1000, description="The cache's last step (none: the last)."),
    ]

    @field_validator("size")
    @classmethod
    def _size(cls, size: str) -> str:
        width, height = parse_size(size)
        for side in (width, height):
            if not 16 <= side <= MAX_SIDE or side % 16:
                raise ValueError(f"expected sides that are multiples of 16 from 16 to {MAX_SIDE}")
        return f"{width}x{height}"

    @property
    def size_wh(self) -> tuple[int, int]:
        return parse_size(self.size)

    @field_validator("frames")
    @classmethod
    def _frames(cls, frames: int) -> int:
        if (frames - 1) % 4:
            raise ValueError(f"expected 4k+1 frames (77, 81, 85...), got {frames}")
        return frames

    @model_validator(mode="after")
    def _steps_and_guidance(self) -> GenerateParams:
        if self.cfg_parallel and self.guidance <= 1:
            raise ValueError("cfg_parallel needs guidance above 1 (there is no second pass)")
        if self.attention_cache:
            end = self.cache_end_step if self.cache_end_step is not None else self.steps
            if not self.cache_start_step < min(end, self.steps):
                raise ValueError(
                    f"the attention cache's steps {self.cache_start_step}..{end} are "
                    f"outside the {self.steps} steps"
                )
        return self

    @property
    def layout(self) -> Layout:
        cfg = 2 if self.cfg_parallel else 1
        return Layout(
            world=self.ulysses * cfg,
            ulysses=self.ulysses,
            cfg=cfg,
            fsdp=self.fsdp,
            vae_parallel=self.vae_parallel,
        )

    @property
    def cache(self) -> CacheSettings | None:
        if not self.attention_cache:
            return None
        return CacheSettings(self.cache_start_step, self.cache_interval, self.cache_end_step)


# The names the model checks give to what they refuse -> the options they come from.
CHECKED_NAMES = {
    "attention cache start_step": "cache_start_step",
    "attention cache end_step": "cache_end_step",
    "attention cache interval": "cache_interval",
    **{name: name for name in ("frames", "size", "steps", "guidance", "solver", "shift")},
    **{name: name for name in ("fps", "ulysses")},
}


@contextlib.contextmanager
def _named_as_given(naming: Naming) -> Iterator[None]:
    """A refusal of the model checks names its option the way the caller wrote it."""
    try:
        yield
    except ConfigError as exc:
        text = str(exc)
        for said, option in CHECKED_NAMES.items():
            if text.startswith(f"{said}: "):
                label = option_label(option, GenerateParams, naming)
                raise ConfigError(f"{label}: {text[len(said) + 2 :]}") from None
        raise


class GenerateTask(Task[GenerateParams, GenerateResult]):
    name = "generate"
    summary = "Generate a video from an image and a prompt (Wan2.1) on a group of devices."
    options_type: ClassVar[type[GenerateParams]] = GenerateParams
    inputs = "one"
    input_flag: ClassVar[str | None] = "--image"
    output_suffixes = (".mp4",)
    progress_unit = "steps"
    input_help = "The first frame: an image file (PNG, JPEG, WebP)."

    def check(self, options: GenerateParams, models: ModelAccess) -> GenerationModel:
        """The model folder, and the layout against its configs (heads, sequence)."""
        from vidshard.generation.checks import check_request

        if options.model is None:
            label = option_label("model", GenerateParams, models.naming)
            where = " (the server has no default_generate_model)" if models.naming == "http" else ""
            raise ConfigError(f"{label}: give a Wan2.1 image-to-video model folder{where}")
        folder = expand_user(models.file(options.model, "model"))
        if not (folder / "model_index.json").is_file():
            label = option_label("model", GenerateParams, models.naming)
            raise ConfigError(
                f"{label}: {shown(options.model)} is not a diffusers model folder "
                "(no model_index.json in it)"
            )
        model = GenerationModel(Path(folder).resolve())
        with _named_as_given(models.naming):
            check_request(
                model.path,
                options.layout,
                frames=options.frames,
                size_wh=options.size_wh,
                steps=options.steps,
                guidance=options.guidance,
                solver=options.solver,
                shift=options.shift,
                cache=options.cache,
                fps=options.fps,
            )
        return model

    def slots_needed(self, options: GenerateParams) -> int:
        return options.layout.world

    def check_input(self, path: Path, identity: FileIdentity | None) -> None:
        check_image(path, identity)

    def output_name(self, source: Path, options: GenerateParams, prepared: Any) -> str:
        return f"{source.stem or 'generated'}.mp4"

    def run(self, run: TaskRun[GenerateParams]) -> GenerateResult:
        options = run.options
        settings = GenerateSettings(
            prompt=options.prompt,
            negative_prompt=options.negative_prompt,
            frames=options.frames,
            size_wh=options.size_wh,
            steps=options.steps,
            guidance=options.guidance,
            seed=options.seed,
            solver=options.solver,
            shift=options.shift,
            cache=options.cache,
            fps=options.fps,
            devices=run.devices,
            workers_per_device=run.workers_per_device,
            executor=run.executor,
        )
        return run_generate(
            run.input,
            run.output,
            run.prepared,
            options.layout,
            settings,
            executor=run.executor_for,
            identity=run.identities.get(str(run.input)),
            on_progress=run.on_progress,
            on_phase=run.on_phase,
        )

    def outcome(self, result: GenerateResult) -> Outcome:
        width, height = result.size_wh
        load = f"; model load {result.load_seconds:.1f} s" if result.load_seconds else ""
        line = (
            f"wrote {result.output}: {result.frames} frames at {result.fps} fps, "
            f"{width}x{height}, seed {result.seed}, {result.steps} steps on "
            f"{result.layout.world} slot(s) in {result.seconds:.1f} s{load}"
        )
        summary = {
            "output": str(result.output),
            "frames": result.frames,
            "fps": result.fps,
            "size": [width, height],
            "seed": result.seed,
            "steps": result.steps,
            "ranks": result.layout.world,
            "ulysses": result.layout.ulysses,
            "cfg": result.layout.cfg,
            "seconds": round(result.seconds, 3),
            "load_seconds": round(result.load_seconds, 3),
        }
        return Outcome(frames=result.frames, files=(result.output,), lines=(line,), summary=summary)
