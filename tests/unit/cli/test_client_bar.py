"""The client's wait bar: the CLI's progress line, fed from polled jobs."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from rich.console import Console

from vidshard.client import Job
from vidshard.client_bar import WaitBar


def job(state: str, done: int, total: int | None, eta_s: float | None = None, **kw) -> Job:
    view = {"id": "0123456789abcdef", "state": state, "frames_done": done}
    view.update(frames_total=total, eta_s=eta_s, **kw)
    return Job.from_view(view)


def final_line(width: int, *polls: Job) -> str:
    out = io.StringIO()
    with WaitBar("0123456789abcdef", True, Console(file=out, width=width)) as bar:
        for polled in polls:
            bar.update(polled)
    return out.getvalue().splitlines()[0]


@pytest.mark.parametrize("width", [60, 80, 120])
def test_counts_and_eta_stay_at_every_width(width: int) -> None:
    line = final_line(
        width, job("queued", 0, None, queue_position=2), job("running", 120, 400, 35.0, fps=12.5)
    )
    assert line.startswith("job 01234567 running")
    assert "120/400 frames" in line and "eta 0:35" in line and len(line) <= width


def test_a_lower_count_from_the_server_does_not_move_the_bar_back() -> None:
    line = final_line(120, job("running", 300, 400, 5.0, fps=20.0), job("cancelled", 250, 400))
    assert "job 01234567 cancelled" in line
    assert "300/400 frames" in line and "20.0 fps" in line  # the last rate seen stays


def test_a_finished_job() -> None:
    line = final_line(80, job("running", 10, 40, 9.0, fps=3.0), job("succeeded", 40, 40))
    assert "40/40 frames" in line and "eta 0:00" in line


@dataclass(frozen=True)
class Polled:
    """Not a client Job: the bar reads only the fields of JobProgress."""

    state: str
    frames_done: int
    frames_total: int | None
    queue_position: int | None = None
    fps: float | None = None
    eta_s: float | None = None
    done: bool = False


def test_the_bar_takes_any_job_progress_not_only_the_clients_job() -> None:
    line = final_line(80, Polled("queued", 0, None, queue_position=3))
    assert line.startswith("job 01234567 queued (#3)")
    line = final_line(80, Polled("running", 5, 50, fps=2.0, eta_s=22.0))
    assert "5/50 frames" in line and "eta 0:22" in line
