"""Tasks: each one defined once, and run the same way by the CLI, the Python API and the
service.

Adding a task takes one module and one registry line (or an entry point, from a package
of its own): a :class:`Task` subclass with a name, a summary, an options model
(:class:`TaskOptions`: ranges, defaults and help), ``check`` (models and options, before
any work), ``run`` (on an executor, through the engine) and ``outcome`` (frames, files,
what to print). The CLI makes it a command, :mod:`vidshard.api` a function, the service a
job type with its request schema; see docs/architecture.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from vidshard.errors import ConfigError
from vidshard.executors.base import Executor, Recipe
from vidshard.media.source import FileIdentity

from .base import (
    AnyModelFile,
    ModelAccess,
    Note,
    NoteFn,
    Outcome,
    PhaseFn,
    ProgressFn,
    Task,
    TaskRun,
)
from .options import Cli, Served, TaskOptions
from .registry import TaskRegistry, default_tasks

__all__ = [
    "AnyModelFile",
    "Cli",
    "ModelAccess",
    "Note",
    "Outcome",
    "Served",
    "Task",
    "TaskOptions",
    "TaskRegistry",
    "TaskRun",
    "default_tasks",
    "run_task",
]

ResultT = TypeVar("ResultT")


def run_task(
    task: Task[Any, ResultT],
    inputs: str | os.PathLike[str] | Sequence[Any],
    output: str | os.PathLike[str] | None,
    options: TaskOptions,
    *,
    devices: str = "all",
    workers_per_device: int = 1,
    executor: str = "local",
    executor_for: Callable[[Recipe], Executor] | None = None,
    identities: Mapping[str, FileIdentity] | None = None,
    models: ModelAccess | None = None,
    on_progress: ProgressFn | None = None,
    on_phase: PhaseFn | None = None,
    on_note: NoteFn | None = None,
) -> ResultT:
    """Check ``options`` and run ``task`` over ``inputs`` into ``output``: what the CLI,
    the Python API and the service's runner all call."""
    if not isinstance(options, task.options_type):
        raise ConfigError(
            f"task {task.name}: expected {task.options_type.__name__}, got {type(options).__name__}"
        )
    paths = task.input_paths(inputs)
    if output is None:
        if task.default_output is None:
            raise ConfigError(f"task {task.name}: give the output file")
        output = task.default_output
    prepared = task.check(options, models or AnyModelFile())
    return task.run(
        TaskRun(
            inputs=paths,
            output=Path(output),
            options=options,
            prepared=prepared,
            devices=devices,
            workers_per_device=workers_per_device,
            executor=executor,
            executor_for=executor_for,
            identities=identities or {},
            on_progress=on_progress,
            on_phase=on_phase,
            on_note=on_note,
        )
    )
