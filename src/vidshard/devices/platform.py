"""Discovery: which devices this machine has, and how full and busy they are.

Nothing here creates a CUDA or NPU context: the coordinator must stay free of one, or
forked workers break and device memory is held for nothing. NVIDIA GPUs are read through
NVML (``pynvml``, the ``nvidia`` extra) or ``nvidia-smi``; Ascend NPUs through ``npu-smi
info``. torch and torch_npu are last resorts and only their device count is asked, never
a call that initialises the runtime.

Indices are system-wide (NVML / PCI bus order for CUDA, logical device id for Ascend).
A visibility variable already set in this process (``CUDA_VISIBLE_DEVICES=2,3``) narrows
what is reported to those devices, under their system-wide indices.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import psutil

from vidshard.devices.smi import nvidia_smi_argv, parse_npu_smi_info, parse_nvidia_smi_csv
from vidshard.devices.types import VISIBILITY_VARIABLE, Device, DeviceKind, DeviceStatus

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 10.0  # a GPU in a bad state can hang nvidia-smi
CPU_SAMPLE_S = 0.1  # the CPU's load is measured over at least this long
KIND_ORDER: dict[str, int] = {"cuda": 0, "npu": 1, "cpu": 2}

CommandRunner = Callable[[Sequence[str], float], str]
Which = Callable[[str], str | None]


class Platform(Protocol):
    """One source of devices. ``statuses`` returns [] when the platform has none."""

    @property
    def kind(self) -> DeviceKind: ...

    def statuses(self) -> list[DeviceStatus]: ...


def run_command(argv: Sequence[str], timeout_s: float) -> str:
    """Run a tool and return its stdout; a non-zero exit or a hang raises."""
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(
            f"{argv[0]} exited with {done.returncode}, expected 0"
            + (f": {detail[0]}" if detail else "")
        )
    return done.stdout


def available_cpu_count() -> int:
    """Logical cores this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _import_optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _visible_tokens(environ: Mapping[str, str], kind: str) -> list[str] | None:
    """The visibility variable's entries in this process; None when it is unset."""
    value = environ.get(VISIBILITY_VARIABLE[kind])
    if value is None:
        return None
    return [token.strip() for token in value.split(",") if token.strip()]


def _is_visible(index: int, uuid: str | None, tokens: list[str] | None) -> bool:
    if tokens is None:
        return True
    return any(
        token == str(index) or (uuid is not None and len(token) > 4 and uuid.startswith(token))
        for token in tokens
    )


def _reading(read: Callable[..., Any], *args: Any) -> Any:
    """One NVML reading; None where the GPU does not support it."""
    try:
        return read(*args)
    except Exception as exc:
        log.debug("NVML %s failed: %s", getattr(read, "__name__", read), exc)
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_row(nvml: Any, index: int) -> tuple[DeviceStatus, str | None]:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = _reading(nvml.nvmlDeviceGetMemoryInfo, handle)
    rates = _reading(nvml.nvmlDeviceGetUtilizationRates, handle)
    sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
    temperature = _reading(nvml.nvmlDeviceGetTemperature, handle, sensor)
    memory_total_bytes = int(memory.total) if memory is not None else None
    name = _text(_reading(nvml.nvmlDeviceGetName, handle)) or "NVIDIA GPU"
    device = Device("cuda", index, name=name, memory_total_bytes=memory_total_bytes)
    status = DeviceStatus(
        device,
        memory_total_bytes=memory_total_bytes,
        memory_used_bytes=int(memory.used) if memory is not None else None,
        utilization_pct=float(rates.gpu) if rates is not None else None,
        temperature_c=float(temperature) if temperature is not None else None,
    )
    return status, _text(_reading(nvml.nvmlDeviceGetUUID, handle))


def read_nvml(nvml: Any) -> list[tuple[DeviceStatus, str | None]] | None:
    """Every GPU NVML sees; None when NVML cannot start (no driver)."""
    try:
        nvml.nvmlInit()
    except Exception as exc:
        log.debug("NVML unavailable: %s", exc)
        return None
    try:
        return [_nvml_row(nvml, index) for index in range(nvml.nvmlDeviceGetCount())]
    finally:
        nvml.nvmlShutdown()


