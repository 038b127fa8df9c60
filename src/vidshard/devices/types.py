"""Devices and the slots workers run on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DeviceKind = Literal["cuda", "npu", "cpu"]

# The variable that limits what a framework sees, per device kind. It is set in the
# worker's environment before the framework initialises (DESIGN invariant 6).
VISIBILITY_VARIABLE: dict[str, str] = {
    "cuda": "CUDA_VISIBLE_DEVICES",
    "npu": "ASCEND_RT_VISIBLE_DEVICES",
}


@dataclass(frozen=True)
class Device:
    """One physical device. ``index`` is the system-wide index (CPU: always 0).

    ``node`` names the machine in a cluster (its address; see the Ray executor): ""
    on this machine, where labels stay ``cuda:0``; in a cluster they read
    ``10.0.0.7/cuda:0``."""

    kind: DeviceKind
    index: int = 0
    name: str = ""
    memory_total_bytes: int | None = None
    node: str = ""

    @property
    def label(self) -> str:
        local = "cpu" if self.kind == "cpu" else f"{self.kind}:{self.index}"
        return f"{self.node}/{local}" if self.node else local


@dataclass(frozen=True)
class DeviceSlot:
    """One worker's place on a device. Several slots may share one device."""

    slot_id: int
    device: Device
    cpu_threads: int | None = None  # torch intra-op threads for the worker; None: default
    # What the visibility variable names, when not ``device.index``: on a cluster's
    # node, the accelerator Ray gave the slot's actor (an index, a UUID or a MIG id).
    visible_id: str | None = None

    @property
    def label(self) -> str:
        return f"{self.device.label}#{self.slot_id}"

    @property
    def torch_device(self) -> str:
        """The device string inside the worker, where only this device is visible."""
        return "cpu" if self.device.kind == "cpu" else f"{self.device.kind}:0"

    def worker_env(self) -> dict[str, str]:
        """Environment the worker process must start with."""
        env: dict[str, str] = {}
        if self.device.kind == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
            env["ASCEND_RT_VISIBLE_DEVICES"] = ""
        else:
            visible = str(self.device.index) if self.visible_id is None else self.visible_id
            env[VISIBILITY_VARIABLE[self.device.kind]] = visible
        if self.device.kind == "cuda":
            # Discovery numbers GPUs as NVML and nvidia-smi do (PCI bus order); CUDA's own
            # default order is "fastest first", so without this an index can name another GPU.
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        if self.cpu_threads is not None:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                env[var] = str(self.cpu_threads)
        return env


@dataclass(frozen=True)
class DeviceStatus:
    """What discovery and monitoring read from one device at one moment; None: unknown."""

    device: Device
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    utilization_pct: float | None = None
    temperature_c: float | None = None
    cpu_cores: int | None = None  # CPU only: logical cores this process may run on

    @property
    def memory_free_bytes(self) -> int | None:
        if self.memory_total_bytes is None or self.memory_used_bytes is None:
            return None
        return max(0, self.memory_total_bytes - self.memory_used_bytes)
