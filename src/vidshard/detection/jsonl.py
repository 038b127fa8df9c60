"""The results file of ``vidshard detect`` / ``vidshard track``: JSON Lines, one video a line.

Schema of one line (a *video record*)::

    {
      "video_path": "clips/a.mp4",     # str: the input as given
      "prompt": "person . dog",        # str or null: the text prompt of open-vocabulary models
      "video_info": {                  # a value may be null when unknown; a failed
                                       # video's info may also miss keys
        "width": 1920, "height": 1080, # int > 0, pixels
        "fps": 29.97,                  # number > 0
        "frames": 300,                 # int >= 0
        "duration": 10.01              # number >= 0, seconds
      },
      "frames": [                      # frames in increasing frame_index
        {
          "frame_index": 0,            # int >= 0, index of the frame in the video
          "pts_time": 0.0,             # number: presentation time in seconds
          "objects": [
            {
              "track_id": 1,           # int, unique in the frame; null when not tracked
              "class": "person",       # str: class name
              "class_id": 0,           # int >= 0
              "score": 0.9312,         # number in [0, 1], 4 decimals
              "box": [12.5, 40.0, 96.25, 310.75],  # x1, y1, x2, y2 in pixels, 2 decimals,
                                                   # x1 <= x2 and y1 <= y2
              "mask": {"size": [1080, 1920], "counts": [43210, 35, 1045, ...]}
                                       # only when masks were asked for: COCO uncompressed
                                       # RLE, column-major, starting with zeros
            }
          ]
        }
      ],
      "error": "cannot decode ..."     # only on a video that failed; its "frames" is []
    }

No other keys appear. Lines are appended whole (one ``write`` each, then ``fsync``), so
several processes can share one file and a crash leaves at most a torn last line, which
readers skip and the next writer removes. A video whose line has an ``"error"`` is not
done: ``--skip-existing`` runs it again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from vidshard.detection.rle import mask_to_rle, validate_rle
from vidshard.detection.types import Detections
from vidshard.errors import OutputError, write_failure

logger = logging.getLogger(__name__)

VIDEO_INFO_KEYS = ("width", "height", "fps", "frames", "duration")
_RECORD_KEYS = frozenset({"video_path", "prompt", "video_info", "frames"})
_FRAME_KEYS = frozenset({"frame_index", "pts_time", "objects"})
_OBJECT_KEYS = frozenset({"track_id", "class", "class_id", "score", "box"})
_TAIL_CHUNK = 1 << 16

# -- records --------------------------------------------------------------------------


def frame_record(
    frame_index: int, pts_time: float, dets: Detections, with_masks: bool
) -> dict[str, Any]:
    """One frame's entry: its objects with rounded boxes and scores, and with
    ``with_masks`` each object's mask as RLE (when ``dets`` has masks)."""
    boxes = dets.boxes.tolist()
    scores = dets.scores.tolist()
    class_ids = dets.class_ids.tolist()
    track_ids: list[int | None] = (
        [None] * len(dets) if dets.track_ids is None else dets.track_ids.tolist()
    )
    objects: list[dict[str, Any]] = []
    for i in range(len(dets)):
        obj: dict[str, Any] = {
            "track_id": track_ids[i],
            "class": dets.class_names[i],
            "class_id": class_ids[i],
            "score": round(scores[i], 4),
            "box": [round(v, 2) for v in boxes[i]],
        }
        if with_masks and dets.masks is not None:
            obj["mask"] = mask_to_rle(dets.masks[i])
        objects.append(obj)
    return {"frame_index": int(frame_index), "pts_time": float(pts_time), "objects": objects}


def video_record(
    video_path: str,
    prompt: str | None,
    video_info: dict[str, Any],
    frames: list[dict[str, Any]],
    error: str | None = None,
) -> dict[str, Any]:
    """One video's line. A failed video has ``error`` set and no frames."""
    if error is not None and frames:
        raise ValueError("video_record: a failed video (error set) must have no frames")
    record: dict[str, Any] = {
        "video_path": video_path,
        "prompt": prompt,
        "video_info": {k: video_info.get(k) for k in VIDEO_INFO_KEYS if k in video_info},
        "frames": frames,
    }
    if error is not None:
        record["error"] = error
    return record


