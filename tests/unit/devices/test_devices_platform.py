"""Discovery through NVML, nvidia-smi, npu-smi and fakes; no real accelerator needed."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from vidshard.devices.platform import (
    AscendPlatform,
    CpuPlatform,
    CudaPlatform,
    FakePlatform,
    discover_devices,
)
from vidshard.devices.smi import MIB
from vidshard.devices.types import Device, DeviceStatus

GIB = 1024 * MIB
H100_GIB = 80


class NVMLError(Exception):
    pass


def fake_pynvml(gpus: int, *, init_fails: bool = False, no_temperature: bool = False) -> Any:
    """A module with the pynvml calls discovery makes, for ``gpus`` H100s."""
    module: Any = ModuleType("pynvml")
    module.calls = []
    module.NVMLError = NVMLError
    module.NVML_TEMPERATURE_GPU = 0

    def init() -> None:
        module.calls.append("init")
        if init_fails:
            raise NVMLError("NVML Shared Library Not Found")

    def temperature(handle: int, sensor: int) -> int:
        if no_temperature:
            raise NVMLError("Not Supported")
        return 40 + handle

    module.nvmlInit = init
    module.nvmlShutdown = lambda: module.calls.append("shutdown")
    module.nvmlDeviceGetCount = lambda: gpus
    module.nvmlDeviceGetHandleByIndex = lambda index: index
    module.nvmlDeviceGetName = lambda handle: b"NVIDIA H100 80GB HBM3"  # old pynvml: bytes
    module.nvmlDeviceGetUUID = lambda handle: f"GPU-{handle:08d}-aaaa"
    module.nvmlDeviceGetMemoryInfo = lambda handle: SimpleNamespace(
        total=H100_GIB * GIB, used=handle * GIB, free=(H100_GIB - handle) * GIB
    )
    module.nvmlDeviceGetUtilizationRates = lambda handle: SimpleNamespace(gpu=10 * handle, memory=0)
    module.nvmlDeviceGetTemperature = temperature
    return module


def no_tool(name: str) -> str | None:
    return None


def no_run(argv: Sequence[str], timeout_s: float) -> str:
    raise AssertionError(f"no command expected, ran {argv}")


NVIDIA_SMI_TWO = (
    "0, GPU-aaaa, NVIDIA A100-SXM4-40GB, 40960, 1024, 50, 45\n"
    "1, GPU-bbbb, NVIDIA A100-SXM4-40GB, 40960, 0, 0, 30\n"
)


@pytest.fixture
def without_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError


@pytest.mark.parametrize(
    ("environ", "indices"),
    [
        # no visibility variable: every GPU NVML sees
        ({}, [0, 1, 2, 3]),
        # the user narrowed this process to two GPUs: they keep their system indices
        ({"CUDA_VISIBLE_DEVICES": "1,3"}, [1, 3]),
        # given by UUID prefix, as CUDA allows
        ({"CUDA_VISIBLE_DEVICES": "GPU-00000002"}, [2]),
        # an empty variable hides every GPU
        ({"CUDA_VISIBLE_DEVICES": ""}, []),
    ],
)
def test_cuda_nvml(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], indices: list[int]
) -> None:
    nvml = fake_pynvml(4)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    statuses = CudaPlatform(environ=environ, which=no_tool, run=no_run).statuses()
    assert [s.device.index for s in statuses] == indices
    assert nvml.calls == ["init", "shutdown"]  # NVML is released after each reading


def test_cuda_nvml_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(3))
    status = CudaPlatform(environ={}, which=no_tool, run=no_run).statuses()[2]
    assert status.device == Device(
        "cuda", 2, name="NVIDIA H100 80GB HBM3", memory_total_bytes=H100_GIB * GIB
    )
    assert status.memory_used_bytes == 2 * GIB
    assert status.memory_free_bytes == (H100_GIB - 2) * GIB
    assert status.utilization_pct == 20.0
    assert status.temperature_c == 42.0


def test_cuda_nvml_unsupported_reading_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(1, no_temperature=True))
    (status,) = CudaPlatform(environ={}, which=no_tool, run=no_run).statuses()
    assert status.temperature_c is None
    assert status.memory_total_bytes == H100_GIB * GIB


@pytest.mark.parametrize(
    ("nvml", "smi_path", "nvml_count", "indices"),
    [
        # pynvml installed but no driver: nvidia-smi is asked next
        (fake_pynvml(4, init_fails=True), "/usr/bin/nvidia-smi", 0, [0, 1]),
        # no pynvml: nvidia-smi
        (None, "/usr/bin/nvidia-smi", 0, [0, 1]),
        # neither: torch's NVML count, no readings
        (None, None, 3, [0, 1, 2]),
        # nothing at all (a CPU machine): no GPUs, no error
        (None, None, -1, []),
    ],
)
def test_cuda_fallbacks(
    monkeypatch: pytest.MonkeyPatch,
    nvml: Any,
    smi_path: str | None,
    nvml_count: int,
    indices: list[int],
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    ran: list[list[str]] = []

    def run(argv: Sequence[str], timeout_s: float) -> str:
        ran.append(list(argv))
        return NVIDIA_SMI_TWO

    platform = CudaPlatform(
        environ={}, which=lambda name: smi_path, run=run, nvml_count=lambda: nvml_count
    )
    assert [s.device.index for s in platform.statuses()] == indices
    assert [argv[0] for argv in ran] == ([smi_path] if smi_path else [])


# Two 910B cards in the same layout npu-smi prints.
NPU_SMI_TWO = """\
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B3               | OK            | 95.1        36                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           0    / 0          3379 / 65536         |
+===========================+===============+====================================================+
| 1     910B3               | OK            | 96.8        37                0    / 0             |
| 0                         | 0000:C2:00.0  | 0           0    / 0          3379 / 65536         |
+===========================+===============+====================================================+
"""


@pytest.mark.parametrize(
    ("smi_path", "npu_count", "environ", "indices", "memory_known"),
    [
        # npu-smi on PATH: its table, with readings
        ("/usr/local/sbin/npu-smi", 0, {}, [0, 1], True),
        # npu-smi, narrowed by ASCEND_RT_VISIBLE_DEVICES in this process
        ("/usr/local/sbin/npu-smi", 0, {"ASCEND_RT_VISIBLE_DEVICES": "1"}, [1], True),
        # no npu-smi: torch_npu's count, no readings
        (None, 8, {}, list(range(8)), False),
        # neither: no NPUs
        (None, 0, {}, [], False),
    ],
)
def test_ascend(
    smi_path: str | None,
    npu_count: int,
    environ: dict[str, str],
    indices: list[int],
    memory_known: bool,
) -> None:
    def run(argv: Sequence[str], timeout_s: float) -> str:
        assert list(argv) == [smi_path, "info"]
        return NPU_SMI_TWO

    platform = AscendPlatform(
        environ=environ, which=lambda name: smi_path, run=run, npu_count=lambda: npu_count
    )
    statuses = platform.statuses()
    assert [s.device.index for s in statuses] == indices
    assert all((s.memory_total_bytes is not None) == memory_known for s in statuses)


def test_cpu_platform_reads_this_machine() -> None:
    platform = CpuPlatform()
    (first,) = platform.statuses()
    (second,) = platform.statuses()
    assert first.device.kind == "cpu" and first.device.index == 0
    assert first.cpu_cores is not None and first.cpu_cores >= 1
    assert first.memory_total_bytes is not None and first.memory_total_bytes > 0
    assert first.memory_used_bytes is not None
    assert 0 <= first.memory_used_bytes <= first.memory_total_bytes
    # measured from the first reading on (over at least CPU_SAMPLE_S), as a percentage
    for status in (first, second):
        assert status.utilization_pct is not None and 0 <= status.utilization_pct <= 100


NPU0 = Device("npu", 0, name="Ascend 910B3")
NPU1 = Device("npu", 1, name="Ascend 910B3")
CUDA0 = Device("cuda", 0, name="H100")
CPU = Device("cpu", 0, name="Xeon")


@pytest.mark.parametrize(
    ("platforms", "labels"),
    [
        # NPUs only: the CPU is added, always last
        ([FakePlatform("npu", [NPU1, NPU0])], ["npu:0", "npu:1", "cpu"]),
        # kinds sorted cuda, npu, cpu whatever the platform order
        (
            [
                FakePlatform("cpu", [CPU]),
                FakePlatform("npu", [NPU0]),
                FakePlatform("cuda", [CUDA0]),
            ],
            ["cuda:0", "npu:0", "cpu"],
        ),
        # a failing platform is skipped, the others still count
        (
            [
                FakePlatform("cuda", error=RuntimeError("nvidia-smi hung")),
                FakePlatform("npu", [NPU0]),
            ],
            ["npu:0", "cpu"],
        ),
        # the same device from two platforms is listed once
        ([FakePlatform("npu", [NPU0]), FakePlatform("npu", [NPU0])], ["npu:0", "cpu"]),
        # nothing at all: still the CPU
        ([], ["cpu"]),
    ],
)
def test_discover_devices(platforms: list[FakePlatform], labels: list[str]) -> None:
    assert [s.device.label for s in discover_devices(platforms)] == labels


def test_discover_logs_a_failing_platform(caplog: pytest.LogCaptureFixture) -> None:
    broken = FakePlatform("cuda", error=RuntimeError("nvidia-smi exited with 9"))
    with caplog.at_level(logging.WARNING, logger="vidshard.devices.platform"):
        statuses = discover_devices([broken, FakePlatform("cpu", [CPU])])
    assert [s.device for s in statuses] == [CPU]
    assert "cuda discovery failed" in caplog.text
    assert "nvidia-smi exited with 9" in caplog.text


def test_fake_platform() -> None:
    eight = FakePlatform.of("npu", 8, memory_total_bytes=64 * GIB)
    statuses = eight.statuses()
    assert [s.device.label for s in statuses] == [f"npu:{i}" for i in range(8)]
    assert all(s.memory_total_bytes == 64 * GIB for s in statuses)
    # statuses pass through unchanged
    busy = DeviceStatus(NPU0, memory_total_bytes=64 * GIB, memory_used_bytes=60 * GIB)
    assert FakePlatform("npu", [busy]).statuses() == [busy]
    # a device of another kind is a mistake in the test
    with pytest.raises(ValueError, match="given a cuda device"):
        FakePlatform("npu", [CUDA0])
