"""A task's options: one pydantic model, with ranges, defaults and help, that the CLI, the
Python API and the service all read.

A field says, where its Python name and type are not enough, how it appears on the
command line (:class:`Cli`) and in the service's requests (:class:`Served`), as
``Annotated`` metadata beside its ``Field``::

    class MyOptions(TaskOptions):
        strength: Annotated[float, Field(0.5, ge=0, le=1, description="How strong.")]
        report: Annotated[Path | None, Field(None, description="..."), Served(exposed=False)]

Whatever names an option in an error says it the way its caller wrote it: ``--tile-overlap``
on the command line, ``tile_overlap`` in Python, ``params.tile_overlap`` over HTTP.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from vidshard.errors import ConfigError

Naming = Literal["cli", "python", "http"]
OptionsT = TypeVar("OptionsT", bound="TaskOptions")
MetaT = TypeVar("MetaT")


class TaskOptions(BaseModel):
    """Base of every task's options: unknown names are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Cli:
    """How an option appears on the command line.

    ``flags``: its names there (default ``--kebab-name``); ``parse``: turns the text the
    user typed into the value (the option then takes text); ``metavar``: what its value is
    called in ``--help``; ``exposed=False`` leaves it to the Python API."""

    flags: tuple[str, ...] = ()
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    exposed: bool = True


@dataclass(frozen=True)
class Served:
    """How an option appears in the service's job requests.

    ``exposed=False``: not a request parameter (a local path, a process setting): a
    service job always runs with its default. ``required``: a request must give it, though
    the command line has a default. ``default_setting``: left out, it takes that setting of
    the server (``default_model``)."""

    exposed: bool = True
    required: bool = False
    default_setting: str | None = None


def option_meta(info: FieldInfo, kind: type[MetaT]) -> MetaT | None:
    """The :class:`Cli` or :class:`Served` of a field, if it has one."""
    return next((m for m in info.metadata if isinstance(m, kind)), None)


def cli_flags(name: str, info: FieldInfo) -> tuple[str, ...]:
    meta = option_meta(info, Cli)
    return meta.flags if meta is not None and meta.flags else ("--" + name.replace("_", "-"),)


def build_options(
    options_type: type[OptionsT], values: Mapping[str, Any], naming: Naming = "python"
) -> OptionsT:
    """``options_type`` from ``values``; a bad value is one :class:`ConfigError` naming
    each option the way the caller names it."""
    try:
        return options_type.model_validate(dict(values))
    except ValidationError as exc:
        raise ConfigError(describe_problems(exc, options_type, naming)) from None


def describe_problems(exc: ValidationError, options_type: type[BaseModel], naming: Naming) -> str:
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        where = _named(loc[0], options_type, naming) if loc else ""
        where += "".join(f"[{part}]" for part in loc[1:])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown option"
        shown = repr(error.get("input"))
        if error["type"] not in ("value_error", "missing", "extra_forbidden") and len(shown) < 60:
            message += f" (got {shown})"
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def option_label(name: str, options_type: type[BaseModel], naming: Naming) -> str:
    """An option as its caller names it: ``--tile-overlap``, ``tile_overlap`` or
    ``params.tile_overlap``."""
    return _named(name, options_type, naming)


def _named(name: str, options_type: type[BaseModel], naming: Naming) -> str:
    info = options_type.model_fields.get(name)
    if naming == "cli" and info is not None:
        return cli_flags(name, info)[0]
    if naming == "http":
        return f"params.{name}"
    return name


# --- the service's view -------------------------------------------------------------


def served_fields(options_type: type[TaskOptions]) -> dict[str, FieldInfo]:
    """The options a service request may give."""
    return {
        name: info
        for name, info in options_type.model_fields.items()
        if (option_meta(info, Served) or Served()).exposed
    }


def request_schema_model(options_type: type[TaskOptions], title: str) -> type[BaseModel]:
    """A model of the options a request may give, for the OpenAPI docs: the exposed
    fields, with the service's defaults (validation itself is :func:`options_from_request`)."""
    fields: dict[str, Any] = {}
    for name, info in served_fields(options_type).items():
        served = option_meta(info, Served) or Served()
        field = copy.copy(info)
        annotation: Any = info.annotation
        if served.required:
            field.default = PydanticUndefined
        elif served.default_setting is not None:
            annotation = annotation | None
            field.default = None
            field.description = (
                f"{info.description or ''} Left out: the server's {served.default_setting}."
            ).strip()
        fields[name] = (annotation, field)
    model: type[BaseModel] = create_model(
        title, __config__=ConfigDict(extra="forbid", title=title), **fields
    )
    return model


def options_from_request(
    options_type: type[OptionsT],
    params: Mapping[str, Any],
    settings: Any,
    others: Mapping[str, type[TaskOptions]] | None = None,
) -> OptionsT:
    """A request's ``params`` as the task's options: only exposed options may be given,
    required ones must be, and server settings fill the ones that take them. ``others``
    (task name -> options) lets an option of another task say which one it is for."""
    values = dict(params)
    exposed = served_fields(options_type)
    problems = [
        f"params.{name}: unknown option{_owners(name, others or {})}"
        for name in values
        if name not in exposed
    ]
    for name, info in exposed.items():
        served = option_meta(info, Served) or Served()
        if served.required and name not in values:
            problems.append(f"params.{name}: required")
        if served.default_setting is not None and values.get(name) is None:
            values[name] = getattr(settings, served.default_setting)
    if problems:
        raise ConfigError("; ".join(problems))
    return build_options(options_type, values, "http")


def _owners(name: str, others: Mapping[str, type[TaskOptions]]) -> str:
    owners = [task for task, kind in others.items() if name in served_fields(kind)]
    return f" (only for task {', '.join(repr(t) for t in owners)})" if owners else ""


def stored_params(options: TaskOptions) -> dict[str, Any]:
    """What the store keeps of a job's options: the exposed ones, as JSON values."""
    exposed = served_fields(type(options))
    return {k: v for k, v in options.model_dump(mode="json").items() if k in exposed}
