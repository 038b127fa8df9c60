"""Generation groups on real pool workers: forming, reuse, dismissal, failures, cancel.

The runner is the stand-in (``gen_standin.Runner``): one all_reduce and a short sleep per
step over a real gloo process group, rank 0 writing a small mp4; the model's own
exactness is tested with WanRunner elsewhere. One pool of four CPU slots serves the
module; each test has its own keeper (closed after it). Bounds are generous: CI's two
cores are shared.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import psutil
import pytest

from clips import ClipSpec, write_clip
from gen_standin import fault_prompt, standin_model
from stream_fixtures import wait_for
from vidshard.devices.spec import parse_device_spec
from vidshard.devices.types import Device
from vidshard.engine.upscale import UpscaleOptions, run_upscale
from vidshard.errors import Cancelled, ConfigError, ModelError, WorkerError
from vidshard.executors.boot import WORKER_NAME_PREFIX
from vidshard.executors.local import LocalExecutor, Supervision
from vidshard.generation.group import GroupEvent, GroupKeeper
from vidshard.generation.types import GenerationModel, GenerationRequest, Layout

WAIT_S = 60.0
CPU = Device("cpu", 0, name="cpu")
# every slot shares the one CPU device: a few kills in a row must not quarantine it
SUPERVISION = Supervision(restart_backoff_s=0.1, max_backoff_s=0.5, max_consecutive_failures=10)
TWO = Layout(2, ulysses=2)


@pytest.fixture(scope="module")
def pool() -> Iterator[LocalExecutor]:
    executor = LocalExecutor(SUPERVISION)
    executor.start(parse_device_spec("cpu:4", [CPU]), None, lambda _event: None)
    yield executor
    executor.shutdown()


class Keepers:
    """Makes keepers on the pool, records their events, closes them after the test."""

    def __init__(self, pool: LocalExecutor) -> None:
        self.pool = pool
        self.events: list[GroupEvent] = []
        self.made: list[GroupKeeper] = []

    def __call__(self, **settings: float) -> GroupKeeper:
        options = {"collective_timeout_s": 30.0, "idle_release_s": 600.0, "stop_wait_s": 3.0}
        options.update(settings)
        keeper = GroupKeeper(self.pool, on_event=self.events.append, **options)  # type: ignore[arg-type]
        self.made.append(keeper)
        return keeper

    def kinds(self) -> list[str]:
        return [event.kind for event in self.events]


@pytest.fixture
def keepers(pool: LocalExecutor) -> Iterator[Keepers]:
    made = Keepers(pool)
    yield made
    for keeper in made.made:
        keeper.close()
    assert_no_orphans(pool)
    # every slot is free again: its rank units ended, its worker is up
    wait_for(lambda: all(s.state == "idle" for s in pool.slot_states()), WAIT_S)


@pytest.fixture
def model(tmp_path: Path) -> GenerationModel:
    return standin_model(tmp_path)


def request(folder: Path, name: str, steps: int = 5, prompt: str = "a cat") -> GenerationRequest:
    return GenerationRequest(
        request_id=name,
        image=folder / "image.png",
        prompt=prompt,
        negative_prompt="",
        frames=9,
        size_wh=(32, 32),
        steps=steps,
        guidance=1.0,
        seed=0,
        solver="euler",
        shift=3.0,
        cache=None,
        output=folder / f"{name}.mp4",
    )


def frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def worker_pids() -> set[int]:
    """This test process's worker processes (by their name), zombies aside."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if any(arg.startswith(WORKER_NAME_PREFIX) for arg in child.cmdline()):
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def assert_no_orphans(pool: LocalExecutor) -> None:
    """The only workers alive are the pool's own, one per slot."""

    def pool_pids() -> set[int]:
        return {s.pid for s in pool.slot_states() if s.pid is not None}

    wait_for(lambda: len(pool_pids()) == 4 and worker_pids() == pool_pids(), WAIT_S)


def pid_of(pool: LocalExecutor, label: str) -> int:
    pid = next(s.pid for s in pool.slot_states() if s.label == label)
    assert pid is not None
    return pid


def killer(
    pool: LocalExecutor, keeper: GroupKeeper, rank: int, at_step: int, times: int
) -> Callable[[int, int], None]:
    """An on_step that SIGKILLs rank ``rank``'s worker at ``at_step``, ``times`` times."""
    killed: list[int] = []

    def on_step(step: int, _total: int) -> None:
        if step == at_step and len(killed) < times:
            (group,) = keeper.groups()
            pid = pid_of(pool, group.slots[rank])
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    on_step.killed = killed  # type: ignore[attr-defined]
    return on_step


