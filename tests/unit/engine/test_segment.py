"""The worker-side pipeline: decode → infer → encode, seams, crossfade, output checks.

Everything runs in this process on a small generated clip, encoded losslessly so the
output can be compared with the source frame by frame.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from clips import ClipSpec, write_clip, yuv_of
from vidshard.engine.segment import check_output, crossfade, run_seam, run_segment
from vidshard.engine.units import SeamUnit, SegmentUnit
from vidshard.errors import ConfigError, MediaError, ModelError, VidshardError
from vidshard.media import EncodeSettings, probe, read_frames
from vidshard.media.plan import Segment
from vidshard.media.types import VideoStreamInfo
from vidshard.models import ModelSpec

FRAMES = 24
SIZE_WH = (32, 24)
LOSSLESS = EncodeSettings(crf=0, preset="ultrafast", threads=1)

pytestmark = pytest.mark.timeout(30)  # a pipeline that fails must not hang


class Nearest:
    """Nearest-neighbour upscaling (identity at scale 1); counts its batches."""

    def __init__(
        self,
        scale: int = 1,
        batchable: bool = True,
        fail_at_batch: int | None = None,
        output: Callable[[np.ndarray], object] | None = None,
    ) -> None:
        self.spec = ModelSpec(name="nearest", scale=scale, batchable=batchable)
        self.batch_sizes: list[int] = []
        self._fail_at = fail_at_batch
        self._output = output

    def load(self, device: str) -> None:
        pass

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._fail_at is not None and len(self.batch_sizes) == self._fail_at:
            raise ValueError(f"model failed on batch {self._fail_at}")
        self.batch_sizes.append(len(batch))
        if self._output is not None:
            return self._output(batch)  # type: ignore[return-value]
        s = self.spec.scale
        return batch.repeat(s, axis=1).repeat(s, axis=2)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VideoStreamInfo]:
    # a keyframe every 5 frames: segments start mid-GOP
    path = write_clip(
        tmp_path_factory.mktemp("segment") / "clip.mp4",
        ClipSpec(size_wh=SIZE_WH, frames=FRAMES, gop=5),
    )
    return path, probe(path).video


@pytest.fixture(scope="module")
def source_images(clip: tuple[Path, VideoStreamInfo]) -> list[np.ndarray]:
    path, video = clip
    return [f.image for f in read_frames(path, video, 0, FRAMES)]


def segment(start: int, end: int, k: int = 0) -> Segment:
    return Segment(0, start, end, k, start == 0, end == FRAMES, FRAMES)


def make_unit(
    work: Path,
    clip: tuple[Path, VideoStreamInfo],
    seg: Segment,
    *,
    scale: int = 1,
    batch_size: int = 4,
    settings: EncodeSettings = LOSSLESS,
) -> SegmentUnit:
    path, video = clip
    return SegmentUnit(
        unit_id=f"segment-{seg.start}-{seg.end}",
        source=path,
        video=video,
        segment=seg,
        core_path=work / "core.mp4",
        seam_left_path=work / "left.npy" if seg.seam_left else None,
        seam_right_path=work / "right.npy" if seg.seam_right else None,
        settings=settings,
        scale=scale,
        batch_size=batch_size,
    )


def upscale(image: np.ndarray, s: int) -> np.ndarray:
    return image.repeat(s, axis=0).repeat(s, axis=1)


def decoded_planes(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray() for frame in container.decode(video=0)]


@pytest.mark.parametrize(
    ("seg", "scale", "batch_size", "batchable"),
    [
        # the whole clip, one segment, no seams, batches of 4 (24 = 6 x 4)
        (segment(0, FRAMES), 1, 4, True),
        # a middle segment with 2 context frames each side, x2, a batch size that leaves a rest
        (segment(8, 16, k=2), 2, 5, True),
        # the first segment (a right seam only), a batch larger than the segment
        (segment(0, 8, k=3), 1, 32, True),
        # the last segment (a left seam only), a model that takes one frame at a time
        (segment(16, FRAMES, k=2), 2, 8, False),
    ],
)
def test_segment_writes_its_core_and_seams(
    tmp_path: Path,
    clip: tuple[Path, VideoStreamInfo],
    source_images: list[np.ndarray],
    seg: Segment,
    scale: int,
    batch_size: int,
    batchable: bool,
) -> None:
    _, video = clip
    unit = make_unit(tmp_path, clip, seg, scale=scale, batch_size=batch_size)
    model = Nearest(scale=scale, batchable=batchable)
    reports: list[int] = []
    result = run_segment(unit, model, reports.append)

    read_start, read_end = seg.read_range
    core_start, core_end = seg.core_range
    # the core: exactly its frames, at their own timestamps, pixel for pixel (lossless)
    core = probe(unit.core_path).video
    assert core.pts == video.pts[core_start:core_end]
    assert core.size_wh == (SIZE_WH[0] * scale, SIZE_WH[1] * scale)
    planes = decoded_planes(unit.core_path)
    expected = [
        yuv_of(upscale(source_images[i], scale), "yuv420p", video)
        for i in range(core_start, core_end)
    ]
    assert len(planes) == len(expected)
    assert all(np.array_equal(p, e) for p, e in zip(planes, expected, strict=True))
    # the seam halves: the model's raw outputs over the seam's frames, nothing encoded
    for seam_range, path in (
        (seg.seam_left, unit.seam_left_path),
        (seg.seam_right, unit.seam_right_path),
    ):
        if seam_range is None:
            assert path is None
            continue
        assert path is not None
        halves = np.load(path)
        a, b = seam_range
        assert halves.shape == (b - a, SIZE_WH[1] * scale, SIZE_WH[0] * scale, 3)
        assert halves.dtype == np.uint8
        assert np.array_equal(
            halves, np.stack([upscale(source_images[i], scale) for i in range(a, b)])
        )
    # batching: the model saw every frame read, context included, in batches of the size asked
    size = batch_size if batchable else 1
    assert sum(model.batch_sizes) == read_end - read_start
    assert all(n == size for n in model.batch_sizes[:-1])
    assert 0 < model.batch_sizes[-1] <= size
    # progress counts the segment's own frames only, never its context
    assert sum(reports) == seg.frames
    assert result.frames == read_end - read_start
    assert result.outputs == tuple(
        p for p in (unit.core_path, unit.seam_left_path, unit.seam_right_path) if p
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in result.outputs)


def leftovers(work: Path) -> list[str]:
    return sorted(p.name for p in work.iterdir())


def stage_threads() -> list[str]:
    """Pipeline threads still running: none may outlive run_segment."""
    return [t.name for t in threading.enumerate() if t.name in ("decode", "encode")]


@pytest.mark.parametrize(
    ("model", "error", "match"),
    [
        # the model raises on its first batch, while the decoder waits on a full queue
        (Nearest(fail_at_batch=0), ValueError, "model failed on batch 0"),
        # ... or halfway through, after the encoder has written frames
        (Nearest(fail_at_batch=3), ValueError, "model failed on batch 3"),
        # the model returns the wrong size: a ModelError saying what was expected
        (
            Nearest(output=lambda b: b[:, ::2]),
            ModelError,
            r"expected output \(4, 24, 32, 3\) uint8, got \(4, 12, 32, 3\) uint8",
        ),
    ],
)
def test_model_error_propagates(
    tmp_path: Path,
    clip: tuple[Path, VideoStreamInfo],
    model: Nearest,
    error: type[Exception],
    match: str,
) -> None:
    unit = make_unit(tmp_path, clip, segment(0, FRAMES), batch_size=4)
    with pytest.raises(error, match=match):
        run_segment(unit, model, lambda _n: None)
    assert stage_threads() == []
    assert leftovers(tmp_path) == []  # no core, no partial file


def write_garbage(path: Path) -> Path:
    path.write_bytes(b"not a video" * 100)
    return path


def write_short_clip(path: Path) -> Path:
    # the same picture size, but only 10 of the 24 frames the probe promised
    return write_clip(path, ClipSpec(size_wh=SIZE_WH, frames=10, gop=5))


@pytest.mark.parametrize(
    ("make_source", "match"),
    [
        # the source has gone since it was probed
        (lambda d: d / "missing.mp4", "missing.mp4: cannot open for decoding"),
        # it is not a video at all
        (lambda d: write_garbage(d / "garbage.mp4"), "garbage.mp4: cannot open for decoding"),
        # it ends early: frames are decoded and encoded before the reader fails
        (lambda d: write_short_clip(d / "short.mp4"), r"frames 10-\d+ were not decoded"),
    ],
)
def test_decoder_error_propagates(
    tmp_path: Path,
    clip: tuple[Path, VideoStreamInfo],
    make_source: Callable[[Path], Path],
    match: str,
) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    unit = make_unit(work, clip, segment(0, FRAMES), batch_size=2)
    unit = SegmentUnit(**{**unit.__dict__, "source": make_source(sources)})
    with pytest.raises(MediaError, match=match):
        run_segment(unit, Nearest(), lambda _n: None)
    assert stage_threads() == []
    assert leftovers(work) == []


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        # the work dir is gone: the encoder cannot create its file (the writer reports it
        # as a ConfigError, "the encoder refused the settings": PyAV opens the file lazily)
        ({"core_path": Path("/nonexistent/dir/core.mp4")}, VidshardError, "No such file"),
        # the encoder refuses its settings
        ({"settings": EncodeSettings(codec="libx264", preset="warp")}, ConfigError, "preset"),
        # the seam half cannot be saved, after every frame went through
        (
            {"seam_right_path": Path("/nonexistent/dir/right.npy")},
            FileNotFoundError,
            "right",
        ),
    ],
)
def test_encoder_error_propagates(
    tmp_path: Path,
    clip: tuple[Path, VideoStreamInfo],
    change: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    unit = make_unit(tmp_path, clip, segment(0, 8, k=2), batch_size=2)
    unit = SegmentUnit(**{**unit.__dict__, **change})
    with pytest.raises(error, match=match):
        run_segment(unit, Nearest(), lambda _n: None)
    assert stage_threads() == []
    assert not unit.core_path.exists()
    assert not [name for name in leftovers(tmp_path) if "partial" in name]


def test_progress_error_propagates(tmp_path: Path, clip: tuple[Path, VideoStreamInfo]) -> None:
    # the progress callback runs on the encoder thread: its failure ends the unit too
    def progress(_frames: int) -> None:
        raise BrokenPipeError("coordinator gone")

    unit = make_unit(tmp_path, clip, segment(0, FRAMES), batch_size=1)
    with pytest.raises(BrokenPipeError, match="coordinator gone"):
        run_segment(unit, Nearest(), progress)
    assert stage_threads() == []
    assert leftovers(tmp_path) == []


# --- seams ---------------------------------------------------------------------------


def test_segments_and_seam_make_the_whole(
    tmp_path: Path, clip: tuple[Path, VideoStreamInfo], source_images: list[np.ndarray]
) -> None:
    # two segments [0, 12) and [12, 24) with a seam of 2 + 2 frames: the seam unit crossfades
    # the halves (equal here, a deterministic model) into the frames 10..13
    _, video = clip
    k = 2
    left_seg = Segment(0, 0, 12, k, True, False, FRAMES)
    right_seg = Segment(1, 12, FRAMES, k, False, True, FRAMES)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    left = run_segment(make_unit(tmp_path / "a", clip, left_seg), Nearest(), lambda _n: None)
    right = run_segment(make_unit(tmp_path / "b", clip, right_seg), Nearest(), lambda _n: None)
    seam = SeamUnit(
        unit_id="seam-00000",
        video=video,
        frame_range=(12 - k, 12 + k),
        left_path=tmp_path / "a" / "right.npy",
        right_path=tmp_path / "b" / "left.npy",
        out_path=tmp_path / "seam.mp4",
        settings=LOSSLESS,
        size_wh=SIZE_WH,
    )
    reports: list[int] = []
    result = run_seam(seam, reports.append)
    assert sum(reports) == 0  # the seam's frames were counted by its segments
    assert result.frames == 2 * k
    assert result.outputs == (seam.out_path,)
    pieces = [left.outputs[0], seam.out_path, right.outputs[0]]
    pts = [p for piece in pieces for p in probe(piece).video.pts]
    assert pts == list(video.pts)  # every frame once, in order
    planes = [p for piece in pieces for p in decoded_planes(piece)]
    assert all(
        np.array_equal(p, yuv_of(image, "yuv420p", video))
        for p, image in zip(planes, source_images, strict=True)
    )


def test_seam_refuses_halves_that_differ(
    tmp_path: Path, clip: tuple[Path, VideoStreamInfo]
) -> None:
    _, video = clip
    np.save(tmp_path / "l.npy", np.zeros((4, 24, 32, 3), np.uint8))
    np.save(tmp_path / "r.npy", np.zeros((3, 24, 32, 3), np.uint8))
    seam = SeamUnit(
        "seam-7", video, (10, 14), tmp_path / "l.npy", tmp_path / "r.npy",
        tmp_path / "seam.mp4", LOSSLESS, SIZE_WH,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match=r"seam-7: halves differ: \(4, 24, 32, 3\) vs \(3, "):
        run_seam(seam, lambda _n: None)
    assert not (tmp_path / "seam.mp4").exists()


@pytest.mark.parametrize(
    "shape",
    [
        (1, 2, 3, 3),  # a single frame
        (4, 24, 32, 3),  # a seam of 2 + 2 frames
        (7, 5, 9, 3),  # odd sizes
    ],
)
def test_crossfade_of_equal_halves_is_identity(shape: tuple[int, ...]) -> None:
    frames = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    blended = crossfade(frames, frames.copy())
    assert blended.dtype == np.uint8
    assert np.array_equal(blended, frames)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        # one frame: half and half
        (1, [128]),
        # weights (i + 0.5) / n of the right half: from mostly left to mostly right
        (2, [64, 191]),
        (4, [32, 96, 159, 223]),
    ],
)
def test_crossfade_runs_from_left_to_right(n: int, expected: list[int]) -> None:
    left = np.zeros((n, 2, 2, 3), np.uint8)  # black
    right = np.full((n, 2, 2, 3), 255, np.uint8)  # white
    blended = crossfade(left, right)
    assert blended[:, 0, 0, 0].tolist() == expected
    assert (blended == blended[:, :1, :1, :1]).all()  # the same weight over the whole frame
    # symmetric: swapping the halves plays the fade backwards
    assert np.array_equal(crossfade(right, left)[::-1], blended)


# --- check_output ----------------------------------------------------------------------

BATCH_IN = np.zeros((2, 4, 6, 3), np.uint8)


@pytest.mark.parametrize(
    ("output", "scale", "match"),
    [
        # not upscaled although scale 2 was promised
        (
            np.zeros((2, 4, 6, 3), np.uint8),
            2,
            r"expected output \(2, 8, 12, 3\) uint8, got \(2, 4, 6, 3\) uint8",
        ),
        # the right shape, the wrong type
        (
            np.zeros((2, 4, 6, 3), np.float32),
            1,
            r"expected output \(2, 4, 6, 3\) uint8, got \(2, 4, 6, 3\) float32",
        ),
        # a frame missing from the batch
        (np.zeros((1, 4, 6, 3), np.uint8), 1, r"got \(1, 4, 6, 3\) uint8"),
        # channels first, as a torch model would return
        (np.zeros((2, 3, 4, 6), np.uint8), 1, r"got \(2, 3, 4, 6\) uint8"),
        # grey frames
        (np.zeros((2, 4, 6), np.uint8), 1, r"got \(2, 4, 6\) uint8"),
        # not an array at all
        ([np.zeros((4, 6, 3), np.uint8)] * 2, 1, "returned list, expected a numpy array"),
    ],
)
def test_check_output_refuses(output: object, scale: int, match: str) -> None:
    with pytest.raises(ModelError, match=match) as caught:
        check_output(BATCH_IN, output, scale, "my-model")
    assert "'my-model'" in str(caught.value)  # names the model


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_check_output_accepts(scale: int) -> None:
    out = np.zeros((2, 4 * scale, 6 * scale, 3), np.uint8)
    assert check_output(BATCH_IN, out, scale, "my-model") is out