def torch_nvml_device_count() -> int:
    """GPU count through torch's own NVML probe (no CUDA init); -1 when unknown.

    Only tried where the driver's device node exists, so CPU machines never import torch.
    """
    if not os.path.exists("/dev/nvidiactl"):
        return -1
    torch = _import_optional("torch")
    count = getattr(getattr(torch, "cuda", None), "_raw_device_count_nvml", None)
    return int(count()) if callable(count) else -1


class CudaPlatform:
    """NVIDIA GPUs: NVML, else nvidia-smi, else torch's NVML-based count (no readings)."""

    kind: DeviceKind = "cuda"

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        which: Which = shutil.which,
        run: CommandRunner = run_command,
        nvml_count: Callable[[], int] = torch_nvml_device_count,
        timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> None:
        self._environ = environ
        self._which = which
        self._run = run
        self._nvml_count = nvml_count
        self._timeout_s = timeout_s

    def statuses(self) -> list[DeviceStatus]:
        tokens = _visible_tokens(os.environ if self._environ is None else self._environ, "cuda")
        return [
            status
            for status, uuid in self._rows()
            if _is_visible(status.device.index, uuid, tokens)
        ]

    def _rows(self) -> list[tuple[DeviceStatus, str | None]]:
        nvml = _import_optional("pynvml")
        if nvml is not None and (rows := read_nvml(nvml)) is not None:
            log.debug("cuda discovery: NVML, %d GPUs", len(rows))
            return rows
        executable = self._which("nvidia-smi")
        if executable is not None:
            rows = parse_nvidia_smi_csv(self._run(nvidia_smi_argv(executable), self._timeout_s))
            log.debug("cuda discovery: nvidia-smi, %d GPUs", len(rows))
            return rows
        count = self._nvml_count()
        return [
            (DeviceStatus(Device("cuda", index, name="NVIDIA GPU")), None) for index in range(count)
        ]


def torch_npu_device_count() -> int:
    """NPU count through torch_npu (heavy import; the count does not initialise a device)."""
    if importlib.util.find_spec("torch_npu") is None:
        return 0
    torch_npu = importlib.import_module("torch_npu")
    return int(torch_npu.npu.device_count())


class AscendPlatform:
    """Huawei Ascend NPUs: ``npu-smi info``, else torch_npu's device count (no readings).

    torch_npu's device properties are not read: they initialise the runtime and open a
    context on a device, which the coordinator must not hold.
    """

    kind: DeviceKind = "npu"

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        which: Which = shutil.which,
        run: CommandRunner = run_command,
        npu_count: Callable[[], int] = torch_npu_device_count,
        timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> None:
        self._environ = environ
        self._which = which
        self._run = run
        self._npu_count = npu_count
        self._timeout_s = timeout_s

    def statuses(self) -> list[DeviceStatus]:
        tokens = _visible_tokens(os.environ if self._environ is None else self._environ, "npu")
        return [status for status in self._all() if _is_visible(status.device.index, None, tokens)]

    def _all(self) -> list[DeviceStatus]:
        executable = self._which("npu-smi")
        if executable is not None:
            statuses = parse_npu_smi_info(self._run([executable, "info"], self._timeout_s))
            log.debug("npu discovery: npu-smi, %d NPUs", len(statuses))
            return statuses
        count = self._npu_count()
        return [DeviceStatus(Device("npu", index, name="Ascend NPU")) for index in range(count)]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def _cpu_temperature_c() -> float | None:
    read = getattr(psutil, "sensors_temperatures", None)  # not on every OS
    if read is None:
        return None
    try:
        sensors = read()
    except Exception:
        return None
    for chip in ("coretemp", "k10temp", "zenpower", "cpu_thermal", "acpitz"):
        readings = [entry.current for entry in sensors.get(chip, []) if entry.current]
        if readings:
            return float(max(readings))
    return None


def busy_pct(before: Any, after: Any) -> float:
    """The busy share of CPU time between two ``psutil.cpu_times()`` readings, in
    percent, counted as ``psutil.cpu_percent`` counts it (idle and iowait are idle;
    Linux's guest time is already inside user and nice)."""
    deltas = type(after)._make(max(0.0, a - b) for a, b in zip(after, before, strict=True))
    guest_s = getattr(deltas, "guest", 0.0) + getattr(deltas, "guest_nice", 0.0)
    total_s = float(sum(deltas) - guest_s)
    if total_s <= 0:
        return 0.0
    idle_s = float(deltas.idle + getattr(deltas, "iowait", 0.0))
    return round(min(100.0, max(0.0, 100.0 * (total_s - idle_s) / total_s)), 1)