def test_a_group_of_two_runs_and_reports_its_steps_in_order(
    pool: LocalExecutor, keepers: Keepers, model: GenerationModel, tmp_path: Path
) -> None:
    keeper = keepers()
    steps: list[tuple[int, int]] = []
    result = keeper.run(
        model,
        TWO,
        request(tmp_path, "r1"),
        job_id="job-1",
        on_step=lambda s, t: steps.append((s, t)),
    )
    assert steps == [(step, 5) for step in range(1, 6)]
    assert result.request_id == "r1" and result.output == tmp_path / "r1.mp4"
    assert frame_count(result.output) == 9 and result.fps == 16
    assert result.load_seconds > 0
    assert not list(tmp_path.glob(".*.part"))  # written atomically
    # the group stays loaded on two slots of the pool, which show it
    (group,) = keeper.groups()
    assert group.state == "idle" and group.requests == 1 and len(group.slots) == 2
    held = [s for s in pool.slot_states() if s.label in group.slots]
    assert all(s.pinned and s.model == "standin" and s.job == group.group_id for s in held)


def test_a_second_request_reuses_the_loaded_group(
    pool: LocalExecutor, keepers: Keepers, model: GenerationModel, tmp_path: Path
) -> None:
    keeper = keepers()
    first = keeper.run(model, TWO, request(tmp_path, "a"), job_id="j")
    (group,) = keeper.groups()
    pids = {pid_of(pool, label) for label in group.slots}
    second = keeper.run(model, TWO, request(tmp_path, "b"), job_id="j")
    assert first.load_seconds > 0 and second.load_seconds == 0
    (again,) = keeper.groups()
    assert again.group_id == group.group_id and again.requests == 2
    assert {pid_of(pool, label) for label in again.slots} == pids  # the same processes
    assert keepers.kinds() == ["forming", "loaded"]  # one group, loaded once
    assert frame_count(second.output) == 9


def test_another_layout_or_model_forms_another_group(
    pool: LocalExecutor, keepers: Keepers, model: GenerationModel, tmp_path: Path
) -> None:
    keeper = keepers()
    keeper.run(model, TWO, request(tmp_path, "u"), job_id="j")
    cfg = keeper.run(model, Layout(2, cfg=2), request(tmp_path, "c"), job_id="j")
    assert cfg.load_seconds > 0  # not the ulysses group
    groups = keeper.groups()
    assert len(groups) == 2  # both stay: four slots hold them
    assert not set(groups[0].slots) & set(groups[1].slots)
    # a group of four needs every slot: the idle groups make way
    four = keeper.run(model, Layout(4, ulysses=4), request(tmp_path, "f"), job_id="j")
    assert four.load_seconds > 0
    (group,) = keeper.groups()
    assert group.layout.world == 4 and sorted(group.slots) == sorted(pool.live_slots())
    assert keepers.kinds().count("dismissed") == 2
    # another model with the same layout is another group as well
    other = keeper.run(
        standin_model(tmp_path, "other"), Layout(4, ulysses=4), request(tmp_path, "o"), job_id="j"
    )
    assert other.load_seconds > 0 and [g.model for g in keeper.groups()] == ["other"]


def test_a_killed_rank_is_retried_on_a_new_group(
    pool: LocalExecutor, keepers: Keepers, model: GenerationModel, tmp_path: Path
) -> None:
    keeper = keepers()
    keeper.run(model, TWO, request(tmp_path, "warm"), job_id="j")
    (before,) = keeper.groups()
    on_step = killer(pool, keeper, rank=1, at_step=2, times=1)
    result = keeper.run(model, TWO, request(tmp_path, "r", steps=6), job_id="j", on_step=on_step)
    assert len(on_step.killed) == 1  # type: ignore[attr-defined]
    assert frame_count(result.output) == 9
    assert result.load_seconds > 0  # a new group was loaded for the retry
    failed = [e for e in keepers.events if e.kind == "failed"]
    assert len(failed) == 1 and failed[0].group.group_id == before.group_id
    assert f"rank 1 on {before.slots[1]} was lost" in failed[0].reason
    (after,) = keeper.groups()
    assert after.group_id != before.group_id
    assert not set(after.slots) & set(before.slots)  # healthy slots were free: it took them
    assert_no_orphans(pool)


