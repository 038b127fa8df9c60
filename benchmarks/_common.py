"""Shared helpers for the benchmark scripts: test clips, machine facts, tables, JSON.

Kept free of heavy imports at module level: ``scaling.py`` calls ``vidshard.upscale``,
whose spawned workers re-import the script's ``__main__`` module (and so this one), so
anything imported here would be paid again by every worker's start-up.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import resource
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from importlib import metadata
from pathlib import Path
from typing import Any

CACHE_ENV = "VIDSHARD_BENCH_CACHE"


def cache_dir() -> Path:
    """Where generated clips are kept between runs: ``$VIDSHARD_BENCH_CACHE`` or a temp dir."""
    base = os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "vidshard-bench")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pattern(width: int, height: int) -> Any:
    """A textured (H, 2W, 3) uint8 base picture that frames are cut from while it scrolls."""
    import numpy as np

    rng = np.random.default_rng(1234)
    y, x = np.mgrid[0:height, 0 : 2 * width]
    base = np.empty((height, 2 * width, 3), np.uint8)
    base[..., 0] = (x * 3) % 256
    base[..., 1] = (y * 4 + (x // 16) * 8) % 256
    base[..., 2] = ((x + y) * 2) % 256
    # fine texture so the encoder has real work to do (not a flat gradient)
    noise = rng.integers(0, 48, size=(height // 4 + 1, (2 * width) // 4 + 1, 3), dtype=np.uint8)
    base += noise.repeat(4, axis=0).repeat(4, axis=1)[:height, : 2 * width]
    return base


def write_clip(
    path: Path,
    *,
    size_wh: tuple[int, int],
    seconds: float,
    fps: int = 25,
    gop: int = 50,
    crf: int = 23,
) -> Path:
    """Write a deterministic moving-pattern H.264 clip (libx264 ultrafast, yuv420p).

    The picture scrolls sideways over a textured pattern and a square walks over it, so
    every frame differs. A keyframe every ``gop`` frames (2 s at 25 fps by default).
    """
    import av
    import numpy as np

    width, height = size_wh
    frames = round(seconds * fps)
    base = _pattern(width, height)
    square = max(8, min(width, height) // 6)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    with av.open(str(tmp), mode="w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"preset": "ultrafast", "crf": str(crf), "g": str(gop)}
        for i in range(frames):
            shift = (i * 2) % width
            image = np.ascontiguousarray(base[:, shift : shift + width])
            left = (i * 5) % max(1, width - square)
            top = (i * 3) % max(1, height - square)
            image[top : top + square, left : left + square] = (
                255 - image[top : top + square, left : left + square]
            )
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    tmp.replace(path)
    return path


def cached_clip(size_wh: tuple[int, int], seconds: float, *, fps: int = 25, gop: int = 50) -> Path:
    """A clip from :func:`write_clip`, generated once and kept in :func:`cache_dir`."""
    width, height = size_wh
    path = cache_dir() / f"pattern-{width}x{height}-{seconds:g}s-{fps}fps-g{gop}.mp4"
    if not path.exists():
        started = time.monotonic()
        print(f"generating {path.name} ...", flush=True)
        write_clip(path, size_wh=size_wh, seconds=seconds, fps=fps, gop=gop)
        print(f"  done in {time.monotonic() - started:.1f} s", flush=True)
    return path


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


REPO = Path(__file__).resolve().parent.parent


def source_state() -> dict[str, Any]:
    """Which vidshard code is measured: the git HEAD (read only), whether ``src/`` differs
    from it, and a digest of every ``src/vidshard`` source file as it is now."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "src" / "vidshard").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    state: dict[str, Any] = {"src_sha256": digest.hexdigest()[:16]}
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
        state["git_head"] = head.stdout.strip() or None
        diff = subprocess.run(
            ["git", "-C", str(REPO), "diff", "--quiet", "HEAD", "--", "src"],
            capture_output=True,
            check=False,
        )
        state["src_modified"] = diff.returncode == 1
    except OSError:
        state["git_head"] = None
    return state


def check_source_unchanged(before: dict[str, Any]) -> bool:
    """Warn when vidshard's sources changed while the benchmark ran (figures then mix)."""
    now = source_state()["src_sha256"]
    if now != before["src_sha256"]:
        print(
            f"WARNING: src/vidshard changed during the run ({before['src_sha256']} -> {now}); "
            "the figures may mix two versions of the code",
            flush=True,
        )
        return False
    return True


def machine_info() -> dict[str, Any]:
    """The facts a figure needs next to it: date, CPU, cores, memory, versions, code."""
    return {
        **source_state(),
        "date": datetime.date.today().isoformat(),
        "cpu": _cpu_model(),
        "nproc": os.cpu_count(),
        "available_cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "mem_total_gib": _mem_total_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "vidshard": _version("vidshard"),
        "torch": _version("torch"),
        "av": _version("av"),
        "numpy": _version("numpy"),
    }


