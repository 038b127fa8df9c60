"""``vidshard streams``: live streams in the foreground (``run``), and a look at a source
(``probe``).

``streams run`` takes its options from :class:`~vidshard.streams.options.StreamOptions`
the way a task command takes its task's (:mod:`.tasks`), checks the model before any
worker starts, starts a pool on ``--devices`` and a :class:`StreamManager` on it, and
adds every URL. It runs until ``--duration`` passes, every stream has ended (a file
played to its end, or a stream failed), or SIGINT / SIGTERM; then it stops every stream
and says how each ended. A stream that fails (a bad URL, a camera that never answers) is
a row of the table, never the end of the others. Exit status: 0 for a clean stop, 1 when
every stream failed, 2 for bad input before anything starts, 130 for a second Ctrl-C
(stop without waiting for the streams' last results).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from vidshard.errors import ConfigError
from vidshard.pathnames import expand_user
from vidshard.streams.options import StreamOptions
from vidshard.tasks.options import build_options

from . import console
from .stream_session import Show, StreamSession, check_webhook, parse_sources
from .tasks import EXECUTOR_PARAMETERS, exposed_options, option_parameter, option_values

streams_app = typer.Typer(
    name="streams",
    help="Live streams: cameras (RTSP, RTMP, HTTP/HLS), capture devices and files, "
    "through a detector on every device, results as JSON Lines.",
    no_args_is_help=True,
)

STREAM_OPTIONS = exposed_options(StreamOptions)

# The parameters of `streams run` besides the stream options: (name, annotation, default).
RUN_PARAMETERS: tuple[tuple[str, Any, Any], ...] = (
    (
        "output",
        Annotated[
            Path | None,
            typer.Option(
                "--output",
                "-o",
                help="Write each stream's JSONL files and snapshot in DIR/<stream> "
                "(created when missing). Without it, no files.",
                metavar="DIR",
            ),
        ],
        None,
    ),
    (
        "devices",
        Annotated[
            str,
            typer.Option(help="all, 0,1,3, cuda:0,cuda:2, npu:0-7, cpu:4; repeats are weights."),
        ],
        "all",
    ),
    ("workers_per_device", Annotated[int, typer.Option(help="Worker slots per device.")], 1),
    *EXECUTOR_PARAMETERS,
    (
        "per_slot_limit",
        Annotated[int, typer.Option(help="The most streams one slot hosts.")],
        8,
    ),
    (
        "duration",
        Annotated[
            float | None,
            typer.Option(help="Stop by itself after this many seconds.", metavar="SECONDS"),
        ],
        None,
    ),
    ("quiet", Annotated[bool, typer.Option("--quiet", "-q", help="No live table.")], False),
    (
        "as_json",
        Annotated[
            bool,
            typer.Option("--json", help="One JSON line per status change on stdout, no table."),
        ],
        False,
    ),
)
RESERVED = frozenset({"urls", *(name for name, _, _ in RUN_PARAMETERS)})


# --- streams run ----------------------------------------------------------------------


def _run_command(**given: Any) -> None:
    with console.user_errors():
        code = _run(given)
    if code:
        raise typer.Exit(code)


def _run_signature() -> inspect.Signature:
    keyword = inspect.Parameter.KEYWORD_ONLY
    urls_help = "Stream URLs (rtsp://, rtmp://, http(s)://, v4l2:///dev/video0, a file), each "
    urls_help += "optionally NAME=URL; unnamed ones are s1, s2, ... by position."
    parameters = [
        inspect.Parameter(
            "urls",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[
                list[str], typer.Argument(help=urls_help, metavar="URL...", show_default=False)
            ],
        )
    ]
    parameters += [option_parameter(n, i, RESERVED) for n, i in STREAM_OPTIONS.items()]
    parameters += [
        inspect.Parameter(name, keyword, annotation=kind, default=default)
        for name, kind, default in RUN_PARAMETERS
    ]
    return inspect.Signature(parameters)


_run_command.__signature__ = _run_signature()  # type: ignore[attr-defined]
streams_app.command(
    name="run",
    help="Run live streams in the foreground with a live table; Ctrl-C stops them.",
)(_run_command)


def _run(given: dict[str, Any]) -> int:
    from vidshard.engine.output_dirs import check_creatable_dir, ensure_dir
    from vidshard.executors.local import LocalExecutor
    from vidshard.executors.registry import executor_spec, executor_with_slots
    from vidshard.streams.options import stream_recipe
    from vidshard.tasks import AnyModelFile

    sources = parse_sources(given["urls"])
    options = build_options(StreamOptions, option_values(STREAM_OPTIONS, given), "cli")
    if given["per_slot_limit"] < 1:
        raise ConfigError(f"--per-slot-limit: expected 1 or more, got {given['per_slot_limit']}")
    duration_s = given["duration"]
    if duration_s is not None and not duration_s > 0:
        raise ConfigError(f"--duration: expected seconds above 0, got {duration_s:g}")
    if options.webhook_url is not None:
        check_webhook(options.webhook_url)
    recipe = stream_recipe(options, AnyModelFile("cli"))  # a missing model: exit 2, now
    pool, slots = executor_with_slots(
        executor_spec(given["executor"], given["ray_address"]),
        given["devices"],
        given["workers_per_device"],
    )
    assert isinstance(pool, LocalExecutor)  # both built-in backends host streams
    output: Path | None = given["output"]
    if output is not None:  # made last: a mistake found before leaves nothing behind
        output = expand_user(output).absolute()
        check_creatable_dir(output, "-o")
        ensure_dir(output, "-o")
    if given["as_json"]:
        show: Show = "json"
    elif given["quiet"]:
        show = "quiet"
    else:
        show = "table" if console.err.is_terminal else "lines"
    session = StreamSession(
        sources,
        options,
        recipe,
        output,
        per_slot_limit=given["per_slot_limit"],
        duration_s=duration_s,
        show=show,
    )
    return session.run(slots, pool)


# --- streams probe --------------------------------------------------------------------


@streams_app.command()
def probe(
    url: Annotated[str, typer.Argument(help="A stream URL or a file, as `streams run` takes.")],
    transport: Annotated[str, typer.Option(help="RTSP transport: tcp or udp.")] = "tcp",
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the source and its first frame.")
    ] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Open a source, decode its first frame, and print its size, frame rate and codec."""
    from .stream_probe import probe_source

    with console.user_errors():
        if transport not in ("tcp", "udp"):
            raise ConfigError(f"--transport: expected tcp or udp, got {transport!r}")
        if not 0 < timeout <= 300:
            raise ConfigError(f"--timeout: expected seconds in (0, 300], got {timeout:g}")
        info = probe_source(url, transport=transport, timeout_s=timeout)
        if as_json:
            console.out.out(json.dumps(info), highlight=False)
            return
        for key, value in info.items():
            console.out.print(f"[bold]{key}[/] {value}", highlight=False, soft_wrap=True)
