"""The one place that puts pieces back in order (STYLE idea 6)."""

from __future__ import annotations

from pathlib import Path

from vidshard.errors import MediaError


class OrderedMerger:
    """Collects finished pieces by position and releases their paths in order."""

    def __init__(self, piece_count: int) -> None:
        if piece_count < 1:
            raise ValueError("a job has at least one piece")
        self._pieces: list[Path | None] = [None] * piece_count

    def add(self, position: int, path: Path) -> None:
        if not 0 <= position < len(self._pieces):
            raise IndexError(f"piece {position} outside 0..{len(self._pieces) - 1}")
        if self._pieces[position] is not None and self._pieces[position] != path:
            raise MediaError(f"piece {position} arrived twice with different files")
        self._pieces[position] = path

    @property
    def missing(self) -> list[int]:
        return [i for i, p in enumerate(self._pieces) if p is None]

    @property
    def complete(self) -> bool:
        return not self.missing

    def ordered(self) -> list[Path]:
        """All pieces in order; an error naming the gaps if any is missing."""
        missing = self.missing
        if missing:
            raise MediaError(f"cannot join: pieces {missing} are missing")
        return [p for p in self._pieces if p is not None]