def print_machine(info: dict[str, Any]) -> None:
    print(
        f"# {info['date']}  {info['cpu']}, {info['nproc']} cores, {info['mem_total_gib']} GiB; "
        f"python {info['python']}, vidshard {info['vidshard']}, torch {info['torch']}, "
        f"PyAV {info['av']}, numpy {info['numpy']}; git {info.get('git_head')}"
        f"{' + modified src' if info.get('src_modified') else ''} "
        f"(src sha256 {info['src_sha256']})",
        flush=True,
    )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain fixed-width table (also valid-looking Markdown)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"

    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(line(row))


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    machine = payload.get("machine")
    if isinstance(machine, dict) and "src_sha256" in machine:
        machine["src_unchanged_during_run"] = check_source_unchanged(machine)
    if not path:
        return
    Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def cpu_seconds() -> float:
    """CPU time of this process plus its reaped children (the workers), user + system."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class _WorkerWatch(threading.Thread):
    """Notes when the last worker process of this process has exited.

    Workers are this process's children with ``vidshard-worker-SLOT`` on their command
    line; an exited child that is not yet reaped
    (a zombie) counts as gone. Polls every 10 ms once :meth:`arm` is called.
    """

    def __init__(self) -> None:
        super().__init__(name="worker-watch", daemon=True)
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self._armed = threading.Event()
        self._stop_event = threading.Event()
        self.gone_at: float | None = None

    def _workers_alive(self) -> int:
        alive = 0
        for child in self._me.children():
            try:
                if child.status() == self._psutil.STATUS_ZOMBIE:
                    continue
                if any(part.startswith("vidshard-worker-") for part in child.cmdline()):
                    alive += 1
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
        return alive

    def arm(self) -> None:
        self._armed.set()

    def stop(self) -> None:
        self._stop_event.set()
        self._armed.set()
        self.join()

    def run(self) -> None:
        self._armed.wait()
        while not self._stop_event.is_set():
            if self._workers_alive() == 0:
                self.gone_at = time.monotonic()
                return
            time.sleep(0.01)


def timed_upscale(source: Path, output: Path, **options: Any) -> dict[str, Any]:
    """Run ``vidshard.upscale`` and time its phases from its public callbacks.

    - ``startup_s``: "starting N worker(s)" -> "upscaling ..." (every worker ready);
    - ``steady_s``: "upscaling ..." -> return, split into ``work_s`` (-> the progress
      count reaches every frame: the last unit's frames are encoded and reported) and
      ``tail_s`` (-> return: worker shut-down, remux and verification, which may overlap);
    - ``workers_exit_s``: last frame -> the last worker process has exited (psutil), a
      part of ``tail_s``.
    """
    import vidshard

    marks: dict[str, float] = {}
    watch = _WorkerWatch()
    watch.start()

    def on_phase(name: str) -> None:
        for key in ("starting", "upscaling", "joining"):
            if name.startswith(key):
                marks.setdefault(key, time.monotonic())
        if name.startswith("joining"):
            watch.arm()

    def on_progress(snapshot: Any) -> None:
        if "frames_done" not in marks and snapshot.frames_done >= snapshot.frames_total:
            marks["frames_done"] = time.monotonic()
            watch.arm()

    cpu0 = cpu_seconds()
    started = time.monotonic()
    try:
        result = vidshard.upscale(
            source, output, on_phase=on_phase, on_progress=on_progress, **options
        )
    finally:
        watch.stop()
    ended = time.monotonic()
    cpu = cpu_seconds() - cpu0
    done = marks.get("frames_done", marks["joining"])
    gone = watch.gone_at if watch.gone_at is not None else ended
    return {
        "frames": result.frames,
        "segments": result.segments,
        "wall_s": ended - started,
        "startup_s": marks["upscaling"] - marks.get("starting", started),
        "steady_s": ended - marks["upscaling"],
        "work_s": done - marks["upscaling"],
        "tail_s": ended - done,
        "workers_exit_s": max(0.0, min(gone, ended) - done),
        "cpu_s": cpu,
        "slot_frames": [s.frames for s in result.slots],
    }


def _system_busy_s() -> float | None:
    """CPU seconds every process on the machine has used since boot (/proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class ForeignLoad:
    """How much CPU *other* processes used while a benchmark ran.

    The machine's busy time (/proc/stat) less this process's and its reaped children's
    (the benchmark's own jobs). On a 2-core machine another job running beside the
    benchmark changes every figure, so each script prints this next to its table.
    """

    def __init__(self) -> None:
        self._wall0 = time.monotonic()
        self._busy0 = _system_busy_s()
        self._own0 = cpu_seconds()

    def report(self) -> dict[str, Any]:
        wall = time.monotonic() - self._wall0
        busy1 = _system_busy_s()
        cores = os.cpu_count() or 1
        out: dict[str, Any] = {"wall_s": round(wall, 1), "cores": cores}
        if self._busy0 is None or busy1 is None:
            return out
        own = cpu_seconds() - self._own0
        foreign = max(0.0, (busy1 - self._busy0) - own)
        out.update(
            own_cpu_s=round(own, 1),
            foreign_cpu_s=round(foreign, 1),
            foreign_share=round(foreign / (wall * cores), 3) if wall > 0 else 0.0,
        )
        return out

    def print_report(self) -> dict[str, Any]:
        rep = self.report()
        if "foreign_cpu_s" in rep:
            share = rep["foreign_share"]
            note = "  WARNING: the machine was not quiet" if share > 0.05 else ""
            print(
                f"other processes used {rep['foreign_cpu_s']:.1f} CPU s during the "
                f"{rep['wall_s']:.0f} s run ({share:.1%} of the machine){note}",
                flush=True,
            )
        return rep
