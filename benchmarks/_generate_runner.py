"""``WanRunner`` that also notes what ``generate.py`` reports from inside each rank.

A group loads it by file (``GenerationModel(runner="benchmarks/_generate_runner.py:
StatsRunner")``), as a user's own runner is loaded. It runs the real runner unchanged and
only records, on every rank: the torch threads, the parameter bytes this rank holds (an
FSDP-sharded parameter counts its local shard), the process's memory after loading and
after the request (:func:`memory`), its peak by the end of each step, and the time of
each step. It writes them next to the request's output as ``<output>.rank<R>.json``.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vidshard.generation.rank import WanRunner
from vidshard.generation.types import GenerationRequest, GenerationResult

COMPONENTS = ("transformer", "text_encoder", "vae", "image_encoder")
_STATUS_FIELDS = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "VmHWM": "peak"}


def memory() -> dict[str, int]:
    """This process's memory now, in bytes: ``rss`` = ``anon`` (its own) + ``file``
    (mapped files: libraries, and checkpoint pages read through a mapping, which every
    process mapping them counts in full) + shared memory; ``pss`` counts a page shared by
    n processes as 1/n; ``peak`` is the largest ``rss`` so far. Linux only."""
    out: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key = line.split(":", 1)[0]
            if key in _STATUS_FIELDS:
                out[_STATUS_FIELDS[key]] = int(line.split()[1]) * 1024
    with open("/proc/self/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                out["pss"] = int(line.split()[1]) * 1024
    return out


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def held_bytes(module: torch.nn.Module) -> int:
    """Bytes of the parameters this rank holds: a DTensor (FSDP) counts its local shard."""
    total = 0
    for param in module.parameters():
        local = param.to_local() if hasattr(param, "to_local") else param
        total += local.numel() * local.element_size()
    return total


class StatsRunner(WanRunner):
    """:class:`WanRunner`, recording per-rank figures (see the module docstring)."""

    def load(self) -> float:
        seconds = super().load()
        pipe = self._pipe
        self._stats: dict[str, Any] = {
            "rank": self.rank,
            "torch_threads": torch.get_num_threads(),
            "load_s": seconds,
            "param_bytes": {
                name: held_bytes(getattr(pipe, name))
                for name in COMPONENTS
                if getattr(pipe, name, None) is not None
            },
            "memory_loaded": memory(),
        }
        return seconds

    def generate(
        self,
        request: GenerationRequest,
        on_step: Callable[[int, int], None],
        should_stop: Callable[[], bool],
    ) -> GenerationResult | None:
        started = time.perf_counter()
        marks: list[float] = []
        peaks: list[int] = []

        def noted(step: int, total: int) -> None:
            marks.append(time.perf_counter() - started)
            peaks.append(peak_rss_bytes())
            on_step(step, total)

        result = super().generate(request, noted, should_stop)
        stats = dict(
            self._stats,
            request_id=request.request_id,
            step_marks_s=marks,  # from generate() to the end of each step
            step_peak_rss_bytes=peaks,  # the peak so far at the end of each step
            generate_s=time.perf_counter() - started,
            memory_end=memory(),
        )
        path = Path(f"{request.output}.rank{self.rank}.json")
        path.write_text(json.dumps(stats), encoding="utf-8")
        return result
