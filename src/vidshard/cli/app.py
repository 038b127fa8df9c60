"""The `vidshard` command line."""

from __future__ import annotations

import errno
import json
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vidshard.errors import ConfigError, OutputError, VidshardError, write_failure_reason
from vidshard.models.options import TileOption

app = typer.Typer(
    name="vidshard",
    help="Run video AI models on every accelerator you have.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
out = Console()
err = Console(stderr=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """A user's mistake is one line on stderr and exit code 2, never a traceback.

    So is a file the disk refused (full, read-only, no permission) that no typed error
    caught on its way up."""
    try:
        yield
    except VidshardError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:
        reason = write_failure_reason(exc) or _NAME_FAILURES.get(exc.errno or 0)
        if reason is None:
            raise
        message = f"{exc.filename}: {reason}" if exc.filename else reason
        err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(OutputError.exit_code) from None
    except KeyboardInterrupt:
        err.print(
            "interrupted; finished segments are kept: run the same command again to resume",
            highlight=False,
        )
        raise typer.Exit(130) from None


# A name the system refused, wherever it was used: the user's to fix, not a traceback.
_NAME_FAILURES = {
    errno.ENAMETOOLONG: "file name too long",
    errno.ELOOP: "too many levels of symbolic links",
}


def parse_tile(value: str) -> TileOption:
    """`auto`, `0`/`none` (no tiling) or a tile edge in pixels."""
    text = value.strip().lower()
    if text == "auto":
        return "auto"
    if text in ("0", "none", "off"):
        return None
    try:
        tile = int(text)
    except ValueError:
        raise ConfigError(f"--tile expects a number of pixels or 'auto', got {value!r}") from None
    if tile < 16:
        raise ConfigError(f"--tile must be at least 16 pixels (or 0 for none), got {tile}")
    return tile


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def devices(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List GPUs, NPUs and the CPU, with memory, utilisation and a suggested slot layout."""
    from vidshard.devices import discover_devices, status_to_dict, suggest_layout

    with user_errors():
        statuses = discover_devices()
        layout = suggest_layout(statuses)
        if as_json:
            payload = {"devices": [status_to_dict(s) for s in statuses], "suggested": layout}
            out.print_json(json.dumps(payload))
            return
        table = Table("device", "name", "memory", "util", "temp")
        for s in statuses:
            mem = (
                f"{(s.memory_used_bytes or 0) / 2**30:.1f} / {s.memory_total_bytes / 2**30:.1f} GiB"
                if s.memory_total_bytes
                else "-"
            )
            util = f"{s.utilization_pct:.0f}%" if s.utilization_pct is not None else "-"
            temp = f"{s.temperature_c:.0f}°C" if s.temperature_c is not None else "-"
            table.add_row(s.device.label, s.device.name, mem, util, temp)
        out.print(table)
        out.print(f"suggested: --devices {layout}")


@app.command()
def probe(
    input: Annotated[Path, typer.Argument(help="Video file.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON, with every timestamp.")
    ] = False,
) -> None:
    """Scan a file without decoding it: streams, frames, timestamps, keyframes, rotation."""
    from vidshard.media import probe as probe_file
    from vidshard.media import probe_to_dict
    from vidshard.media.colour import video_colour

    with user_errors():
        info = probe_file(input)
        if as_json:
            out.print_json(json.dumps(probe_to_dict(info)))
            return
        v = info.video
        table = Table(show_header=False, box=None)
        rows = [
            ("file", str(info.path)),
            ("container", info.format_name),
            ("video", f"#{v.index} {v.codec} {v.width}x{v.height} {v.pix_fmt or '?'}"),
            ("colour", video_colour(v).describe()),  # as read: tags, else the size's guess
            ("frames", str(v.frame_count)),
            ("duration", f"{info.duration_s:.3f} s"),
            ("frame rate", f"{float(v.avg_rate):.3f} fps avg" if v.avg_rate else "?"),
            ("keyframes", f"{len(v.keyframes)}"),
            ("rotation", f"{v.rotation}°"),
        ]
        rows += [(f"stream #{s.index}", f"{s.kind} {s.codec or '?'}") for s in info.streams]
        for key, value in rows:
            table.add_row(f"[bold]{key}", value)
        out.print(table)


@app.command()
def upscale(
    input: Annotated[Path, typer.Argument(help="Video file to upscale.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output video file.")],
    model: Annotated[
        str,
        typer.Option(
            help="lanczos, bicubic, identity, a weights file (.pth/.safetensors: HAT, "
            "Real-ESRGAN, SwinIR, ...) or your own class (pkg.module:Class, file.py:Class).",
        ),
    ] = "lanczos",
    scale: Annotated[int | None, typer.Option(help="Scale factor (default: the model's).")] = None,
    devices: Annotated[
        str, typer.Option(help="all, 0,1,3, cuda:0,cuda:2, npu:0-7, cpu:4; repeats are weights.")
    ] = "all",
    workers_per_device: Annotated[int, typer.Option(help="Worker slots per device.")] = 1,
    tile: Annotated[str, typer.Option(help="Tile edge in pixels, auto, or 0 for none.")] = "auto",
    tile_overlap: Annotated[int, typer.Option(help="Tile overlap in pixels.")] = 16,
    overlap_frames: Annotated[
        int, typer.Option(help="Context frames on each side of a segment; crossfaded.")
    ] = 0,
    segment_seconds: Annotated[
        float | None, typer.Option(help="Segment length (default: ~2 s, 4+ per slot).")
    ] = None,
    codec: Annotated[str, typer.Option(help="Video encoder (libx264, libx265, ...).")] = "libx264",
    crf: Annotated[int, typer.Option(help="Quality; 0 with libx264 is lossless.")] = 18,
    preset: Annotated[str, typer.Option(help="Encoder preset.")] = "medium",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or bf16.")] = "fp32",
    batch_size: Annotated[int | None, typer.Option(help="Frames per model call.")] = None,
    down_sample: Annotated[
        bool,
        typer.Option(
            "--down-sample",
            help="Shrink frames by the scale before the model: the output keeps the "
            "input's size (restoration instead of enlargement).",
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume",
            help="Reuse the finished segments of an interrupted run of the same job.",
        ),
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Upscale a video over every device: exact frames and timestamps, audio kept."""
    from vidshard.cli.display import JobDisplay
    from vidshard.engine.upscale import UpscaleOptions, run_upscale

    with user_errors():
        options = UpscaleOptions(
            model=model,
            scale=scale,
            devices=devices,
            workers_per_device=workers_per_device,
            tile=parse_tile(tile),
            tile_overlap=tile_overlap,
            overlap_frames=overlap_frames,
            segment_seconds=segment_seconds,
            codec=codec,
            crf=crf,
            preset=preset,
            precision=precision,
            batch_size=batch_size,
            resume=resume,
            down_sample=down_sample,
        )
        show = not quiet and not as_json and err.is_terminal
        with JobDisplay(err, "starting", enabled=show) as display:
            result = run_upscale(
                input, output, options, on_progress=display.update, on_phase=display.phase
            )
        if as_json:
            out.print_json(json.dumps(result_to_dict(result)))
            return
        w, h = result.size_wh
        if result.quarantined:
            names = ", ".join(result.quarantined)
            err.print(f"[yellow]warning:[/] quarantined after repeated failures: {names}")
        if result.resumed_units:
            out.print(f"resumed {result.resumed_units} finished unit(s) of an interrupted run")
        out.print(
            f"wrote {result.output} ({w}x{h}, {result.frames} frames) in "
            f"{result.seconds:.1f} s, {result.fps:.1f} fps over {len(result.slots)} slot(s)",
            highlight=False,
            soft_wrap=True,  # one line, however long the output's path
        )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    devices: Annotated[
        str | None, typer.Option("--devices", "-d", help="Slots of the shared pool (default all).")
    ] = None,
    workers_per_device: Annotated[int | None, typer.Option(help="Slots per device.")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Job store, uploads and outputs (default ~/.local/share/vidshard)."),
    ] = None,
    input_root: Annotated[
        list[Path] | None,
        typer.Option(
            help="A directory path inputs may come from (repeat; default: current directory)."
        ),
    ] = None,
    output_root: Annotated[Path | None, typer.Option(help="Where outputs go.")] = None,
    model_dir: Annotated[
        list[Path] | None, typer.Option(help="A directory model files may come from (repeat).")
    ] = None,
    max_running_jobs: Annotated[
        int | None, typer.Option(help="Jobs run at once (default 2).")
    ] = None,
    job_ttl: Annotated[
        int | None,
        typer.Option("--job-ttl", help="Seconds finished jobs are kept (default 86400)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="A TOML settings file (also $VIDSHARD_CONFIG).")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="Server log level (default info).")] = None,
) -> None:
    """Run the job service: HTTP API, dashboard, one device pool shared by all jobs.

    Settings also come from VIDSHARD_* environment variables or a TOML file; flags win.
    Set VIDSHARD_API_KEY (one admin key) or api_keys in the TOML file (named keys, each
    seeing only its own jobs) to require a key; see docs/service.md.
    """
    with user_errors():
        from vidshard.service.settings import load_settings

        settings = load_settings(
            config,
            host=host,
            port=port,
            devices=devices,
            workers_per_device=workers_per_device,
            data_dir=data_dir,
            input_roots=input_root or None,
            output_root=output_root,
            model_dirs=model_dir or None,
            max_running_jobs=max_running_jobs,
            job_ttl_s=job_ttl,
            log_level=log_level,
        )
        try:
            from vidshard.service.server import run_server
        except ImportError as exc:
            raise ConfigError(
                f"the service needs its extra: pip install 'vidshard[serve]' ({exc})"
            ) from None
        logging.getLogger("vidshard").setLevel(
            logging.DEBUG if settings.log_level in ("debug", "trace") else logging.INFO
        )
        # uvicorn stops cleanly on SIGTERM, then raises it again for the old handler:
        # after a clean stop that is exit code 0. Set before the service starts, so a
        # SIGTERM while it starts is a clean stop too.
        signal.signal(signal.SIGTERM, _stopped)
        run_server(settings)  # lock, port, store, pool, then uvicorn: see its module


def result_to_dict(result: object) -> dict[str, object]:
    from vidshard.engine.upscale import UpscaleResult

    assert isinstance(result, UpscaleResult)
    return {
        "output": str(result.output),
        "frames": result.frames,
        "seconds": round(result.seconds, 3),
        "fps": round(result.fps, 2),
        "size_wh": list(result.size_wh),
        "segments": result.segments,
        "resumed_units": result.resumed_units,
        "quarantined": list(result.quarantined),
        "slots": [
            {"slot": s.label, "frames": s.frames, "units": s.units, "fps": round(s.fps, 2)}
            for s in result.slots
        ],
    }


def _stopped(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: workers end, segments kept


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    app(prog_name="vidshard")


# `detect` and `track` live in their own module; importing it registers them on `app`.
from vidshard.cli import detect as _detect  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    main()
