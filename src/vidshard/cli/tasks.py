"""One command per registered task, made from the task's options.

Each option of the task is a flag (``--tile-overlap``, its help and default from the
option's ``Field``, its spelling from :class:`~vidshard.tasks.options.Cli` where the
name is not enough); every command also takes the inputs, ``-o``, ``--devices``,
``--workers-per-device``, ``--quiet`` and ``--json``. A task added to the registry (a
built-in, or a package's entry point) is a command without any code here.
"""

from __future__ import annotations

import inspect
import json
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from vidshard.errors import InputError
from vidshard.executors.registry import executor_spec
from vidshard.tasks import AnyModelFile, Note, TaskRegistry, run_task
from vidshard.tasks.options import Cli, TaskOptions, cli_flags, option_meta
from vidshard.tasks.registry import AnyTask

from . import console

# Where the workers run: every command that starts workers takes these.
EXECUTOR_PARAMETERS: tuple[tuple[str, Any, Any], ...] = (
    (
        "executor",
        Annotated[
            str,
            typer.Option(help="local (processes here) or ray (actors on a Ray cluster)."),
        ],
        "local",
    ),
    (
        "ray_address",
        Annotated[
            str | None,
            typer.Option(help="With --executor ray: auto, host:port, or none to start one."),
        ],
        None,
    ),
)
# Parameters every task command takes besides its options: (name, annotation, default).
RUN_PARAMETERS: tuple[tuple[str, Any, Any], ...] = (
    (
        "devices",
        Annotated[
            str,
            typer.Option(help="all, 0,1,3, cuda:0,cuda:2, npu:0-7, cpu:4; repeats are weights."),
        ],
        "all",
    ),
    ("workers_per_device", Annotated[int, typer.Option(help="Worker slots per device.")], 1),
    *EXECUTOR_PARAMETERS,
    ("quiet", Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")], False),
    ("as_json", Annotated[bool, typer.Option("--json", help="Print the result as JSON.")], False),
)
# Names no option of a task may take: every task command's own parameters.
TASK_RESERVED = frozenset(
    {name for name, _, _ in RUN_PARAMETERS} | {"input", "inputs", "output", "list_file"}
)


def add_task_commands(app: typer.Typer, tasks: TaskRegistry) -> None:
    """A command on ``app`` for every task of ``tasks``."""
    for task in tasks:
        app.command(name=task.name, help=task.summary)(task_command(task))


def task_command(task: AnyTask) -> Callable[..., None]:
    """The command-line function of ``task``: typer reads its signature."""
    options = exposed_options(task.options_type)

    def command(**given: Any) -> None:
        with console.user_errors():
            _run(task, options, given)

    parameters = [*_io_parameters(task)]
    parameters += [option_parameter(name, info) for name, info in options.items()]
    parameters += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)
        for name, kind, default in RUN_PARAMETERS
    ]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__name__ = task.name.replace("-", "_")
    command.__doc__ = task.summary
    return command


def _run(task: AnyTask, options: dict[str, FieldInfo], given: dict[str, Any]) -> None:
    from vidshard.cli.display import JobDisplay

    inputs = _inputs(task, given)
    output = given["output"]
    checked = task.options(option_values(options, given), "cli")
    quiet, as_json = given["quiet"], given["as_json"]
    show = not quiet and not as_json and console.err.is_terminal
    with JobDisplay(console.err, "starting", enabled=show, unit=task.progress_unit) as display:
        result = run_task(
            task,
            inputs,
            output,
            checked,
            devices=given["devices"],
            workers_per_device=given["workers_per_device"],
            executor=executor_spec(given["executor"], given["ray_address"]),
            on_progress=display.update,
            on_phase=display.phase,
            on_note=None if quiet or as_json else _print_note,
            models=AnyModelFile("cli"),
        )
    outcome = task.outcome(result)
    if as_json:
        console.out.print_json(json.dumps(dict(outcome.summary)))
    else:
        for warning in outcome.warnings:
            console.err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        for line in outcome.lines:
            console.out.print(line, highlight=False, soft_wrap=True)
        if outcome.failure_line is not None:
            console.err.print(f"[red]{outcome.failure_line}[/]", highlight=False, soft_wrap=True)
    if outcome.failed:
        raise typer.Exit(1)


def _print_note(note: Note) -> None:
    label = "[green]done[/]" if note.ok else "[red]failed[/]"
    console.err.print(f"{label} {note.text}", highlight=False, soft_wrap=True)


def _inputs(task: AnyTask, given: dict[str, Any]) -> list[str]:
    if task.inputs == "one":
        return [str(given["input"])]
    from vidshard.engine.detect import read_list

    videos = [str(path) for path in given.get("inputs") or []]
    if given.get("list_file") is not None:
        videos += read_list(given["list_file"])
    if not videos:
        raise InputError("no videos: give video files, or --list FILE")
    return videos


