"""A task, defined once: its name, its options, how it checks its models, how it runs on an
executor, what it writes and how it counts progress.

The CLI makes a command of every registered task (:mod:`vidshard.cli.tasks`), the Python
API a function (:mod:`vidshard.api`), the service a job type with its request schema
(:mod:`vidshard.service.schemas`) and runner (:mod:`vidshard.service.jobs`); none of them
knows one task from another. A task itself plans and runs through the engine.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from vidshard.engine.detect import read_list
from vidshard.engine.progress import ProgressSnapshot
from vidshard.errors import InputError
from vidshard.executors.base import Executor, Recipe
from vidshard.media.source import FileIdentity
from vidshard.pathnames import expand_user

from .options import Naming, TaskOptions, build_options

InputArity = Literal["one", "many"]
LIST_SUFFIXES = (".txt", ".list", ".lst")
"""A single input with one of these suffixes is a list of videos, one path a line."""

OptionsT = TypeVar("OptionsT", bound=TaskOptions)
ResultT = TypeVar("ResultT")
ProgressFn = Callable[[ProgressSnapshot], None]
PhaseFn = Callable[[str], None]


@dataclass(frozen=True)
class Note:
    """Something a running task tells its user as it happens: a video done or failed."""

    ok: bool
    text: str


NoteFn = Callable[[Note], None]


@dataclass(frozen=True)
class Outcome:
    """What a finished run comes to, the same for every task: its frames, its files, what
    to print, and the items that failed when a run finishes without all it was asked
    (videos of a list)."""

    frames: int
    files: tuple[Path, ...]
    lines: tuple[str, ...]  # the CLI's summary, on stdout
    warnings: tuple[str, ...] = ()  # on stderr
    failed: tuple[str, ...] = ()  # why each failed item failed
    failure_line: str | None = None  # the CLI's last line when items failed
    summary: Mapping[str, Any] = field(default_factory=dict)  # the CLI's --json

    @property
    def error(self) -> str | None:
        """The reason a job that finished so is failed: its one failure, or a count."""
        if not self.failed:
            return None
        if len(self.failed) == 1:
            return self.failed[0]
        return f"{len(self.failed)} items failed; the first: {self.failed[0]}"


class ModelAccess(Protocol):
    """Which model files a job may use: any on the command line and in Python, only those
    in the server's ``model_dirs`` in the service (a model file is code); and how the
    caller names an option in a message (``--model``, ``model``, ``params.model``)."""

    naming: Naming

    def file(self, name: str, field: str) -> str:
        """``name``, a model file or folder, as the path the job is to use."""
        ...

    def exists(self, name: str) -> bool:
        """Whether a file ``name`` is one this rule would give (a local file shadows a
        model name of the same spelling)."""
        ...


class AnyModelFile:
    """The command line's and the Python API's rule: the user's own files, as given."""

    def __init__(self, naming: Naming = "python") -> None:
        self.naming = naming

    def file(self, name: str, field: str) -> str:
        return name

    def exists(self, name: str) -> bool:
        return expand_user(name).exists()


@dataclass
class TaskRun(Generic[OptionsT]):
    """One run of a task: its inputs and output, its checked options and what the check
    prepared, where it runs, and whom it tells how it goes."""

    inputs: tuple[Path, ...]
    output: Path
    options: OptionsT
    prepared: Any  # what Task.check returned: the recipe the workers build
    devices: str = "all"
    workers_per_device: int = 1
    executor: str = "local"
    executor_for: Callable[[Recipe], Executor] | None = None  # a shared pool's job handle
    identities: Mapping[str, FileIdentity] = field(default_factory=dict)
    on_progress: ProgressFn | None = None
    on_phase: PhaseFn | None = None
    on_note: NoteFn | None = None

    @property
    def input(self) -> Path:
        """The one input of a one-input task."""
        return self.inputs[0]

    def note(self, ok: bool, text: str) -> None:
        if self.on_note is not None:
            self.on_note(Note(ok, text))


class Task(ABC, Generic[OptionsT, ResultT]):
    """What a task module defines: see :mod:`vidshard.tasks` for how to add one."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line: the CLI's help, the OpenAPI description
    options_type: ClassVar[type[TaskOptions]]
    inputs: ClassVar[InputArity] = "one"
    output_suffixes: ClassVar[tuple[str, ...]]
    default_output: ClassVar[str | None] = None  # the CLI's -o when none is given
    progress_unit: ClassVar[str] = "frames"
    input_help: ClassVar[str] = "Video file."
    input_flag: ClassVar[str | None] = None  # the CLI's input as this option, not positional

    def options(self, values: Mapping[str, Any], naming: Naming = "python") -> OptionsT:
        """The task's options from ``values`` (a typed error names each bad one)."""
        options: OptionsT = build_options(self.options_type, values, naming)  # type: ignore[assignment]
        return options

    @abstractmethod
    def check(self, options: OptionsT, models: ModelAccess) -> Any:
        """Check the models and options before any work (cheap, in the coordinator) and
        return what the workers build (a ``ModelRef``, a ``DetectRecipe``...)."""

    def slots_needed(self, options: OptionsT) -> int:
        """The slots one run holds at once (a device group's size); the service refuses
        at submit a job that its pool has too few slots for."""
        return 1

    def check_input(self, path: Path, identity: FileIdentity | None) -> None:
        """Refuse, at submit, an input this task cannot read: a video is probed."""
        from vidshard.media import probe

        probe(path, identity)

    def output_name(self, source: Path, options: OptionsT, prepared: Any) -> str:
        """The output's file name when a service request names none."""
        return f"{source.stem or 'output'}{self.output_suffixes[0]}"

    @abstractmethod
    def run(self, run: TaskRun[OptionsT]) -> ResultT:
        """Plan and run on the executor; the typed result."""

    @abstractmethod
    def outcome(self, result: ResultT) -> Outcome:
        """What the result comes to, for the CLI, the service and the API alike."""

    def input_paths(self, given: str | os.PathLike[str] | Sequence[Any]) -> tuple[Path, ...]:
        """The inputs a caller gave: one path; or, for a many-input task, paths, and list
        files (``.txt``: one path a line) among them."""
        if isinstance(given, (str, os.PathLike)):
            items: list[Any] = [given]
        else:
            items = list(given)
        if self.inputs == "one":
            if len(items) != 1:
                raise InputError(f"{self.name} takes one input, got {len(items)}")
            return (Path(items[0]),)
        paths: list[Path] = []
        for item in items:
            path = Path(item)
            if path.suffix.lower() in LIST_SUFFIXES:
                paths += [Path(p) for p in read_list(path)]
            else:
                paths.append(path)
        if not paths:
            raise InputError("no videos: give video files, or a list file")
        return tuple(paths)
