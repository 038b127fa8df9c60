"""The `vidshard` command line: its own commands (devices, probe, serve) and one command
per registered task (upscale, detect, track, and any a package adds), made from the
task's definition by :mod:`vidshard.cli.tasks`."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vidshard.errors import ConfigError
from vidshard.tasks import default_tasks

from . import console
from .streams import streams_app
from .tasks import add_task_commands

app = typer.Typer(
    name="vidshard",
    help="Run video AI models on every accelerator you have.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


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

    with console.user_errors():
        statuses = discover_devices()
        layout = suggest_layout(statuses)
        if as_json:
            payload = {"devices": [status_to_dict(s) for s in statuses], "suggested": layout}
            console.out.print_json(json.dumps(payload))
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
        console.out.print(table)
        console.out.print(f"suggested: --devices {layout}")


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

    with console.user_errors():
        info = probe_file(input)
        if as_json:
            console.out.print_json(json.dumps(probe_to_dict(info)))
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
        console.out.print(table)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    devices: Annotated[
        str | None, typer.Option("--devices", "-d", help="Slots of the shared pool (default all).")
    ] = None,
    workers_per_device: Annotated[int | None, typer.Option(help="Slots per device.")] = None,
    executor: Annotated[
        str | None, typer.Option(help="local (default) or ray: the pool on a Ray cluster.")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="With --executor ray: auto, host:port, or none.")
    ] = None,
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
    with console.user_errors():
        from vidshard.service.settings import load_settings

        settings = load_settings(
            config,
            host=host,
            port=port,
            devices=devices,
            workers_per_device=workers_per_device,
            executor=executor,
            ray_address=ray_address,
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


def _stopped(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: workers end, segments kept


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    app(prog_name="vidshard")


add_task_commands(app, default_tasks())
app.add_typer(streams_app, name="streams")


if __name__ == "__main__":  # pragma: no cover
    main()
