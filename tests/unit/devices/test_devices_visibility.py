"""Visibility is set before the framework starts, in a fresh worker-like process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

import vidshard
from vidshard.devices.types import Device, DeviceSlot
from vidshard.devices.visibility import apply_visibility, configure_torch_threads

# What a worker does first: apply visibility, then import torch. It reports what it saw.
WORKER = """
import json, os, sys
import vidshard
torch_before = "torch" in sys.modules
from vidshard.devices import Device, DeviceSlot, apply_visibility, configure_torch_threads
report = {"devices_imported_torch": "torch" in sys.modules and not torch_before}
slot = DeviceSlot(0, Device(sys.argv[1], int(sys.argv[2])), cpu_threads=int(sys.argv[3]) or None)
apply_visibility(slot)
report["env"] = {k: os.environ.get(k) for k in sys.argv[5:]}
if sys.argv[4] == "torch":
    import torch
    report["threads"] = configure_torch_threads(slot)
    report["torch_threads"] = torch.get_num_threads()
    report["cuda_devices"] = torch.cuda.device_count()
    report["cuda_initialized"] = torch.cuda.is_initialized()
print(json.dumps(report))
"""

VARIABLES = [
    "CUDA_VISIBLE_DEVICES",
    "ASCEND_RT_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "OMP_NUM_THREADS",
]

# kind, index, cpu_threads (0: None), whether to import torch afterwards
CASES: dict[str, tuple[str, int, int, str]] = {
    # a GPU slot: only GPU 3, numbered as nvidia-smi does; no torch import needed
    "cuda": ("cuda", 3, 0, "no-torch"),
    # a CPU slot: no accelerator visible, torch sees none and uses the slot's threads
    "cpu": ("cpu", 0, 2, "torch"),
}


@pytest.fixture(scope="module")
def worker_reports() -> dict[str, dict[str, Any]]:
    """Run every case as its own fresh interpreter, in parallel, and collect the reports."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(vidshard.__file__).resolve().parent.parent)
    # The parent sees four GPUs and all NPUs; each worker must narrow that.
    env.update(CUDA_VISIBLE_DEVICES="0,1,2,3", ASCEND_RT_VISIBLE_DEVICES="0,1")
    env.pop("OMP_NUM_THREADS", None)
    env.pop("CUDA_DEVICE_ORDER", None)
    running = {
        name: subprocess.Popen(
            [sys.executable, "-c", WORKER, kind, str(index), str(threads), torch, *VARIABLES],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (kind, index, threads, torch) in CASES.items()
    }
    reports = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        reports[name] = json.loads(stdout.strip().splitlines()[-1])
    return reports


def test_worker_sees_only_its_gpu(worker_reports: dict[str, dict[str, Any]]) -> None:
    report = worker_reports["cuda"]
    assert report["env"] == {
        "CUDA_VISIBLE_DEVICES": "3",
        "ASCEND_RT_VISIBLE_DEVICES": "0,1",  # untouched: not this slot's kind
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "OMP_NUM_THREADS": None,
    }


def test_cpu_worker_sees_no_accelerator(worker_reports: dict[str, dict[str, Any]]) -> None:
    report = worker_reports["cpu"]
    assert report["env"] == {
        "CUDA_VISIBLE_DEVICES": "",
        "ASCEND_RT_VISIBLE_DEVICES": "",
        "CUDA_DEVICE_ORDER": None,
        "OMP_NUM_THREADS": "2",
    }
    assert report["cuda_devices"] == 0
    assert report["cuda_initialized"] is False
    assert report["threads"] == 2
    assert report["torch_threads"] == 2


@pytest.mark.parametrize("case", sorted(CASES))
def test_devices_package_does_not_import_torch(
    worker_reports: dict[str, dict[str, Any]], case: str
) -> None:
    # importing vidshard.devices must leave the framework for the worker to import later
    assert worker_reports[case]["devices_imported_torch"] is False


def fake_torch(*, cuda_started: bool, npu: bool | None) -> ModuleType:
    module: Any = ModuleType("torch")
    module.cuda = SimpleNamespace(is_initialized=lambda: cuda_started)
    if npu is not None:  # torch.npu exists only once torch_npu is imported
        module.npu = SimpleNamespace(is_initialized=lambda: npu)
    return module


NPU3 = DeviceSlot(0, Device("npu", 3))


@pytest.mark.parametrize(
    ("torch", "raises"),
    [
        # torch not imported yet: the normal order
        (None, None),
        # torch imported but no runtime started: still in time
        (fake_torch(cuda_started=False, npu=False), None),
        # CUDA already initialised: the variable would be ignored
        (fake_torch(cuda_started=True, npu=None), "torch has initialised cuda"),
        # the NPU runtime already started through torch_npu
        (fake_torch(cuda_started=False, npu=True), "torch has initialised npu"),
    ],
)
def test_apply_visibility_refuses_a_started_runtime(
    monkeypatch: pytest.MonkeyPatch, torch: ModuleType | None, raises: str | None
) -> None:
    if torch is None:
        monkeypatch.delitem(sys.modules, "torch", raising=False)
    else:
        monkeypatch.setitem(sys.modules, "torch", torch)
    environ: dict[str, str] = {"CUDA_VISIBLE_DEVICES": "0,1"}
    if raises is None:
        apply_visibility(NPU3, environ)
        assert environ == {"CUDA_VISIBLE_DEVICES": "0,1", "ASCEND_RT_VISIBLE_DEVICES": "3"}
    else:
        with pytest.raises(RuntimeError, match=raises):
            apply_visibility(NPU3, environ)
        assert environ == {"CUDA_VISIBLE_DEVICES": "0,1"}  # nothing half-applied


@pytest.mark.parametrize(
    ("slot", "expected"),
    [
        # a CPU slot with its share of the cores
        (DeviceSlot(0, Device("cpu"), cpu_threads=3), 3),
        # an accelerator slot: torch's default kept
        (DeviceSlot(0, Device("cuda", 0)), None),
    ],
)
def test_configure_torch_threads(
    monkeypatch: pytest.MonkeyPatch, slot: DeviceSlot, expected: int | None
) -> None:
    calls: list[int] = []
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(set_num_threads=calls.append))
    assert configure_torch_threads(slot) == expected
    assert calls == ([] if expected is None else [expected])
