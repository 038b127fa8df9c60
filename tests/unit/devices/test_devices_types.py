"""Device, DeviceSlot and DeviceStatus."""

from __future__ import annotations

import pytest

from vidshard.devices.types import Device, DeviceSlot, DeviceStatus


@pytest.mark.parametrize(
    ("slot", "label", "torch_device", "env"),
    [
        # a GPU: only it, numbered in PCI bus order like NVML and nvidia-smi
        (
            DeviceSlot(2, Device("cuda", 5)),
            "cuda:5#2",
            "cuda:0",
            {"CUDA_VISIBLE_DEVICES": "5", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
        ),
        # an NPU: only it
        (DeviceSlot(0, Device("npu", 7)), "npu:7#0", "npu:0", {"ASCEND_RT_VISIBLE_DEVICES": "7"}),
        # a CPU slot: no accelerator at all, and its share of threads
        (
            DeviceSlot(1, Device("cpu"), cpu_threads=4),
            "cpu#1",
            "cpu",
            {
                "CUDA_VISIBLE_DEVICES": "",
                "ASCEND_RT_VISIBLE_DEVICES": "",
                "OMP_NUM_THREADS": "4",
                "MKL_NUM_THREADS": "4",
                "OPENBLAS_NUM_THREADS": "4",
            },
        ),
    ],
)
def test_slot(slot: DeviceSlot, label: str, torch_device: str, env: dict[str, str]) -> None:
    assert slot.label == label
    assert slot.torch_device == torch_device
    assert slot.worker_env() == env


@pytest.mark.parametrize(
    ("total", "used", "free"),
    [
        # both known
        (100, 30, 70),
        # used above total (a racy reading): never negative
        (100, 130, 0),
        # total unknown
        (None, 30, None),
        # used unknown
        (100, None, None),
    ],
)
def test_memory_free_bytes(total: int | None, used: int | None, free: int | None) -> None:
    status = DeviceStatus(Device("npu", 0), memory_total_bytes=total, memory_used_bytes=used)
    assert status.memory_free_bytes == free
