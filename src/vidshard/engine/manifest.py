"""A job's on-disk record of its plan and finished units, so a rerun resumes.

The manifest lives in the job's work dir and is rewritten atomically (temp file, then
rename) after every finished unit. A rerun of the same command reuses the stored plan
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vidshard.media.types import MediaInfo
from vidshard.models.registry import ModelRef

logger = logging.getLogger(__name__)
MANIFEST_NAME = "manifest.json"
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

    def save(self, work_dir: Path) -> None:
        path = work_dir / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)

    def mark_finished(self, unit_id: str, work_dir: Path) -> None:
        if unit_id not in self.finished:
            self.finished.append(unit_id)
            self.save(work_dir)

    @classmethod
    def load(cls, work_dir: Path) -> Manifest | None:
        """The stored manifest, or None if there is none or it cannot be read."""
        path = work_dir / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
            return cls(
                fingerprint=str(data["fingerprint"]),
                bounds=[int(b) for b in data["bounds"]],
                overlap_frames=int(data["overlap_frames"]),
                finished=[str(u) for u in data["finished"]],
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable manifest %s: %s", path, exc)
            return None
