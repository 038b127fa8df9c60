"""Generate a video from an image on a device group: the engine side of ``generate``.

A run asks the pool's :class:`~vidshard.generation.group.GroupKeeper` for a group of
``layout.world`` slots holding the model (loaded once, kept between requests), sends it
the request, relays its steps as progress and its cancel. The CLI and the Python API
start a pool on ``devices`` for the run; a service job runs on the service's one pool,
whose keeper outlives the job, so the next request with the same model and layout pays
no load.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidshard.devices.types import DeviceSlot
from vidshard.engine.progress import ProgressSnapshot
from vidshard.errors import Cancelled, ConfigError, InputError, OutputError
from vidshard.executors.base import Executor, Recipe
from vidshard.executors.local import LocalExecutor
from vidshard.executors.registry import executor_with_slots
from vidshard.generation.types import (
    CacheSettings,
    GenerationModel,
    GenerationRequest,
    Layout,
    Solver,
)
from vidshard.media.source import FileIdentity, identified_source
from vidshard.pathnames import path_name_problem, shown

ProgressFn = Callable[[ProgressSnapshot], None]
PhaseFn = Callable[[str], None]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_IMAGE_PIXELS = 8192 * 8192
SEED_LIMIT = 2**31  # seed 002's range (0..2147483647)


@dataclass(frozen=True)
class GenerateSettings:
    """What a run asks of the model, besides the image and the output."""

    prompt: str
    negative_prompt: str
    frames: int
    size_wh: tuple[int, int]
    steps: int
    guidance: float
    seed: int | None  # None: a random one, reported in the result
    solver: Solver
    shift: float
    cache: CacheSettings | None
    fps: int | None
    devices: str = "all"
    workers_per_device: int = 1
    executor: str = "local"


@dataclass(frozen=True)
class GenerateResult:
    """A finished generation: the mp4, what it holds, and how long it took."""

    output: Path
    frames: int
    fps: int
    size_wh: tuple[int, int]
    seed: int
    steps: int
    layout: Layout
    seconds: float  # the whole run, as the caller waited
    load_seconds: float  # 0: the group already held the model


_keepers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_keepers_lock = threading.Lock()


def shared_keeper(pool: Any) -> Any:
    """The one group keeper of a long-lived pool (the service's): its groups outlive jobs."""
    from vidshard.generation.group import GroupKeeper

    with _keepers_lock:
        keeper = _keepers.get(pool)
        if keeper is None:
            keeper = _keepers[pool] = GroupKeeper(pool)
        return keeper


def shared_groups(pool: Any) -> list[Any]:
    """The views of a pool's generation groups (none before its first generate job)."""
    with _keepers_lock:
        keeper = _keepers.get(pool)
    return keeper.groups() if keeper is not None else []


def close_shared_keeper(pool: Any) -> None:
    """Dismiss a pool's groups (the service stopping)."""
    with _keepers_lock:
        keeper = _keepers.pop(pool, None)
    if keeper is not None:
        keeper.close()


def check_image(image: Path, identity: FileIdentity | None = None) -> tuple[int, int]:
    """The image's size; an :class:`InputError` naming the file when it is not one."""
    if not image.is_file():
        raise InputError(f"image not found: {shown(str(image))}")
    with identified_source(image, identity) as (name, _found):
        return _image_size(Path(name).read_bytes(), image.name)


def _image_size(data: bytes, label: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InputError(f"image {label} is too large: {width}x{height}")
            opened.verify()
    except (UnidentifiedImageError, ImportError):
        # ImportError: ultralytics, once imported, wraps Image.open to try a HEIF plugin
        # on a file Pillow cannot identify, and fails when that plugin is not installed.
        raise InputError(f"{label} is not an image (PNG, JPEG, WebP, BMP...)") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated, corrupt
        raise InputError(f"{label} is not an image vidshard can read: {exc}") from None
    return width, height


@contextlib.contextmanager
def staged_image(image: Path, identity: FileIdentity | None, folder: Path) -> Iterator[Path]:
    """A private copy of the checked image for the ranks to read: the file is opened once
    here (refused if it is not the one checked at submit), so a path swapped later is
    never read; the copy is removed afterwards."""
    if not image.is_file():
        raise InputError(f"image not found: {shown(str(image))}")
    with identified_source(image, identity) as (name, _found):
        data = Path(name).read_bytes()
    _image_size(data, image.name)
    fd, staged = tempfile.mkstemp(prefix=".vidshard-image-", suffix=image.suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        yield Path(staged)
    finally:
        Path(staged).unlink(missing_ok=True)


def check_output(output: Path) -> None:
    problem = path_name_problem(str(output))
    if problem is not None:
        raise OutputError(f"output {shown(str(output))} cannot name a file: {problem}")
    if output.suffix.lower() != ".mp4":
        raise OutputError(f"output must be an .mp4 file, got {shown(output.name)}")
    if output.is_dir():
        raise OutputError(f"output is a directory; give an .mp4 file name: {output}")
    if not output.parent.is_dir():
        raise OutputError(f"output directory does not exist: {output.parent}")
    if not os.access(output.parent, os.W_OK):
        raise OutputError(f"no permission to write in {output.parent}")


def run_generate(
    image: Path,
    output: Path,
    model: GenerationModel,
    layout: Layout,
    settings: GenerateSettings,
    *,
    executor: Callable[[Recipe], Executor] | None = None,
    identity: FileIdentity | None = None,
    on_progress: ProgressFn | None = None,
    on_phase: PhaseFn | None = None,
) -> GenerateResult:
    """Generate ``settings.frames`` frames from ``image`` into ``output`` on a group of
    ``layout.world`` slots: the given pool's (``executor``: a service job's handle) or
    one started on ``settings.devices`` for this run."""
    check_output(output)
    with staged_image(image, identity, output.parent) as staged:
        return _generate(staged, output, model, layout, settings, executor, on_progress, on_phase)


def _generate(
    image: Path,
    output: Path,
    model: GenerationModel,
    layout: Layout,
    settings: GenerateSettings,
    executor: Callable[[Recipe], Executor] | None,
    on_progress: ProgressFn | None,
    on_phase: PhaseFn | None,
) -> GenerateResult:
    seed = settings.seed if settings.seed is not None else secrets.randbelow(SEED_LIMIT)
    request = GenerationRequest(
        request_id=uuid.uuid4().hex,
        image=image,
        prompt=settings.prompt,
        negative_prompt=settings.negative_prompt,
        frames=settings.frames,
        size_wh=settings.size_wh,
        steps=settings.steps,
        guidance=settings.guidance,
        seed=seed,
        solver=settings.solver,
        shift=settings.shift,
        cache=settings.cache,
        output=output,
        fps=settings.fps,
    )
    phase = on_phase or (lambda _text: None)
    started = time.monotonic()
    progress = _StepProgress(settings.steps, on_progress)
    cancel = threading.Event()
    if executor is not None:
        handle = executor(model)
        pool = getattr(handle, "pool", handle)
        watch = getattr(handle, "on_cancel", None)
        if watch is not None:
            watch(cancel.set)
        keeper = shared_keeper(pool)
        _check_storage(handle, request, model)
        phase(f"generating on {layout.world} slot(s)")
        result = keeper.run(
            model,
            layout,
            request,
            job_id=getattr(handle, "job_id", ""),
            on_step=progress.step,
            cancel=cancel,
        )
    else:
        result = _run_own_pool(model, layout, request, settings, progress, cancel, phase)
    return GenerateResult(
        output=result.output,
        frames=result.frames,
        fps=result.fps,
        size_wh=settings.size_wh,
        seed=seed,
        steps=settings.steps,
        layout=layout,
        seconds=time.monotonic() - started,
        load_seconds=result.load_seconds,
    )


def _run_own_pool(
    model: GenerationModel,
    layout: Layout,
    request: GenerationRequest,
    settings: GenerateSettings,
    progress: _StepProgress,
    cancel: threading.Event,
    phase: PhaseFn,
) -> Any:
    """A pool on ``settings.devices`` for one run (the CLI, the Python API)."""
    from vidshard.generation.group import GroupKeeper

    pool, slots = executor_with_slots(
        settings.executor, settings.devices, settings.workers_per_device
    )
    try:
        if not isinstance(pool, LocalExecutor):
            raise ConfigError(f"executor {settings.executor!r} cannot run device groups")
        if len(slots) < layout.world:
            raise ConfigError(
                f"the layout needs {layout.world} slot(s) (ulysses {layout.ulysses} x cfg "
                f"{layout.cfg}); devices {settings.devices!r} give {len(slots)}"
            )
        phase(f"starting {len(slots[: layout.world])} worker(s)")
        pool.start(_on_one_node(slots, layout.world), None, lambda _event: None)
    except BaseException:
        pool.shutdown()
        raise
    keeper = GroupKeeper(pool)
    try:
        _check_storage(pool, request, model)
        phase(f"loading {model.name} on {len(slots)} slot(s)")
        return keeper.run(model, layout, request, job_id="", on_step=progress.step, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        raise Cancelled("generation was interrupted") from None
    finally:
        keeper.close()
        pool.shutdown()


def _on_one_node(slots: list[DeviceSlot], world: int) -> list[DeviceSlot]:
    """The first ``world`` slots of one node (a group's ranks meet over the node's own
    loopback); the first ``world`` slots when no node has that many."""
    by_node: dict[str, list[DeviceSlot]] = {}
    for slot in slots:
        by_node.setdefault(slot.device.node, []).append(slot)
    for node_slots in by_node.values():
        if len(node_slots) >= world:
            return node_slots[:world]
    counts = ", ".join(f"{node}: {len(found)}" for node, found in by_node.items())
    raise ConfigError(
        f"a group of {world} ranks runs on one node, and no node has {world} of the slots "
        f"given ({counts})"
    )


def _check_storage(executor: Executor, request: GenerationRequest, model: GenerationModel) -> None:
    """The ranks read the image and the model and write the video themselves."""
    executor.check_storage(
        [str(request.image), str(model.path)], [str(Path(request.output).parent)]
    )


class _StepProgress:
    """Denoising steps as progress snapshots: the ETA from the steps' own pace (the
    model's load is not a step); a retry never makes progress go down."""

    def __init__(self, steps: int, sink: ProgressFn | None) -> None:
        self.steps = steps
        self.sink = sink
        self.done = 0
        self.started = time.monotonic()
        self.first_step_at: float | None = None
        self.first_step = 0
        self.lock = threading.Lock()

    def step(self, step: int, total: int) -> None:
        with self.lock:
            now = time.monotonic()
            if self.first_step_at is None:
                self.first_step_at = now
                self.first_step = step
            self.done = max(self.done, min(step, self.steps))
            paced = step - self.first_step
            per_step_s = (now - self.first_step_at) / paced if paced > 0 else None
            snapshot = ProgressSnapshot(
                frames_done=self.done,
                frames_total=self.steps,
                elapsed_s=now - self.started,
                fps=1 / per_step_s if per_step_s else 0.0,
                eta_s=per_step_s * (self.steps - self.done) if per_step_s else None,
                slots=(),
            )
        if self.sink is not None:
            self.sink(snapshot)
