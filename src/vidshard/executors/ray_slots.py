"""The ``--devices`` text over a cluster's nodes: which slots, on which node.

Pure (no Ray): :class:`ClusterNode` is what the Ray executor reads from ``ray.nodes()``.
In a cluster an item may name its node, ``ADDRESS/ITEM`` (``10.0.0.7/cuda:0-3``,
``10.0.0.7/cpu:2``); without one:

- ``all``: every accelerator of every node; a cluster without any gets CPU slots, as
  many per node as one machine would (:func:`~vidshard.devices.spec.default_cpu_slots`);
- ``cuda`` / ``npu``: every device of that kind, on every node;
- ``cpu:N``: N CPU slots spread over the nodes in turn, never more on a node than the
  CPUs it offers Ray (each CPU slot reserves one);
- an index (``0``, ``cuda:1``) names no node, so it is refused with the nodes to choose from.

Nodes come in a fixed order (the head first, then by address), and slots in spec order,
so the same spec on the same cluster gives the same slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vidshard.devices.spec import default_cpu_slots, parse_device_spec
from vidshard.devices.types import Device, DeviceSlot
from vidshard.errors import DeviceError


@dataclass(frozen=True)
class ClusterNode:
    """One live node as Ray reports it."""

    node_id: str
    address: str
    cpus: int
    gpus: int = 0
    npus: int = 0
    head: bool = False

    def devices(self) -> list[Device]:
        found = [Device("cuda", i, name="GPU", node=self.address) for i in range(self.gpus)]
        found += [Device("npu", i, name="NPU", node=self.address) for i in range(self.npus)]
        return [*found, Device("cpu", 0, name="CPU", node=self.address)]


def order_nodes(nodes: Sequence[ClusterNode]) -> list[ClusterNode]:
    """The head first, then by address (numerically for IPv4)."""

    def key(node: ClusterNode) -> tuple[bool, tuple[int, ...], str]:
        parts = node.address.split(".")
        numeric = tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else ()
        return (not node.head, numeric, node.address)

    return sorted(nodes, key=key)


def cluster_slots(
    spec: str, nodes: Sequence[ClusterNode], workers_per_device: int = 1
) -> list[DeviceSlot]:
    """The slots ``spec`` names on ``nodes`` (see the module grammar)."""
    if workers_per_device < 1:
        raise DeviceError(f"workers per device must be at least 1, got {workers_per_device}")
    ordered = order_nodes(nodes)
    if not ordered:
        raise DeviceError("the Ray cluster has no live node")
    if not spec.strip():
        raise DeviceError("device spec is empty (expected e.g. 'all', 'cuda', 'cpu:4')")
    by_address = {node.address: node for node in ordered}
    placed: list[Device] = []
    for raw in spec.split(","):
        item = raw.strip().lower()
        if not item:
            raise DeviceError(f"device spec {spec!r}: empty item (expected items between commas)")
        where, slash, rest = item.rpartition("/")
        if slash:
            node = by_address.get(where.strip())
            if node is None:
                raise DeviceError(
                    f"device spec {spec!r}: no live node {where.strip()!r} "
                    f"(nodes: {', '.join(by_address)})"
                )
            placed += _on_node(spec, rest.strip(), node)
        else:
            placed += _over_cluster(spec, item, ordered)
    placed = [device for device in placed for _ in range(workers_per_device)]
    return _numbered(spec, placed, by_address)


def _on_node(spec: str, item: str, node: ClusterNode) -> list[Device]:
    """One item on one node: the single-machine grammar over that node's devices."""
    slots = parse_device_spec(item, node.devices(), cpu_count=max(1, node.cpus))
    return [slot.device for slot in slots]


def _over_cluster(spec: str, item: str, nodes: list[ClusterNode]) -> list[Device]:
    head, colon, arg = item.partition(":")
    head, arg = head.strip(), arg.strip()
    if head == "all" and not colon:
        accelerators = [d for n in nodes for d in n.devices() if d.kind != "cpu"]
        if accelerators:
            return accelerators
        return [  # a node that offers Ray no CPU (a head kept for scheduling) gets none
            d
            for n in nodes
            if n.cpus > 0
            for d in n.devices()
            for _ in range(default_cpu_slots(n.cpus))
        ]
    if head in ("cuda", "npu", "gpu") and not colon:
        kind = "cuda" if head == "gpu" else head
        found = [d for n in nodes for d in n.devices() if d.kind == kind]
        if not found:
            raise DeviceError(f"device spec {spec!r}: no {kind} devices in the cluster")
        return found
    if head == "cpu":
        count = 1 if not colon else _count(spec, arg)
        return _spread_cpu(spec, count, nodes)
    example = f"{nodes[0].address}/{item}"
    raise DeviceError(
        f"device spec {spec!r}: {item!r} names no node; in a cluster give its node, e.g. "
        f"{example!r} (nodes: {', '.join(n.address for n in nodes)}), or use "
        "'all', 'cuda', 'npu' or 'cpu:N'"
    )


def _count(spec: str, arg: str) -> int:
    if not (arg.isascii() and arg.isdigit()) or int(arg) < 1:
        raise DeviceError(f"device spec {spec!r}: expected cpu:N with N >= 1, got 'cpu:{arg}'")
    return int(arg)


def _spread_cpu(spec: str, count: int, nodes: list[ClusterNode]) -> list[Device]:
    """``count`` CPU slots over the nodes in turn, at most one per CPU a node offers."""
    free = {node.address: node.cpus for node in nodes}
    total = sum(free.values())
    if count > total:
        raise DeviceError(
            f"device spec {spec!r}: {count} CPU slots, and the cluster offers {total} CPU(s) "
            f"({', '.join(f'{n.address}: {n.cpus}' for n in nodes)})"
        )
    placed: list[Device] = []
    while len(placed) < count:
        for node in nodes:
            if len(placed) < count and free[node.address] > 0:
                free[node.address] -= 1
                placed.append(Device("cpu", 0, name="CPU", node=node.address))
    return placed


def _numbered(
    spec: str, placed: list[Device], by_address: dict[str, ClusterNode]
) -> list[DeviceSlot]:
    """Slot ids 0..n-1; a CPU slot's torch threads: its node's CPUs over its CPU slots.
    Each CPU slot reserves one of its node's CPUs, so a node offers at most that many."""
    cpu_slots: dict[str, int] = {}
    for device in placed:
        if device.kind == "cpu":
            cpu_slots[device.node] = cpu_slots.get(device.node, 0) + 1
    for address, count in cpu_slots.items():
        if count > by_address[address].cpus:
            raise DeviceError(
                f"device spec {spec!r}: {count} CPU slots on {address}, which offers "
                f"{by_address[address].cpus} CPU(s) to Ray (each CPU slot reserves one)"
            )
    slots = []
    for slot_id, device in enumerate(placed):
        threads = None
        if device.kind == "cpu":
            cpus = by_address[device.node].cpus
            threads = max(1, cpus // cpu_slots[device.node])
        slots.append(DeviceSlot(slot_id, device, cpu_threads=threads))
    return slots