class CpuLoad:
    """The CPU's load between readings, whichever thread asks.

    The first reading waits until :data:`CPU_SAMPLE_S` has passed since this object was
    made, so a one-shot ``vidshard devices`` shows a measured figure; a reading asked for
    sooner than that after the previous one repeats the previous figure.
    """

    def __init__(
        self,
        *,
        cpu_times: Callable[[], Any] = psutil.cpu_times,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        sample_s: float = CPU_SAMPLE_S,
    ) -> None:
        self._cpu_times, self._clock, self._sleep = cpu_times, clock, sleep
        self._sample_s = sample_s
        self._lock = threading.Lock()
        self._last_s, self._last_times = clock(), cpu_times()
        self._last_pct: float | None = None

    def read_pct(self) -> float:
        with self._lock:
            wait_s = self._sample_s - (self._clock() - self._last_s)
            if wait_s > 0:
                if self._last_pct is not None:
                    return self._last_pct
                self._sleep(wait_s)
            now_times = self._cpu_times()
            self._last_pct = busy_pct(self._last_times, now_times)
            self._last_s, self._last_times = self._clock(), now_times
            return self._last_pct


class CpuPlatform:
    """The host CPU: one device, with cores, memory and load from psutil."""

    kind: DeviceKind = "cpu"

    def __init__(self, load: CpuLoad | None = None) -> None:
        self._load = load or CpuLoad()

    def statuses(self) -> list[DeviceStatus]:
        memory = psutil.virtual_memory()
        device = Device("cpu", 0, name=_cpu_name(), memory_total_bytes=int(memory.total))
        status = DeviceStatus(
            device,
            memory_total_bytes=int(memory.total),
            memory_used_bytes=int(memory.total - memory.available),
            utilization_pct=self._load.read_pct(),
            temperature_c=_cpu_temperature_c(),
            cpu_cores=available_cpu_count(),
        )
        return [status]


@dataclass
class FakePlatform:
    """A platform reporting the devices it is given: for tests, and for machines without them.

    ``error``, when set, is raised by :meth:`statuses` (a platform whose tool fails).
    """

    kind: DeviceKind
    devices: Sequence[Device | DeviceStatus] = field(default_factory=list)
    error: Exception | None = None

    def __post_init__(self) -> None:
        for entry in self.devices:
            device = entry.device if isinstance(entry, DeviceStatus) else entry
            if device.kind != self.kind:
                raise ValueError(f"FakePlatform({self.kind!r}) given a {device.kind} device")

    @classmethod
    def of(
        cls, kind: DeviceKind, count: int, *, memory_total_bytes: int | None = None
    ) -> FakePlatform:
        """``count`` devices of ``kind``, indices 0..count-1."""
        devices = [
            Device(kind, index, name=f"fake {kind}", memory_total_bytes=memory_total_bytes)
            for index in range(count)
        ]
        return cls(kind, devices)

    def statuses(self) -> list[DeviceStatus]:
        if self.error is not None:
            raise self.error
        return [
            entry
            if isinstance(entry, DeviceStatus)
            else DeviceStatus(entry, memory_total_bytes=entry.memory_total_bytes)
            for entry in self.devices
        ]


def default_platforms() -> list[Platform]:
    return [CudaPlatform(), AscendPlatform(), CpuPlatform()]


def discover_devices(platforms: Sequence[Platform] | None = None) -> list[DeviceStatus]:
    """Every accelerator found, then the CPU (always present), in kind then index order.

    A platform that fails is logged and skipped: one broken tool must not hide the rest.
    """
    found: dict[str, DeviceStatus] = {}
    for platform in default_platforms() if platforms is None else platforms:
        try:
            statuses = platform.statuses()
        except Exception as exc:
            log.warning("%s discovery failed, skipping it: %s", platform.kind, exc)
            continue
        for status in statuses:
            found.setdefault(status.device.label, status)
    if "cpu" not in found:
        cpu = Device("cpu", 0, name="CPU")
        found["cpu"] = DeviceStatus(cpu, cpu_cores=available_cpu_count())
    return sorted(found.values(), key=lambda s: (KIND_ORDER[s.device.kind], s.device.index))
