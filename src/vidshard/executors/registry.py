"""Executor names -> backends, imported only when chosen.

``local`` is built in (one process per slot); a package adds a backend through the
``vidshard.executors`` entry point group, naming an :class:`~vidshard.executors.base.Executor`
subclass. The engine asks :func:`create_executor` by name and never imports a backend.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
from typing import TYPE_CHECKING

from vidshard.errors import ConfigError

if TYPE_CHECKING:  # the interface (and the unit types it names) load with a backend
    from vidshard.devices.types import DeviceSlot

    from .base import Executor

PLUGIN_GROUP = "vidshard.executors"
BUILTIN: dict[str, str] = {
    "local": "vidshard.executors.local:LocalExecutor",
    "ray": "vidshard.executors.ray_cluster:RayExecutor",
}
TAKES_ADDRESS = ("ray",)  # backends whose spec may carry an address: ``ray:host:port``


def executor_spec(name: str, address: str | None = None) -> str:
    """``name``, with ``address`` for a backend that takes one (``ray:auto``)."""
    known = executor_names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listed = ", ".join(repr(n) for n in known)
        raise ConfigError(f"unknown executor {name!r} (expected one of {listed}){hint}")
    if address is None or not address.strip():
        return name
    if name not in TAKES_ADDRESS:
        raise ConfigError(f"an address is for the ray executor; executor {name!r} takes none")
    return f"{name}:{address.strip()}"


def executor_names() -> tuple[str, ...]:
    """The built-in backends, then the installed plugins'."""
    plugins = [ep.name for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)]
    return (*BUILTIN, *(name for name in plugins if name not in BUILTIN))


def create_executor(spec: str) -> Executor:
    """A new executor of the backend ``spec`` names: ``local``, ``ray``, ``ray:auto``,
    ``ray:host:port`` (see :func:`executor_spec`), or a plugin's name."""
    name, _, address = spec.partition(":")
    if address and name not in TAKES_ADDRESS:
        raise ConfigError(f"executor {name!r} takes no address, got {spec!r}")
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
    from .base import Executor

    executor = backend(address) if address else backend()
    if not isinstance(executor, Executor):
        raise ConfigError(f"executor {name!r} ({target}) is not a vidshard Executor")
    return executor


def executor_with_slots(
    spec: str, devices: str, workers_per_device: int = 1
) -> tuple[Executor, list[DeviceSlot]]:
    """A new executor of ``spec`` and the slots ``devices`` names where it runs (a
    cluster's nodes for Ray); a connection made to find them is closed on an error."""
    executor = create_executor(spec)
    try:
        return executor, executor.resolve_slots(devices, workers_per_device)
    except BaseException:
        executor.shutdown()
        raise
