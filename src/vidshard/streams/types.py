"""What a stream is, as the coordinator and the workers exchange it: small, picklable
records (no frame pixels ever cross a process boundary)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidshard.detection.pipeline import DetectRecipe

from .options import StreamOptions


class StreamState(str, enum.Enum):
    """Where a stream is in its life; each change carries a reason and a time."""

    CONNECTING = "connecting"  # opening the source (first time, or on a new slot)
    LIVE = "live"  # frames arrive and are processed
    RECONNECTING = "reconnecting"  # the source ended, failed or stalled: trying again
    FAILED = "failed"  # gave up (bad URL, or past the reconnect limit): final
    STOPPED = "stopped"  # removed by its user: final

    @property
    def is_final(self) -> bool:
        return self in (StreamState.FAILED, StreamState.STOPPED)


@dataclass(frozen=True)
class StreamSpec:
    """What a worker needs to host one stream: its source, its options, the detect
    recipe its model is built from, and where its files go (JSONL, snapshot)."""

    stream_id: str
    url: str
    options: StreamOptions
    recipe: DetectRecipe
    output_dir: Path | None = None  # None: no JSONL or snapshot files
    generation: int = 0  # times it was placed before (a failover increments it)


@dataclass(frozen=True)
class StreamStatus:
    """A stream as its worker last reported it (sent at each state change and about
    twice a second while it runs)."""

    stream_id: str
    state: StreamState
    reason: str = ""  # why it is in this state ("connection refused", "moved from cpu#1")
    state_since: float = 0.0  # epoch seconds of the last state change
    frames_received: int = 0  # decoded from the source
    frames_processed: int = 0  # through the detector
    frames_dropped: int = 0  # older frames the buffer let go (or max_fps skipped)
    fps: float = 0.0  # frames processed a second, over the last few seconds
    latency_p50_ms: float | None = None  # capture to result
    latency_p95_ms: float | None = None
    reconnects: int = 0
    last_result_at: float | None = None  # epoch seconds
    slot: str | None = None  # the slot hosting it (set by the coordinator)


@dataclass(frozen=True)
class StreamRecord:
    """One processed frame of a stream: its detections, as JSON-ready dicts."""

    stream_id: str
    frame: int  # the frame's number in the stream since it was (re)opened
    pts_s: float | None  # the frame's presentation time in its source, if known
    captured_at: float  # epoch seconds the frame was decoded
    processed_at: float  # epoch seconds its detections were ready
    objects: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    tracker_started: bool = False  # ids start over here (a new slot, or a reconnect)
    slot: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream_id,
            "frame": self.frame,
            "pts_s": self.pts_s,
            "captured_at": self.captured_at,
            "processed_at": self.processed_at,
            "latency_ms": round((self.processed_at - self.captured_at) * 1000.0, 2),
            "objects": list(self.objects),
            "tracker_started": self.tracker_started,
            "slot": self.slot,
        }
