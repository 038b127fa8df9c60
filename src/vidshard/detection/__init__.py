"""Detection and tracking over videos: the pieces that do not need a model.

:class:`Detections` is the one type every detector produces and every tracker, annotator
and sink takes; :mod:`~vidshard.detection.jsonl` writes and reads the results file;
:func:`stitch_segments` joins tracks of overlapping segments; :func:`box_iou` and the RLE
helpers are shared geometry and mask encoding. Nothing here imports torch.
"""

from vidshard.detection.geometry import box_area, box_iou
from vidshard.detection.jsonl import (
    JsonlSink,
    done_paths,
    frame_record,
    iter_records,
    read_done,
    validate_record,
    video_record,
)
from vidshard.detection.rle import mask_to_rle, rle_to_mask, validate_rle
from vidshard.detection.stitch import SegmentTracks, stitch_segments
from vidshard.detection.types import Detections

__all__ = [
    "Detections",
    "JsonlSink",
    "SegmentTracks",
    "box_area",
    "box_iou",
    "done_paths",
    "frame_record",
    "iter_records",
    "mask_to_rle",
    "read_done",
    "rle_to_mask",
    "stitch_segments",
    "validate_record",
    "validate_rle",
    "video_record",
]
