"""A stream's webhook against a real receiver on loopback: batches, retries that lose
nothing, a bounded queue, host rules on every POST, and never a wait for the stream."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vidshard.service.security import HostRules
from vidshard.service.streams import webhook
from vidshard.service.streams.webhook import WebhookSender
from webhook_receiver import Receiver

LOOPBACK = HostRules.deny_internal(["127.0.0.1"], "url_allowed_hosts")
WAIT_S = 30.0


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook, "FIRST_RETRY_S", 0.05)


@pytest.fixture
def senders() -> Iterator[list[WebhookSender]]:
    made: list[WebhookSender] = []
    yield made
    for sender in made:
        sender.close()


def sender_for(
    url: str, made: list[WebhookSender], hosts: HostRules = LOOPBACK, **kwargs: Any
) -> WebhookSender:
    values = {"batch": 5, "interval_s": 0.05, "capacity": 1000, **kwargs}
    sender = WebhookSender("cam", url, hosts=hosts, **values)  # type: ignore[arg-type]
    made.append(sender)
    return sender.start()


def wait_for(condition: Callable[[], object]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"not true within {WAIT_S} s"
        time.sleep(0.02)


def test_records_go_in_batches_in_order(senders: list[WebhookSender]) -> None:
    receiver = Receiver()
    try:
        sender = sender_for(receiver.url, senders)
        for n in range(23):
            sender.push({"frame": n})
        wait_for(lambda: len(receiver.taken()) == 23)
        assert [r["frame"] for r in receiver.taken()] == list(range(23))
        assert all(len(body) <= 5 for _s, body, _h in receiver.posts)
        headers = receiver.posts[0][2]
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Vidshard-Stream"] == "cam"
        assert sender.stats().sent == 23 and sender.stats().pending == 0
    finally:
        receiver.close()


@pytest.mark.parametrize(
    "failure",
    [
        500,  # the receiver fails
        503,
        302,  # a redirect is not followed
    ],
)
def test_a_failed_post_is_retried_and_loses_nothing(
    senders: list[WebhookSender], failure: int
) -> None:
    receiver = Receiver(lambda n: failure if n < 2 else 200)
    try:
        sender = sender_for(receiver.url, senders)
        for n in range(12):
            sender.push({"frame": n})
        wait_for(lambda: len(receiver.taken()) == 12)
        assert [r["frame"] for r in receiver.taken()] == list(range(12))
        failed = [body for status, body, _h in receiver.posts if status != 200]
        assert [r["frame"] for r in failed[0]] == [0, 1, 2, 3, 4]  # the same batch again
        stats = sender.stats()
        assert stats.failures == 2 and stats.last_error is None and stats.dropped == 0
    finally:
        receiver.close()


def test_a_receiver_that_is_down_never_holds_up_the_stream(
    senders: list[WebhookSender],
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sender = sender_for(f"http://127.0.0.1:{port}/hook", senders, capacity=50)
    for n in range(500):  # far more than it keeps: the oldest go, counted
        sender.push({"frame": n})
    wait_for(lambda: sender.stats().failures >= 1)
    stats = sender.stats()
    assert stats.pending == 50 and stats.dropped == 450
    assert stats.last_error is not None and "refused" in stats.last_error.lower()


def test_a_receiver_that_hangs_never_holds_up_the_stream(
    senders: list[WebhookSender],
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts, never answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
        sender = sender_for(url, senders, capacity=5000)
        sender.push({"frame": 0})
        time.sleep(0.2)  # its POST is under way, waiting for an answer
        for n in range(1, 2000):
            sender.push({"frame": n})  # returns at once all the same
        assert sender.stats().pending >= 1995
        sender.close(wait_s=0.1)  # does not wait for the POST's timeout
    finally:
        listener.close()


def test_the_host_rules_apply_to_every_post(senders: list[WebhookSender]) -> None:
    receiver = Receiver()
    try:
        refused = HostRules.deny_internal([], "url_allowed_hosts")  # loopback is internal
        sender = sender_for(receiver.url, senders, hosts=refused)
        sender.push({"frame": 0})
        wait_for(lambda: sender.stats().failures >= 1)
        assert "url_allowed_hosts" in (sender.stats().last_error or "")
        assert receiver.posts == []
    finally:
        receiver.close()


def test_a_url_with_credentials_is_not_in_the_reason(senders: list[WebhookSender]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sender = sender_for(f"http://user:s3cret@127.0.0.1:{port}/hook?token=abcdef", senders)
    sender.push({"frame": 0})
    wait_for(lambda: sender.stats().failures >= 1)
    reason = sender.stats().last_error or ""
    assert "s3cret" not in reason and "abcdef" not in reason
