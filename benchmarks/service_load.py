"""Service load: many clients poll the job API while jobs keep the pool busy.

Starts a real ``vidshard serve --devices cpu:2`` (uvicorn, its own process), submits
background jobs on a stand-in model (``sleep_model.py:SleepModel``: a fixed sleep per
frame, so the slots are busy without using the CPU), waits until they run and measures
the pool's rate alone for a moment, then runs N client threads for a fixed time, each
with its own httpx connection, alternating ``GET /v1/jobs/{id}`` and
``GET /v1/jobs?limit=20``, while one more thread submits a job every few seconds.

Reported: requests/s and p50/p95/p99/max latency per endpoint and overall, errors (any
non-2xx answer or exception; goal 0), and the jobs' own progress, alone and under load,
to show the work went on. The client threads run in this process and share the machine's
CPU with the server and its workers: on a small machine the figures measure both.

    python benchmarks/service_load.py                 # 50 clients, 20 s
    python benchmarks/service_load.py --quick         # 50 clients, 5 s (~10 s in all)
    python benchmarks/service_load.py --clients 200 --seconds 30 --json load.json
"""

from __future__ import annotations

import argparse
import contextlib
import math
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import _common  # noqa: E402  (after the path fix-up)
from sleep_model import SLEEP_ENV  # noqa: E402
from tests.service_helpers import start_server  # noqa: E402

from vidshard.client import Client, ConflictError  # noqa: E402

