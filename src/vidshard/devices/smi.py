"""Parsers for the text the vendors' command-line tools print.

Kept apart from the platforms so they can be tested on captured output, without the tools.
"""

from __future__ import annotations

import csv
import re

from vidshard.devices.types import Device, DeviceStatus

MIB = 1024 * 1024

# Asked of nvidia-smi, in this order (memory in MiB, utilisation in %, temperature in C).
NVIDIA_SMI_FIELDS = (
    "index",
    "uuid",
    "name",
    "memory.total",
    "memory.used",
    "utilization.gpu",
    "temperature.gpu",
)


def nvidia_smi_argv(executable: str) -> list[str]:
    return [
        executable,
        f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}",
        "--format=csv,noheader,nounits",
    ]


def _number(text: str) -> float | None:
    """A reading, or None for the tools' "N/A", "[Not Supported]", "NA", "-"."""
    try:
        return float(text.strip())
    except ValueError:
        return None


def _mib_bytes(text: str) -> int | None:
    value = _number(text)
    return None if value is None else int(value * MIB)


def parse_nvidia_smi_csv(text: str) -> list[tuple[DeviceStatus, str | None]]:
    """Rows of ``nvidia-smi --query-gpu=<NVIDIA_SMI_FIELDS> --format=csv,noheader,nounits``.

    Returns each GPU's status with its UUID (None if not reported), which the caller needs
    to honour a ``CUDA_VISIBLE_DEVICES`` given as UUIDs.
    """
    rows: list[tuple[DeviceStatus, str | None]] = []
    for record in csv.reader(text.splitlines(), skipinitialspace=True):
        if not record or not record[0].strip():
            continue
        if len(record) != len(NVIDIA_SMI_FIELDS):
            raise ValueError(
                f"nvidia-smi row has {len(record)} fields, expected {len(NVIDIA_SMI_FIELDS)}: "
                f"{','.join(record)!r}"
            )
        index, uuid, name, total, used, util, temp = (field.strip() for field in record)
        memory_total_bytes = _mib_bytes(total)
        device = Device("cuda", int(index), name=name, memory_total_bytes=memory_total_bytes)
        status = DeviceStatus(
            device,
            memory_total_bytes=memory_total_bytes,
            memory_used_bytes=_mib_bytes(used),
            utilization_pct=_number(util),
            temperature_c=_number(temp),
        )
        rows.append((status, uuid if uuid.upper().startswith("GPU-") else None))
    return rows


# An "npu-smi info" device is a row pair: the card row "| 0     910B3 | OK | 93.6  40  0 / 0 |"
# (NPU id and name | health | power, temperature, hugepages) and one row per chip
# "| 0 | 0000:C1:00.0 | 0  0 / 0  3162 / 65536 |" (chip [device] | bus id | AICore %, DDR
# memory used / total MB, [HBM used / total MB]). Cards with several chips (310P Duo) repeat it.
_CARD_CELL = re.compile(r"^(\d+)\s+(\S.*)$")
_CHIP_CELL = re.compile(r"^(\d+)(?:\s+(\d+))?")
_USED_TOTAL = re.compile(r"(\d+)\s*/\s*(\d+)")


def _table_cells(line: str) -> list[str]:
    line = line.strip()
    if not (line.startswith("|") and line.endswith("|")):
        return []
    return [cell.strip() for cell in line[1:-1].split("|")]


def _chip_status(index: int, name: str, temperature_c: float | None, cell: str) -> DeviceStatus:
    tokens = cell.split()
    pairs = [(int(used), int(total)) for used, total in _USED_TOTAL.findall(cell)]
    # HBM (second pair) is the device memory where the chip has it (910A/910B); chips
    # without it (310P) report their DDR in the first pair.
    memory = pairs[1] if len(pairs) > 1 and pairs[1][1] > 0 else (pairs[0] if pairs else None)
    memory_total_bytes = memory[1] * MIB if memory else None
    device = Device("npu", index, name=f"Ascend {name}", memory_total_bytes=memory_total_bytes)
    return DeviceStatus(
        device,
        memory_total_bytes=memory_total_bytes,
        memory_used_bytes=memory[0] * MIB if memory else None,
        utilization_pct=_number(tokens[0]) if tokens else None,
        temperature_c=temperature_c,
    )


def parse_npu_smi_info(text: str) -> list[DeviceStatus]:
    """Device table of ``npu-smi info`` (Ascend 310, 310P, 910A, 910B layouts).

    The index is the logical device id that ``ASCEND_RT_VISIBLE_DEVICES`` and ``npu:N``
    use: the "Device" column where the table has one (310/310P), else the chip's position
    in the table (910: one chip per card, listed in order). The card's "NPU" id can differ
    from it (a container given only card 2 still calls it device 0).
    """
    statuses: list[DeviceStatus] = []
    card: tuple[str, float | None] | None = None  # name, temperature_c of the current card
    has_device_column = False
    for line in text.splitlines():
        if "Process id" in line:  # the process table that follows reuses the layout
            break
        cells = _table_cells(line)
        if len(cells) != 3 or not cells[0][:1].isdigit():
            if cells and cells[0].startswith("Chip"):
                has_device_column = "Device" in cells[0].split()
            continue
        if ":" in cells[1]:  # a bus id: a chip row
            chip = _CHIP_CELL.match(cells[0])
            if card is None or chip is None:
                continue
            listed = chip.group(2) if has_device_column else None
            index = int(listed) if listed is not None else len(statuses)
            statuses.append(_chip_status(index, card[0], card[1], cells[2]))
        elif (match := _CARD_CELL.match(cells[0])) is not None:
            tokens = cells[2].split()
            card = (match.group(2), _number(tokens[1]) if len(tokens) > 1 else None)
    return statuses
