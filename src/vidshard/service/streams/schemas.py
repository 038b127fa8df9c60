"""The JSON shapes of ``/v1/streams``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vidshard.streams.options import StreamOptions
from vidshard.tasks.options import request_schema_model

StreamStateName = Literal["connecting", "live", "reconnecting", "failed", "stopped"]


def _raw_params(value: Any) -> dict[str, Any]:
    """The params as sent: the stream's options model validates them."""
    if not isinstance(value, dict):
        raise ValueError("expected an object of the stream's options")
    return value


class StreamRequest(BaseModel):
    """POST /v1/streams: a live source, the model that reads it, and its options."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=4096,
        description="rtsp://, rtmp://, http(s):// (HLS too), or a file inside the input roots",
        examples=["rtsp://camera.local:554/stream1"],
    )
    model: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="the detector: a model in the server's model_dirs (yolo11n.pt, "
        "detector.py:Class) or a YOLO config (yolo11n.yaml); or params.model",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="the stream's options")

    _params = field_validator(
        "params",
        mode="plain",
        json_schema_input_type=request_schema_model(StreamOptions, "StreamParams"),
    )(_raw_params)


class Latency(BaseModel):
    """Capture to result, over the last few seconds."""

    p50: float | None
    p95: float | None


class StreamFile(BaseModel):
    name: str
    url: str
    bytes: int


class WebhookInfo(BaseModel):
    url: str = Field(description="without credentials")
    sent: int = Field(description="records the receiver took")
    dropped: int = Field(description="records dropped while the receiver was slow or down")
    pending: int = Field(description="records waiting")
    failures: int = Field(description="POSTs that failed (each was retried)")
    last_error: str | None


class StreamInfo(BaseModel):
    """GET /v1/streams/{id}."""

    id: str
    url: str = Field(description="without credentials")
    model: str
    state: StreamStateName
    reason: str = Field(description="why it is in this state")
    slot: str | None = Field(description="the slot hosting it (null: waiting for one)")
    fps: float = Field(description="frames processed a second")
    frames_received: int
    frames_processed: int
    frames_dropped: int
    latency_ms: Latency
    reconnects: int
    failovers: int = Field(description="times it moved off a slot that died")
    created_at: float = Field(description="epoch seconds")
    state_since: float = Field(description="epoch seconds")
    ended_at: float | None
    last_result_at: float | None
    owner: str | None = Field(description="the name of the API key that added it")
    params: dict[str, Any]
    events_url: str = Field(description="Server-Sent Events: its records and status changes")
    snapshot_url: str | None = Field(description="its latest annotated frame, once there is one")
    files: list[StreamFile] = Field(description="its results, JSON Lines")
    webhook: WebhookInfo | None


class StreamList(BaseModel):
    streams: list[StreamInfo]
    total: int


class StreamMove(BaseModel):
    stream: str
    from_slot: str
    to_slot: str


class RebalanceResult(BaseModel):
    moves: list[StreamMove]
