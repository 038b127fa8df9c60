"""The task registry: built-ins, names taken once, unknown names answered with the known
ones, and plugins from entry points (a broken one skipped, the others kept)."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest

from vidshard.errors import ConfigError
from vidshard.tasks import Outcome, Task, TaskOptions, TaskRegistry, default_tasks
from vidshard.tasks import registry as registry_module


class _Nothing(TaskOptions):
    pass


class EchoTask(Task[_Nothing, Any]):
    name = "echo"
    summary = "Nothing."
    options_type = _Nothing
    output_suffixes = (".txt",)

    def check(self, options: _Nothing, models: Any) -> None:
        return None

    def run(self, run: Any) -> Any:
        return None

    def outcome(self, result: Any) -> Outcome:
        return Outcome(frames=0, files=(), lines=())


def test_the_built_in_tasks() -> None:
    assert default_tasks().names()[:3] == ("upscale", "detect", "track")


def test_a_name_is_taken_once() -> None:
    registry = TaskRegistry([EchoTask()])
    with pytest.raises(ConfigError, match="'echo' registered twice"):
        registry.add(EchoTask())
    with pytest.raises(ConfigError, match="not a task"):
        registry.add(object())  # type: ignore[arg-type]


def test_an_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown task 'paint': expected one of echo"):
        TaskRegistry([EchoTask()]).get("paint")


def test_plugins_come_from_entry_points_and_a_broken_one_is_skipped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    good = importlib.metadata.EntryPoint("echo", f"{__name__}:EchoTask", "vidshard.tasks")
    broken = importlib.metadata.EntryPoint("broken", "no_such_module_xyz:Task", "vidshard.tasks")

    def entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
        return [broken, good] if group == "vidshard.tasks" else []

    monkeypatch.setattr(registry_module.importlib.metadata, "entry_points", entry_points)
    found = registry_module.plugin_tasks()
    assert [task.name for task in found] == ["echo"]
    assert "task plugin 'broken'" in caplog.text
