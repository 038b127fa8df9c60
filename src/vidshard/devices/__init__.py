"""Devices: what the machine has, the slots workers run on, and how busy they are.

Importing this package imports neither torch nor a vendor library.
"""

from vidshard.devices.monitor import DeviceMonitor, SlotRate, status_to_dict
from vidshard.devices.platform import (
    AscendPlatform,
    CpuPlatform,
    CudaPlatform,
    FakePlatform,
    Platform,
    available_cpu_count,
    default_platforms,
    discover_devices,
)
from vidshard.devices.smi import parse_npu_smi_info, parse_nvidia_smi_csv
from vidshard.devices.spec import (
    default_cpu_slots,
    describe_slots,
    parse_device_spec,
    suggest_layout,
)
from vidshard.devices.types import (
    VISIBILITY_VARIABLE,
    Device,
    DeviceKind,
    DeviceSlot,
    DeviceStatus,
)
from vidshard.devices.visibility import apply_visibility, configure_torch_threads

__all__ = [
    "VISIBILITY_VARIABLE",
    "AscendPlatform",
    "CpuPlatform",
    "CudaPlatform",
    "Device",
    "DeviceKind",
    "DeviceMonitor",
    "DeviceSlot",
    "DeviceStatus",
    "FakePlatform",
    "Platform",
    "SlotRate",
    "apply_visibility",
    "available_cpu_count",
    "configure_torch_threads",
    "default_cpu_slots",
    "default_platforms",
    "describe_slots",
    "discover_devices",
    "parse_device_spec",
    "parse_npu_smi_info",
    "parse_nvidia_smi_csv",
    "status_to_dict",
    "suggest_layout",
]
