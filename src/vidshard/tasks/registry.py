"""Task names -> tasks: the built-in ones, and those packages add through entry points.

As with models (:mod:`vidshard.models.registry`), entries are refused when their name is
taken, and nothing is registered at import. A package adds a task with::

    [project.entry-points."vidshard.tasks"]
    denoise = "my_package.tasks:DenoiseTask"

The entry point names a :class:`~vidshard.tasks.base.Task` subclass (or an instance).
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from vidshard.errors import ConfigError

from .base import Task

logger = logging.getLogger(__name__)

PLUGIN_GROUP = "vidshard.tasks"
AnyTask = Task[Any, Any]


class TaskRegistry:
    """Tasks by name, in insertion order; a name is taken once."""

    def __init__(self, tasks: Iterable[AnyTask] = ()) -> None:
        self._tasks: dict[str, AnyTask] = {}
        self.add(*tasks)

    def add(self, *tasks: AnyTask) -> None:
        """Add every one of ``tasks`` or, if a name is taken, none of them."""
        new = dict(self._tasks)
        for task in tasks:
            if not isinstance(task, Task):
                raise ConfigError(f"not a task: {task!r} (expected a vidshard.tasks.Task)")
            if task.name in new:
                raise ConfigError(f"task name {task.name!r} registered twice")
            new[task.name] = task
        self._tasks = new

    def remove(self, name: str) -> None:
        self._tasks.pop(name, None)

    def get(self, name: str) -> AnyTask:
        """The task called ``name``; a :class:`ConfigError` naming the others if none is."""
        task = self._tasks.get(name)
        if task is None:
            known = ", ".join(self._tasks) or "none"
            raise ConfigError(f"unknown task {name!r}: expected one of {known}")
        return task

    def names(self) -> tuple[str, ...]:
        return tuple(self._tasks)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[AnyTask]:
        return iter(self._tasks.values())


def builtin_tasks() -> tuple[AnyTask, ...]:
    from .detect import DetectTask, TrackTask
    from .generate import GenerateTask
    from .upscale import UpscaleTask

    return (UpscaleTask(), DetectTask(), TrackTask(), GenerateTask())


def plugin_tasks() -> tuple[AnyTask, ...]:
    """One task per ``vidshard.tasks`` entry point; a broken plugin is skipped, logged."""
    found = []
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            loaded = ep.load()
            found.append(loaded() if isinstance(loaded, type) else loaded)
        except Exception as exc:  # a broken plugin must not take the others down
            logger.warning("task plugin %r (%s) failed to load: %s", ep.name, ep.value, exc)
    return tuple(found)


@functools.cache
def default_tasks() -> TaskRegistry:
    """Built-in tasks plus installed plugins, read once per process. A plugin whose name
    is taken is skipped, logged."""
    registry = TaskRegistry(builtin_tasks())
    for task in plugin_tasks():
        try:
            registry.add(task)
        except ConfigError as exc:
            logger.warning("%s; ignoring plugin task %s", exc, type(task).__name__)
    return registry
