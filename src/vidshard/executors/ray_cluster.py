"""A pool whose slots are Ray actors on a cluster's nodes: ``--executor ray``.

Everything a pool does (the fair queue, pinned units, supervision, restarts, quarantine,
job handles) is :class:`~.local.LocalExecutor`'s; only where a worker runs differs. Each
slot has an actor (:class:`~.ray_host.SlotHost`) holding Ray's GPU or NPU resource (or a
CPU) on its node; the actor starts the worker there with the same entry point as on one
machine, and the coordinator talks to it over one TCP connection the actor relays. A
node's slots are reserved together by one placement group (``STRICT_PACK``), so a pool
gets all of a node's slots or waits; a device group's ranks are chosen on one node.

Failures read as they do locally: the connection ends when the worker, its actor or its
node dies (``ActorDiedError``, ``ActorUnavailableError`` end the exit watch too), the
unit is lost and requeued, and the slot's actor is started again; a slot whose node Ray
marked dead is quarantined with every other slot of that node.

Workers read and write the job's files themselves, so :meth:`RayExecutor.check_storage`
has each node show that it sees them before any work starts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import signal
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from vidshard import errors
from vidshard.devices.types import DeviceSlot, DeviceStatus

from .base import EventSink, Recipe
from .local import LocalExecutor, Supervision
from .ray_slots import ClusterNode, cluster_slots, order_nodes
from .slot import SlotWorker

logger = logging.getLogger(__name__)

RESERVE_TIMEOUT_S = 120.0  # a node's placement group: reserved, or the cluster is full
RESERVE_POLL_S = 0.5  # how often a reservation in progress looks for an abort
CALL_TIMEOUT_S = 30.0  # an actor's answer to a quick call
NODE_POLL_S = 0.5  # while an actor starts: how often its node's liveness is read
READING_TIMEOUT_S = 2.0  # device readings (the service's /v1/devices): unknown after this
_RAY_RESOURCE = {"cuda": "GPU", "npu": "NPU"}


class RayExecutor(LocalExecutor):
    """A :class:`LocalExecutor` whose workers run on a Ray cluster's nodes.

    ``address``: ``"auto"`` (the cluster this machine belongs to), ``host:port`` (its
    head), or None: a Ray started here for this pool, stopped with it. A Ray the caller
    had connected already is used as it is and left connected.
    """

    def __init__(self, address: str | None = None, supervision: Supervision | None = None):
        super().__init__(supervision)
        self.address = address
        self._ray: Any = None
        self._owns_connection = False
        self._hosts: dict[str, _Host] = {}  # slot label -> its actor
        self._groups: dict[str, Any] = {}  # node address -> its placement group
        self._nodes: dict[str, ClusterNode] = {}

    # -- the cluster ---------------------------------------------------------------

    def _connect(self) -> Any:
        if self._ray is not None:
            return self._ray
        try:
            import ray
        except ImportError:
            raise errors.ConfigError(
                "the ray executor needs Ray: pip install 'vidshard[ray]'"
            ) from None
        if not ray.is_initialized():
            # ray.init makes SIGTERM a sys.exit; the CLI's SIGTERM stops like Ctrl-C
            # (finished segments kept for a resume), so the handler before it is put back
            on_term = signal.getsignal(signal.SIGTERM) if _main_thread() else None
            try:
                ray.init(
                    # "local": a new Ray here, never one this machine ran before (ray.init()
                    # with no address would join the last cluster it finds on record)
                    address=self.address or "local",
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    include_dashboard=False if self.address is None else None,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "a local Ray"
                raise errors.ConfigError(f"cannot connect to Ray at {where}: {exc}") from None
            finally:
                if on_term is not None:
                    signal.signal(signal.SIGTERM, on_term)
            self._owns_connection = True
        self._ray = ray
        return ray

    def cluster_nodes(self) -> list[ClusterNode]:
        """The live nodes, the head first."""
        ray = self._connect()
        nodes = []
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            resources = node.get("Resources", {})
            nodes.append(
                ClusterNode(
                    node_id=node["NodeID"],
                    address=node["NodeManagerAddress"],
                    cpus=int(resources.get("CPU", 0)),
                    gpus=int(resources.get("GPU", 0)),
                    npus=int(resources.get("NPU", 0)),
                    head="node:__internal_head__" in resources,
                )
            )
        return order_nodes(nodes)

    def node_alive(self, address: str) -> bool:
        """Whether Ray counts ``address`` alive (True when it cannot say: the wait goes on)."""
        self.check_open()
        try:
            nodes = self._ray.nodes()
        except Exception:
            logger.debug("ray.nodes() failed", exc_info=True)
            return True
        return any(n.get("Alive") and n["NodeManagerAddress"] == address for n in nodes)

    def check_open(self) -> None:
        """A :class:`WorkerError` once the pool is closing: nothing new is started."""
        if self._closing.is_set() or self._ray is None:
            raise errors.WorkerError("the pool is closing")

    def resolve_slots(self, spec: str, workers_per_device: int = 1) -> list[DeviceSlot]:
        return cluster_slots(spec, self.cluster_nodes(), workers_per_device)

    # -- the pool --------------------------------------------------------------------

    def start(self, slots: Sequence[DeviceSlot], model: Recipe | None, on_event: EventSink) -> None:
        self._connect()
        self._nodes = {node.address: node for node in self.cluster_nodes()}
        try:
            self._reserve(slots)
            super().start(slots, model, on_event)
        except BaseException:
            self._release_cluster()
            raise

    def _reserve(self, slots: Sequence[DeviceSlot]) -> None:
        """One ``STRICT_PACK`` placement group per node holding that node's slots."""
        from ray.util.placement_group import placement_group

        by_node: dict[str, list[DeviceSlot]] = {}
        for slot in slots:
            if slot.device.node not in self._nodes:
                raise errors.DeviceError(f"slot {slot.label} names no live node of the cluster")
            by_node.setdefault(slot.device.node, []).append(slot)
        per_device = _slots_per_device(slots)
        for address, node_slots in by_node.items():
            bundles = [{**_resources(s, per_device), f"node:{address}": 0.001} for s in node_slots]
            group = placement_group(bundles, strategy="STRICT_PACK", name="")
            self._groups[address] = group
            for index, slot in enumerate(node_slots):
                self._hosts[slot.label] = _Host(self, slot, group, index, per_device)
        waits = {address: group.ready() for address, group in self._groups.items()}
        ready: list[Any] = []
        deadline = time.monotonic() + RESERVE_TIMEOUT_S
        while len(ready) < len(waits) and time.monotonic() < deadline:
            if self._closing.is_set():  # the job was refused meanwhile (abort_start)
                raise errors.WorkerError("the pool is closing")
            ready, _ = self._ray.wait(
                list(waits.values()), num_returns=len(waits), timeout=RESERVE_POLL_S
            )
        for address, ref in waits.items():
            if ref not in ready:
                raise errors.DeviceError(
                    f"the cluster could not reserve {len(by_node[address])} slot(s) on "
                    f"{address} in {RESERVE_TIMEOUT_S:.0f} s (used by other jobs?)"
                )

    def _new_worker(self, slot: DeviceSlot, model: Recipe | None, sink: EventSink) -> SlotWorker:
        return SlotWorker(slot, model, sink, launcher=self._hosts[slot.label].launch)

    def node_lost(self, address: str) -> None:
        """Ray marked ``address`` dead: quarantine every device of it."""
        devices = {w.slot.device.label for w in self._workers if w.slot.device.node == address}
        for device in sorted(devices):
            self._quarantine(device, f"its node {address} is gone (Ray marked it dead)")

    def shutdown(self) -> None:
        super().shutdown()
        for thread in self._threads:  # a slot starting an actor sees the pool closing
            thread.join(timeout=2 * NODE_POLL_S + 1.0)
        self._release_cluster()

    def _release_cluster(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for host in self._hosts.values():
            host.discard()
        from ray.util.placement_group import remove_placement_group

        for group in self._groups.values():
            try:
                remove_placement_group(group)
            except Exception:  # the cluster is gone already
                logger.debug("placement group not removed", exc_info=True)
        self._hosts.clear()
        self._groups.clear()
        if self._owns_connection:
            ray.shutdown()
            self._owns_connection = False
        self._ray = None

    # -- storage and monitoring ------------------------------------------------------

    def check_storage(self, read: Sequence[str], write: Sequence[str]) -> None:
        """Each node (one actor of it) reads every input and finds, then writes in,
        every work folder; a :class:`StorageError` names the first node and path that
        fails, and how many more do."""
        token = secrets.token_hex(8)
        markers: list[Path] = []
        try:
            write_checks = []
            for folder in write:
                marker = Path(folder) / f".vidshard-storage-{token}"
                marker.write_text(token, encoding="utf-8")
                markers.append(marker)
                write_checks.append((str(folder), marker.name, token))
            read_checks = [(str(p), _size(p)) for p in read]
            problems = self._each_node(
                lambda actor: actor.check_paths.remote(read_checks, write_checks)
            )
        finally:
            for marker in markers:
                marker.unlink(missing_ok=True)
        found = [f"node {address} {text}" for address, texts in problems for text in texts]
        if found:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise errors.StorageError(
                f"{found[0]}{more}: inputs, work dirs and outputs must be on storage every "
                "node reads (see docs/cluster.md)"
            )

    def _each_node(self, call: Any) -> list[tuple[str, Any]]:
        """``call(actor)`` on one live actor of each node; (node address, answer) each.
        A node whose actors are all starting again is asked through a new one."""
        by_node: dict[str, Any] = {}
        for host in list(self._hosts.values()):
            actor = host.actor  # read once: a watch may clear it meanwhile
            node = host.slot.device.node
            if actor is not None and host.slot.label in self.live_slots():
                by_node.setdefault(node, actor)
        for host in list(self._hosts.values()):
            node = host.slot.device.node
            if node not in by_node and host.slot.label in self.live_slots():
                by_node[node] = host._actor()  # raises WorkerError if it cannot start
        refs = [(address, call(actor)) for address, actor in by_node.items()]
        answers = []
        for address, ref in refs:
            try:
                answers.append((address, self._ray.get(ref, timeout=CALL_TIMEOUT_S)))
            except Exception as exc:
                raise errors.WorkerError(f"node {address} did not answer: {_short(exc)}") from None
        return answers

    def device_readings(self) -> list[DeviceStatus] | None:
        """Each device's reading, from one of its slots' actors on its node."""
        ray = self._ray
        if ray is None:
            return []
        asked: dict[str, tuple[Any, Any]] = {}  # device label -> (device, answer ref)
        for host in list(self._hosts.values()):
            actor = host.actor
            device = host.slot.device
            if actor is not None and device.label not in asked:
                asked[device.label] = (device, actor.reading.remote(device.kind))
        refs = [ref for _, ref in asked.values()]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=READING_TIMEOUT_S)
        readings = []
        for label, (device, ref) in asked.items():
            found: list[DeviceStatus] = []
            if ref in ready:
                try:
                    found = ray.get(ref)
                except Exception:
                    logger.debug("no reading of %s", label, exc_info=True)
            status = found[0] if found else DeviceStatus(device)
            readings.append(_relabel(status, device))
        return readings


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


