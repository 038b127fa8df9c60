"""Parsers for captured nvidia-smi and npu-smi output."""

# The samples are the tools' output verbatim, wider than our line length.
# ruff: noqa: E501

from __future__ import annotations

import pytest

from vidshard.devices.smi import (
    MIB,
    NVIDIA_SMI_FIELDS,
    nvidia_smi_argv,
    parse_npu_smi_info,
    parse_nvidia_smi_csv,
)

# `npu-smi info` on an Atlas 800T A2 (8 x Ascend 910B3, 64 GB HBM each), one job on NPU 1.
NPU_SMI_910B_8 = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 23.0.rc3                 Version: 23.0.rc3                                             |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B3               | OK            | 95.1        36                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           0    / 0          3379 / 65536         |
+===========================+===============+====================================================+
| 1     910B3               | OK            | 362.4       48                0    / 0             |
| 0                         | 0000:C2:00.0  | 87          0    / 0          46211 / 65536        |
+===========================+===============+====================================================+
| 2     910B3               | OK            | 94.7        35                0    / 0             |
| 0                         | 0000:81:00.0  | 0           0    / 0          3378 / 65536         |
+===========================+===============+====================================================+
| 3     910B3               | OK            | 93.9        37                0    / 0             |
| 0                         | 0000:82:00.0  | 0           0    / 0          3380 / 65536         |
+===========================+===============+====================================================+
| 4     910B3               | Warning       | 97.2        41                0    / 0             |
| 0                         | 0000:01:00.0  | 0           0    / 0          3379 / 65536         |
+===========================+===============+====================================================+
| 5     910B3               | OK            | 95.5        36                0    / 0             |
| 0                         | 0000:02:00.0  | 0           0    / 0          3377 / 65536         |
+===========================+===============+====================================================+
| 6     910B3               | OK            | NA          38                0    / 0             |
| 0                         | 0000:41:00.0  | 0           0    / 0          3380 / 65536         |
+===========================+===============+====================================================+
| 7     910B3               | OK            | 96.0        37                0    / 0             |
| 0                         | 0000:42:00.0  | 0           0    / 0          3379 / 65536         |
+===========================+===============+====================================================+
+---------------------------+---------------+----------------------------------------------------+
| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |
+===========================+===============+====================================================+
| No running processes found in NPU 0                                                            |
+===========================+===============+====================================================+
| 1       0                 | 2871934       | python3.10               | 42880                   |
+===========================+===============+====================================================+
| No running processes found in NPU 2                                                            |
+===========================+===============+====================================================+
| No running processes found in NPU 3                                                            |
+===========================+===============+====================================================+
| No running processes found in NPU 4                                                            |
+===========================+===============+====================================================+
| No running processes found in NPU 5                                                            |
+===========================+===============+====================================================+
| No running processes found in NPU 6                                                            |
+===========================+===============+====================================================+
| No running processes found in NPU 7                                                            |
+===========================+===============+====================================================+
"""

# A container given only card 2 of a 910B4 box: npu-smi still says "NPU 2".
NPU_SMI_910B_ONE_CARD = """\
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 2     910B4               | OK            | 88.9        39                0    / 0             |
| 0                         | 0000:C2:00.0  | 0           0    / 0          2858 / 32768         |
+===========================+===============+====================================================+
"""

# 910A: DDR in "Memory-Usage", the device memory in "HBM-Usage".
NPU_SMI_910A = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 24.1.0                   Version: 24.1.0                                               |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910A                | OK            | 70.0        34                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           1197 / 13553      1365 / 32768         |
+===========================+===============+====================================================+
| 1     910A                | OK            | 66.9        35                0    / 0             |
| 0                         | 0000:81:00.0  | 5           2411 / 15665      4    / 32768         |
+===========================+===============+====================================================+
"""

# Atlas 300I Duo (310P3): two chips per card, a "Device" column with the logical id, no HBM.
NPU_SMI_310P_DUO = """\
+--------------------------------------------------------------------------------------------------------+
| npu-smi 23.0.0                                   Version: 23.0.0                                       |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 1       310P3                 | OK              | NA           53                0     / 0             |
| 0       0                     | 0000:01:00.0    | 0            1600 / 44280                            |
| 1       1                     | 0000:01:00.0    | 3            1463 / 43693                            |
+===============================+=================+======================================================+
| 2       310P3                 | OK              | NA           51                0     / 0             |
| 0       2                     | 0000:02:00.0    | 0            1590 / 44280                            |
| 1       3                     | 0000:02:00.0    | 0            1455 / 43693                            |
+===============================+=================+======================================================+
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Chip                  | Process id      | Process name             | Process memory(MB)        |
+===============================+=================+======================================================+
| No running processes found in NPU 1                                                                    |
+===============================+=================+======================================================+
"""


