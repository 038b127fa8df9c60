"""The endpoints of two older services, mapped onto the same vidshard jobs, so that their
clients keep working: a Celery super-resolution service (``POST /process_video``,
``GET /status/{task_id}``; a live stream's window is recorded first, see
:mod:`..streams.recordings`) and a video-generation service (``POST /video/submit``,
``/video/status``, ``/video/cancel``). Their words for states and fields are translated
here and nowhere else; what vidshard cannot do yet is refused with a clear 422, never
silently ignored.
"""

from __future__ import annotations

import re
import uuid
from pathlib import PurePath
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Body, Depends, Header
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from vidshard.errors import ConfigError, InputError

from ..auth import Principal
from ..errors import NotFound
from ..jobs import JobService, LiveJob
from ..redact import Viewer
from ..schemas import JobRequest
from ..store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED
from ..streams.recordings import RECORDING_SCHEMES
from .deps import Service, Viewing, require_key
from .jobs import media_type
from .streams import Streams

IdempotencyKey = Annotated[str | None, Header(max_length=255)]

celery = APIRouter(tags=["compat: Celery SR service"])
generation = APIRouter(prefix="/video", tags=["compat: video-generation service"])


ModelT = TypeVar("ModelT", bound=BaseModel)


class Unsupported(InputError):
    """A request the older service took that vidshard cannot honour yet (HTTP 422)."""


def _result_url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}/result"


def _submit(
    service: JobService, request: JobRequest, key: str | None, principal: Principal
) -> tuple[LiveJob, bool]:
    record, created = service.submit(request, key, principal)
    return service.get(record.id, principal), created


# --- seed 000: the Celery super-resolution service ------------------------------------------

CeleryState = Literal["PENDING", "STARTED", "SUCCESS", "FAILURE", "REVOKED"]
CELERY_STATES: dict[str, CeleryState] = {
    QUEUED: "PENDING",
    RUNNING: "STARTED",
    SUCCEEDED: "SUCCESS",
    FAILED: "FAILURE",
    CANCELLED: "REVOKED",
}


class ProcessVideoRequest(BaseModel):
    """POST /process_video. Unknown fields are ignored, as the old service did."""

    model_config = ConfigDict(extra="ignore")

    video_path: str = Field(
        min_length=1, max_length=4096, description="server path, or a live stream URL (rtsp://)"
    )
    duration_s: float | None = Field(
        None,
        gt=0,
        validation_alias=AliasChoices("duration_s", "duration"),
        description="with a live stream URL: the seconds of it to record (also 'duration')",
    )
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport of a recording")
    down_sample: bool = Field(
        False,
        description="shrink frames by the model's scale first: the output keeps the input's size",
    )
    model: str | None = Field(None, min_length=1, max_length=1024, description="vidshard extra")
    scale: int | None = Field(None, ge=1, le=16, description="vidshard extra")
    priority: int = Field(0, ge=-100, le=100, description="vidshard extra; higher runs first")


class CelerySubmitView(BaseModel):
    task_id: str
    status: CeleryState


class CeleryResult(BaseModel):
    output_path: str
    video_url: str


class CeleryTaskView(BaseModel):
    """GET /status/{task_id}."""

    task_id: str
    status: CeleryState
    progress: float = Field(description="0..1")
    result: CeleryResult | None
    error: str | None
    queue_position: int | None = Field(description="1 = next to start; null unless queued")


def celery_view(live: LiveJob, viewer: Viewer) -> CeleryTaskView:
    record = live.record
    result = None
    if record.state == SUCCEEDED and record.output_path is not None:
        result = CeleryResult(
            output_path=viewer.file(record.output_path), video_url=_result_url(record.id)
        )
    return CeleryTaskView(
        task_id=record.id,
        status=CELERY_STATES[record.state],
        progress=round(live.progress, 4),
        result=result,
        error=viewer.text(record.error),
        queue_position=live.queue_position,
    )