def _io_parameters(task: AnyTask) -> list[inspect.Parameter]:
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    keyword = inspect.Parameter.KEYWORD_ONLY
    suffixes = ", ".join(task.output_suffixes)
    if task.inputs == "one":
        given_as: Any = (
            typer.Argument(help=task.input_help)
            if task.input_flag is None
            else typer.Option(task.input_flag, help=task.input_help)
        )
        return [
            inspect.Parameter(
                "input",
                positional if task.input_flag is None else keyword,
                annotation=Annotated[Path, given_as],
            ),
            inspect.Parameter(
                "output",
                keyword,
                annotation=Annotated[
                    Path, typer.Option("--output", "-o", help=f"Output file ({suffixes}).")
                ],
            ),
        ]
    output_help = f"The output file ({suffixes})."
    return [
        inspect.Parameter(
            "inputs",
            positional,
            annotation=Annotated[
                list[Path] | None, typer.Argument(help=task.input_help, show_default=False)
            ],
            default=None,
        ),
        inspect.Parameter(
            "output",
            keyword,
            annotation=Annotated[Path, typer.Option("--output", "-o", help=output_help)],
            default=Path(task.default_output or f"{task.name}{task.output_suffixes[0]}"),
        ),
        inspect.Parameter(
            "list_file",
            keyword,
            annotation=Annotated[
                Path | None,
                typer.Option("--list", help="A file of video paths, one a line, # comments."),
            ],
            default=None,
        ),
    ]


def exposed_options(options_type: type[TaskOptions]) -> dict[str, FieldInfo]:
    """The options of ``options_type`` the command line shows, in their model's order."""
    return {
        name: info
        for name, info in options_type.model_fields.items()
        if (option_meta(info, Cli) or Cli()).exposed
    }


def option_values(options: Mapping[str, FieldInfo], given: Mapping[str, Any]) -> dict[str, Any]:
    """What the command line gave for ``options``, each read by its ``Cli(parse=...)``
    where it has one (an option taking text that was left out keeps its own default)."""
    values = {}
    for name, info in options.items():
        value = given[name]
        meta = option_meta(info, Cli)
        if meta is not None and meta.parse is not None:
            if value is None:
                continue
            value = meta.parse(value)
        values[name] = value
    return values


def option_parameter(
    name: str, info: FieldInfo, reserved: frozenset[str] = TASK_RESERVED
) -> inspect.Parameter:
    """The command-line parameter of one option (its flags, help, default and type);
    ``reserved``: the command's other parameters, which no option may be named as."""
    if name in reserved:
        raise TypeError(f"option {name!r} clashes with a parameter of the command")
    meta = option_meta(info, Cli) or Cli()
    default = None if info.default is PydanticUndefined else info.default
    required = info.default is PydanticUndefined and info.default_factory is None
    flags = list(cli_flags(name, info))
    extra: dict[str, Any] = {}
    if meta.parse is not None:  # the option takes text: the task's parser reads it
        annotation: Any = str | None
        extra["show_default"] = "none" if default is None else str(default)
        default = None
    elif info.annotation is bool:
        annotation = bool
        if default and not meta.flags:
            flags = [f"{flags[0]}/--no-{flags[0].removeprefix('--')}"]
    else:
        annotation, extra = _plain_type(name, info.annotation)
    if meta.metavar is not None:
        extra["metavar"] = meta.metavar
    option = typer.Option(*flags, help=info.description, **extra)
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Annotated[annotation, option],
        default=inspect.Parameter.empty if required else default,
    )


def _plain_type(name: str, annotation: Any) -> tuple[Any, dict[str, Any]]:
    """The type typer reads an option as, for the types it knows (a ``Literal`` is read as
    text and checked by the options); any other type needs a ``Cli(parse=...)``."""
    args = get_args(annotation)
    union = get_origin(annotation) in (Union, types.UnionType)
    inner = [arg for arg in args if arg is not type(None)] if union else [annotation]
    optional = union and len(inner) < len(args)
    if len(inner) == 1 and get_origin(inner[0]) is Literal:
        # Text, checked by the options model: a wrong choice is one line like any error.
        choices = "|".join(str(value) for value in get_args(inner[0]))
        return (str | None if optional else str), {"metavar": choices}
    if len(inner) == 1 and inner[0] in (int, float, str, Path):
        return (inner[0] | None if optional else inner[0]), {}
    raise TypeError(
        f"option {name!r} ({annotation}): give it Cli(parse=...) to be read from the command line"
    )
