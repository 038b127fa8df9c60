"""Device specs: parsing, errors, summaries and suggestions."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from vidshard.devices.spec import (
    default_cpu_slots,
    describe_slots,
    index_spec,
    parse_device_spec,
    suggest_layout,
)
from vidshard.devices.types import Device, DeviceSlot, DeviceStatus
from vidshard.errors import DeviceError

CPU = Device("cpu", 0, name="Xeon")


def machine(cuda: Sequence[int] = (), npu: Sequence[int] = ()) -> list[Device]:
    return [Device("cuda", i) for i in cuda] + [Device("npu", i) for i in npu] + [CPU]


CUDA4 = machine(cuda=[0, 1, 2, 3])
CUDA8 = machine(cuda=list(range(8)))
NPU8 = machine(npu=list(range(8)))
MIXED = machine(cuda=[0, 1], npu=[0, 1])
GAPPY = machine(cuda=[0, 2, 3])  # CUDA_VISIBLE_DEVICES=0,2,3 in the coordinator
CPU_ONLY = machine()


def layout(slots: list[DeviceSlot]) -> list[tuple[str, int | None]]:
    return [(s.device.label, s.cpu_threads) for s in slots]


@pytest.mark.parametrize(
    ("spec", "devices", "workers_per_device", "expected"),
    [
        # all: every accelerator, in order
        ("all", CUDA4, 1, [("cuda:0", None), ("cuda:1", None), ("cuda:2", None), ("cuda:3", None)]),
        # all on a CPU-only 16-core machine: default_cpu_slots(16) = 4 slots of 4 threads
        ("all", CPU_ONLY, 1, [("cpu", 4)] * 4),
        # all on both kinds of accelerator: both
        ("all", MIXED, 1, [("cuda:0", None), ("cuda:1", None), ("npu:0", None), ("npu:1", None)]),
        # bare indices take the kind present: cuda
        ("0,1,3", CUDA4, 1, [("cuda:0", None), ("cuda:1", None), ("cuda:3", None)]),
        # bare indices on an Ascend machine: npu
        ("0,7", NPU8, 1, [("npu:0", None), ("npu:7", None)]),
        # bare indices on a machine with both: cuda
        ("1", MIXED, 1, [("cuda:1", None)]),
        # a bare range
        ("2-3", CUDA4, 1, [("cuda:2", None), ("cuda:3", None)]),
        # kind-qualified, not contiguous
        ("cuda:0,cuda:2", CUDA4, 1, [("cuda:0", None), ("cuda:2", None)]),
        # a qualified range over eight NPUs
        ("npu:0-7", NPU8, 1, [(f"npu:{i}", None) for i in range(8)]),
        # a qualified range over part of the GPUs
        ("cuda:0-3", CUDA8, 1, [(f"cuda:{i}", None) for i in range(4)]),
        # a kind alone: every device of it
        ("npu", MIXED, 1, [("npu:0", None), ("npu:1", None)]),
        # one CPU slot gets every core
        ("cpu", CUDA4, 1, [("cpu", 16)]),
        # four CPU slots share 16 cores
        ("cpu:4", CPU_ONLY, 1, [("cpu", 4)] * 4),
        # repeats are weights: device 0 gets two slots
        ("0,0,1", CUDA4, 1, [("cuda:0", None), ("cuda:0", None), ("cuda:1", None)]),
        # overlapping items add up too
        ("0-1,1", CUDA4, 1, [("cuda:0", None), ("cuda:1", None), ("cuda:1", None)]),
        # workers per device multiplies each entry in place
        ("0,2", CUDA4, 2, [("cuda:0", None), ("cuda:0", None), ("cuda:2", None), ("cuda:2", None)]),
        # ... CPU slots too, and the threads are shared among all of them
        ("cpu:2", CPU_ONLY, 2, [("cpu", 4)] * 4),
        # mixing kinds is allowed
        ("cuda:0,cpu:2", CUDA4, 1, [("cuda:0", None), ("cpu", 8), ("cpu", 8)]),
        # whitespace and capitals are tolerated
        (
            "  CUDA : 0 - 1 , cpu : 2 ",
            CUDA4,
            1,
            [("cuda:0", None), ("cuda:1", None), ("cpu", 8), ("cpu", 8)],
        ),
        # more CPU slots than cores: at least one thread each
        ("cpu:32", CPU_ONLY, 1, [("cpu", 1)] * 32),
        # indices keep their system numbers when the coordinator sees a subset
        ("cuda:2-3", GAPPY, 1, [("cuda:2", None), ("cuda:3", None)]),
    ],
)
def test_parse(
    spec: str,
    devices: list[Device],
    workers_per_device: int,
    expected: list[tuple[str, int | None]],
) -> None:
    slots = parse_device_spec(spec, devices, workers_per_device=workers_per_device, cpu_count=16)
    assert layout(slots) == expected
    assert [s.slot_id for s in slots] == list(range(len(expected)))


def test_parse_keeps_the_discovered_device_records() -> None:
    h100 = Device("cuda", 1, name="NVIDIA H100", memory_total_bytes=80 << 30)
    (slot,) = parse_device_spec("cuda:1", [Device("cuda", 0), h100, CPU])
    assert slot.device is h100
    (cpu_slot,) = parse_device_spec("cpu", [CPU], cpu_count=4)
    assert cpu_slot.device is CPU


def test_parse_uses_this_machines_cores_by_default() -> None:
    slots = parse_device_spec("cpu", CPU_ONLY)
    assert slots[0].cpu_threads is not None and slots[0].cpu_threads >= 1


@pytest.mark.parametrize(
    ("spec", "devices", "workers_per_device", "message"),
    [
        # empty
        ("", CUDA4, 1, "device spec is empty (expected e.g. 'all'"),
        # only spaces
        ("   ", CUDA4, 1, "device spec is empty"),
        # a stray comma
        ("0,,1", CUDA4, 1, "device spec '0,,1': empty item"),
        # trailing comma
        ("0,", CUDA4, 1, "empty item"),
        # gpu is not a kind: suggest cuda
        (
            "gpu:0",
            CUDA4,
            1,
            "unknown device kind 'gpu' (expected cuda, npu or cpu; did you mean 'cuda'?)",
        ),
        # ascend: suggest npu
        ("ascend:0", NPU8, 1, "did you mean 'npu'?"),
        # a typo: the closest kind
        ("cdua:0", CUDA4, 1, "did you mean 'cuda'?"),
        # nothing close: no suggestion
        ("tpu:0", CUDA4, 1, "unknown device kind 'tpu' (expected cuda, npu or cpu)"),
        # a range that runs backwards
        ("npu:3-1", NPU8, 1, "range '3-1' runs backwards (expected start <= end, e.g. npu:1-3)"),
        # not a number
        ("cuda:x", CUDA4, 1, "malformed cuda index 'x' (expected N or N-M"),
        # an open range
        ("cuda:2-", CUDA4, 1, "malformed cuda index '2-'"),
        # negative
        ("-1", CUDA4, 1, "malformed item '-1'"),
        # two numbers without a comma
        ("0 1", CUDA4, 1, "malformed item '0 1'"),
        # an index not present: say what is
        ("cuda:5", CUDA4, 1, "device spec 'cuda:5': no such device cuda:5 (found cuda:0-3)"),
        # a range running past the end
        ("npu:4-9", NPU8, 1, "no such device npu:8 (found npu:0-7)"),
        # a hole in what the coordinator may see
        ("0-3", GAPPY, 1, "no such device cuda:1 (found cuda:0,cuda:2-3)"),
        # npu asked on a GPU machine
        ("npu:0", CUDA4, 1, "no such device npu:0 (found cuda:0-3)"),
        # a kind alone that is absent
        ("npu", CUDA4, 1, "no npu devices (found cuda:0-3)"),
        # a bare index on a CPU-only machine
        ("0", CPU_ONLY, 1, "a bare index names an accelerator, and none was found (use 'cpu'"),
        # cuda on a CPU-only machine
        ("cuda:0", CPU_ONLY, 1, "found no accelerators; use 'cpu' or 'cpu:N'"),
        # zero CPU slots
        ("cpu:0", CPU_ONLY, 1, "'cpu:0' asks for no slots (expected cpu:N, N >= 1)"),
        # a CPU range
        ("cpu:1-3", CPU_ONLY, 1, "cpu takes a slot count, not a range"),
        # a CPU count that is not a number
        ("cpu:many", CPU_ONLY, 1, "cpu takes a slot count, not 'many'"),
        # all takes nothing
        ("all:2", CUDA4, 1, "'all' takes no argument, got 'all:2'"),
        # workers per device below one
        ("all", CUDA4, 0, "workers per device must be at least 1, got 0"),
    ],
)
def test_parse_errors(
    spec: str, devices: list[Device], workers_per_device: int, message: str
) -> None:
    with pytest.raises(DeviceError) as caught:
        parse_device_spec(spec, devices, workers_per_device=workers_per_device, cpu_count=16)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)  # one line, for the CLI


def test_parse_error_on_bad_cpu_count() -> None:
    with pytest.raises(DeviceError, match="cpu count must be at least 1, got 0"):
        parse_device_spec("cpu", CPU_ONLY, cpu_count=0)


@pytest.mark.parametrize(
    ("cpu_count", "slots"),
    [
        # a laptop: two slots
        (4, 2),
        # two cores: two slots, so decode, encode and the model overlap
        (2, 2),
        # eight cores: two slots of four
        (8, 2),
        # sixteen: four slots of four
        (16, 4),
        # a big server: capped at eight
        (192, 8),
        # one core
        (1, 1),
    ],
)
def test_default_cpu_slots(cpu_count: int, slots: int) -> None:
    assert default_cpu_slots(cpu_count) == slots


@pytest.mark.parametrize(
    ("kind", "indices", "expected"),
    [
        # a run
        ("cuda", [0, 1, 2, 3], "cuda:0-3"),
        # single and run, unsorted, duplicated
        ("npu", [3, 0, 2, 2], "npu:0,npu:2-3"),
        # one
        ("cuda", [5], "cuda:5"),
        # none
        ("cuda", [], ""),
    ],
)
def test_index_spec(kind: str, indices: list[int], expected: str) -> None:
    assert index_spec(kind, indices) == expected


@pytest.mark.parametrize(
    ("spec", "devices", "workers_per_device", "expected"),
    [
        # one slot per GPU: a run
        ("all", CUDA4, 1, "4 slots: cuda:0-3"),
        # two per GPU
        ("0-1", CUDA4, 2, "4 slots: cuda:0-1 x2"),
        # weights break the run
        ("0,0,1", CUDA4, 1, "3 slots: cuda:0 x2, cuda:1"),
        # a gap breaks the run
        ("cuda:0,cuda:2-3", CUDA4, 1, "3 slots: cuda:0, cuda:2-3"),
        # CPU slots with their threads
        ("cpu:4", CPU_ONLY, 1, "4 slots: cpu x4 (4 threads each)"),
        # one CPU slot
        ("cpu", CPU_ONLY, 1, "1 slot: cpu (16 threads)"),
        # mixed
        ("npu:0,cpu:2", NPU8, 1, "3 slots: npu:0, cpu x2 (8 threads each)"),
    ],
)
def test_describe_slots(
    spec: str, devices: list[Device], workers_per_device: int, expected: str
) -> None:
    slots = parse_device_spec(spec, devices, workers_per_device=workers_per_device, cpu_count=16)
    assert describe_slots(slots) == expected


def test_describe_no_slots() -> None:
    assert describe_slots([]) == "no slots"


def statuses(devices: list[Device], cpu_cores: int = 16) -> list[DeviceStatus]:
    return [DeviceStatus(d, cpu_cores=cpu_cores if d.kind == "cpu" else None) for d in devices]


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        # eight GPUs
        (statuses(CUDA8), "cuda:0-7"),
        # eight NPUs
        (statuses(NPU8), "npu:0-7"),
        # a subset with a hole
        (statuses(GAPPY), "cuda:0,cuda:2-3"),
        # both kinds
        (statuses(MIXED), "cuda:0-1,npu:0-1"),
        # CPU only, 16 cores: four slots
        (statuses(CPU_ONLY, cpu_cores=16), "cpu:4"),
        # CPU only, 4 cores: two slots
        (statuses(CPU_ONLY, cpu_cores=4), "cpu:2"),
        # CPU only, 1 core: one slot
        (statuses(CPU_ONLY, cpu_cores=1), "cpu"),
    ],
)
def test_suggest_layout(found: list[DeviceStatus], expected: str) -> None:
    suggestion = suggest_layout(found)
    assert suggestion == expected
    # the suggestion is itself a valid spec for the machine
    parse_device_spec(suggestion, [s.device for s in found], cpu_count=16)
