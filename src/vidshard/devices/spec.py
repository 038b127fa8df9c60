"""Device specs: the ``--devices`` text, turned into the slots workers run on.

Grammar (case-insensitive; spaces around items, ``:`` and ``-`` are ignored)::

    spec  := item ("," item)*
    item  := "all"                    every accelerator found; with none, the CPU
                                      as default_cpu_slots(cpu_count) slots
           | INDEX | RANGE            the accelerator kind present: cuda if any, else npu
           | "cuda" | "npu"           every device of that kind
           | ("cuda" | "npu") ":" (INDEX | RANGE)
           | "cpu"                    one CPU slot
           | "cpu:" N                 N CPU slots, N >= 1
    RANGE := INDEX "-" INDEX          inclusive, start <= end

Kinds may be mixed (``cuda:0,cpu:2``). An item given again gives its devices another slot
(``0,0,1``: device 0 gets two). Then every entry is repeated ``workers_per_device`` times
in place, and slot ids run 0..n-1 in that order. CPU slots share the cores: each gets
``max(1, cpu_count // cpu_slots)`` torch threads, counting every CPU slot in the result.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence

from vidshard.devices.platform import available_cpu_count
from vidshard.devices.types import Device, DeviceSlot, DeviceStatus
from vidshard.errors import DeviceError

KINDS = ("cuda", "npu", "cpu")
ACCELERATOR_KINDS = ("cuda", "npu")
_ALIASES = {"gpu": "cuda", "nvidia": "cuda", "ascend": "npu", "cann": "npu"}
_RANGE = re.compile(r"^(\d+)(?:\s*-\s*(\d+))?$")
_EXAMPLES = "e.g. 'all', '0,1', 'cuda:0-3', 'npu:0,npu:2', 'cpu:4'"


def default_cpu_slots(cpu_count: int) -> int:
    """CPU slots for a machine without accelerators: one per ~4 cores, 2 to 8 slots.

    Separate workers spread decode, encode and single-threaded models (the Pillow
    resamplers) over the cores: on 2 cores, lanczos x2 of the bundled clip ran at
    10.1 fps with 2 slots against 6.1 fps with 1. torch's intra-op threads gain little
    past a handful per worker, so a big CPU still runs better as several slots.
    """
    if cpu_count < 2:
        return 1
    return min(8, max(2, cpu_count // 4))


def index_spec(kind: str, indices: Iterable[int]) -> str:
    """Indices as spec items, runs joined: ``cuda:0-3`` or ``cuda:0,cuda:2-3``."""
    runs: list[list[int]] = []
    for index in sorted(set(indices)):
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return ",".join(f"{kind}:{a}" if a == b else f"{kind}:{a}-{b}" for a, b in runs)


def _found(devices: Sequence[Device]) -> str:
    parts = [
        index_spec(kind, [d.index for d in devices if d.kind == kind])
        for kind in ACCELERATOR_KINDS
        if any(d.kind == kind for d in devices)
    ]
    return ", ".join(parts) if parts else "no accelerators; use 'cpu' or 'cpu:N'"


def _cpu_device(devices: Sequence[Device]) -> Device:
    return next((d for d in devices if d.kind == "cpu"), Device("cpu", 0, name="CPU"))


def _check_kind(spec: str, kind: str) -> str:
    if kind in KINDS:
        return kind
    if not kind.isalpha():
        raise DeviceError(
            f"device spec {spec!r}: malformed item {kind!r} "
            f"(expected an index, a range like 0-3, or kind:index; {_EXAMPLES})"
        )
    close = _ALIASES.get(kind) or next(
        iter(difflib.get_close_matches(kind, KINDS, n=1, cutoff=0.7)), None
    )
    hint = f"; did you mean {close!r}?" if close else ""
    raise DeviceError(
        f"device spec {spec!r}: unknown device kind {kind!r} (expected cuda, npu or cpu{hint})"
    )


def _pick(spec: str, kind: str, arg: str, devices: Sequence[Device]) -> list[Device]:
    """The devices of ``kind`` that ``arg`` (an index or range) names; all must be present."""
    match = _RANGE.match(arg)
    if match is None:
        raise DeviceError(
            f"device spec {spec!r}: malformed {kind} index {arg!r} "
            f"(expected N or N-M, e.g. {kind}:0 or {kind}:0-3)"
        )
    start = int(match.group(1))
    end = int(match.group(2) or start)
    if end < start:
        raise DeviceError(
            f"device spec {spec!r}: range {arg!r} runs backwards "
            f"(expected start <= end, e.g. {kind}:{end}-{start})"
        )
    present = {d.index: d for d in devices if d.kind == kind}
    picked: list[Device] = []
    for index in range(start, end + 1):
        if index not in present:
            raise DeviceError(
                f"device spec {spec!r}: no such device {kind}:{index} (found {_found(devices)})"
            )
        picked.append(present[index])
    return picked


def _cpu_slot_count(spec: str, arg: str | None) -> int:
    if arg is None:
        return 1
    if arg.isascii() and arg.isdigit():
        if int(arg) < 1:
            raise DeviceError(
                f"device spec {spec!r}: 'cpu:{arg}' asks for no slots (expected cpu:N, N >= 1)"
            )
        return int(arg)
    what = "a range" if _RANGE.match(arg) else repr(arg)
    raise DeviceError(
        f"device spec {spec!r}: cpu takes a slot count, not {what} (expected cpu or cpu:N)"
    )


def _bare_kind(spec: str, devices: Sequence[Device]) -> str:
    for kind in ACCELERATOR_KINDS:
        if any(d.kind == kind for d in devices):
            return kind
    raise DeviceError(
        f"device spec {spec!r}: a bare index names an accelerator, and none was found "
        "(use 'cpu' or 'cpu:N')"
    )


def _resolve_item(spec: str, item: str, devices: Sequence[Device], cpu_count: int) -> list[Device]:
    head, colon, tail = item.partition(":")
    head = head.strip()
    arg = tail.strip() if colon else None
    if head == "all" and arg is None:
        accelerators = [d for d in devices if d.kind in ACCELERATOR_KINDS]
        return accelerators or [_cpu_device(devices)] * default_cpu_slots(cpu_count)
    if arg is None and _RANGE.match(head):
        return _pick(spec, _bare_kind(spec, devices), head, devices)
    if head == "all":
        raise DeviceError(f"device spec {spec!r}: 'all' takes no argument, got 'all:{arg}'")
    kind = _check_kind(spec, head)
    if kind == "cpu":
        return [_cpu_device(devices)] * _cpu_slot_count(spec, arg)
    if arg is None:
        every = [d for d in devices if d.kind == kind]
        if not every:
            raise DeviceError(f"device spec {spec!r}: no {kind} devices (found {_found(devices)})")
        return every
    return _pick(spec, kind, arg, devices)


def parse_device_spec(
    spec: str,
    devices: Sequence[Device],
    *,
    workers_per_device: int = 1,
    cpu_count: int | None = None,
) -> list[DeviceSlot]:
    """Slots for ``spec`` on ``devices`` (the discovered ones; see the module grammar).

    ``cpu_count`` is the cores the CPU slots share; None: this process's available cores.
    """
    if workers_per_device < 1:
        raise DeviceError(f"workers per device must be at least 1, got {workers_per_device}")
    if cpu_count is not None and cpu_count < 1:
        raise DeviceError(f"cpu count must be at least 1, got {cpu_count}")
    if not spec.strip():
        raise DeviceError(f"device spec is empty (expected {_EXAMPLES})")
    items = [item.strip().lower() for item in spec.split(",")]
    if not all(items):
        raise DeviceError(f"device spec {spec!r}: empty item (expected items between commas)")
    cores = available_cpu_count() if cpu_count is None else cpu_count
    resolved = [d for item in items for d in _resolve_item(spec, item, devices, cores)]
    placed = [device for device in resolved for _ in range(workers_per_device)]
    cpu_slots = sum(1 for device in placed if device.kind == "cpu")
    threads = max(1, cores // cpu_slots) if cpu_slots else None
    return [
        DeviceSlot(slot_id, device, cpu_threads=threads if device.kind == "cpu" else None)
        for slot_id, device in enumerate(placed)
    ]


def describe_slots(slots: Sequence[DeviceSlot]) -> str:
    """Short summary: ``6 slots: cuda:0-1 x2, cpu x2 (4 threads each)``."""
    if not slots:
        return "no slots"
    counts: dict[Device, int] = {}
    for slot in slots:
        counts[slot.device] = counts.get(slot.device, 0) + 1
    runs: list[tuple[Device, Device, int]] = []  # first, last, slots per device
    for device, count in counts.items():
        if runs:
            first, last, per_device = runs[-1]
            adjacent = device.kind == last.kind and device.index == last.index + 1
            if adjacent and device.kind != "cpu" and count == per_device:
                runs[-1] = (first, device, count)
                continue
        runs.append((device, device, count))
    threads = next((s.cpu_threads for s in slots if s.device.kind == "cpu" and s.cpu_threads), None)
    parts = []
    for first, last, count in runs:
        part = first.label if first == last else f"{first.label}-{last.index}"
        part += "" if count == 1 else f" x{count}"
        if first.kind == "cpu" and threads is not None:
            part += f" ({threads} threads{'' if count == 1 else ' each'})"
        parts.append(part)
    return f"{len(slots)} slot{'s' if len(slots) != 1 else ''}: {', '.join(parts)}"


def suggest_layout(statuses: Sequence[DeviceStatus]) -> str:
    """A spec that uses this machine well: every accelerator, else the CPU split in slots.

    Accelerators are named explicitly (``cuda:0-7``) rather than as ``all`` so the line
    can be copied and edited.
    """
    devices = [s.device for s in statuses]
    specs = [
        index_spec(kind, [d.index for d in devices if d.kind == kind])
        for kind in ACCELERATOR_KINDS
        if any(d.kind == kind for d in devices)
    ]
    if specs:
        return ",".join(specs)
    cores = next((s.cpu_cores for s in statuses if s.device.kind == "cpu" and s.cpu_cores), None)
    slots = default_cpu_slots(cores or available_cpu_count())
    return "cpu" if slots == 1 else f"cpu:{slots}"
