"""Stream placement: headroom, weights, limits, quarantine, a slot coming back, rebalance."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vidshard.streams.placement import (
    SlotLoad,
    choose_slot,
    headroom,
    rebalance_moves,
    why_unplaced,
)

LIMIT = 8
R = "detector-a"  # recipes (host keys) are compared by equality only
OTHER = "detector-b"


def slot(label: str, **fields: object) -> SlotLoad:
    device = str(fields.pop("device", label.split("#", maxsplit=1)[0]))
    return SlotLoad(label=label, device=device, **fields)  # type: ignore[arg-type]


def place_many(slots: list[SlotLoad], count: int, recipe: object = R) -> list[SlotLoad]:
    """Place ``count`` streams one after another, as the manager does (each counted at once)."""
    slots = list(slots)
    for _ in range(count):
        best = choose_slot(slots, recipe, LIMIT)
        assert best is not None
        slots = [
            replace(s, streams=s.streams + 1, recipe=recipe) if s.label == best.label else s
            for s in slots
        ]
    return slots


@pytest.mark.parametrize(
    ("load", "expected"),
    [
        # nothing on it: all the room there is
        (slot("cpu#0"), 1.0),
        # half its streams: half its room
        (slot("cpu#0", streams=4), 0.5),
        # 4 streams that deliver 100 fps of which it processes 50: counted as 8, so full
        (slot("cpu#0", streams=4, demand_fps=100.0, processed_fps=50.0), 0.0),
        # keeping up (processed >= demand) counts the streams as they are
        (slot("cpu#0", streams=2, demand_fps=50.0, processed_fps=50.0), 0.75),
        # the device's utilisation is the tighter term
        (slot("cuda:0#0", streams=1, utilization_pct=70.0), pytest.approx(0.3)),
        # so is its free memory (a quarter left)
        (slot("cuda:0#0", memory_free_bytes=1 << 30, memory_total_bytes=4 << 30), 0.25),
        # CPU slots have no memory figure: that term is absent
        (slot("cpu#0", streams=2, memory_free_bytes=None, memory_total_bytes=None), 0.75),
    ],
)
def test_headroom_is_the_tightest_term(load: SlotLoad, expected: float) -> None:
    assert headroom(load, LIMIT) == expected


def test_a_new_stream_goes_to_the_slot_with_most_headroom() -> None:
    slots = [slot("cpu#0", streams=3), slot("cpu#1", streams=1), slot("cpu#2", streams=2)]
    best = choose_slot(slots, R, LIMIT)
    assert best is not None and best.label == "cpu#1"


def test_never_round_robin_the_emptier_slot_takes_streams_until_even() -> None:
    # cpu#1 already holds 4: the next four all go to cpu#0, then they alternate
    slots = place_many([slot("cpu#0"), slot("cpu#1", streams=4, recipe=R)], 4)
    assert [s.streams for s in slots] == [4, 4]
    slots = place_many(slots, 2)
    assert [s.streams for s in slots] == [5, 5]


def test_eight_streams_on_two_slots_are_four_and_four() -> None:
    slots = place_many([slot("cpu#0"), slot("cpu#1")], 8)
    assert [s.streams for s in slots] == [4, 4]


def test_repeats_in_the_device_spec_weigh_as_slots() -> None:
    # cuda:0 was given twice (two slots), cuda:1 once: cuda:0 takes two shares
    slots = [
        slot("cuda:0#0", device="cuda:0"),
        slot("cuda:0#1", device="cuda:0"),
        slot("cuda:1#2", device="cuda:1"),
    ]
    placed = place_many(slots, 6)
    per_device: dict[str, int] = {}
    for s in placed:
        per_device[s.device] = per_device.get(s.device, 0) + s.streams
    assert per_device == {"cuda:0": 4, "cuda:1": 2}


def test_a_busy_device_gets_streams_after_an_idle_one() -> None:
    # cuda:0 holds one stream but runs at 90 %; cuda:1 holds three at 10 %
    slots = [
        slot("cuda:0#0", streams=1, recipe=R, utilization_pct=90.0),
        slot("cuda:1#1", streams=3, recipe=R, utilization_pct=10.0),
    ]
    best = choose_slot(slots, R, LIMIT)
    assert best is not None and best.label == "cuda:1#1"


def test_a_device_short_of_memory_gets_streams_after_one_with_room() -> None:
    gib = 1 << 30
    slots = [
        slot("cuda:0#0", memory_free_bytes=gib // 2, memory_total_bytes=8 * gib),
        slot(
            "cuda:1#1", streams=2, recipe=R, memory_free_bytes=6 * gib, memory_total_bytes=8 * gib
        ),
    ]
    best = choose_slot(slots, R, LIMIT)
    assert best is not None and best.label == "cuda:1#1"


def test_a_slot_that_falls_behind_gets_fewer_streams() -> None:
    # both hold 3; cpu#0 processes half of what its streams deliver
    slots = [
        slot("cpu#0", streams=3, recipe=R, demand_fps=75.0, processed_fps=37.5),
        slot("cpu#1", streams=3, recipe=R, demand_fps=75.0, processed_fps=75.0),
    ]
    best = choose_slot(slots, R, LIMIT)
    assert best is not None and best.label == "cpu#1"


def test_the_per_slot_limit_is_never_passed() -> None:
    slots = [slot("cpu#0", streams=LIMIT, recipe=R), slot("cpu#1", streams=LIMIT - 1, recipe=R)]
    best = choose_slot(slots, R, LIMIT)
    assert best is not None and best.label == "cpu#1"
    full = [replace(s, streams=LIMIT) for s in slots]
    assert choose_slot(full, R, LIMIT) is None
    assert "per-slot limit" in why_unplaced(full, R, LIMIT)


def test_a_quarantined_device_gets_no_streams() -> None:
    slots = [
        slot("cuda:0#0", device="cuda:0", available=False),  # quarantined: far emptier
        slot("cuda:1#1", device="cuda:1", streams=5, recipe=R),
    ]
    best = choose_slot(slots, R, LIMIT)
    assert best is not None and best.label == "cuda:1#1"
    down = [replace(s, available=False) for s in slots]
    assert choose_slot(down, R, LIMIT) is None
    assert "no slot is up" in why_unplaced(down, R, LIMIT)


def test_a_slot_that_comes_back_gets_new_streams_first() -> None:
    # cpu#1 died and its streams went to cpu#0 and cpu#2; now it is back, empty
    slots = [
        slot("cpu#0", streams=3, recipe=R),
        slot("cpu#1", available=False),
        slot("cpu#2", streams=3, recipe=R),
    ]
    back = [replace(s, available=True) if s.label == "cpu#1" else s for s in slots]
    placed = place_many(back, 3)
    assert [s.streams for s in placed] == [3, 3, 3]


def test_a_slot_hosting_another_model_takes_none_of_this_one() -> None:
    slots = [slot("cpu#0", streams=1, recipe=OTHER), slot("cpu#1", streams=6, recipe=R)]
    best = choose_slot(slots, R, LIMIT)
    assert best is not None and best.label == "cpu#1"
    only_other = [slot("cpu#0", streams=1, recipe=OTHER)]
    assert choose_slot(only_other, R, LIMIT) is None
    assert "another model" in why_unplaced(only_other, R, LIMIT)


def test_ties_go_to_a_slot_without_a_file_unit_then_to_pool_order() -> None:
    slots = [slot("cpu#0", busy_with_files=True), slot("cpu#1"), slot("cpu#2")]
    best = choose_slot(slots, R, LIMIT)
    assert best is not None and best.label == "cpu#1"


@pytest.mark.parametrize(
    ("counts", "recipes", "expected"),
    [
        # already even: nothing moves
        ([4, 4], [R, R], []),
        # a difference of one is even enough
        ([3, 2], [R, R], []),
        # all on one slot: half of them move
        ([6, 0], [R, None], [("s0", "s1")] * 3),
        # the fullest gives first, to the emptiest
        ([5, 1, 0], [R, R, None], [("s0", "s2"), ("s0", "s1"), ("s0", "s2")]),
        # a slot hosting another model takes none; the other model's slot cannot give
        ([6, 0, 2], [R, OTHER, None], [("s0", "s2"), ("s0", "s2")]),
    ],
)
def test_rebalance_evens_counts(
    counts: list[int], recipes: list[object], expected: list[tuple[str, str]]
) -> None:
    slots = [
        slot(f"s{i}", device="cpu", streams=n, recipe=r)
        for i, (n, r) in enumerate(zip(counts, recipes, strict=True))
    ]
    assert rebalance_moves(slots, LIMIT) == expected


def test_rebalance_skips_slots_that_are_down_and_respects_the_limit() -> None:
    slots = [
        slot("s0", device="cpu", streams=4, recipe=R),
        slot("s1", device="cpu", available=False),  # down: takes nothing
        slot("s2", device="cpu", streams=0),
    ]
    assert rebalance_moves(slots, LIMIT) == [("s0", "s2"), ("s0", "s2")]
    # with a limit of 3, a slot holding 3 takes none even if another holds more
    tight = [slot("s0", device="cpu", streams=5, recipe=R), slot("s1", device="cpu", streams=3)]
    assert rebalance_moves(tight, 3) == []