_ACTOR_CLASSES: dict[int, Any] = {}


def _actor_class(ray: Any, host_class: type) -> Any:
    """``ray.remote(SlotHost)``, made once per Ray connection."""
    key = id(ray)
    if key not in _ACTOR_CLASSES:
        _ACTOR_CLASSES[key] = ray.remote(host_class)
    return _ACTOR_CLASSES[key]


def _relabel(status: DeviceStatus, device: Any) -> DeviceStatus:
    from dataclasses import replace

    return replace(status, device=device)


def _size(path: str) -> int | None:
    """A file's size, which each node must see alike; None for a folder (or none)."""
    try:
        return None if os.path.isdir(path) else os.stat(path).st_size
    except OSError:
        return None


def _slots_per_device(slots: Sequence[DeviceSlot]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for slot in slots:
        counts[slot.device.label] = counts.get(slot.device.label, 0) + 1
    return counts


def _resources(slot: DeviceSlot, per_device: dict[str, int]) -> dict[str, float]:
    """What a slot's actor reserves: its share of its accelerator, or one CPU."""
    kind = slot.device.kind
    if kind == "cpu":
        return {"CPU": 1.0}
    # Ray keeps resources to 1/10000: a share rounded down, so N shares fit one device
    share = math.floor(10_000 / per_device[slot.device.label]) / 10_000
    return {_RAY_RESOURCE[kind]: share}


class _Host:
    """The coordinator's handle on one slot's actor: start it, (re)start its worker,
    notice it died, start it again, or find its node gone."""

    def __init__(
        self,
        pool: RayExecutor,
        slot: DeviceSlot,
        group: Any,
        bundle: int,
        per_device: dict[str, int],
    ) -> None:
        self.pool = pool
        self.slot = slot
        self.group = group
        self.bundle = bundle
        self.resources = _resources(slot, per_device)
        self.actor: Any = None
        self._lock = threading.Lock()

    def launch(self, slot: DeviceSlot) -> tuple[RemoteProcess, Connection]:
        """Start the slot's worker on its node (the actor first, if it is not up).
        Every failure is a :class:`WorkerError` (a user's error from the node keeps its
        type), so the slot recovers as from any worker that did not start."""
        from .ray_host import connect

        actor: Any = None
        conn: Connection | None = None
        try:
            self.pool.check_open()
            actor = self._actor()
            ref = actor.start.remote(slot, list(sys.path))
            address, key, pid, generation = self._await(ref, "starting its worker", actor)
            conn = connect(tuple(address), key, CALL_TIMEOUT_S)
            return RemoteProcess(self, actor, generation, pid), conn
        except BaseException as exc:
            if conn is not None:
                conn.close()
            raise self._as_error(exc, actor) from None

    def _as_error(self, exc: BaseException, actor: Any) -> BaseException:
        label = self.slot.label
        cause = getattr(exc, "cause", None)  # a task error: what the actor raised
        if isinstance(cause, errors.VidshardError):  # a user's error, one line
            return type(cause)(_short(cause).partition(": ")[2])
        if isinstance(exc, errors.VidshardError):
            return exc
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit
            return exc
        ray = self.pool._ray
        if ray is not None and isinstance(exc, ray.exceptions.RayError):
            self.lost(actor)
            return errors.WorkerError(f"the actor of {label} failed: {_short(exc)}")
        if isinstance(exc, OSError | EOFError):
            return errors.WorkerError(f"cannot reach the worker of {label}: {exc}")
        return errors.WorkerError(f"{label}: {type(exc).__name__}: {exc}")

    def _actor(self) -> Any:
        with self._lock:
            if self.actor is not None:
                return self.actor
        node = self.slot.device.node
        if not self.pool.node_alive(node):
            self.pool.node_lost(node)
            raise errors.WorkerError(f"node {node} is gone (Ray marked it dead)")
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from .ray_host import SlotHost

        ray = self.pool._ray
        kind = self.slot.device.kind
        options: dict[str, Any] = {
            "num_cpus": self.resources.get("CPU", 0.0),
            "num_gpus": self.resources.get("GPU", 0.0),
            "max_concurrency": 8,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                self.group, placement_group_bundle_index=self.bundle
            ),
        }
        if kind == "npu":
            options["resources"] = {"NPU": self.resources["NPU"]}
        actor = _actor_class(ray, SlotHost).options(**options).remote()
        try:
            self._await(actor.describe.remote(), "starting its actor", actor)
        except BaseException:  # never keep a half-started actor: it holds the slot's share
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
            raise
        with self._lock:
            self.actor = actor
        return actor

    def _await(self, ref: Any, doing: str, actor: Any) -> Any:
        """The answer to ``ref``, reading the node's liveness meanwhile: a node Ray
        marks dead ends the wait (and quarantines the node), so does the pool closing."""
        ray = self.pool._ray
        node = self.slot.device.node
        deadline = time.monotonic() + self.pool.supervision.load_timeout_s
        while time.monotonic() < deadline:
            ready, _ = ray.wait([ref], timeout=NODE_POLL_S)
            if ready:
                return ray.get(ref)
            self.pool.check_open()
            if not self.pool.node_alive(node):
                self.lost(actor)
                self.pool.node_lost(node)
                raise errors.WorkerError(f"node {node} is gone (Ray marked it dead)")
        raise errors.WorkerError(f"{self.slot.label}: no answer {doing} on {node}")

    def lost(self, actor: Any) -> None:
        """``actor`` died or is unreachable: the next launch starts another (a watch of
        an earlier actor never ends a newer one)."""
        with self._lock:
            if actor is None or actor is not self.actor:
                return
            self.actor = None
        if actor is not None:
            try:
                self.pool._ray.kill(actor, no_restart=True)
            except Exception:
                logger.debug("actor of %s not killed", self.slot.label, exc_info=True)

    def kill_worker(self, actor: Any, generation: int) -> None:
        ray = self.pool._ray
        try:
            ray.get(actor.kill_worker.remote(generation), timeout=CALL_TIMEOUT_S)
        except Exception:  # dead or hung: end the actor itself, its worker goes with it
            self.lost(actor)

    def discard(self) -> None:
        self.lost(self.actor)


