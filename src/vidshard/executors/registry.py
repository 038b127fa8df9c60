"""Executor names -> backends, imported only when chosen.

``local`` is built in (one process per slot); a package adds a backend through the
``vidshard.executors`` entry point group, naming an :class:`~vidshard.executors.base.Executor`
subclass. The engine asks :func:`create_executor` by name and never imports a backend.
"""

from __future__ import annotations

import importlib
import importlib.metadata

from vidshard.errors import ConfigError

from .base import Executor

PLUGIN_GROUP = "vidshard.executors"
BUILTIN: dict[str, str] = {"local": "vidshard.executors.local:LocalExecutor"}


def executor_names() -> tuple[str, ...]:
    """The built-in backends, then the installed plugins'."""
    plugins = [ep.name for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)]
    return (*BUILTIN, *(name for name in plugins if name not in BUILTIN))


def create_executor(name: str) -> Executor:
    """A new executor of the backend called ``name``."""
    target = BUILTIN.get(name)
    if target is None:
        found = [
            ep for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP) if ep.name == name
        ]
        if not found:
            known = ", ".join(repr(n) for n in executor_names())
            raise ConfigError(f"unknown executor {name!r}; expected one of {known}")
        target = found[0].value
    module_name, _, attribute = target.partition(":")
    try:
        backend = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"executor {name!r} ({target}) cannot be loaded: {exc}") from None
    executor = backend()
    if not isinstance(executor, Executor):
        raise ConfigError(f"executor {name!r} ({target}) is not a vidshard Executor")
    return executor
