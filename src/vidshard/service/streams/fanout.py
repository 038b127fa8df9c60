"""A stream's records and status changes, fanned out to its Server-Sent Events clients.

The stream manager's thread puts; each client's coroutine takes. A client has a bounded
queue of its own: when it falls ``capacity`` events behind, the oldest event is dropped
and counted, so a slow client never holds up the stream, the other clients or the
manager (a put never waits). The client is told how many it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from dataclasses import dataclass

RECORD = "record"
STATUS = "status"


@dataclass(frozen=True)
class Event:
    """One SSE event: its name (``record`` is sent without one) and its JSON text."""

    name: str
    data: str

    def encode(self) -> str:
        if self.name == RECORD:
            return f"data: {self.data}\n\n"
        return f"event: {self.name}\ndata: {self.data}\n\n"


@dataclass(frozen=True)
class Taken:
    """What one :meth:`Subscription.take` found."""

    events: list[Event]
    dropped: int  # events dropped since the last take
    ended: bool  # nothing more will come


class Subscription:
    """One client's queue of one stream's events (put from any thread, taken on ``loop``)."""

    def __init__(self, stream_id: str, capacity: int, loop: asyncio.AbstractEventLoop) -> None:
        self.stream_id = stream_id
        self.capacity = max(1, capacity)
        self.dropped = 0  # in all
        self._loop = loop
        self._events: deque[Event] = deque()
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._wake_pending = False
        self._unreported = 0
        self._ended = False

    def put(self, event: Event, *, last: bool = False) -> None:
        """Queue ``event`` (dropping the oldest when full); ``last``: the stream ended."""
        with self._lock:
            if self._ended:
                return
            if len(self._events) >= self.capacity:
                self._events.popleft()
                self.dropped += 1
                self._unreported += 1
            self._events.append(event)
            self._ended = last
            if self._wake_pending:
                return
            self._wake_pending = True
        self._wake()

    def close(self) -> None:
        """End the subscription now (the server is stopping): what is queued is still sent."""
        with self._lock:
            self._ended = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: the server is gone
            self._loop.call_soon_threadsafe(self._ready.set)

    async def take(self, timeout_s: float) -> Taken:
        """The events queued, waiting up to ``timeout_s`` for the first."""
        with self._lock:
            waiting = not self._events and not self._ended
        if waiting:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout_s)
        self._ready.clear()
        with self._lock:
            events = list(self._events)
            self._events.clear()
            dropped, self._unreported = self._unreported, 0
            self._wake_pending = False
            return Taken(events, dropped, self._ended)


class Hub:
    """Every stream's subscriptions."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._by_stream: dict[str, set[Subscription]] = {}
        self._closed = False

    def subscribe(self, stream_id: str, loop: asyncio.AbstractEventLoop) -> Subscription:
        subscription = Subscription(stream_id, self.capacity, loop)
        with self._lock:
            if self._closed:
                subscription.close()
            else:
                self._by_stream.setdefault(stream_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            subscriptions = self._by_stream.get(subscription.stream_id)
            if subscriptions is not None:
                subscriptions.discard(subscription)
                if not subscriptions:
                    del self._by_stream[subscription.stream_id]

    def watched(self, stream_id: str) -> bool:
        """Whether anyone listens to ``stream_id`` (no need to encode events otherwise)."""
        return stream_id in self._by_stream

    def publish(self, stream_id: str, event: Event, *, last: bool = False) -> None:
        with self._lock:
            subscriptions = list(self._by_stream.get(stream_id, ()))
            if last:
                self._by_stream.pop(stream_id, None)
        for subscription in subscriptions:
            subscription.put(event, last=last)

    def close(self) -> None:
        """End every subscription (the server is stopping) and take no more."""
        with self._lock:
            self._closed = True
            subscriptions = [s for group in self._by_stream.values() for s in group]
            self._by_stream.clear()
        for subscription in subscriptions:
            subscription.close()

    def count(self) -> int:
        with self._lock:
            return sum(len(group) for group in self._by_stream.values())