def test_a_rank_killed_twice_fails_the_request_and_the_slots_stay_usable(
    pool: LocalExecutor, keepers: Keepers, model: GenerationModel, tmp_path: Path
) -> None:
    keeper = keepers()
    on_step = killer(pool, keeper, rank=1, at_step=2, times=2)
    with pytest.raises(WorkerError) as caught:
        keeper.run(model, TWO, request(tmp_path, "r"), job_id="j", on_step=on_step)
    message = str(caught.value)
    assert "generation r failed twice" in message
    assert message.count("rank 1 on cpu#") >= 2 and "was lost" in message
    assert keeper.groups() == []
    assert not (tmp_path / "r.mp4").exists()
    assert_no_orphans(pool)
    # the slots take other work: a group of all four, then a file job
    result = keeper.run(model, Layout(4, ulysses=4), request(tmp_path, "after"), job_id="j")
    assert frame_count(result.output) == 9
    keeper.close()
    run_file_job(pool, tmp_path)


def run_file_job(pool: LocalExecutor, folder: Path) -> None:
    source = write_clip(folder / "in.mp4", ClipSpec(frames=24, size_wh=(32, 24), gop=6))
    options = UpscaleOptions(model="lanczos", scale=2, segment_seconds=0.3, preset="ultrafast")
    result = run_upscale(
        source, folder / "up.mp4", options, executor=lambda ref: pool.job("files", ref)
    )
    assert result.output.exists()


def test_a_hung_rank_times_out_and_is_retried(
    pool: LocalExecutor, keepers: Keepers, model: GenerationModel, tmp_path: Path
) -> None:
    keeper = keepers(collective_timeout_s=6.0)
    prompt = fault_prompt("hang", rank=1, step=2, once=tmp_path / "hang")
    result = keeper.run(model, TWO, request(tmp_path, "h", prompt=prompt), job_id="j")
    assert frame_count(result.output) == 9
    (failed,) = [e for e in keepers.events if e.kind == "failed"]
    # rank 0's collective timed out; rank 1 never answered and was killed
    assert "rank 0 on" in failed.reason and "rank 1 on" in failed.reason
    assert "did not stop (killed)" in failed.reason
    assert_no_orphans(pool)


def test_cancel_mid_run_raises_cancelled_and_the_group_stays(
    pool: LocalExecutor, keepers: Keepers, model: GenerationModel, tmp_path: Path
) -> None:
    keeper = keepers()
    cancel = threading.Event()
    steps: list[int] = []

    def on_step(step: int, _total: int) -> None:
        steps.append(step)
        if step == 2:
            cancel.set()

    with pytest.raises(Cancelled, match="cancelled at step"):
        keeper.run(
            model, TWO, request(tmp_path, "c", steps=50), job_id="j", on_step=on_step, cancel=cancel
        )
    assert max(steps) < 50  # it stopped between steps, well before the end
    assert not (tmp_path / "c.mp4").exists()
    (group,) = keeper.groups()
    assert group.state == "idle"
    # still loaded and usable: the next request pays no load
    result = keeper.run(model, TWO, request(tmp_path, "next"), job_id="j")
    assert result.load_seconds == 0 and frame_count(result.output) == 9
    assert "failed" not in keepers.kinds()


def test_a_cancel_before_the_group_forms_ends_it(
    pool: LocalExecutor, keepers: Keepers, model: GenerationModel, tmp_path: Path
) -> None:
    keeper = keepers()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        keeper.run(model, TWO, request(tmp_path, "x"), job_id="j", cancel=cancel)
    assert keeper.groups() == []


def test_more_ranks_than_live_slots_is_a_config_error(
    keepers: Keepers, model: GenerationModel, tmp_path: Path
) -> None:
    keeper = keepers()
    with pytest.raises(ConfigError, match=r"needs 5 live slots; the pool has 4 \(cpu#0"):
        keeper.run(model, Layout(5, ulysses=5), request(tmp_path, "big"), job_id="j")
    assert keeper.groups() == [] and keepers.events == []


def test_a_model_that_cannot_load_fails_without_a_retry(
    keepers: Keepers, model: GenerationModel, tmp_path: Path
) -> None:
    keeper = keepers()
    bad = standin_model(tmp_path, "bad-model")
    with pytest.raises(ModelError, match=r"no model_index\.json"):
        keeper.run(bad, TWO, request(tmp_path, "bad"), job_id="j")
    assert keepers.kinds() == ["forming", "dismissed"]  # one try, no "failed" group
    assert keeper.groups() == []
    # a group formed at once on the same warm workers joins and loads the first time
    result = keeper.run(model, TWO, request(tmp_path, "good"), job_id="j")
    assert result.load_seconds > 0 and "failed" not in keepers.kinds()


