"""The live streams of ``vidshard serve``: one :class:`StreamManager` on the service's
shared pool, the streams kept in the store, their records fanned out.

The job service starts the runner once its pool is up (streams a stopped server left live
are placed again then) and stops it before the pool goes (the streams stay live in the
store, for the next start). The manager's threads hand statuses and records here; this
never waits on them: records go to the stream's event subscribers and webhook queues,
and store writes to the runner's own thread (a state change at once, counts every
:data:`PERSIST_INTERVAL_S`), which also ends expired streams (``job_ttl_s`` after they
stopped or failed, with their files).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from vidshard.errors import VidshardError
from vidshard.streams.manager import StreamExists, StreamManager, StreamNotFound, StreamView
from vidshard.streams.options import StreamOptions
from vidshard.streams.types import StreamRecord
from vidshard.tasks.options import stored_params

from ..auth import Principal, job_owner
from ..errors import Conflict, NotFound, clipped
from ..security import AccessDenied
from ..store import JobRecord
from ..store_errors import StoreUnavailable
from ..stream_store import FAILED, STOPPED, StoredStream, StreamStore
from .checks import StreamChecks, scrub
from .fanout import RECORD, STATUS, Event, Hub, Subscription
from .recordings import Recordings
from .served import Counts, LiveStream, Served, Write, status_payload
from .webhook import WebhookSender

if TYPE_CHECKING:
    from ..jobs import JobService

logger = logging.getLogger(__name__)

PERSIST_INTERVAL_S = 5.0  # a live stream's counts are written this often
LOOP_S = 1.0  # the runner's thread writes what waits at least this often
JANITOR_INTERVAL_S = 30.0
STREAMS_FOLDER = "streams"  # in the output root: one folder per stream
STOPPED_REASON = "stopped by request"


class StreamRunner:
    """Add, watch and stop the service's live streams (thread-safe)."""

    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs
        self.settings = jobs.settings
        self.store = StreamStore(jobs.store)
        self.checks = StreamChecks(self.settings)
        self.hub = Hub(self.settings.stream_events_queue)
        self.recordings = Recordings(jobs, self.store, self.checks)
        self._served: dict[str, Served] = {}
        self._lock = threading.Lock()
        self._manager: StreamManager | None = None
        self._writes: dict[str, Write] = {}
        self._leaving: set[str] = set()  # ended by their host: to take off the manager
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = False

    @property
    def streams_dir(self) -> Path:
        return self.settings.outputs_dir / STREAMS_FOLDER

    @property
    def manager(self) -> StreamManager:
        if self._manager is None:
            raise Conflict("the stream service is not running")
        return self._manager

    # --- life cycle (the job service calls these) --------------------------------------

    def start(self) -> None:
        """Open the streams' tables, start the manager on the pool, place again the
        streams the last server left live."""
        self.store.create_all()
        self._stopping.clear()
        self.hub = Hub(self.settings.stream_events_queue)
        self._manager = StreamManager(
            self.jobs.pool,
            per_slot_limit=self.settings.streams_per_slot,
            on_record=self._on_record,
            on_status=self._on_status,
            monitor=self.jobs.monitor,
        )
        self._thread = threading.Thread(target=self._loop, name="streams-store", daemon=True)
        self._thread.start()
        self.started = True
        restored = self._restore()
        if restored:
            logger.info("placed %d stream(s) again that were live at the last stop", restored)

    def stop(self) -> None:
        """Stop the streams and the manager; they stay live in the store (placed again at
        the next start). Event clients are told nothing more comes."""
        if not self.started:
            return
        self._stopping.set()
        self.hub.close()
        self.manager.close()
        with self._lock:
            hooks = [s.webhook for s in self._served.values() if s.webhook is not None]
        for hook in hooks:
            hook.close(wait_s=0.1)
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._write_pending()
        self.started = False

    def fetch(self, record: JobRecord, folder: Path, abort: threading.Event) -> Path | None:
        """A job's input when it is a window of a live stream (see :mod:`.recordings`)."""
        return self.recordings.fetch(record, folder, abort)

    def hang_up(self) -> None:
        """The server is going: end every event stream now, so that no client holds up
        the shutdown."""
        self.hub.close()

    # --- the API -----------------------------------------------------------------------

    def add(
        self, url: str, model: str | None, params: dict[str, object], principal: Principal
    ) -> LiveStream:
        """Check a new stream, store it and place it; its view (state connecting)."""
        source = self.checks.source(url)
        options = self.checks.options(params, model)
        recipe = self.checks.recipe(options)
        with self._lock:
            running = sum(1 for served in self._served.values() if not served.is_final)
        if running >= self.settings.max_streams:
            raise Conflict(
                f"the server runs its most streams already ({self.settings.max_streams}, "
                "max_streams): stop one first"
            )
        stream_id = uuid.uuid4().hex
        output_dir = self.streams_dir / stream_id
        record = self.store.add(
            StoredStream(
                id=stream_id,
                url=source.url,
                params=stored_params(options),
                output_dir=str(output_dir),
                owner=job_owner(principal),
            )
        )
        served = self._serve(record, options)
        try:
            self.manager.add(
                source.url, options, recipe, stream_id=stream_id, output_dir=output_dir
            )
        except BaseException:  # never placed: the client is told, nothing stays
            self._forget(served)
            raise
        return self.live(served)

    def get(self, stream_id: str, principal: Principal) -> LiveStream:
        """A stream ``principal`` may see (another key's is not found)."""
        with self._lock:
            served = self._served.get(stream_id)
            if served is not None:
                if not principal.owns(served.record.owner):
                    raise NotFound(f"no stream {clipped(stream_id)}")
                return served.live()
        record = self.store.get(stream_id)
        if record is None or not principal.owns(record.owner):
            raise NotFound(f"no stream {clipped(stream_id)}")
        return LiveStream(record)

    def list_streams(self, principal: Principal) -> list[LiveStream]:
        """The streams ``principal`` may see (an admin: every stream), oldest first."""
        records = self.store.list(None if principal.admin else principal.name)
        with self._lock:
            return [
                self._served[r.id].live() if r.id in self._served else LiveStream(r)
                for r in records
            ]

    def running(self) -> list[LiveStream]:
        """The streams this process placed, every owner's (for the metrics)."""
        with self._lock:
            return [served.live() for served in self._served.values()]

    def stop_stream(self, stream_id: str, principal: Principal) -> LiveStream:
        """Stop a live stream for good (DELETE); its files stay until ``job_ttl_s``."""
        shown = self.get(stream_id, principal)
        with self._lock:
            served = self._served.get(stream_id)
            if served is None or served.is_final:
                state = served.record.state if served is not None else shown.record.state
                raise Conflict(f"stream {stream_id} has {state} already")
            if served.stopping:
                raise Conflict(f"stream {stream_id} is being stopped")
            served.stopping = True
        try:  # stored first: a stream the store cannot stop keeps running (503)
            ended = self.store.end(stream_id, STOPPED, STOPPED_REASON)
        except StoreUnavailable:
            with self._lock:
                served.stopping = False
            raise
        view: StreamView | None = None
        with contextlib.suppress(StreamNotFound):
            view = self.manager.remove(stream_id)
        with self._lock:
            if view is not None:
                served.view = view
            live = self._finish(served, STOPPED, STOPPED_REASON, stored=ended is not None)
        self._announce(served, live)
        return self.get(stream_id, principal)

    def rebalance(self, principal: Principal) -> list[tuple[str, str, str]]:
        if not principal.admin:
            raise AccessDenied("rebalancing the streams takes an admin key")
        return self.manager.rebalance()

    def subscribe(
        self, stream_id: str, principal: Principal, loop: asyncio.AbstractEventLoop
    ) -> tuple[Subscription, LiveStream]:
        """A subscription to a stream's events, and the stream as it is now."""
        live = self.get(stream_id, principal)
        subscription = self.hub.subscribe(stream_id, loop)
        if live.record.is_final:
            subscription.close()
        return subscription, live

    # --- what the manager reports ----------------------------------------------------------

    def _on_status(self, view: StreamView) -> None:
        if self._stopping.is_set():
            return  # the manager is closing: the streams stay live in the store
        with self._lock:
            served = self._served.get(view.stream_id)
            if served is None or served.is_final:
                return
            served.view = view
            if served.stopping:  # the DELETE writes and tells its final state
                return
            current = served.current()
            if view.state.is_final:  # failed (or a file that ended): by its host
                live = self._finish(served, current.state, current.reason)
                self._leaving.add(view.stream_id)
            else:
                live = None
                changed = self._persist_live(served, current)
        if live is not None:
            self._announce(served, live)
        elif changed:
            status = json.dumps(status_payload(served.live()))
            self.hub.publish(view.stream_id, Event(STATUS, status))

    def _persist_live(self, served: Served, current: StoredStream) -> bool:
        """Under the lock: store a live stream's row when its state changed or its counts
        are due; whether the state changed."""
        now = time.monotonic()
        shown = (current.state, current.reason, current.slot)
        changed = shown != served.published
        served.published = shown
        if changed or now - served.persisted_s >= PERSIST_INTERVAL_S:
            served.persisted_s = now
            self._queue_write(current.id, Write(_row_fields(current)))
        return changed

    def _on_record(self, record: StreamRecord) -> None:
        with self._lock:
            served = self._served.get(record.stream_id)
            if served is None or served.is_final:
                return
            hook = served.webhook
        watched = self.hub.watched(record.stream_id)
        if hook is None and not watched:
            return
        payload = record.to_json()
        if hook is not None:
            hook.push(payload)
        if watched:
            self.hub.publish(record.stream_id, Event(RECORD, json.dumps(payload)))

    # --- internals --------------------------------------------------------------------

    def live(self, served: Served) -> LiveStream:
        with self._lock:
            return served.live()

    def _serve(self, record: StoredStream, options: StreamOptions) -> Served:
        """Keep ``record`` as a stream this process runs, its webhook started."""
        hook = None
        if options.webhook_url is not None:
            hook = WebhookSender(
                record.id,
                options.webhook_url,
                batch=options.webhook_batch,
                interval_s=options.webhook_interval_s,
                capacity=self.settings.webhook_queue,
                hosts=self.checks.webhook_hosts,
            ).start()
        served = Served(record, Counts.of(record), hook)
        with self._lock:
            self._served[record.id] = served
        return served

    def _finish(
        self, served: Served, state: str, reason: str, *, stored: bool = False
    ) -> LiveStream:
        """Under the lock: it ended here. Shown final at once and stored by the runner's
        thread (its final state, unless ``stored`` already: then its last counts)."""
        counts = served.counts()
        now = time.time()
        served.record = counts.on(
            replace(served.current(), state=state, reason=reason, state_since=now, ended_at=now)
        )
        served.view = None
        # The final write replaces any write of its live state still waiting.
        write = Write(counts.fields(), None if stored else (state, reason))
        self._writes[served.record.id] = write
        self._wake.set()
        return served.live()

    def _announce(self, served: Served, live: LiveStream) -> None:
        """Outside the lock: its webhook ends, its event clients get the last status."""
        if served.webhook is not None:
            served.webhook.close(wait_s=0.0)
        last = Event(STATUS, json.dumps(status_payload(live)))
        self.hub.publish(live.record.id, last, last=True)
        logger.info("stream %s %s: %s", live.record.id, live.record.state, live.record.reason)

    def _forget(self, served: Served) -> None:
        """A stream that was never placed: no trace of it stays."""
        with self._lock:
            self._served.pop(served.record.id, None)
        if served.webhook is not None:
            served.webhook.close(wait_s=0.0)
        try:
            self.store.delete(served.record.id)
        except StoreUnavailable:
            logger.warning("stream %s was not placed and stays in the store", served.record.id)

    def _restore(self) -> int:
        """Place again the streams stored live; one that cannot be (its model or URL is
        no longer allowed) fails with the reason."""
        placed = 0
        for record in self.store.live():
            try:
                source = self.checks.source(record.url)
                options = self.checks.options(record.params)
                recipe = self.checks.recipe(options)
            except VidshardError as exc:
                reason = f"not placed again after the restart: {scrub(str(exc), record.url)}"
                self.store.end(record.id, FAILED, reason)
                logger.warning("stream %s: %s", record.id, reason)
                continue
            served = self._serve(record, options)
            output_dir = Path(record.output_dir)
            try:
                self.manager.add(
                    source.url, options, recipe, stream_id=record.id, output_dir=output_dir
                )
            except (VidshardError, StreamExists) as exc:
                with self._lock:
                    live = self._finish(
                        served, FAILED, f"not placed again after the restart: {exc}"
                    )
                self._announce(served, live)
                continue
            placed += 1
        return placed

    def _queue_write(self, stream_id: str, write: Write) -> None:
        """Under the lock: a write for the runner's thread."""
        waiting = self._writes.get(stream_id)
        self._writes[stream_id] = waiting.merge(write) if waiting is not None else write

    def _loop(self) -> None:
        next_clean_s = time.monotonic() + JANITOR_INTERVAL_S
        while not self._stopping.is_set():
            self._wake.wait(LOOP_S)
            self._wake.clear()
            try:
                self._write_pending()
                self._take_off_leaving()
                if time.monotonic() >= next_clean_s:
                    next_clean_s = time.monotonic() + JANITOR_INTERVAL_S
                    self.expire()
            except StoreUnavailable:  # logged by the store; the next round tries again
                pass
            except Exception:
                logger.exception("stream bookkeeping failed")

    def _write_pending(self) -> None:
        with self._lock:
            writes, self._writes = self._writes, {}
        for stream_id, write in writes.items():
            try:
                if write.end is not None:
                    state, reason = write.end
                    self.store.end(stream_id, state, reason, **write.fields)
                elif write.fields:  # a live state never overwrites a final one
                    self.store.update(stream_id, only_live="state" in write.fields, **write.fields)
            except StoreUnavailable:
                with self._lock:  # kept for the next round, under what came since
                    newer = self._writes.get(stream_id)
                    self._writes[stream_id] = write.merge(newer) if newer else write
                raise

    def _take_off_leaving(self) -> None:
        """Streams their host ended (failed): the manager need not keep them."""
        with self._lock:
            leaving, self._leaving = self._leaving, set()
        for stream_id in leaving:
            with contextlib.suppress(StreamNotFound):
                self.manager.remove(stream_id)

    def expire(self, now: float | None = None) -> int:
        """Remove the streams that ended more than ``job_ttl_s`` ago, with their files;
        and the recordings of jobs that are gone."""
        cutoff = (time.time() if now is None else now) - self.settings.job_ttl_s
        removed = 0
        for record in self.store.ended_before(cutoff):
            shutil.rmtree(record.output_dir, ignore_errors=True)
            removed += self.store.delete(record.id)
            with self._lock:
                self._served.pop(record.id, None)
        self.store.forget_orphan_recordings()
        return removed


def _row_fields(record: StoredStream) -> dict[str, object]:
    """What a live stream's row is updated with."""
    return {
        "state": record.state,
        "reason": record.reason,
        "slot": record.slot,
        "state_since": record.state_since,
        "frames_received": record.frames_received,
        "frames_processed": record.frames_processed,
        "frames_dropped": record.frames_dropped,
        "reconnects": record.reconnects,
        "failovers": record.failovers,
    }