class RemoteProcess:
    """A worker on a node, as :class:`~.boot.WorkerProcess` shows one on this machine:
    ``sentinel`` becomes readable once it has ended (its actor reported the exit code,
    or Ray reported the actor or its node gone)."""

    def __init__(self, host: _Host, actor: Any, generation: int, pid: int) -> None:
        self.host = host
        self.pid = pid
        self._actor = actor
        self._generation = generation
        self._code: int | None = None
        self._note = ""
        self._ended = threading.Event()
        self.sentinel, writer = os.pipe()
        weakref.finalize(self, os.close, self.sentinel)
        threading.Thread(
            target=self._watch, args=(writer,), name=f"watch-{host.slot.label}", daemon=True
        ).start()

    def _watch(self, writer: int) -> None:
        ray = self.host.pool._ray
        try:
            self._code = ray.get(self._actor.wait_exit.remote(self._generation))
            self._note = f"exit code {self._code}"
        except Exception as exc:  # ActorDiedError, ActorUnavailableError, Ray shut down
            self._note = f"its Ray actor is gone: {type(exc).__name__}"
            self.host.lost(self._actor)
        finally:
            self._ended.set()
            os.close(writer)

    @property
    def exitcode(self) -> int | None:
        return self._code

    def is_alive(self) -> bool:
        return not self._ended.is_set()

    def exit_note(self) -> str:
        return self._note or "still running"

    def kill(self) -> None:
        if not self._ended.is_set():
            self.host.kill_worker(self._actor, self._generation)

    def join(self, timeout_s: float | None = None) -> None:
        self._ended.wait(timeout_s)


def _short(exc: BaseException) -> str:
    """One line of a Ray error: its cause's last line (a task error carries the remote
    traceback before it)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:300]
