"""The pool's queue: priority first, then an even share of slots, then model affinity."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from vidshard.executors.fair import FairQueue


@dataclass(frozen=True)
class Item:
    job: str
    model: object = None
    name: str = ""


def take(queue: FairQueue[Item], n: int, model: object = None) -> list[str]:
    got = []
    for _ in range(n):
        item = queue.get(model, timeout=0)
        assert item is not None
        got.append(item.name)
    return got


def test_one_job_is_a_fifo() -> None:
    queue: FairQueue[Item] = FairQueue()
    for i in range(5):
        queue.put(Item("a", name=f"a{i}"))
    assert take(queue, 5) == ["a0", "a1", "a2", "a3", "a4"]
    assert queue.get(timeout=0) is None


def test_concurrent_jobs_share_slots_evenly() -> None:
    queue: FairQueue[Item] = FairQueue()
    for i in range(6):
        queue.put(Item("a", name=f"a{i}"))
    for i in range(3):
        queue.put(Item("b", name=f"b{i}"))
    # four slots ask while nothing finishes: two each, though job a has more queued
    assert take(queue, 4) == ["a0", "b0", "a1", "b1"]
    assert queue.running("a") == 2 and queue.running("b") == 2
    queue.task_done("b")
    queue.task_done("b")
    assert take(queue, 2) == ["b2", "a2"]  # b is owed its slots back first


def test_priority_comes_before_fairness() -> None:
    queue: FairQueue[Item] = FairQueue()
    queue.add_job("low", priority=0)
    queue.add_job("high", priority=5)
    for i in range(2):
        queue.put(Item("low", name=f"low{i}"))
        queue.put(Item("high", name=f"high{i}"))
    assert take(queue, 4) == ["high0", "high1", "low0", "low1"]


def test_a_worker_prefers_the_model_it_holds_among_equals() -> None:
    queue: FairQueue[Item] = FairQueue()
    queue.put(Item("a", model="m1", name="a0"))
    queue.put(Item("b", model="m2", name="b0"))
    assert take(queue, 1, model="m2") == ["b0"]
    assert take(queue, 1, model="m2") == ["a0"]  # none left of m2: take what there is


def test_removing_a_job_returns_its_queued_units() -> None:
    queue: FairQueue[Item] = FairQueue()
    queue.put(Item("a", name="a0"))
    queue.put(Item("b", name="b0"))
    assert [i.name for i in queue.remove_job("a")] == ["a0"]
    assert queue.queued() == 1
    assert [i.name for i in queue.drain()] == ["b0"]
    assert queue.queued() == 0


def test_get_waits_for_a_put_from_another_thread() -> None:
    queue: FairQueue[Item] = FairQueue()
    timer = threading.Timer(0.05, queue.put, args=(Item("a", name="late"),))
    timer.start()
    item = queue.get(timeout=5)
    assert item is not None and item.name == "late"


def test_a_pinned_unit_goes_to_its_slot_alone() -> None:
    queue: FairQueue[Item] = FairQueue()
    queue.put(Item("streams", name="host"), slot="cpu#1")
    assert queue.get(timeout=0, slot="cpu#0") is None  # another slot never takes it
    assert queue.get(timeout=0) is None  # nor a caller that names no slot
    item = queue.get(timeout=0, slot="cpu#1")
    assert item is not None and item.name == "host"


def test_a_pinned_unit_is_the_next_thing_its_slot_takes() -> None:
    queue: FairQueue[Item] = FairQueue()
    queue.add_job("urgent", priority=9)
    queue.put(Item("urgent", name="u0"))
    queue.put(Item("streams", name="host"), slot="cpu#0")
    # before a higher-priority job's unit, and before what its model would prefer
    assert take_on(queue, "cpu#0", 1) == ["host"]
    assert take_on(queue, "cpu#0", 1) == ["u0"]


def test_a_hosted_stream_counts_as_its_job_s_running_unit() -> None:
    queue: FairQueue[Item] = FairQueue()
    queue.put(Item("streams", name="host"), slot="cpu#0")
    assert take_on(queue, "cpu#0", 1) == ["host"]
    assert queue.running("streams") == 1
    for i in range(2):
        queue.put(Item("streams", name=f"s{i}"))
        queue.put(Item("files", name=f"f{i}"))
    # the streams job holds a slot already: the file job is owed the next one
    assert take_on(queue, "cpu#1", 1) == ["f0"]
    queue.task_done("streams")
    assert queue.running("streams") == 0


def test_pinned_units_are_counted_drained_and_removed_with_their_job() -> None:
    queue: FairQueue[Item] = FairQueue()
    queue.put(Item("streams", name="h0"), slot="cpu#0")
    queue.put(Item("streams", name="h1"), slot="cpu#1")
    queue.put(Item("other", name="o0"), slot="cpu#1")
    queue.put(Item("files", name="f0"))
    assert queue.queued() == 4
    assert queue.queued("streams") == 2
    # a slot gone for good gives back what waited for it
    assert [i.name for i in queue.drain_slot("cpu#1")] == ["h1", "o0"]
    assert [i.name for i in queue.remove_job("streams")] == ["h0"]
    assert queue.queued() == 1
    queue.put(Item("other", name="o1"), slot="cpu#0")
    assert sorted(i.name for i in queue.drain()) == ["f0", "o1"]
    assert queue.queued() == 0


def test_get_wakes_for_a_unit_pinned_to_its_slot() -> None:
    queue: FairQueue[Item] = FairQueue()
    timer = threading.Timer(0.05, lambda: queue.put(Item("streams", name="late"), slot="cpu#3"))
    timer.start()
    item = queue.get(timeout=5, slot="cpu#3")
    assert item is not None and item.name == "late"


def take_on(queue: FairQueue[Item], slot: str, n: int) -> list[str]:
    got = []
    for _ in range(n):
        item = queue.get(None, timeout=0, slot=slot)
        assert item is not None
        got.append(item.name)
    return got


def test_a_unit_put_first_goes_ahead_of_its_job_s_queue() -> None:
    queue: FairQueue[Item] = FairQueue()
    for i in range(3):
        queue.put(Item("a", name=f"a{i}"))
    queue.put(Item("a", name="retry"), first=True)
    assert take(queue, 4) == ["retry", "a0", "a1", "a2"]
