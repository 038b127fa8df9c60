"""Server-Sent Events fan-out: each client's queue is bounded (the oldest event is
dropped and counted), a put never waits, a slow client holds up no one else, and the
last event ends the subscription."""

from __future__ import annotations

import asyncio
import threading

from vidshard.service.streams.fanout import RECORD, STATUS, Event, Hub, Subscription


def record(n: int) -> Event:
    return Event(RECORD, f'{{"frame": {n}}}')


def test_events_encode_as_server_sent_events() -> None:
    assert record(1).encode() == 'data: {"frame": 1}\n\n'
    assert Event(STATUS, "{}").encode() == "event: status\ndata: {}\n\n"


def test_a_client_that_falls_behind_loses_the_oldest_and_is_told() -> None:
    async def run() -> None:
        subscription = Subscription("s", 4, asyncio.get_running_loop())
        for n in range(10):
            subscription.put(record(n))  # nobody takes: never waits
        taken = await subscription.take(1.0)
        assert [e.data for e in taken.events] == [record(n).data for n in range(6, 10)]
        assert taken.dropped == 6 and subscription.dropped == 6
        subscription.put(record(10))
        again = await subscription.take(1.0)
        assert again.dropped == 0 and [e.data for e in again.events] == [record(10).data]

    asyncio.run(run())


def test_a_slow_client_holds_up_no_other() -> None:
    async def run() -> None:
        hub = Hub(capacity=8)
        loop = asyncio.get_running_loop()
        slow, fast = hub.subscribe("cam", loop), hub.subscribe("cam", loop)
        got: list[str] = []
        for n in range(100):
            hub.publish("cam", record(n))
            got += [e.data for e in (await fast.take(1.0)).events]
        assert got == [record(n).data for n in range(100)]  # all of them, in order
        behind = await slow.take(1.0)
        assert len(behind.events) == 8 and behind.dropped == 92

    asyncio.run(run())


def test_a_put_from_another_thread_wakes_the_client() -> None:
    async def run() -> None:
        subscription = Subscription("s", 4, asyncio.get_running_loop())
        timer = threading.Timer(0.05, subscription.put, args=(record(1),))
        timer.start()
        taken = await subscription.take(30.0)  # returns on the put, not at the timeout
        timer.join()
        assert [e.data for e in taken.events] == [record(1).data]

    asyncio.run(run())


def test_the_last_event_ends_the_subscription() -> None:
    async def run() -> None:
        hub = Hub(capacity=8)
        subscription = hub.subscribe("cam", asyncio.get_running_loop())
        hub.publish("cam", record(1))
        hub.publish("cam", Event(STATUS, '{"state": "stopped"}'), last=True)
        hub.publish("cam", record(2))  # after the end: nobody gets it
        taken = await subscription.take(1.0)
        assert taken.ended and [e.name for e in taken.events] == [RECORD, STATUS]
        assert not hub.watched("cam")

    asyncio.run(run())


def test_closing_the_hub_ends_every_client_and_later_ones_at_once() -> None:
    async def run() -> None:
        hub = Hub(capacity=8)
        loop = asyncio.get_running_loop()
        subscription = hub.subscribe("cam", loop)
        waiting = asyncio.ensure_future(subscription.take(30.0))
        await asyncio.sleep(0)
        hub.close()
        assert (await waiting).ended
        assert (await hub.subscribe("other", loop).take(30.0)).ended
        assert hub.count() == 0

    asyncio.run(run())


def test_unsubscribing_stops_the_deliveries() -> None:
    async def run() -> None:
        hub = Hub(capacity=8)
        subscription = hub.subscribe("cam", asyncio.get_running_loop())
        assert hub.watched("cam") and hub.count() == 1
        hub.unsubscribe(subscription)
        assert not hub.watched("cam") and hub.count() == 0

    asyncio.run(run())
