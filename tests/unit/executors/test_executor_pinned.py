"""Long-lived units: the caller's handle (messages before the start wait for it) and the
worker's side of a stream host (commands applied while it runs, the end with its last
stream, a cancel). The host is a recording stand-in here; the real one runs in
tests/integration/test_stream_manager.py."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import pytest

from vidshard.detection.pipeline import DetectRecipe
from vidshard.engine.units import StreamHostUnit
from vidshard.errors import Cancelled, ConfigError
from vidshard.executors import worker
from vidshard.executors.base import PinnedRun
from vidshard.streams import host as host_module
from vidshard.streams.options import StreamOptions
from vidshard.streams.types import StreamSpec, StreamState

RECIPE = DetectRecipe(detector="class", weights="unused.py:Unused")


def spec(stream_id: str) -> StreamSpec:
    options = StreamOptions(model="unused.py:Unused")  # type: ignore[call-arg]
    return StreamSpec(stream_id, f"file:{stream_id}.mp4", options, RECIPE)


def test_messages_sent_before_the_unit_starts_follow_it_in_order() -> None:
    run = PinnedRun("cpu#0")
    delivered: list[tuple[Any, ...]] = []
    assert run.send(("stream_add", "a"))
    assert run.send(("stream_remove", "a"))
    assert delivered == []  # nobody to deliver to yet
    run.attach(delivered.append)
    assert delivered == [("stream_add", "a"), ("stream_remove", "a")]
    assert run.send(("stream_add", "b"))
    assert delivered[-1] == ("stream_add", "b")
    run.end()
    assert not run.send(("stream_add", "c"))  # it ended: refused, not lost silently
    assert len(delivered) == 3


class FakeHost:
    """Records what the worker asks of it; ``run`` waits for ``stop`` like the real one."""

    instances: ClassVar[list[FakeHost]] = []

    def __init__(
        self, recipe: DetectRecipe, device: str, slot_label: str, emit: Any, **_options: Any
    ) -> None:
        self.recipe, self.device, self.slot_label, self.emit = recipe, device, slot_label, emit
        self.calls: list[tuple[str, str]] = []
        self.running = threading.Event()
        self.ran_out = False
        FakeHost.instances.append(self)

    def load(self) -> None:
        self.calls.append(("load", ""))

    def add(self, spec: StreamSpec) -> None:
        if spec.stream_id == "bad":
            raise ConfigError("stream 'bad' is already hosted on cpu#0")
        self.calls.append(("add", spec.stream_id))

    def remove(self, stream_id: str) -> None:
        self.calls.append(("remove", stream_id))

    def run(self, stop: threading.Event) -> None:
        self.running.set()
        stop.wait(30)
        self.ran_out = not stop.is_set()


class Sent:
    def __init__(self) -> None:
        self.messages: list[tuple[Any, ...]] = []

    def send(self, message: tuple[Any, ...]) -> None:
        self.messages.append(message)


class Inbox:
    """What ``_host_streams`` reads of the worker's inbox."""

    def __init__(self) -> None:
        import queue

        self.cancel = threading.Event()
        self.closing = threading.Event()
        self.commands: queue.Queue[tuple[Any, ...]] = queue.Queue()


@pytest.fixture
def fake_host(monkeypatch: pytest.MonkeyPatch) -> type[FakeHost]:
    FakeHost.instances = []
    monkeypatch.setattr(host_module, "StreamHost", FakeHost)
    return FakeHost


def started(fake_host: type[FakeHost]) -> None:
    """Wait until the worker's host runs."""
    deadline = time.monotonic() + 30
    while not fake_host.instances:
        assert time.monotonic() < deadline, "the host never started"
        time.sleep(0.01)
    assert fake_host.instances[0].running.wait(30)


def host_in_thread(unit: StreamHostUnit, inbox: Inbox, sent: Sent) -> dict[str, Any]:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = worker._host_streams(unit, 7, inbox, sent, None)  # type: ignore[arg-type]
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    outcome["thread"] = thread
    return outcome


def test_a_host_applies_commands_and_ends_with_its_last_stream(fake_host: type[FakeHost]) -> None:
    inbox, sent = Inbox(), Sent()
    unit = StreamHostUnit("host-1", RECIPE, (spec("a"),))
    outcome = host_in_thread(unit, inbox, sent)
    started(fake_host)
    inbox.commands.put(("stream_add", spec("x"), 3))  # an earlier host's token: dropped
    inbox.commands.put(("stream_add", spec("b"), 7))
    inbox.commands.put(("stream_remove", "a", 7))
    inbox.commands.put(("stream_remove", "b", 7))
    outcome["thread"].join(10)
    host = fake_host.instances[0]
    assert host.calls == [
        ("load", ""),
        ("add", "a"),
        ("add", "b"),
        ("remove", "a"),
        ("remove", "b"),
    ]
    assert not host.ran_out
    assert outcome["result"].unit_id == "host-1"


def test_a_cancelled_host_stops_and_says_so(fake_host: type[FakeHost]) -> None:
    inbox, sent = Inbox(), Sent()
    outcome = host_in_thread(StreamHostUnit("host-2", RECIPE, (spec("a"),)), inbox, sent)
    started(fake_host)
    inbox.cancel.set()
    outcome["thread"].join(10)
    assert isinstance(outcome.get("error"), Cancelled)


def test_a_stream_that_cannot_be_added_is_reported_failed(fake_host: type[FakeHost]) -> None:
    inbox, sent = Inbox(), Sent()
    outcome = host_in_thread(StreamHostUnit("host-3", RECIPE, (spec("a"),)), inbox, sent)
    started(fake_host)
    inbox.commands.put(("stream_add", spec("bad"), 7))
    inbox.commands.put(("stream_remove", "a", 7))  # the last stream it holds: it ends
    outcome["thread"].join(10)
    failed = [m[1] for m in sent.messages if m[0] == "stream_status"]
    assert [(s.stream_id, s.state) for s in failed] == [("bad", StreamState.FAILED)]
    assert "already hosted" in failed[0].reason
    assert "result" in outcome


def test_a_host_whose_streams_all_fail_to_start_ends_at_once(fake_host: type[FakeHost]) -> None:
    inbox, sent = Inbox(), Sent()
    outcome = host_in_thread(StreamHostUnit("host-4", RECIPE, (spec("bad"),)), inbox, sent)
    outcome["thread"].join(10)
    assert "result" in outcome
    assert [m[1].state for m in sent.messages] == [StreamState.FAILED]