@pytest.mark.parametrize(
    ("text", "indices", "name", "totals_mib"),
    [
        # 8 x 910B3: indices follow the table, HBM is the device memory
        (NPU_SMI_910B_8, list(range(8)), "Ascend 910B3", [65536] * 8),
        # one card mounted: npu-smi says NPU 2, but the process sees device 0
        (NPU_SMI_910B_ONE_CARD, [0], "Ascend 910B4", [32768]),
        # 910A: HBM (32 GB) chosen over the DDR pair before it
        (NPU_SMI_910A, [0, 1], "Ascend 910A", [32768, 32768]),
        # 310P Duo: the Device column gives the ids; DDR is the only memory
        (NPU_SMI_310P_DUO, [0, 1, 2, 3], "Ascend 310P3", [44280, 43693, 44280, 43693]),
        # no table at all (npu-smi printed an error banner)
        ("dcmi module initialize failed. ret is -8005\n", [], "", []),
    ],
)
def test_npu_smi_devices(text: str, indices: list[int], name: str, totals_mib: list[int]) -> None:
    statuses = parse_npu_smi_info(text)
    assert [s.device.index for s in statuses] == indices
    assert all(s.device.kind == "npu" and s.device.name == name for s in statuses)
    assert [s.memory_total_bytes for s in statuses] == [t * MIB for t in totals_mib]
    assert [s.device.memory_total_bytes for s in statuses] == [t * MIB for t in totals_mib]


@pytest.mark.parametrize(
    ("text", "index", "used_mib", "utilization_pct", "temperature_c"),
    [
        # the busy 910B: 46 GB of HBM, AICore 87 %, 48 C
        (NPU_SMI_910B_8, 1, 46211, 87.0, 48.0),
        # power reads NA: the temperature after it is still found
        (NPU_SMI_910B_8, 6, 3380, 0.0, 38.0),
        # 910A second card: HBM used, not DDR used
        (NPU_SMI_910A, 1, 4, 5.0, 35.0),
        # 310P Duo second chip of the first card: temperature is the card's
        (NPU_SMI_310P_DUO, 1, 1463, 3.0, 53.0),
    ],
)
def test_npu_smi_readings(
    text: str, index: int, used_mib: int, utilization_pct: float, temperature_c: float
) -> None:
    status = parse_npu_smi_info(text)[index]
    assert status.memory_used_bytes == used_mib * MIB
    assert status.utilization_pct == utilization_pct
    assert status.temperature_c == temperature_c


def test_nvidia_smi_argv_asks_every_field() -> None:
    argv = nvidia_smi_argv("/usr/bin/nvidia-smi")
    assert argv[0] == "/usr/bin/nvidia-smi"
    assert argv[1] == "--query-gpu=" + ",".join(NVIDIA_SMI_FIELDS)
    assert argv[2] == "--format=csv,noheader,nounits"


NVIDIA_SMI_CSV = """\
0, GPU-5c9d8e3a-1111-2222-3333-444455556666, NVIDIA H100 80GB HBM3, 81559, 71234, 97, 61
1, GPU-0a1b2c3d-1111-2222-3333-444455556666, NVIDIA H100 80GB HBM3, 81559, 4, 0, 33
2, GPU-77aa88bb-1111-2222-3333-444455556666, NVIDIA A10G, 23028, [N/A], [Not Supported], [N/A]
"""


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # a busy H100: every reading present, MiB turned into bytes
        (0, ("NVIDIA H100 80GB HBM3", 81559 * MIB, 71234 * MIB, 97.0, 61.0)),
        # an idle one
        (1, ("NVIDIA H100 80GB HBM3", 81559 * MIB, 4 * MIB, 0.0, 33.0)),
        # readings the GPU does not support become None
        (2, ("NVIDIA A10G", 23028 * MIB, None, None, None)),
    ],
)
def test_nvidia_smi_csv(row: int, expected: tuple[object, ...]) -> None:
    status, uuid = parse_nvidia_smi_csv(NVIDIA_SMI_CSV)[row]
    assert status.device.kind == "cuda"
    assert status.device.index == row
    assert uuid is not None and uuid.startswith("GPU-")
    got = (
        status.device.name,
        status.memory_total_bytes,
        status.memory_used_bytes,
        status.utilization_pct,
        status.temperature_c,
    )
    assert got == expected


def test_nvidia_smi_csv_wrong_field_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="expected 7"):
        parse_nvidia_smi_csv("0, NVIDIA H100, 81559\n")
