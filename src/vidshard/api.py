"""The Python API: every task as a function, made from its definition (the same options
as the CLI command, checked the same way, the same typed errors).

``vidshard.upscale(input, output, **options)``, ``vidshard.detect(inputs, output,
**options)``, ``vidshard.track(...)``, ``vidshard.generate(image, output, **options)``,
and ``vidshard.run(task_name, ...)`` for any task, a package's included. Each also takes
``devices``, ``workers_per_device``, ``on_progress`` (progress snapshots), ``on_phase``
(phase names) and ``on_note`` (a video done or failed).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from vidshard.errors import ConfigError
from vidshard.executors.registry import executor_spec
from vidshard.tasks import Note, default_tasks, run_task
from vidshard.tasks.base import NoteFn, PhaseFn, ProgressFn, Task
from vidshard.tasks.options import Cli, option_meta

if TYPE_CHECKING:  # a job imports only its own engine (an upscale never loads detection)
    from vidshard.engine.detect import DetectResult
    from vidshard.engine.generate import GenerateResult
    from vidshard.engine.upscale import UpscaleResult

ResultT = TypeVar("ResultT")
Inputs = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]

__all__ = ["Note", "TaskFunction", "detect", "generate", "run", "track", "upscale"]


class TaskFunction(Generic[ResultT]):
    """A task as a function. Its signature (``help()``, an IDE) lists the task's options;
    a bad one is a :class:`~vidshard.errors.ConfigError` naming it."""

    def __init__(self, name: str) -> None:
        self.task_name = name
        self.__name__ = self.__qualname__ = name

    # Read from the registry when asked (help(), an IDE): importing vidshard loads no task.
    @property  # type: ignore[misc]
    def __doc__(self) -> str:  # type: ignore[override]
        return _doc(self.task)

    @property
    def __signature__(self) -> inspect.Signature:
        return _signature(self.task)

    @property
    def task(self) -> Task[Any, ResultT]:
        found: Task[Any, ResultT] = default_tasks().get(self.task_name)
        return found

    def __call__(
        self,
        inputs: Inputs | None = None,
        output: str | os.PathLike[str] | None = None,
        *,
        devices: str = "all",
        workers_per_device: int = 1,
        executor: str = "local",
        ray_address: str | None = None,
        on_progress: ProgressFn | None = None,
        on_phase: PhaseFn | None = None,
        on_note: NoteFn | None = None,
        **options: Any,
    ) -> ResultT:
        task = self.task
        named = _input_name(task)
        if named in options and named not in ("input", "inputs"):  # generate(image=...)
            if inputs is not None:
                raise ConfigError(f"{task.name}: give the {named} once")
            inputs = options.pop(named)
        if inputs is None:
            raise ConfigError(f"{task.name}: give the {named}")
        return run_task(
            task,
            inputs,
            output,
            task.options(options, "python"),
            devices=devices,
            workers_per_device=workers_per_device,
            executor=executor_spec(executor, ray_address),
            on_progress=on_progress,
            on_phase=on_phase,
            on_note=on_note,
        )

    def __repr__(self) -> str:
        return f"<vidshard task function {self.task_name}>"


upscale: TaskFunction[UpscaleResult] = TaskFunction("upscale")
detect: TaskFunction[DetectResult] = TaskFunction("detect")
track: TaskFunction[DetectResult] = TaskFunction("track")
generate: TaskFunction[GenerateResult] = TaskFunction("generate")


def run(task: str, inputs: Inputs, output: str | os.PathLike[str] | None = None, **kw: Any) -> Any:
    """Run the task registered as ``task`` (a built-in or a package's) with ``kw``."""
    return TaskFunction[Any](task)(inputs, output, **kw)


def _input_name(task: Task[Any, Any]) -> str:
    """What the first argument is called: ``input``, ``inputs``, or the CLI's flag for it
    (``image`` for ``generate``)."""
    if task.inputs == "many":
        return "inputs"
    return (task.input_flag or "input").lstrip("-").replace("-", "_")


def _signature(task: Task[Any, Any]) -> inspect.Signature:
    keyword = inspect.Parameter.KEYWORD_ONLY
    first = _input_name(task)
    parameters = [
        inspect.Parameter(first, inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter(
            "output",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=inspect.Parameter.empty if task.default_output is None else None,
        ),
    ]
    for name, info in task.options_type.model_fields.items():
        default = info.get_default(call_default_factory=True)
        parameters.append(
            inspect.Parameter(name, keyword, default=default, annotation=info.annotation)
        )
    for name, default in (
        ("devices", "all"),
        ("workers_per_device", 1),
        ("executor", "local"),
        ("ray_address", None),
        ("on_progress", None),
        ("on_phase", None),
        ("on_note", None),
    ):
        parameters.append(inspect.Parameter(name, keyword, default=default))
    return inspect.Signature(parameters)


def _doc(task: Task[Any, Any]) -> str:
    lines = [task.summary, "", "Options:"]
    for name, info in task.options_type.model_fields.items():
        flags = option_meta(info, Cli)
        where = "" if flags is None or flags.exposed else " (Python only)"
        lines.append(f"    {name}: {info.description or ''}{where}")
    lines += [
        "",
        "Also: devices, workers_per_device, executor (local or ray), ray_address,",
        "on_progress, on_phase, on_note.",
        "Raises a vidshard.VidshardError subclass for bad input.",
    ]
    return "\n".join(lines)