MODEL = "sleep_model.py:SleepModel"
SLOTS = 2
JOB_PARAMS = {"model": MODEL, "preset": "ultrafast"}
ENDPOINT_JOB = "GET /v1/jobs/{id}"
ENDPOINT_LIST = "GET /v1/jobs?limit=20"
ENDPOINT_SUBMIT = "POST /v1/jobs"
FINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Samples:
    """One thread's measurements: (endpoint, latency_s) and its failures."""

    latencies: list[tuple[str, float]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def timed(self, endpoint: str, client: httpx.Client, method: str, url: str, **kw: Any) -> Any:
        started = time.perf_counter()
        try:
            response = client.request(method, url, **kw)
            body = response.json()
        except Exception as exc:
            self.errors.append((endpoint, f"{type(exc).__name__}: {exc}"[:200]))
            return None
        elapsed = time.perf_counter() - started
        if not response.is_success:
            self.errors.append((endpoint, f"HTTP {response.status_code}: {response.text[:150]}"))
            return None
        self.latencies.append((endpoint, elapsed))
        return body


@dataclass
class Window:
    """The load window: threads wait for ``go``, then work until ``stop_at``."""

    go: threading.Event = field(default_factory=threading.Event)
    stop_at: float = 0.0


def poller(
    client: httpx.Client, job_ids: list[str], offset: int, window: Window, out: Samples
) -> None:
    """One client: alternate a job read and a list read until the window closes."""
    window.go.wait()
    i = offset
    while time.monotonic() < window.stop_at:
        job_id = job_ids[i % len(job_ids)]
        out.timed(ENDPOINT_JOB, client, "GET", f"/v1/jobs/{job_id}")
        out.timed(ENDPOINT_LIST, client, "GET", "/v1/jobs", params={"limit": 20})
        i += 1


def submitter(
    client: httpx.Client,
    input_name: str,
    every_s: float,
    window: Window,
    out: Samples,
    ids: list[str],
) -> None:
    """A few submits during the load (short jobs: they queue behind the running ones)."""
    window.go.wait()
    while time.monotonic() < window.stop_at:
        body = {"input": input_name, "params": JOB_PARAMS}
        answer = out.timed(ENDPOINT_SUBMIT, client, "POST", "/v1/jobs", json=body)
        if answer is not None:
            ids.append(answer["id"])
        time.sleep(min(every_s, max(0.0, window.stop_at - time.monotonic())))


def frames_done(client: Client, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    views = {}
    for job_id in job_ids:
        job = client.status(job_id)
        views[job_id] = {
            "state": job.state,
            "frames_done": job.frames_done,
            "frames_total": job.frames_total,
        }
    return views


def total_frames(views: dict[str, dict[str, Any]]) -> int:
    return sum(v["frames_done"] for v in views.values())


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..1)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def endpoint_stats(name: str, values: list[float], errors: int, seconds: float) -> dict[str, Any]:
    ordered = sorted(values)
    return {
        "endpoint": name,
        "requests": len(values) + errors,
        "ok": len(values),
        "errors": errors,
        "req_per_s": len(values) / seconds if seconds > 0 else math.nan,
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p95_ms": percentile(ordered, 0.95) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": (ordered[-1] * 1000) if ordered else math.nan,
    }


def summarise(samples: list[Samples], load_s: float) -> dict[str, Any]:
    """Per-endpoint and overall figures, and the commonest error messages."""
    by_endpoint: dict[str, list[float]] = {}
    errors: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    for sample in samples:
        for endpoint, latency in sample.latencies:
            by_endpoint.setdefault(endpoint, []).append(latency)
        for endpoint, message in sample.errors:
            errors[endpoint] += 1
            messages[message] += 1
    rows = [
        endpoint_stats(name, by_endpoint.get(name, []), errors[name], load_s)
        for name in (ENDPOINT_JOB, ENDPOINT_LIST, ENDPOINT_SUBMIT)
    ]
    all_latencies = [lat for values in by_endpoint.values() for lat in values]
    rows.append(endpoint_stats("all", all_latencies, sum(errors.values()), load_s))
    return {"endpoints": rows, "error_messages": dict(messages.most_common(5))}


def start_jobs(client: Client, input_name: str, count: int) -> list[str]:
    return [client.submit(input_name, **JOB_PARAMS).id for _ in range(count)]


def wait_running(client: Client, job_ids: list[str], timeout_s: float = 60.0) -> None:
    """Until some job has frames done: the workers are up and the pool is busy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        views = frames_done(client, job_ids)
        if any(v["state"] in ("failed", "cancelled") for v in views.values()):
            raise RuntimeError(f"a background job ended early: {views}")
        if total_frames(views) > 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"no job made progress in {timeout_s} s")


def process_cpu_s(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def run_load(
    args: argparse.Namespace, url: str, job_ids: list[str], short_name: str, server_pid: int
) -> dict[str, Any]:
    import psutil

    server_process, this_process = psutil.Process(server_pid), psutil.Process()
    with Client(url) as client:
        samples = [Samples() for _ in range(args.clients)]
        submits = Samples()
        submitted: list[str] = []
        # Connections and threads are made first: the window times requests only.
        tls = ssl.create_default_context()  # unused over http, but ~70 ms each to build
        https = [
            httpx.Client(base_url=url, timeout=30.0, verify=tls) for _ in range(args.clients + 1)
        ]
        window = Window()
        threads = [
            threading.Thread(target=poller, args=(https[i], job_ids, i, window, samples[i]))
            for i in range(args.clients)
        ]
        threads.append(
            threading.Thread(
                target=submitter,
                args=(https[-1], short_name, args.submit_every_s, window, submits, submitted),
            )
        )
        for thread in threads:
            thread.start()
        # The pool alone, for comparison, then at once the load.
        before = frames_done(client, job_ids)
        t0 = time.monotonic()
        time.sleep(args.baseline_seconds)
        at_load = frames_done(client, job_ids)
        baseline_s = time.monotonic() - t0
        baseline_fps = (total_frames(at_load) - total_frames(before)) / baseline_s
        cpu0 = process_cpu_s(server_process), process_cpu_s(this_process)
        started = time.monotonic()
        window.stop_at = started + args.seconds
        window.go.set()
        for thread in threads:
            thread.join()
        load_s = time.monotonic() - started
        server_cpu_s = process_cpu_s(server_process) - cpu0[0]
        clients_cpu_s = process_cpu_s(this_process) - cpu0[1]
        for http in https:
            http.close()
        after = frames_done(client, job_ids)
        load_fps = (total_frames(after) - total_frames(at_load)) / load_s
        still_going = [i for i in job_ids if after[i]["state"] not in FINAL]
        for job_id in [*still_going, *submitted]:  # a quick stop
            with contextlib.suppress(ConflictError):  # it ended meanwhile
                client.cancel(job_id)

    return {
        "load_s": load_s,
        **summarise([*samples, submits], load_s),
        "baseline_s": baseline_s,
        "baseline_fps": baseline_fps,
        "load_fps": load_fps,
        "ideal_fps": SLOTS * 1000.0 / args.sleep_ms,
        "jobs": [
            {
                "id": job_id,
                "frames_total": after[job_id]["frames_total"],
                "frames_at_load_start": at_load[job_id]["frames_done"],
                "frames_at_load_end": after[job_id]["frames_done"],
                "state_at_load_end": after[job_id]["state"],
            }
            for job_id in job_ids
        ],
        "submitted_during_load": len(submitted),
        # CPU seconds in the window: the server process (HTTP + job threads; not its
        # worker processes, which only sleep here) and this one (the client threads).
        "server_cpu_s": server_cpu_s,
        "clients_cpu_s": clients_cpu_s,
    }


def print_report(result: dict[str, Any]) -> None:
    print()
    print(f"## Requests during {result['load_s']:.1f} s of load")
    _common.print_table(
        ["endpoint", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        [
            [
                r["endpoint"],
                r["requests"],
                r["errors"],
                f"{r['req_per_s']:.0f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p95_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['max_ms']:.1f}",
            ]
            for r in result["endpoints"]
        ],
    )
    for message, count in result["error_messages"].items():
        print(f"  error x{count}: {message}")
    print()
    print("## The jobs meanwhile")
    _common.print_table(
        ["job", "state at end", "frames at load start", "frames at load end", "of"],
        [
            [
                j["id"][:8],
                j["state_at_load_end"],
                j["frames_at_load_start"],
                j["frames_at_load_end"],
                j["frames_total"] if j["frames_total"] is not None else "?",
            ]
            for j in result["jobs"]
        ],
    )
    print(
        f"pool rate: {result['baseline_fps']:.1f} fps alone ({result['baseline_s']:.1f} s) -> "
        f"{result['load_fps']:.1f} fps under load (ideal {result['ideal_fps']:.0f}: "
        f"{SLOTS} slots, model sleep only); {result['submitted_during_load']} job(s) "
        "submitted during the load",
        flush=True,
    )
    load_s = result["load_s"]
    print(
        f"CPU during the load: server process {result['server_cpu_s']:.1f} s "
        f"({result['server_cpu_s'] / load_s:.0%} of a core), client threads (this process) "
        f"{result['clients_cpu_s']:.1f} s ({result['clients_cpu_s'] / load_s:.0%} of a core)",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~10 s run (5 s of load)")
    parser.add_argument("--clients", type=int, default=50, help="polling threads (50)")
    parser.add_argument("--seconds", type=float, default=None, help="load time (20; quick 5)")
    parser.add_argument("--jobs", type=int, default=4, help="background jobs (4; 2 run at once)")
    parser.add_argument("--sleep-ms", type=float, default=40.0, help="model ms per frame (40)")
    parser.add_argument("--submit-every-s", type=float, default=2.0, help="submit period (2)")
    parser.add_argument(
        "--server-log-level", default="info", help="the server's --log-level (info: as shipped)"
    )
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 5.0 if args.quick else 20.0
    args.baseline_seconds = 1.0 if args.quick else 3.0

    info = _common.machine_info()
    _common.print_machine(info)
    # Enough frames that the pool is still busy when the load ends (30 % spare).
    pool_fps = SLOTS * 1000.0 / args.sleep_ms
    busy_s = args.baseline_seconds + args.seconds + 5.0
    frames_per_job = max(50, math.ceil(pool_fps * busy_s * 1.3 / args.jobs))
    frames_per_job = math.ceil(frames_per_job / 25) * 25
    long_clip = _common.cached_clip((96, 64), frames_per_job / 25, fps=25)
    short_clip = _common.cached_clip((96, 64), 1.0, fps=25)
    print(
        f"server: --devices cpu:{SLOTS} --max-running-jobs 2, model {MODEL} "
        f"({args.sleep_ms:g} ms/frame, no CPU); {args.jobs} background jobs of "
        f"{frames_per_job} frames 96x64; {args.clients} client threads for {args.seconds:g} s "
        f"+ 1 submitting every {args.submit_every_s:g} s; the clients share this machine's "
        f"{info['nproc']} cores with the server and its workers",
        flush=True,
    )

    load = _common.ForeignLoad()
    with tempfile.TemporaryDirectory(prefix="vidshard-load-") as tmp:
        server = start_server(
            Path(tmp) / "data",
            *("--devices", f"cpu:{SLOTS}", "--max-running-jobs", "2"),
            *("--input-root", str(long_clip.parent), "--model-dir", str(HERE)),
            *("--log-level", args.server_log_level),
            env={SLEEP_ENV: str(args.sleep_ms)},
        )
        try:
            with Client(server.url) as client:
                job_ids = start_jobs(client, long_clip.name, args.jobs)
                wait_running(client, job_ids)
            result = run_load(args, server.url, job_ids, short_clip.name, server.process.pid)
        finally:
            server.stop()
    print_report(result)
    foreign = load.print_report()
    _common.write_json(
        args.json,
        {
            "benchmark": "service_load",
            "machine": info,
            "config": {
                "clients": args.clients,
                "seconds": args.seconds,
                "jobs": args.jobs,
                "frames_per_job": frames_per_job,
                "sleep_ms": args.sleep_ms,
                "slots": SLOTS,
                "submit_every_s": args.submit_every_s,
                "server_log_level": args.server_log_level,
            },
            **result,
            "foreign_load": foreign,
        },
    )
    return 0 if all(r["errors"] == 0 for r in result["endpoints"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
