"""What a stream declares about its colour, in FFmpeg's numbers, and the names of those.

Plain data, with no rule and no conversion: :mod:`vidshard.media.types` holds a stream's
:class:`ColourTags`, and :mod:`vidshard.media.colour` reads them (it imports the types,
so the tags live here, below both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# FFmpeg's AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic / AVColorRange.
UNSPECIFIED = 2
RANGE_UNSPECIFIED, RANGE_LIMITED, RANGE_FULL = 0, 1, 2
SPC_RGB, SPC_BT709, SPC_BT470BG, SPC_SMPTE170M, SPC_BT2020_NCL = 0, 1, 5, 6, 9
PRI_BT709, PRI_BT470BG, PRI_SMPTE170M = 1, 5, 6
TRC_BT709, TRC_SMPTE170M = 1, 6

MATRIX_NAMES = {
    0: "rgb",
    1: "bt709",
    2: "unknown",
    4: "fcc",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "ycgco",
    9: "bt2020nc",
    10: "bt2020c",
    11: "smpte2085",
    12: "chroma-derived-nc",
    13: "chroma-derived-c",
    14: "ictcp",
}
PRIMARIES_NAMES = {
    1: "bt709",
    2: "unknown",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "film",
    9: "bt2020",
    10: "smpte428",
    11: "smpte431",
    12: "smpte432",
    22: "ebu3213",
}
TRC_NAMES = {
    1: "bt709",
    2: "unknown",
    4: "gamma22",
    5: "gamma28",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    9: "log100",
    10: "log316",
    11: "iec61966-2-4",
    12: "bt1361e",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    17: "smpte428",
    18: "arib-std-b67",
}


class _Tagged(Protocol):
    colorspace: int
    color_primaries: int
    color_trc: int
    color_range: int


@dataclass(frozen=True)
class ColourTags:
    """What a stream declares about its colour, as FFmpeg numbers it (2, or range 0:
    unspecified)."""

    matrix: int = UNSPECIFIED
    primaries: int = UNSPECIFIED
    trc: int = UNSPECIFIED
    range: int = RANGE_UNSPECIFIED

    @classmethod
    def of(cls, tagged: _Tagged) -> ColourTags:
        """The tags of a decoded frame or a codec context."""
        return cls(
            matrix=int(tagged.colorspace),
            primaries=int(tagged.color_primaries),
            trc=int(tagged.color_trc),
            range=int(tagged.color_range),
        )

    def describe(self) -> str:
        return describe_colour(self.matrix, self.primaries, self.trc, self.range)


def describe_colour(matrix: int, primaries: int, trc: int, range_: int) -> str:
    """``bt709 matrix, bt709 primaries, bt709 transfer, limited range``."""
    return (
        f"{MATRIX_NAMES.get(matrix, f'#{matrix}')} matrix, "
        f"{PRIMARIES_NAMES.get(primaries, f'#{primaries}')} primaries, "
        f"{TRC_NAMES.get(trc, f'#{trc}')} transfer, {range_name(range_)} range"
    )


def range_name(value: int) -> str:
    return {RANGE_LIMITED: "limited", RANGE_FULL: "full"}.get(value, "unknown")
