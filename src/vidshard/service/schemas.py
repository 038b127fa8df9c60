"""The JSON shapes of the HTTP API (requests validated with ranges, responses documented)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vidshard.media.writer import X26X_PRESETS
from vidshard.models.base import PRECISIONS

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
MAX_INT64 = 2**63 - 1
"""The largest integer a request may carry to the store: SQLite's and PostgreSQL's are
64-bit signed, and a larger one is an OverflowError deep in the driver."""


class UpscaleParams(BaseModel):
    """The options of an ``upscale`` job: those of ``vidshard upscale``, with ranges."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, min_length=1, max_length=1024, description="model name or file (default: server's)"
    )
    scale: int | None = Field(None, ge=1, le=16)
    tile: int | Literal["auto"] | None = Field("auto", description="'auto', null (off) or px")
    tile_overlap: int = Field(16, ge=0, le=512)
    overlap_frames: int = Field(0, ge=0, le=120)
    segment_seconds: float | None = Field(None, gt=0, le=3600)
    codec: Literal["libx264", "libx265"] = "libx264"
    crf: int | None = Field(18, ge=0, le=51)
    preset: str | None = Field("medium", description=f"one of {', '.join(X26X_PRESETS)}")
    precision: str = Field("fp32", description=f"one of {', '.join(PRECISIONS)}")
    batch_size: int | None = Field(None, ge=1, le=256)
    down_sample: bool = Field(
        False, description="shrink frames by the scale first: the output keeps the input's size"
    )

    @model_validator(mode="after")
    def _choices(self) -> UpscaleParams:
        if self.preset is not None and self.preset not in X26X_PRESETS:
            raise ValueError(f"preset: expected one of {', '.join(X26X_PRESETS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}")
        if isinstance(self.tile, int) and not 16 <= self.tile <= 8192:
            raise ValueError("tile: expected 'auto', null, or 16..8192 pixels")
        return self


TRACK_ONLY = ("tracker", "sam2", "masks", "detection_frequency", "overlap_frames")


class DetectParams(BaseModel):
    """The options of a ``detect`` or ``track`` job: those of ``vidshard detect/track``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1,
        max_length=1024,
        description="YOLO weights, a Grounding DINO folder or file.py:Class, in model_dirs",
    )
    prompt: str | None = Field(None, min_length=1, max_length=2000)
    conf: float = Field(0.25, ge=0, le=1)
    iou: float = Field(0.7, gt=0, le=1)
    classes: list[str] | None = Field(None, max_length=1000)
    imgsz: int = Field(640, ge=32, le=8192, multiple_of=32)
    half: bool = False
    batch_size: int = Field(8, ge=1, le=256)
    fps: float | None = Field(None, gt=0, le=1000, description="frames per second to process")
    max_frames: int | None = Field(None, ge=1, le=MAX_INT64)
    annotate: bool = Field(False, description="also write the video with results drawn")
    tracker: Literal["bytetrack", "sam2"] = "bytetrack"
    sam2: str | None = Field(None, min_length=1, max_length=1024, description="SAM2 folder")
    masks: bool = False
    detection_frequency: int = Field(1, ge=1, le=10000)
    overlap_frames: int = Field(8, ge=0, le=120)


def _problems(exc: ValidationError, prefix: str) -> str:
    return "; ".join(
        f"{'.'.join([prefix, *(str(p) for p in e['loc'])])}: {e['msg']}" for e in exc.errors()
    )


class JobRequest(BaseModel):
    """POST /v1/jobs. Exactly one input: a server path, an upload id, or a URL.

    ``params`` are the task's options: :class:`UpscaleParams` for ``upscale``,
    :class:`DetectParams` for ``detect`` and ``track``.
    """

    model_config = ConfigDict(extra="forbid")

    task: Literal["upscale", "detect", "track"] = "upscale"
    input: str | None = Field(None, min_length=1, max_length=4096, description="server path")
    upload_id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")
    input_url: str | None = Field(None, min_length=1, max_length=4096)
    params: dict[str, Any] | UpscaleParams | DetectParams = Field(default_factory=dict)
    priority: int = Field(0, ge=-100, le=100, description="higher runs first")
    output_name: str | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _check(self) -> JobRequest:
        given = [n for n in ("input", "upload_id", "input_url") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of input (a server path), upload_id or input_url"
                + (f"; got {', '.join(given)}" if given else "")
            )
        raw = self.params.model_dump() if isinstance(self.params, BaseModel) else self.params
        kind: type[UpscaleParams | DetectParams] = (
            UpscaleParams if self.task == "upscale" else DetectParams
        )
        try:
            self.params = kind.model_validate(raw)
        except ValidationError as exc:
            raise ValueError(_problems(exc, "params")) from None
        if self.task == "detect":
            extra = [k for k in TRACK_ONLY if k in raw]
            if extra:
                raise ValueError(f"params.{extra[0]}: only for task 'track'")
        return self

    @property
    def upscale_params(self) -> UpscaleParams:
        assert isinstance(self.params, UpscaleParams)
        return self.params

    @property
    def detect_params(self) -> DetectParams:
        assert isinstance(self.params, DetectParams)
        return self.params


class JobFile(BaseModel):
    name: str
    url: str
    bytes: int


class JobResult(BaseModel):
    path: str
    url: str
    bytes: int | None
    files: list[JobFile] = Field(default_factory=list, description="every output file")


class JobView(BaseModel):
    """GET /v1/jobs/{id}."""

    id: str
    task: str
    state: JobState
    priority: int
    progress: float = Field(description="0..1")
    frames_done: int
    frames_total: int | None
    fps: float | None
    queue_position: int | None = Field(description="1 = next to start; null unless queued")
    eta_s: float | None
    created_at: float = Field(description="epoch seconds")
    started_at: float | None
    finished_at: float | None
    input: str
    input_kind: str
    params: dict[str, Any]
    error: str | None
    error_type: str | None
    cancel_requested: bool
    attempts: int
    owner: str | None = Field(None, description="the name of the API key that submitted it")
    result: JobResult | None


class JobList(BaseModel):
    jobs: list[JobView]
    total: int
    limit: int
    offset: int


class UploadView(BaseModel):
    upload_id: str
    filename: str
    bytes: int


class SlotView(BaseModel):
    label: str
    state: str
    model: str | None
    job: str | None
    pid: int | None
    units: int
    frames: int
    fps: float


class DeviceView(BaseModel):
    device: str
    kind: str
    name: str
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    utilization_pct: float | None
    temperature_c: float | None
    quarantined: bool
    fps: float
    slots: list[SlotView]


class ErrorView(BaseModel):
    error: str
    detail: str
