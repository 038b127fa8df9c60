"""The JSON shapes of the HTTP API (requests validated with ranges, responses documented)."""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vidshard.tasks import default_tasks
from vidshard.tasks.options import request_schema_model

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
MAX_INT64 = 2**63 - 1
"""The largest integer a request may carry to the store: SQLite's and PostgreSQL's are
64-bit signed, and a larger one is an OverflowError deep in the driver."""


def _params_schema() -> Any:
    """For the OpenAPI docs: each registered task's request options (the tasks a package
    registers later are still taken, validated by the task itself)."""
    models = [
        request_schema_model(task.options_type, f"{task.name.title()}Params")
        for task in default_tasks()
    ]
    return Union[tuple(models)] if len(models) > 1 else models[0]  # noqa: UP007


def _raw_params(value: Any) -> dict[str, Any]:
    """The params as sent: the task validates them (its options model, the service's
    defaults), so that a registered task needs nothing here."""
    if not isinstance(value, dict):
        raise ValueError("expected an object of the task's options")
    return value


class JobRequest(BaseModel):
    """POST /v1/jobs. Exactly one input: a server path, an upload id, or a URL.

    ``params`` are the task's options (the schema lists each task's); ``task`` is one of
    the registered tasks (``upscale``, ``detect``, ``track``, and those packages add).
    """

    model_config = ConfigDict(extra="forbid")

    task: str = Field(
        "upscale",
        min_length=1,
        max_length=128,
        description="a registered task",
        json_schema_extra={"examples": list(default_tasks().names())},
    )
    input: str | None = Field(None, min_length=1, max_length=4096, description="server path")
    upload_id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")
    input_url: str | None = Field(None, min_length=1, max_length=4096)
    params: dict[str, Any] = Field(default_factory=dict, description="the task's options")
    priority: int = Field(0, ge=-100, le=100, description="higher runs first")
    output_name: str | None = Field(None, min_length=1, max_length=200)

    _params = field_validator("params", mode="plain", json_schema_input_type=_params_schema())(
        _raw_params
    )

    @model_validator(mode="after")
    def _one_input(self) -> JobRequest:
        given = [n for n in ("input", "upload_id", "input_url") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of input (a server path), upload_id or input_url"
                + (f"; got {', '.join(given)}" if given else "")
            )
        return self


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
    progress_unit: str = Field("frames", description="what frames_done and frames_total count")
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
    node: str = Field("", description="the cluster node it is on; empty on one machine")
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