@celery.post("/process_video", status_code=202, response_model=CelerySubmitView)
def process_video(
    body: ProcessVideoRequest,
    service: Service,
    streams: Streams,
    viewer: Viewing,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Queue an upscale of a server file, or of ``duration`` seconds of a live stream
    (``rtsp://``, ``rtmp://``), recorded when the job starts. A repeat with the same
    ``Idempotency-Key`` returns the first job (200 instead of 202)."""
    params = {"model": body.model, "scale": body.scale, "down_sample": body.down_sample}
    params = {name: value for name, value in params.items() if value is not None}
    stream = _stream_scheme(body.video_path)
    if stream is None:
        if body.duration_s is not None:
            raise Unsupported(
                "duration: only for a live stream URL (rtsp://...): a file is processed whole"
            )
        request = JobRequest(
            task="upscale", input=body.video_path, params=params, priority=body.priority
        )
        live, created = _submit(service, request, idempotency_key, viewer.principal)
    else:
        if body.duration_s is None:
            raise Unsupported(
                f"duration: required with a {stream}:// URL: the seconds of the stream to "
                'record, e.g. {"video_path": "rtsp://camera/stream", "duration": 10}'
            )
        request = JobRequest(
            task="upscale", input_url=body.video_path, params=params, priority=body.priority
        )
        record, created = streams.recordings.submit(
            body.video_path,
            body.duration_s,
            request,
            idempotency_key,
            viewer.principal,
            transport=body.transport,
        )
        live = service.get(record.id, viewer.principal)
    view = CelerySubmitView(task_id=live.record.id, status=CELERY_STATES[live.record.state])
    return JSONResponse(
        view.model_dump(mode="json"),
        status_code=202 if created else 200,
        headers={"Location": f"/status/{live.record.id}"},
    )


def _stream_scheme(video_path: str) -> str | None:
    """The live-stream scheme of ``video_path`` (to record), None for a server path; a
    URL of any other scheme is refused."""
    if "://" not in video_path:
        return None
    scheme = video_path.split("://", 1)[0].lower()
    if scheme in RECORDING_SCHEMES:
        return scheme
    raise Unsupported(
        f"video_path: expected a file path on the server or a live stream URL "
        f"({', '.join(s + '://' for s in RECORDING_SCHEMES)}) with a duration, got a "
        f"{scheme}:// URL (for a download use POST /v1/jobs with input_url)"
    )


@celery.get("/status/{task_id}", response_model=CeleryTaskView)
def task_status(task_id: str, service: Service, viewer: Viewing) -> CeleryTaskView:
    """A task's Celery state, progress and result. Ids are taken with or without dashes."""
    return celery_view(service.get(_job_id(task_id), viewer.principal), viewer)


def _job_id(task_id: str) -> str:
    """A job id from a Celery-style task id (a UUID, dashed or not); else as given."""
    try:
        return uuid.UUID(task_id).hex
    except ValueError:
        return task_id


# --- seed 002: the video-generation service --------------------------------------------------

GenerationState = Literal["InQueue", "InProgress", "Succeed", "Failed", "Cancelled"]
GENERATION_STATES: dict[str, GenerationState] = {
    QUEUED: "InQueue",
    RUNNING: "InProgress",
    SUCCEEDED: "Succeed",
    FAILED: "Failed",
    CANCELLED: "Cancelled",
}

# The fields of the old service's image-to-video request; any of them means "generate".
GENERATE_FIELDS = frozenset(
    {
        "prompt",
        "image_url",
        "image_size",
        "num_frames",
        "guidance_scale",
        "infer_steps",
        "seed",
        "negative_prompt",
        "vae_parallel",
        "ulysses_size",
        "dit_fsdp",
        "t5_fsdp",
        "cfg_size",
        "use_attentioncache",
        "start_step",
        "attentioncache_interval",
        "end_step",
        "sample_solver",
        "sample_shift",
    }
)
REQUEST_ID = re.compile(r"[0-9a-fA-F]{32}")
VIDEO_NAME = re.compile(r"(?P<id>[0-9a-f]{32})(?P<suffix>\.[A-Za-z0-9]{1,8})")


class VideoSubmitRequest(BaseModel):
    """POST /video/submit with a vidshard job in the old service's envelope. Exactly one
    input: ``video_path`` (or its vidshard name ``input``), ``upload_id`` or ``input_url``."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field("upscale", min_length=1, max_length=128, description="a vidshard task")
    video_path: str | None = Field(None, min_length=1, max_length=4096, description="server path")
    input: str | None = Field(None, min_length=1, max_length=4096, description="server path")
    upload_id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")
    input_url: str | None = Field(None, min_length=1, max_length=4096)
    params: dict[str, Any] = Field(default_factory=dict, description="the task's options")
    priority: int = Field(0, ge=-100, le=100, description="higher runs first")
    output_name: str | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_input(self) -> VideoSubmitRequest:
        names = ("video_path", "input", "upload_id", "input_url")
        given = [n for n in names if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of video_path (or input, a server path), upload_id or "
                "input_url" + (f"; got {', '.join(given)}" if given else "")
            )
        return self

    def job_request(self) -> JobRequest:
        return JobRequest(
            task=self.task,
            input=self.video_path if self.video_path is not None else self.input,
            upload_id=self.upload_id,
            input_url=self.input_url,
            params=self.params,
            priority=self.priority,
            output_name=self.output_name,
        )


class RequestIdBody(BaseModel):
    """POST /video/status and /video/cancel."""

    model_config = ConfigDict(extra="forbid")

    requestId: str = Field(max_length=256, description="32 hex digits")

    @property
    def job_id(self) -> str:
        """The job's id; an id of another shape names no job (404, as the old service)."""
        if not REQUEST_ID.fullmatch(self.requestId):
            raise NotFound(f"no request {self.requestId[:64]!r}")
        return self.requestId.lower()


class VideoSubmitView(BaseModel):
    requestId: str


class VideoResults(BaseModel):
    video_url: str
    video_path: str


class VideoStatusView(BaseModel):
    """POST /video/status."""

    status: GenerationState
    reason: str | None
    results: VideoResults | None
    queue_position: int | None = Field(description="1 = next to start; null unless queued")
    progress: float = Field(description="0..1")
    created_at: float = Field(description="epoch seconds")
    updated_at: float = Field(description="epoch seconds")


class VideoCancelView(BaseModel):
    status: GenerationState


def generation_view(live: LiveJob, viewer: Viewer) -> VideoStatusView:
    record = live.record
    results = None
    if record.state == SUCCEEDED and record.output_path is not None:
        output = PurePath(record.output_path)
        results = VideoResults(
            # As the old service gave them: /videos/<id>.mp4, and the file relative to
            # where the server keeps outputs (never an absolute server path).
            video_url=f"/videos/{record.id}{output.suffix}",
            video_path=f"{record.id}/{output.name}",
        )
    return VideoStatusView(
        status=GENERATION_STATES[record.state],
        reason=viewer.text(record.error),
        results=results,
        queue_position=live.queue_position,
        progress=round(live.progress, 4),
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


class GenerationSubmitRequest(BaseModel):
    """POST /video/submit as seed 002 sent it: an image-to-video request, run as a
    vidshard ``generate`` job. One image: ``image_url`` (the seed's), or vidshard's
    ``image_path`` (a server path) or ``upload_id``. Values are checked by the generate
    task, and a problem names the seed's field."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(max_length=4000)
    image_url: str | None = Field(None, min_length=1, max_length=4096)
    image_path: str | None = Field(None, min_length=1, max_length=4096)
    upload_id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")
    image_size: str = Field("1280*720", max_length=20)
    num_frames: int = 81
    guidance_scale: float = 3.0
    infer_steps: int = 30
    seed: int | None = None
    negative_prompt: str | None = Field(None, max_length=4000)
    vae_parallel: bool = False
    ulysses_size: int = 1
    dit_fsdp: bool = False
    t5_fsdp: bool = False
    cfg_size: int = 1
    use_attentioncache: bool = False
    start_step: int = 12
    attentioncache_interval: int = 4
    end_step: int | None = None  # the seed's 37 assumed 40 steps; left out: the last step
    sample_solver: str = Field("unipc", max_length=32)
    sample_shift: float = 5.0
    model: str | None = Field(None, min_length=1, max_length=4096, description="vidshard's")
    priority: int = Field(0, ge=-100, le=100)
    output_name: str | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_image(self) -> GenerationSubmitRequest:
        given = [n for n in ("image_url", "image_path", "upload_id") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of image_url, image_path (a server path) or upload_id"
                + (f"; got {', '.join(given)}" if given else "")
            )
        if self.cfg_size not in (1, 2):
            raise ValueError(f"cfg_size: expected 1 or 2, got {self.cfg_size}")
        return self

    def job_request(self) -> JobRequest:
        params: dict[str, Any] = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt or "",
            "size": self.image_size,
            "frames": self.num_frames,
            "guidance": self.guidance_scale,
            "steps": self.infer_steps,
            "seed": self.seed,
            "vae_parallel": self.vae_parallel,
            "ulysses": self.ulysses_size,
            "fsdp": self.dit_fsdp or self.t5_fsdp,  # vidshard shards both together
            "cfg_parallel": self.cfg_size == 2,
            "attention_cache": self.use_attentioncache,
            "cache_start_step": self.start_step,
            "cache_interval": self.attentioncache_interval,
            "cache_end_step": self.end_step,
            "solver": self.sample_solver,
            "shift": self.sample_shift,
        }
        if self.model is not None:
            params["model"] = self.model
        return JobRequest(
            task="generate",
            input=self.image_path,
            upload_id=self.upload_id,
            input_url=self.image_url,
            params=params,
            priority=self.priority,
            output_name=self.output_name,
        )


# vidshard's option -> the seed's field, for messages about a seed 002 request
SEED_002_NAMES = {
    "negative_prompt": "negative_prompt",
    "size": "image_size",
    "frames": "num_frames",
    "guidance": "guidance_scale",
    "steps": "infer_steps",
    "seed": "seed",
    "vae_parallel": "vae_parallel",
    "ulysses": "ulysses_size",
    "fsdp": "dit_fsdp",
    "cfg_parallel": "cfg_size",
    "attention_cache": "use_attentioncache",
    "cache_start_step": "start_step",
    "cache_interval": "attentioncache_interval",
    "cache_end_step": "end_step",
    "solver": "sample_solver",
    "shift": "sample_shift",
    "prompt": "prompt",
    "model": "model",
}
SEED_002_WORDS = {  # words of check messages that name vidshard's options
    "attention cache start_step": "start_step",
    "attention cache end_step": "end_step",
    "attention cache interval": "attentioncache_interval",
}


def seed_002_message(text: str) -> str:
    """A generate job's problem in the words of seed 002's request."""
    text = re.sub(r"params\.([a-z_]+)", lambda m: SEED_002_NAMES.get(m[1], f"params.{m[1]}"), text)
    for ours, theirs in SEED_002_WORDS.items():
        text = text.replace(ours, theirs)
    return text


def _validated(model: type[ModelT], body: dict[str, Any]) -> ModelT:
    try:
        return model.model_validate(body)
    except ValidationError as exc:  # answered like a body FastAPI validated itself
        raise RequestValidationError(exc.errors(include_url=False)) from None


def _submit_body(body: dict[str, Any]) -> VideoSubmitRequest | GenerationSubmitRequest:
    """The body as a vidshard job: a generation request (any of seed 002's fields, or
    task generate in the envelope), or a job of another task in vidshard's envelope."""
    if GENERATE_FIELDS & body.keys() and "task" not in body:
        return _validated(GenerationSubmitRequest, body)
    return _validated(VideoSubmitRequest, body)


@generation.post("/submit", status_code=202, response_model=VideoSubmitView)
def video_submit(
    body: Annotated[
        dict[str, Any],
        Body(
            description="seed 002's generation request (prompt, image_url, ...), or a "
            "vidshard job in the envelope: task, video_path, params, priority"
        ),
    ],
    service: Service,
    viewer: Viewing,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Queue a job: seed 002's image-to-video request (prompt, image_url, image_size,
    num_frames, ...) as a ``generate`` job, or any task in vidshard's envelope (task,
    video_path, params); a repeat with the same ``Idempotency-Key`` returns the first job
    (200 instead of 202)."""
    parsed = _submit_body(body)
    request = parsed.job_request()
    try:
        live, created = _submit(service, request, idempotency_key, viewer.principal)
    except (ConfigError, InputError) as exc:
        if not isinstance(parsed, GenerationSubmitRequest):
            raise
        exc.args = (seed_002_message(str(exc)),)
        raise
    return JSONResponse(
        VideoSubmitView(requestId=live.record.id).model_dump(mode="json"),
        status_code=202 if created else 200,
    )


@generation.post("/status", response_model=VideoStatusView)
def video_status(body: RequestIdBody, service: Service, viewer: Viewing) -> VideoStatusView:
    """A job's state in the old service's words, with its result once it succeeded."""
    return generation_view(service.get(body.job_id, viewer.principal), viewer)


@generation.post("/cancel", response_model=VideoCancelView)
def video_cancel(body: RequestIdBody, service: Service, viewer: Viewing) -> VideoCancelView:
    """Cancel a queued or running job (409 once it has finished). The state answered is
    the job's own: a running job that has not stopped within the wait is still InProgress."""
    live = service.cancel(body.job_id, principal=viewer.principal)
    return VideoCancelView(status=GENERATION_STATES[live.record.state])


videos = APIRouter(prefix="/videos", tags=["compat: video-generation service"])


@videos.get("/{name}")
def video_file(name: str, service: Service, viewer: Viewing) -> FileResponse:
    """A succeeded job's output as the old service served it: ``/videos/<id>.mp4``."""
    found = VIDEO_NAME.fullmatch(name)
    if found is None:
        raise NotFound(f"no video {name[:64]!r}: expected /videos/<request id>.<suffix>")
    live = service.get(found["id"], viewer.principal)
    output = live.record.output_path
    if live.record.state != SUCCEEDED or output is None:
        raise NotFound(f"no video {name!r}: the request is {GENERATION_STATES[live.record.state]}")
    if PurePath(output).suffix != found["suffix"]:
        raise NotFound(f"no video {name!r}: its file is {found['id']}{PurePath(output).suffix}")
    path = service.result_path(found["id"], principal=viewer.principal)
    return FileResponse(path, media_type=media_type(path), filename=path.name)


router = APIRouter(dependencies=[Depends(require_key)])
router.include_router(celery)
router.include_router(generation)
router.include_router(videos)
