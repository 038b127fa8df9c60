"""A job's on-disk record of its plan and finished units, so a rerun resumes.

The manifest lives in the job's work dir: the plan in ``manifest.json``, written once
(temp file, then rename), and the finished units in ``finished.txt``, one line appended
for each, so recording a unit costs the same in a job of ten units or ten thousand (a
rewrite of the whole record after each unit made a long job's bookkeeping quadratic). A
line cut short by a crash mid-append is ignored. A rerun of the same command reuses the stored plan
and skips finished units whose files are all present. The fingerprint covers
everything that changes the output's bits — the input file, the model and its
weights, scale, tiling, precision, batch size, overlap, encoder settings — so a changed
input or option starts over instead of mixing old pieces with new ones. The device
layout is not part of it: the stored plan is reused whatever the slots.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidshard.media.types import MediaInfo
from vidshard.models.registry import ModelRef

logger = logging.getLogger(__name__)
MANIFEST_NAME = "manifest.json"
FINISHED_NAME = "finished.txt"
VERSION = 1


def _file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def fingerprint(info: MediaInfo, model: ModelRef, output_options: dict[str, Any]) -> str:
    """A digest of everything that decides the output's content."""
    video = info.video
    parts: dict[str, Any] = {
        "version": VERSION,
        "input": _file_identity(info.path),
        "frames": video.frame_count,
        "pts": hashlib.sha256(repr(video.pts).encode()).hexdigest(),
        "model": repr(model),
        "options": output_options,
    }
    if model.kind == "file" or (model.kind == "class" and ".py:" in model.target):
        weights = Path(
            model.target.split(".py:")[0] + ".py" if model.kind == "class" else model.target
        )
        if weights.exists():
            parts["model_file"] = _file_identity(weights)
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Manifest:
    fingerprint: str
    bounds: list[int]  # segment boundaries: [0, b1, ..., frame_count]
    overlap_frames: int
    finished: list[str] = field(default_factory=list)  # unit ids, in finishing order
    _recorded: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    _appending: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._recorded = set(self.finished)

    def save(self, work_dir: Path) -> None:
        """Write the plan, and the units finished so far as a new finished list."""
        path = work_dir / MANIFEST_NAME
        data = {
            "fingerprint": self.fingerprint,
            "bounds": self.bounds,
            "overlap_frames": self.overlap_frames,
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        finished = work_dir / FINISHED_NAME
        finished_tmp = finished.with_suffix(".txt.tmp")
        finished_tmp.write_text("".join(f"{unit_id}\n" for unit_id in self.finished))
        os.replace(finished_tmp, finished)  # first: a plan on disk never has a stale list
        os.replace(tmp, path)

    def mark_finished(self, unit_id: str, work_dir: Path) -> None:
        """Record one finished unit: one line appended (once per unit)."""
        if unit_id in self._recorded:
            return
        if not self._appending:  # the first append of this run: after a crash's torn line
            _cut_torn_line(work_dir / FINISHED_NAME)
            self._appending = True
        with (work_dir / FINISHED_NAME).open("a", encoding="utf-8") as out:
            out.write(f"{unit_id}\n")
        self._recorded.add(unit_id)
        self.finished.append(unit_id)

    @classmethod
    def load(cls, work_dir: Path) -> Manifest | None:
        """The stored manifest, or None if there is none or it cannot be read."""
        path = work_dir / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
            finished = [str(u) for u in data.get("finished", [])]  # an older manifest's list
            return cls(
                fingerprint=str(data["fingerprint"]),
                bounds=[int(b) for b in data["bounds"]],
                overlap_frames=int(data["overlap_frames"]),
                finished=finished + [u for u in _finished_lines(work_dir) if u not in finished],
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("ignoring unreadable manifest %s: %s", path, exc)
            return None


def _finished_lines(work_dir: Path) -> list[str]:
    """The unit ids in ``finished.txt``, in order, once each. A last line without its
    newline (cut short by a crash) is not a record (the job's next append cuts it off)."""
    try:
        data = (work_dir / FINISHED_NAME).read_bytes()
    except FileNotFoundError:
        return []
    lines = data[: data.rfind(b"\n") + 1].decode("utf-8", errors="replace").split("\n")
    return list(dict.fromkeys(line for line in lines if line))


def _cut_torn_line(path: Path) -> None:
    """Cut a last line without its newline off ``path``, so the next line appended
    starts a line of its own. Only the job holding the work dir does this (a reader
    meanwhile could see a line mid-append)."""
    try:
        with path.open("r+b") as file:
            data = file.read()
            complete = data.rfind(b"\n") + 1
            if complete < len(data):
                file.truncate(complete)
    except FileNotFoundError:
        return
