"""The options of a live stream: one model, read by ``vidshard streams run``, the Python
API and ``POST /v1/streams`` alike (see :mod:`vidshard.tasks.options`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from vidshard.detection.pipeline import DetectRecipe
from vidshard.tasks.base import ModelAccess
from vidshard.tasks.detect import DetectorParams, detector_recipe


class StreamOptions(DetectorParams):
    """How a stream is read, processed and written (the detector's options included:
    ``batch_size`` is the most frames of all a worker's streams in one detector call)."""

    track: Annotated[bool, Field(False, description="Give objects ids across frames (ByteTrack).")]
    max_fps: Annotated[
        float | None,
        Field(None, gt=0, le=240, description="Process at most this many frames a second."),
    ]
    batch_wait_ms: Annotated[
        float,
        Field(
            20.0,
            ge=0,
            le=1000,
            description="How long a batch waits for the other streams' frames once one is in.",
        ),
    ]
    buffer_frames: Annotated[
        int,
        Field(
            2,
            ge=1,
            le=64,
            description="Frames a stream keeps while the detector is busy; a batch takes the "
            "newest and drops the rest.",
        ),
    ]
    transport: Annotated[
        Literal["tcp", "udp"], Field("tcp", description="RTSP transport: tcp or udp.")
    ]
    loop: Annotated[bool, Field(False, description="A file: start again at its end.")]
    realtime: Annotated[
        bool,
        Field(True, description="A file: play at its frame rate (off: as fast as it decodes)."),
    ]
    open_timeout_s: Annotated[
        float, Field(10.0, gt=0, le=300, description="Seconds to open a source.")
    ]
    stall_timeout_s: Annotated[
        float,
        Field(5.0, gt=0, le=300, description="Seconds without a frame before a reconnect."),
    ]
    reconnect_delay_s: Annotated[
        float,
        Field(0.5, ge=0, le=60, description="First wait before a reconnect (it doubles)."),
    ]
    reconnect_max_delay_s: Annotated[
        float, Field(30.0, gt=0, le=3600, description="Longest wait between reconnects.")
    ]
    max_reconnects: Annotated[
        int,
        Field(
            10,
            ge=0,
            le=1_000_000,
            description="Failed reconnects in a row before the stream is failed (0: none).",
        ),
    ]
    rotate_mb: Annotated[
        float, Field(64.0, gt=0, le=1_000_000, description="A JSONL file is closed past this.")
    ]
    rotate_minutes: Annotated[
        float,
        Field(60.0, gt=0, le=10_000_000, description="A JSONL file is closed after this long."),
    ]
    snapshot_interval_s: Annotated[
        float,
        Field(1.0, ge=0, le=3600, description="Seconds between annotated snapshots (0: none)."),
    ]
    webhook_url: Annotated[
        str | None,
        Field(
            None,
            min_length=1,
            max_length=4096,
            description="POST the results here, in batches (JSON list of frames).",
        ),
    ]
    webhook_batch: Annotated[
        int, Field(50, ge=1, le=10_000, description="Most frames in one webhook POST.")
    ]
    webhook_interval_s: Annotated[
        float, Field(1.0, gt=0, le=3600, description="Seconds between webhook POSTs.")
    ]


def stream_recipe(options: StreamOptions, models: ModelAccess) -> DetectRecipe:
    """The detector (and ByteTrack, with ``track``) a stream's worker builds, its model
    files checked now, before the stream is placed."""
    return detector_recipe(options, models, tracker="bytetrack" if options.track else "none")
