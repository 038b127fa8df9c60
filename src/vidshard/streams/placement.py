"""Where a stream goes: the slot with the most headroom, never blind round-robin.

A slot's headroom is the smallest of the terms that apply to it (the tightest resource
decides), each in [0, 1]:

- **streams**: ``1 - effective / per_slot_limit``. ``effective`` is its stream count,
  scaled up by how far it falls behind: ``streams x max(1, demand_fps / processed_fps)``
  (what its streams deliver against what it processed, from their statuses). A slot that
  keeps up counts its streams; one that processes half of what arrives counts them twice.
- **device**: ``1 - utilization_pct / 100``, the device's reading.
- **memory**: ``memory_free / memory_total`` (accelerators; CPU slots have no figure).

A slot may take a stream when it is up, its device is not quarantined, it holds fewer
than ``per_slot_limit`` streams, and it hosts no other recipe (one model per slot: the
streams of a host batch together). Ties go to the slot with fewer streams, then to one
not running a file unit, then to the first in the pool's order.

Weights are slots: a device named twice in the device spec (or with
``--workers-per-device 2``) has two slots, each with its own count and limit, so it takes
two shares of the streams, as it takes two shares of a file job's units. Its device and
memory readings are the device's and apply to each of its slots alike.

:func:`rebalance_moves` evens the slots out by stream count (not by load: a load
reading lags a move by seconds, and the count is what the limit caps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SlotLoad:
    """One slot as placement sees it (the manager fills it from the pool's slot states,
    its own bookkeeping, the streams' statuses and the device monitor)."""

    label: str
    device: str
    available: bool = True  # up, and its device not quarantined
    recipe: object | None = None  # the recipe its streams run; None: it hosts none
    streams: int = 0  # streams placed on it (waiting for its host included)
    demand_fps: float | None = None  # frames a second its streams deliver, measured
    processed_fps: float | None = None  # ...and frames a second it processed
    busy_with_files: bool = False  # it runs a file job's unit now
    utilization_pct: float | None = None  # its device's
    memory_free_bytes: int | None = None
    memory_total_bytes: int | None = None


def effective_streams(slot: SlotLoad) -> float:
    """Its stream count, scaled up by how far behind its streams' demand it falls."""
    behind = 1.0
    if slot.demand_fps and slot.processed_fps is not None and slot.demand_fps > 0:
        behind = max(1.0, slot.demand_fps / max(slot.processed_fps, 1e-3))
    return slot.streams * min(behind, 100.0)


def headroom(slot: SlotLoad, per_slot_limit: int) -> float:
    """The smallest of the slot's terms, in [0, 1]; higher takes the next stream."""
    terms = [1.0 - effective_streams(slot) / per_slot_limit]
    if slot.utilization_pct is not None:
        terms.append(1.0 - slot.utilization_pct / 100.0)
    if slot.memory_free_bytes is not None and slot.memory_total_bytes:
        terms.append(slot.memory_free_bytes / slot.memory_total_bytes)
    return min(1.0, max(0.0, min(terms)))


def can_take(slot: SlotLoad, recipe: object, per_slot_limit: int) -> bool:
    return (
        slot.available
        and slot.streams < per_slot_limit
        and (slot.recipe is None or slot.recipe == recipe)
    )


def ranked(slots: Sequence[SlotLoad], recipe: object, per_slot_limit: int) -> list[SlotLoad]:
    """The slots that may take a stream of ``recipe``, best first."""
    order = {slot.label: index for index, slot in enumerate(slots)}
    fit = [slot for slot in slots if can_take(slot, recipe, per_slot_limit)]
    return sorted(
        fit,
        key=lambda s: (
            -round(headroom(s, per_slot_limit), 6),
            s.streams,
            s.busy_with_files,
            order[s.label],
        ),
    )


def choose_slot(slots: Sequence[SlotLoad], recipe: object, per_slot_limit: int) -> SlotLoad | None:
    """The slot with the most headroom for a stream of ``recipe``; None: none may take it."""
    best = ranked(slots, recipe, per_slot_limit)
    return best[0] if best else None


def why_unplaced(slots: Sequence[SlotLoad], recipe: object, per_slot_limit: int) -> str:
    """Why :func:`choose_slot` found no slot: the reason a waiting stream shows."""
    up = [slot for slot in slots if slot.available]
    if not up:
        return "waiting for a slot: no slot is up"
    if all(slot.streams >= per_slot_limit for slot in up):
        return (
            f"waiting for a slot: every slot up holds {per_slot_limit} streams (the per-slot limit)"
        )
    return "waiting for a slot: the slots with room host another model"


def rebalance_moves(slots: Sequence[SlotLoad], per_slot_limit: int) -> list[tuple[str, str]]:
    """Moves, one stream each as ``(from slot, to slot)``, that even the stream counts of
    the slots that are up: from the fullest slot to the emptiest that may take its
    recipe, while they differ by more than one."""
    counts = {slot.label: slot.streams for slot in slots if slot.available}
    recipes = {slot.label: slot.recipe for slot in slots if slot.available}
    order = {slot.label: index for index, slot in enumerate(slots)}
    moves: list[tuple[str, str]] = []
    while True:
        move = _one_move(counts, recipes, order, per_slot_limit)
        if move is None:
            return moves
        source, target = move
        counts[source] -= 1
        counts[target] += 1
        recipes[target] = recipes[source]
        if counts[source] == 0:
            recipes[source] = None
        moves.append(move)


def _one_move(
    counts: dict[str, int],
    recipes: dict[str, object | None],
    order: dict[str, int],
    per_slot_limit: int,
) -> tuple[str, str] | None:
    """The fullest slot that can give a stream to a slot with two fewer or less."""
    for source in sorted(counts, key=lambda label: (-counts[label], order[label])):
        targets = [
            label
            for label in counts
            if label != source
            and counts[label] < per_slot_limit
            and recipes[label] in (None, recipes[source])
            and counts[source] - counts[label] > 1
        ]
        if targets:
            return source, min(targets, key=lambda label: (counts[label], order[label]))
    return None
