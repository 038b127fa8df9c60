"""/v1/jobs and /v1/uploads: submit, list, read, cancel, download; upload inputs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse

from ..inputs import TooLarge
from ..jobs import LiveJob
from ..redact import Viewer
from ..schemas import (
    MAX_INT64,
    JobFile,
    JobList,
    JobRequest,
    JobResult,
    JobState,
    JobView,
    UploadView,
)
from .deps import Service, Viewing, require_key

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)], tags=["jobs"])


def job_view(live: LiveJob, viewer: Viewer) -> JobView:
    """A job as ``viewer`` may see it: a non-admin key is shown no server path."""
    record = live.record
    result = None
    if record.state == "succeeded" and record.output_path is not None:
        url = f"/v1/jobs/{record.id}/result"
        try:
            size: int | None = os.path.getsize(record.output_path)
        except OSError:
            size = None
        folder = Path(record.output_path).parent
        files = (
            [
                JobFile(name=f.name, url=f"{url}?name={f.name}", bytes=f.stat().st_size)
                for f in sorted(folder.iterdir())
                if f.is_file() and not f.name.startswith(".")
            ]
            if folder.is_dir()
            else []
        )
        result = JobResult(path=viewer.file(record.output_path), url=url, bytes=size, files=files)
    return JobView(
        id=record.id,
        task=record.task,
        state=record.state,  # type: ignore[arg-type]
        priority=record.priority,
        progress=round(live.progress, 4),
        frames_done=live.frames_done,
        frames_total=live.frames_total,
        progress_unit=live.unit,
        fps=round(live.fps, 2) if live.fps is not None else None,
        queue_position=live.queue_position,
        eta_s=round(live.eta_s, 1) if live.eta_s is not None else None,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        input=viewer.input(record.input_path, record.input_kind),
        input_kind=record.input_kind,
        params=viewer.params(record.params),
        error=viewer.text(record.error),
        error_type=record.error_type,
        cancel_requested=record.cancel_requested,
        attempts=record.attempts,
        owner=record.owner,
        result=result,
    )


@router.post("/jobs", status_code=202, response_model=JobView)
def submit_job(
    body: JobRequest,
    service: Service,
    viewer: Viewing,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    """Queue a job, owned by the key that sends it. With an ``Idempotency-Key`` header, a
    repeat with the same key returns the first job (200 instead of 202)."""
    record, created = service.submit(body, idempotency_key, viewer.principal)
    view = job_view(service.get(record.id, viewer.principal), viewer)
    return JSONResponse(
        view.model_dump(mode="json"),
        status_code=202 if created else 200,
        headers={"Location": f"/v1/jobs/{record.id}"},
    )


@router.get("/jobs", response_model=JobList)
def list_jobs(
    service: Service,
    viewer: Viewing,
    state: Annotated[list[JobState] | None, Query(description="filter; repeatable")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
) -> JobList:
    """Jobs, newest first: the key's own (an admin key's: every job)."""
    states: list[str] | None = list(state) if state else None
    jobs, total = service.list_jobs(states, limit, offset, viewer.principal)
    views = [job_view(j, viewer) for j in jobs]
    return JobList(jobs=views, total=total, limit=limit, offset=offset)


@router.get("/jobs/{job_id}", response_model=JobView)
def get_job(job_id: str, service: Service, viewer: Viewing) -> JobView:
    """One job (404 for another key's job, unless the key is an admin's)."""
    return job_view(service.get(job_id, viewer.principal), viewer)


@router.post("/jobs/{job_id}/cancel", response_model=JobView)
def cancel_job(job_id: str, service: Service, viewer: Viewing) -> JobView:
    """Cancel a queued or running job; a running one stops within a batch, frees its
    slots and leaves no output."""
    return job_view(service.cancel(job_id, principal=viewer.principal), viewer)


MEDIA_TYPES = {
    ".mp4": "video/mp4",
    ".mkv": "video/x-matroska",
    ".mov": "video/quicktime",
    ".jsonl": "application/x-ndjson",
}


def media_type(path: Path) -> str:
    """The Content-Type a result file is served with."""
    return MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")


@router.get("/jobs/{job_id}/result")
def job_result(
    job_id: str,
    service: Service,
    viewer: Viewing,
    name: Annotated[
        str | None, Query(max_length=255, description="another output file of the job")
    ] = None,
) -> FileResponse:
    """The output file of a succeeded job (or, with ``name``, another of its files:
    a detect job's annotated video), streamed."""
    path = service.result_path(job_id, name, viewer.principal)
    return FileResponse(path, media_type=media_type(path), filename=path.name)


@router.post("/uploads", status_code=201, response_model=UploadView)
def upload(file: UploadFile, service: Service, viewer: Viewing) -> UploadView:
    """Upload an input file (multipart ``file``); give its ``upload_id`` to POST /v1/jobs
    (with the same key: an upload belongs to the key that sent it)."""
    upload_id, target = service.new_upload(file.filename or "upload.mp4", viewer.principal)
    limit = service.settings.max_upload_bytes
    size = 0
    try:
        with target.open("wb") as out:
            while chunk := file.file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"upload is over the limit of {limit} bytes")
                out.write(chunk)
    except BaseException:
        shutil.rmtree(target.parent, ignore_errors=True)
        raise
    return UploadView(upload_id=upload_id, filename=target.name, bytes=size)