# -- schema check -----------------------------------------------------------------------


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_keys(
    where: str, obj: object, required: frozenset[str], optional: set[str]
) -> dict[str, Any]:
    """``obj`` as a dict with all ``required`` keys and no others than ``optional``."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected an object, got {type(obj).__name__}")
    missing = required - obj.keys()
    if missing:
        raise ValueError(f"{where}: missing key(s) {sorted(missing)}")
    unknown = obj.keys() - required - optional
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(map(str, unknown))}")
    return obj


def _check_video_info(value: object, failed: bool) -> None:
    # A failed video may not have been probed: its info may miss keys.
    required: frozenset[str] = frozenset() if failed else frozenset(VIDEO_INFO_KEYS)
    info = _check_keys("video_info", value, required, set(VIDEO_INFO_KEYS))
    rules = {
        "width": (_is_int, lambda v: v > 0, "an integer > 0"),
        "height": (_is_int, lambda v: v > 0, "an integer > 0"),
        "fps": (_is_number, lambda v: v > 0, "a number > 0"),
        "frames": (_is_int, lambda v: v >= 0, "an integer >= 0"),
        "duration": (_is_number, lambda v: v >= 0, "a number >= 0"),
    }
    for key, v in info.items():
        kind, in_range, expected = rules[key]
        if v is not None and not (kind(v) and in_range(v)):
            raise ValueError(f"video_info.{key}: expected {expected} or null, got {v!r}")


def _check_object(where: str, value: object) -> dict[str, Any]:
    obj = _check_keys(where, value, _OBJECT_KEYS, {"mask"})
    if obj["track_id"] is not None and not _is_int(obj["track_id"]):
        raise ValueError(f"{where}.track_id: expected an integer or null, got {obj['track_id']!r}")
    if not isinstance(obj["class"], str):
        raise ValueError(f"{where}.class: expected a string, got {obj['class']!r}")
    if not (_is_int(obj["class_id"]) and obj["class_id"] >= 0):
        raise ValueError(f"{where}.class_id: expected an integer >= 0, got {obj['class_id']!r}")
    score = obj["score"]
    if not (_is_number(score) and 0 <= score <= 1):
        raise ValueError(f"{where}.score: expected a number in [0, 1], got {score!r}")
    box = obj["box"]
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
        raise ValueError(f"{where}.box: expected 4 numbers [x1, y1, x2, y2], got {box!r}")
    if box[2] < box[0] or box[3] < box[1]:
        raise ValueError(f"{where}.box: expected x1 <= x2 and y1 <= y2, got {box!r}")
    if "mask" in obj:
        try:
            validate_rle(obj["mask"])
        except ValueError as exc:
            raise ValueError(f"{where}.mask: {exc}") from None
    return obj


def _check_frame(where: str, value: object, previous_index: int) -> int:
    frame = _check_keys(where, value, _FRAME_KEYS, set())
    index = frame["frame_index"]
    if not (_is_int(index) and index >= 0):
        raise ValueError(f"{where}.frame_index: expected an integer >= 0, got {index!r}")
    if index <= previous_index:
        raise ValueError(
            f"{where}.frame_index: expected > {previous_index} (the previous frame's), got {index}"
        )
    if not _is_number(frame["pts_time"]):
        raise ValueError(f"{where}.pts_time: expected a finite number, got {frame['pts_time']!r}")
    objects = frame["objects"]
    if not isinstance(objects, list):
        raise ValueError(f"{where}.objects: expected a list, got {type(objects).__name__}")
    seen: set[int] = set()
    for j, item in enumerate(objects):
        track_id = _check_object(f"{where}.objects[{j}]", item)["track_id"]
        if track_id is not None:
            if track_id in seen:
                raise ValueError(
                    f"{where}.objects[{j}].track_id: {track_id} appears twice in the frame"
                )
            seen.add(track_id)
    return int(index)


def validate_record(value: object) -> None:
    """Check one video record against the schema above; ValueError naming the key path
    (``frames[3].objects[0].box: expected 4 numbers ...``) on the first problem."""
    record = _check_keys("record", value, _RECORD_KEYS, {"error"})
    if not (isinstance(record["video_path"], str) and record["video_path"]):
        raise ValueError(f"video_path: expected a non-empty string, got {record['video_path']!r}")
    if record["prompt"] is not None and not isinstance(record["prompt"], str):
        raise ValueError(f"prompt: expected a string or null, got {record['prompt']!r}")
    failed = "error" in record
    if failed and not (isinstance(record["error"], str) and record["error"]):
        raise ValueError(f"error: expected a non-empty string, got {record['error']!r}")
    _check_video_info(record["video_info"], failed)
    frames = record["frames"]
    if not isinstance(frames, list):
        raise ValueError(f"frames: expected a list, got {type(frames).__name__}")
    if failed and frames:
        raise ValueError(f"frames: expected [] on a failed video (error set), got {len(frames)}")
    previous = -1
    for i, frame in enumerate(frames):
        previous = _check_frame(f"frames[{i}]", frame, previous)


# -- writing ----------------------------------------------------------------------------


def encode_record(record: dict[str, Any]) -> bytes:
    """The record's line: compact UTF-8 JSON and a newline (NaN refused)."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text + "\n").encode("utf-8")


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False


