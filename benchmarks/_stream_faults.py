"""The streams benchmark's fault trials: the RTSP server killed and restarted (time to
reconnect), a hosting worker killed (time to fail over). See ``streams.py``."""

from __future__ import annotations

import argparse
import os
import random
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import _common
from _streams import WAIT_S, Bench, all_started, fmt, since, spread, wait_for

# max_reconnects 10 (the default) at 0.5 s apart gives up after ~4 s down: raised here
SHORT_BACKOFF = {"reconnect_delay_s": 0.1, "reconnect_max_delay_s": 0.5, "max_reconnects": 1000}
RECONNECT_WAIT_S = 45.0  # the default backoff waits 30 s at most between tries


def reconnect_trials(
    bench: Bench, server: Any, args: argparse.Namespace, backoff: dict[str, float]
) -> list[dict[str, Any]]:
    """Per downtime: kill the server, wait, restart it; ready -> each stream's first record."""
    rng = random.Random(7)
    url = server.url("cam")
    trials = []
    for downtime_s in args.downtimes:
        ids = bench.add([url] * args.reconnect_streams, 8, rng, **backoff)
        if not all_started(bench, ids):
            print("  the streams never came live on the RTSP server", flush=True)
            bench.remove_all()
            continue
        time.sleep(1.0)
        killed = time.time()
        server.kill()
        time.sleep(downtime_s)
        launched = time.time()
        server.restart()
        ready = time.time()
        firsts = [first_or_failed(bench, i, ready) for i in ids]
        noticed = [bench.rec.state_at(i, "reconnecting", killed - 1.0) for i in ids]
        live = [wait_for(partial(bench.rec.state_at, i, "live", ready), 5.0) for i in ids]
        trial = {
            "downtime_s": downtime_s,
            "server_start_s": ready - launched,
            "after_ready_s": since(firsts, ready),
            "after_kill_s": since(firsts, killed),
            "kill_to_reconnecting_s": since(noticed, killed),
            "ready_to_live_s": since(live, ready),
            "reconnects": [bench.manager.get(i).status.reconnects for i in ids],
        }
        trials.append(trial)
        print(
            f"  backoff {backoff or 'default'}: down {downtime_s:g} s, server start "
            f"{trial['server_start_s']:.2f} s, ready -> first record "
            f"{', '.join(fmt(v, 2) for v in trial['after_ready_s'])} s",
            flush=True,
        )
        bench.remove_all()
    return trials


def first_or_failed(bench: Bench, stream_id: str, after: float) -> float | None:
    """The stream's first record after ``after``; None once it failed (or time is up)."""

    def seen() -> float | str | None:
        failed = bench.rec.state_at(stream_id, "failed", after - 60.0)
        return bench.rec.first(stream_id, after) or ("failed" if failed else None)

    value = wait_for(seen, RECONNECT_WAIT_S)
    return value if isinstance(value, float) else None


def failover_trial(
    bench: Bench, url: str, streams: int, victim_index: int
) -> dict[str, Any] | None:
    """Kill the worker hosting some of ``streams`` streams of ``url``; kill -> their
    first record on another slot."""
    rng = random.Random(victim_index)
    ids = bench.add([url] * streams, 8, rng)
    if not all_started(bench, ids):
        bench.remove_all()
        return None
    time.sleep(1.0)
    slots = sorted({v.slot for v in bench.manager.list() if v.slot})
    victim = slots[victim_index % len(slots)]
    victims = [v.stream_id for v in bench.manager.list() if v.slot == victim]
    pid = next(s.pid for s in bench.pool.slot_states() if s.label == victim)
    killed = time.time()
    os.kill(pid, signal.SIGKILL)

    def moved(stream_id: str) -> float | None:
        view = bench.manager.get(stream_id)
        if view.slot in (None, victim):
            return None
        return bench.rec.first(stream_id, killed, view.slot)

    firsts = [wait_for(partial(moved, i), WAIT_S) for i in victims]
    placed = [bench.manager.get(i).placed_at for i in victims]
    live = [bench.rec.state_at(i, "live", killed) for i in victims]
    trial = {
        "streams": streams,
        "victim": victim,
        "moved": len(victims),
        "to_first_record_s": since(firsts, killed),
        "to_placed_s": since(placed, killed),
        "to_live_s": since(live, killed),
    }
    print(
        f"  {streams} stream(s), killed {victim}'s worker: placed again after "
        f"{', '.join(fmt(v, 3) for v in trial['to_placed_s'])} s, first record after "
        f"{', '.join(fmt(v, 2) for v in trial['to_first_record_s'])} s",
        flush=True,
    )
    bench.remove_all()
    return trial


def run_reconnect(args: argparse.Namespace, server: Any) -> dict[str, list[dict[str, Any]]]:
    bench = Bench(1, per_slot_limit=64)
    try:
        return {
            "default": reconnect_trials(bench, server, args, {}),
            "short": reconnect_trials(bench, server, args, SHORT_BACKOFF),
        }
    finally:
        bench.close()


def run_failover(args: argparse.Namespace, clip: Path, server: Any) -> dict[str, Any]:
    plan = [("file, running host", str(clip), 4), ("file, idle slot", str(clip), 1)]
    if server is not None:
        plan.append(("RTSP, running host", server.url("cam"), 4))
    bench = Bench(2, per_slot_limit=64)
    try:
        cases: dict[str, list[dict[str, Any]]] = {case: [] for case, _, _ in plan}
        for trial in range(args.failover_trials):
            for case, url, streams in plan:
                result = failover_trial(bench, url, streams, trial)
                if result is not None:
                    cases[case].append(result)
        return {"cases": cases, "quarantined": bench.pool.quarantined()}
    finally:
        bench.close()


def time_row(what: str, trials: list[dict[str, Any]], total: str, part: str) -> list[object]:
    values = [v for t in trials for v in t[total]]
    median, worst, missing = spread(values)
    part_median, _, _ = spread([v for t in trials for v in t[part]])
    return [what, len(values), median, worst, part_median, missing]


def print_times(reconnect: dict[str, Any], failover: dict[str, Any]) -> None:
    rows = [
        time_row(f"reconnect, {name} backoff", trials, "after_ready_s", "ready_to_live_s")
        for name, trials in reconnect.items()
    ]
    rows += [
        time_row(f"failover, {case}", trials, "to_first_record_s", "to_placed_s")
        for case, trials in failover.get("cases", {}).items()
    ]
    if rows:
        print(
            "\nreconnect: server ready -> first record (first part: ready -> live, a frame "
            "decoded); failover: kill -> first record on the other slot (first part: kill -> "
            "placed again)"
        )
        _common.print_table(
            ["what", "samples", "median s", "max s", "first part median s", "never"], rows
        )
