"""The worker's side of one generation rank: a :class:`GroupRankUnit` on its slot.

The rank reports ``("gen_waiting",)`` as soon as its worker takes it and waits for
``gen_join``: the coordinator sends that once every rank of the group holds its slot, so
no rank sits in a rendezvous while another's slot still finishes other work. Then it
joins the process group, builds the runner from ``model.runner``, loads it (reporting
``("gen_loaded", seconds)``) and follows the coordinator's commands until ``gen_close``:

- ``("gen_run", request)``: every rank generates the same request, reporting
  ``("gen_step", request_id, step, total)`` after each step and, at its end,
  ``("gen_done", request_id, result_or_None)`` or
  ``("gen_failed", request_id, type_name, text)``;
- ``("gen_cancel", request_id)``: the request stops at the next step the ranks agree on.

Cancelled and a user's error (a :class:`VidshardError`) end the request, not the rank.
Anything else (a collective that timed out, a peer that died) ends the unit failed: the
group is torn down and rebuilt. The process group is destroyed on the way out.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from vidshard.engine.units import GroupRankUnit, UnitResult
from vidshard.errors import Cancelled, ModelError, VidshardError, WorkerError
from vidshard.generation.types import GenerationRequest

logger = logging.getLogger(__name__)

Send = Callable[[tuple[Any, ...]], None]
POLL_S = 0.1


class RankInbox(Protocol):
    """What the worker's inbox gives a rank: its commands and the pool's stop flags."""

    commands: queue.Queue[tuple[Any, ...]]
    cancel: threading.Event  # the pool cancelled the unit (its group is torn down)
    closing: threading.Event  # the coordinator is gone, or asked the worker to stop


class _Commands:
    """The coordinator's commands for this rank, read on their own thread, so a cancel
    reaches a request while it runs. A command for an earlier unit (its token) is dropped."""

    def __init__(self, inbox: RankInbox, token: object) -> None:
        self._inbox = inbox
        self._token = token
        self._lock = threading.Lock()
        self._stopped: set[str] = set()  # request ids the coordinator cancelled
        self.runs: queue.Queue[GenerationRequest | None] = queue.Queue()  # None: the end
        self.joined = threading.Event()
        self.ended = threading.Event()  # closed, cancelled by the pool, or coordinator gone
        self._thread = threading.Thread(target=self._follow, name="gen-commands", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self.ended.is_set():
            if self._inbox.cancel.is_set() or self._inbox.closing.is_set():
                self.end()
                return
            try:
                command = self._inbox.commands.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if command[-1] != self._token:
                logger.debug(
                    "dropped %s of unit %s (this is %s)", command[0], command[-1], self._token
                )
                continue
            kind = command[0]
            if kind == "gen_join":
                self.joined.set()
            elif kind == "gen_run":
                self.runs.put(command[1])
            elif kind == "gen_cancel":
                with self._lock:
                    self._stopped.add(command[1])
            elif kind == "gen_close":
                self.end()
            else:
                logger.debug("dropped %s: not a generation command", kind)

    def end(self) -> None:
        self.ended.set()
        self.joined.set()
        self.runs.put(None)

    def close(self) -> None:
        """End, and wait for the reading thread: it must not take the next unit's commands."""
        self.end()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def stop_asked(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._stopped or self.ended.is_set()


def serve_rank(
    unit: GroupRankUnit, token: object, inbox: RankInbox, send: Send, device: str
) -> UnitResult:
    """Run one rank until the coordinator closes it (or cancels its unit)."""
    import torch.distributed  # noqa: F401  (before gen_waiting: the rendezvous is then quick)

    started = time.monotonic()
    commands = _Commands(inbox, token)
    try:
        send(("gen_waiting",))
        commands.joined.wait()
        if commands.ended.is_set():
            raise Cancelled(f"{unit.unit_id} was closed before its group formed")
        _join(unit, device)
        try:
            runner = _build_runner(unit, device)
            try:
                send(("gen_loaded", runner.load()))
                _serve_requests(runner, commands, send)
            finally:
                _close_runner(runner)
        finally:
            _leave()
    finally:
        commands.close()
    if inbox.cancel.is_set() or inbox.closing.is_set():
        raise Cancelled(f"{unit.unit_id} was cancelled")
    return UnitResult(unit.unit_id, "", 0, time.monotonic() - started)


def _serve_requests(runner: Any, commands: _Commands, send: Send) -> None:
    while (request := commands.runs.get()) is not None:
        request_id = request.request_id

        def on_step(step: int, total: int, request_id: str = request_id) -> None:
            send(("gen_step", request_id, step, total))

        def should_stop(request_id: str = request_id) -> bool:
            return commands.stop_asked(request_id)

        try:
            result = runner.generate(request, on_step, should_stop)
        except Exception as exc:
            send(("gen_failed", request_id, type(exc).__name__, str(exc)))
            if isinstance(exc, VidshardError) and not isinstance(exc, WorkerError):
                continue  # Cancelled or the user's error: every rank agreed on it
            raise  # a collective failed: this rank, and so its group, is done
        send(("gen_done", request_id, result))


def _build_runner(unit: GroupRankUnit, device: str) -> Any:
    """The runner class named by ``model.runner`` (``module:Class`` or ``file.py:Class``)."""
    from vidshard.models.custom import import_object

    factory = import_object(unit.model.runner)
    if not callable(factory):
        raise ModelError(f"generation runner {unit.model.runner!r} is not a class")
    return factory(unit.model, unit.layout, unit.rank, device)


def _close_runner(runner: Any) -> None:
    try:
        runner.close()
    except Exception:  # the rank ends anyway; the process group goes next
        logger.warning("closing the generation runner failed", exc_info=True)


def _join(unit: GroupRankUnit, device: str) -> None:
    """Join the group's process group (gloo on CPU, nccl on CUDA, hccl on Ascend)."""
    from vidshard.generation.dist import init_group

    _forget_earlier_groups()
    init_group(unit.rank, unit.layout.world, unit.init_method, None, unit.timeout_s, device=device)


def _forget_earlier_groups() -> None:
    """Start this process's next group from a clean slate. torch names a default process
    group by a counter that only destroying a formed group resets: after a rendezvous
    that failed (a peer died or timed out) it stays raised, this process would name its
    next group "1" where fresh peers name theirs "0", and their rendezvous would never
    meet. A group left over (its destruction failed) is destroyed first."""
    import torch.distributed as dist
    from torch.distributed import distributed_c10d

    if dist.is_initialized():
        _leave()
    world = getattr(distributed_c10d, "_world", None)
    if not dist.is_initialized() and world is not None and hasattr(world, "group_count"):
        world.group_count = 0


def _leave() -> None:
    from vidshard.generation.dist import close_group

    try:
        close_group()
    except Exception:  # a broken group: the rank ends anyway
        logger.debug("destroying the process group failed", exc_info=True)