def _repair_tail(fd: int, path: Path) -> None:
    """Make the file end with a newline: a crash can leave a torn last line (no newline).
    A tail that is a whole JSON object only lost its newline and gets one; anything else
    is cut back to the last newline. Called with the file locked."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    keep, pos = 0, size
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK)
        newline = os.pread(fd, pos - start, start).rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        pos = start
    if _is_json_object(os.pread(fd, size - keep, keep)):
        os.write(fd, b"\n")
        logger.warning("%s: its last line had no newline; added one", path)
    else:
        os.ftruncate(fd, keep)
        logger.warning("%s: removed a torn last line (%d bytes)", path, size - keep)


class JsonlSink:
    """Appends records to a JSONL file, safely shared by threads and processes.

    Each record is one ``os.write`` of its whole line on an ``O_APPEND`` descriptor, under
    an exclusive ``flock``, then ``fsync``: lines from several writers never interleave,
    and a crash loses at most the line being written. Before every append a torn tail left
    by a crashed writer is repaired, so the file stays valid JSONL. With ``validate`` each
    record is checked against the schema first (debug and tests).
    """

    def __init__(self, path: Path, *, validate: bool = False) -> None:
        self.path = Path(path)
        self._validate = validate
        self._lock = threading.Lock()
        parent = self.path.parent
        if not parent.is_dir():
            raise OutputError(f"cannot write results file {self.path}: {parent} is not a directory")
        if self.path.is_dir():
            raise OutputError(f"cannot write results file {self.path}: it is a directory")
        created = not self.path.exists()
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            self._fd: int | None = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise OutputError(
                f"cannot open results file {self.path}: {exc.strerror or exc}"
            ) from exc
        if created:
            _fsync_dir(parent)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line, durable when this returns."""
        if self._validate:
            validate_record(record)
        line = encode_record(record)
        with self._lock:
            fd = self._fd
            if fd is None:
                raise ValueError(f"JsonlSink({self.path}): write after close")
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self._append(fd, line)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _append(self, fd: int, line: bytes) -> None:
        start = 0
        try:
            _repair_tail(fd, self.path)
            start = os.fstat(fd).st_size
            written = os.write(fd, line)
            while written < len(line):  # a short write (signal, nearly full disk): finish it
                written += os.write(fd, line[written:])
            os.fsync(fd)
        except OSError as exc:
            try:  # leave no torn line behind (we hold the lock: nobody wrote after us)
                os.ftruncate(fd, start)
            except OSError:
                logger.warning("%s: could not remove a partly written line", self.path)
            failure = write_failure(exc, f"results file {self.path}")
            if failure is None:
                raise
            raise failure from exc

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable too (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- reading ----------------------------------------------------------------------------


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete, valid record of a results file, in file order. A torn last line
    (no newline: a crash) is skipped quietly, an invalid line with a warning. A missing
    file has no records."""
    try:
        with Path(path).open("rb") as handle:
            yield from _parse_lines(handle, path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"cannot read results file {path}: {exc.strerror or exc}") from exc


def _parse_lines(lines: Iterable[bytes], path: Path) -> Iterator[dict[str, Any]]:
    for number, raw in enumerate(lines, start=1):
        try:
            record = json.loads(raw)
            validate_record(record)
        except ValueError as exc:
            if raw.endswith(b"\n"):
                logger.warning("%s:%d: skipped an invalid line: %s", path, number, exc)
            else:
                logger.debug("%s:%d: skipped a torn last line: %s", path, number, exc)
            continue
        yield record


def read_done(path: Path) -> dict[str, dict[str, Any]]:
    """``video_path`` → its record, for every video with a successful record. A video
    whose only records have an ``"error"`` is not done; of several successful records
    the last one wins."""
    done: dict[str, dict[str, Any]] = {}
    for record in iter_records(path):
        if "error" not in record:
            done[record["video_path"]] = record
    return done


def done_paths(path: Path, include_failed: bool = False) -> set[str]:
    """The videos with a record, for ``--skip-existing``; failed ones only with
    ``include_failed`` (by default they are run again)."""
    return {
        record["video_path"]
        for record in iter_records(path)
        if include_failed or "error" not in record
    }
