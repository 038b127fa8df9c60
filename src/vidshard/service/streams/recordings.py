"""Jobs whose input is a window of a live stream (``/process_video`` with an RTSP URL and
a duration): the window is stored beside the job (:mod:`..stream_store`), and recorded
(:mod:`.recording`) when the job runs, in place of a download, into the job's hidden
``.input/`` folder. The job itself is a file job like any other."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from vidshard.errors import InputError

from ..auth import Principal
from ..schemas import JobRequest
from ..store import JobRecord
from ..store_schema import new_job_id
from ..stream_store import Recording, StreamStore
from .checks import StreamChecks
from .recording import record_window

if TYPE_CHECKING:
    from ..jobs import JobService

RECORDING_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps")
"""Live-stream schemes a recording takes (an ``http(s)`` URL is a download)."""


class Recordings:
    """Submit and fetch recorded windows of live streams."""

    def __init__(self, jobs: JobService, store: StreamStore, checks: StreamChecks) -> None:
        self.jobs = jobs
        self.store = store
        self.checks = checks
        self.settings = jobs.settings

    def submit(
        self,
        url: str,
        duration_s: float,
        request: JobRequest,
        idempotency_key: str | None,
        principal: Principal,
        *,
        transport: str = "tcp",
    ) -> tuple[JobRecord, bool]:
        """Queue ``request`` (its input named by the caller) on ``duration_s`` of ``url``."""
        source = self.checks.source(url, field="video_path")
        scheme = urlsplit(source.url).scheme.lower() if source.kind == "network" else ""
        if scheme not in RECORDING_SCHEMES:
            raise InputError(
                f"video_path: expected a live stream URL ({', '.join(RECORDING_SCHEMES)}) "
                f"to record, got {source.shown!r}"
            )
        limit_s = self.settings.max_recording_s
        if not 0 < duration_s <= limit_s:
            raise InputError(
                f"duration: expected more than 0 and at most {limit_s:g} seconds "
                f"(max_recording_s), got {duration_s:g}"
            )
        job_id = new_job_id()
        self.store.add_recording(Recording(job_id, source.url, duration_s, transport))
        try:
            record, created = self.jobs.submit(
                request,
                idempotency_key,
                principal,
                checked_input=(source.shown, "url", None),
                job_id=job_id,
            )
        except BaseException:
            self.store.delete_recording(job_id)
            raise
        if not created:  # the first job of this idempotency key: it has its own window
            self.store.delete_recording(job_id)
        return record, created

    def fetch(self, record: JobRecord, folder: Path, abort: threading.Event) -> Path | None:
        """The job's window, recorded now (None: the job records nothing)."""
        recording = self.store.recording(record.id)
        if recording is None:
            return None
        return record_window(
            recording.url,
            recording.duration_s,
            folder,
            abort,
            transport=recording.transport,
            open_timeout_s=self.settings.download_connect_timeout_s,
            read_timeout_s=self.settings.download_read_timeout_s,
        )