def test_an_idle_group_is_dismissed_after_idle_release_s(
    pool: LocalExecutor, keepers: Keepers, model: GenerationModel, tmp_path: Path
) -> None:
    keeper = keepers(idle_release_s=1.0)
    keeper.run(model, TWO, request(tmp_path, "i"), job_id="j")
    wait_for(lambda: keepers.kinds()[-1:] == ["dismissed"], WAIT_S)
    assert "idle for" in keepers.events[-1].reason and keeper.groups() == []
    wait_for(lambda: not any(s.pinned for s in pool.slot_states()), WAIT_S)


def test_an_idle_group_makes_way_for_units_waiting_in_the_pool(
    pool: LocalExecutor, keepers: Keepers, model: GenerationModel, tmp_path: Path
) -> None:
    keeper = keepers()
    keeper.run(model, Layout(4, ulysses=4), request(tmp_path, "all"), job_id="j")
    assert len(keeper.groups()) == 1  # every slot held, idle
    run_file_job(pool, tmp_path)  # its units wait: the group is dismissed for them
    assert keeper.groups() == []
    assert keepers.events[-1].kind == "dismissed"
    assert "other units wait" in keepers.events[-1].reason


RANK_SCRIPT = """
import sys, torch, torch.distributed as dist
from vidshard.engine.units import GroupRankUnit
from vidshard.generation.group_rank import _join, _leave
from vidshard.generation.types import GenerationModel, Layout

rank, port, dead_port = int(sys.argv[1]), sys.argv[2], sys.argv[3]
model = GenerationModel(path="m")
if dead_port != "-":  # a rendezvous nobody else comes to: it times out
    lonely = GroupRankUnit("x", model, Layout(2, ulysses=2), 0, f"tcp://127.0.0.1:{dead_port}", 1.0)
    try:
        _join(lonely, "cpu")
    except Exception as exc:
        print("first join failed:", type(exc).__name__, flush=True)
unit = GroupRankUnit("y", model, Layout(2, ulysses=2), rank, f"tcp://127.0.0.1:{port}", 20.0)
_join(unit, "cpu")
total = torch.ones(1)
dist.all_reduce(total)
_leave()
print("sum", total.item(), flush=True)
"""


def test_a_rank_whose_rendezvous_failed_joins_its_next_group(tmp_path: Path) -> None:
    # torch's group counter stays raised after a failed rendezvous: without a reset the
    # process names its next group differently from a fresh peer and they never meet
    import socket
    import subprocess
    import sys

    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])

    port, dead_port = free_port(), free_port()
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    runs = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(port), dead],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for rank, dead in ((0, str(dead_port)), (1, "-"))
    ]
    outputs = [run.communicate(timeout=WAIT_S)[0] for run in runs]
    assert "first join failed: DistStoreError" in outputs[0]
    assert all("sum 2.0" in output for output in outputs), outputs


def test_wan_on_a_group_of_two_reuses_its_load(
    pool: LocalExecutor, keepers: Keepers, tmp_path: Path
) -> None:
    from gen_fixtures import test_image, tiny_wan_i2v

    keeper = keepers()
    wan = GenerationModel(path=tiny_wan_i2v(tmp_path))
    image = test_image(tmp_path / "image.png")

    def wan_request(name: str) -> GenerationRequest:
        return GenerationRequest(
            request_id=name,
            image=image,
            prompt="a cat",
            negative_prompt="",
            frames=5,
            size_wh=(32, 32),
            steps=2,
            guidance=1.0,
            seed=7,
            solver="unipc",
            shift=3.0,
            cache=None,
            output=tmp_path / f"{name}.mp4",
        )

    steps: list[int] = []
    first = keeper.run(
        wan, TWO, wan_request("w1"), job_id="j", on_step=lambda s, _t: steps.append(s)
    )
    second = keeper.run(wan, TWO, wan_request("w2"), job_id="j")
    assert steps == [1, 2]
    assert first.load_seconds > 0 and second.load_seconds == 0
    assert frame_count(first.output) == 5 and frame_count(second.output) == 5
    (group,) = keeper.groups()
    assert group.requests == 2 and group.model == "tiny-wan-i2v"
