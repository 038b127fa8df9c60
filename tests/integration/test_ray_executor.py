"""The Ray executor on a real two-node Ray cluster started on this machine.

Every workload is run on it and compared with the local executor's output: upscale
(bit for bit, ``--crf 0``), detect and track, generation groups, live streams. Failures:
an actor SIGKILLed mid-job, the second node stopped mid-job (every process of it at
once), a path the second node cannot see. See ``tests/ray_fixtures.py`` for the cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import vidshard
from clips import ClipSpec, write_clip
from helpers import audio_packets, frame_hashes, frame_times, need_package, slow_model_source
from ray_fixtures import HEAD_IP, NODE_IP, TwoNodeCluster, ray_env
from stream_fixtures import wait_for
from vidshard.errors import StorageError

pytestmark = pytest.mark.slow
need_package("ray")

WAIT_S = 90.0

PLACEMENT_MODEL = '''
import os
from pathlib import Path
from vidshard.models import ModelSpec


class WhereAmI:
    """Nearest x2 on the CPU, whatever device it is given; records where it loaded."""

    def __init__(self):
        self.spec = ModelSpec(name="where", scale=2)

    def load(self, device):
        record = {
            "node": os.environ.get("VIDSHARD_CLUSTER_NODE"),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device": device,
        }
        folder = Path(WHERE_DIR)
        (folder / f"{os.getpid()}.json").write_text(__import__("json").dumps(record))

    def run(self, batch):
        return batch.repeat(2, axis=1).repeat(2, axis=2)
'''


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodeCluster]:
    made = TwoNodeCluster(tmp_path_factory.mktemp("ray"))
    try:
        made.start()
        yield made
    finally:
        made.stop()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ray-media")
    (root / "slow.py").write_text(slow_model_source("Slow", per_frame_s=0.05))
    return {
        "root": root,
        "clip": write_clip(
            root / "clip.mp4",
            ClipSpec(frames=48, size_wh=(96, 64), gop=6, audio_languages=("eng",)),
        ),
    }


def ray(cluster: TwoNodeCluster) -> dict[str, Any]:
    return {"executor": "ray", "ray_address": cluster.address}


def nodes_used(slots: Any) -> set[str]:
    return {s.label.split("/")[0] for s in slots if s.frames > 0}


def same_output(a: Path, b: Path) -> None:
    assert frame_hashes(a) == frame_hashes(b)
    assert frame_times(a) == frame_times(b)
    assert audio_packets(a) == audio_packets(b)


def test_upscale_on_both_nodes_is_the_local_executor_s_output(
    cluster: TwoNodeCluster, media: dict[str, Path], tmp_path: Path
) -> None:
    common = {"model": "lanczos", "scale": 2, "crf": 0, "segment_seconds": 0.5}
    local = vidshard.upscale(media["clip"], tmp_path / "local.mp4", devices="cpu:2", **common)
    on_ray = vidshard.upscale(
        media["clip"], tmp_path / "ray.mp4", devices="cpu:4", **common, **ray(cluster)
    )
    same_output(local.output, on_ray.output)
    assert on_ray.frames == 48
    assert nodes_used(on_ray.slots) == {HEAD_IP, NODE_IP}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no work dir left


def test_each_gpu_slot_sees_the_one_gpu_ray_gave_its_actor(
    cluster: TwoNodeCluster, media: dict[str, Path], tmp_path: Path
) -> None:
    where = tmp_path / "where"
    where.mkdir()
    model = tmp_path / "where.py"  # a worker's environment is its node's: the folder is in it
    model.write_text(f"WHERE_DIR = {str(where)!r}\n" + PLACEMENT_MODEL)
    result = vidshard.upscale(
        media["clip"],
        tmp_path / "out.mp4",
        model=f"{model}:WhereAmI",
        devices="all",  # every accelerator of the cluster: 2 fake GPUs on each node
        segment_seconds=0.25,
        **ray(cluster),
    )
    assert result.frames == 48
    seen = [json.loads(p.read_text()) for p in where.glob("*.json")]
    placed = {(r["node"], r["visible"]) for r in seen}
    assert placed == {(HEAD_IP, "0"), (HEAD_IP, "1"), (NODE_IP, "0"), (NODE_IP, "1")}
    assert {r["device"] for r in seen} == {"cuda:0"}  # only its own GPU is visible
    assert {s.label for s in result.slots} == {
        f"{HEAD_IP}/cuda:0#0",
        f"{HEAD_IP}/cuda:1#1",
        f"{NODE_IP}/cuda:0#2",
        f"{NODE_IP}/cuda:1#3",
    }


def test_detect_and_track_on_both_nodes_match_the_local_executor(
    cluster: TwoNodeCluster, tmp_path: Path
) -> None:
    from squares import FAKE_DETECTOR, write_squares
    from vidshard.detection.pipeline import DetectorOptions, DetectRecipe
    from vidshard.engine.detect import DetectOptions, run_detect

    (tmp_path / "fake_detector.py").write_text(FAKE_DETECTOR)
    videos = [
        write_squares(tmp_path / "a.mp4", 40),
        write_squares(tmp_path / "long.mp4", 120, gop=10),
    ]
    recipe = DetectRecipe(
        detector="class",
        weights=f"{tmp_path / 'fake_detector.py'}:Squares",
        options=DetectorOptions(batch_size=4),
        tracker="bytetrack",
    )
    runs = {}
    for name, executor in (("local", "local"), ("ray", f"ray:{cluster.address}")):
        out = tmp_path / f"{name}.jsonl"
        options = DetectOptions(
            devices="cpu:2",
            overlap_frames=8,
            executor=executor,
            annotate_dir=tmp_path / f"{name}-drawn",
        )
        runs[name] = run_detect(videos, out, recipe, options)
        assert not runs[name].failed
    assert nodes_used(runs["ray"].slots) == {HEAD_IP, NODE_IP}
    for video in videos:  # annotation ran on the cluster too: every frame, at its time
        drawn = f"{video.stem}.annotated.mp4"
        ray_drawn, local_drawn = tmp_path / "ray-drawn" / drawn, tmp_path / "local-drawn" / drawn
        # (not bit for bit: x264 decides by its thread count, which differs per slot here)
        assert frame_times(ray_drawn) == frame_times(local_drawn) == frame_times(video)

    def frames(path: Path) -> dict[str, list[Any]]:
        records = [json.loads(line) for line in path.read_text().splitlines()]
        return {r["video_path"]: r["frames"] for r in records}

    assert frames(tmp_path / "ray.jsonl") == frames(tmp_path / "local.jsonl")


def slow_job_locally(media: dict[str, Path], tmp_path: Path) -> tuple[dict[str, Any], Any]:
    """The slow model's job options, and its output on the local executor."""
    common = {"model": f"{media['root'] / 'slow.py'}:Slow", "crf": 0, "segment_seconds": 0.5}
    local = vidshard.upscale(media["clip"], tmp_path / "local.mp4", devices="cpu:2", **common)
    return common, local


def worker_pids(label_part: str) -> list[psutil.Process]:
    """Worker processes whose slot label contains ``label_part`` (their argv names it)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(part.startswith("vidshard-worker-") and label_part in part for part in cmdline):
            found.append(proc)
    return found


def kill_at_first_progress(action: Any) -> tuple[Any, threading.Event]:
    """An ``on_progress`` that runs ``action`` once, on its own thread, at the first
    frames done; and the event set once it did."""
    done = threading.Event()
    lock = threading.Lock()

    def on_progress(snapshot: Any) -> None:
        with lock:
            if done.is_set() or snapshot.frames_done < 2:
                return
            done.set()
        threading.Thread(target=action, daemon=True).start()

    return on_progress, done


def test_an_actor_killed_mid_job_the_job_completes_identical(
    cluster: TwoNodeCluster, media: dict[str, Path], tmp_path: Path
) -> None:
    common, local = slow_job_locally(media, tmp_path)
    killed: list[int] = []

    def kill_an_actor() -> None:
        (worker,) = worker_pids(f"{NODE_IP}/cpu#1")
        actor = worker.parent()  # the slot's Ray actor, on the second node
        assert actor is not None and "SlotHost" in " ".join(actor.cmdline())
        killed.append(actor.pid)
        os.kill(actor.pid, signal.SIGKILL)

    on_progress, done = kill_at_first_progress(kill_an_actor)
    on_ray = vidshard.upscale(
        media["clip"],
        tmp_path / "ray.mp4",
        devices="cpu:2",
        on_progress=on_progress,
        **common,
        **ray(cluster),
    )
    assert done.is_set() and killed and not psutil.pid_exists(killed[0])
    same_output(local.output, on_ray.output)
    assert on_ray.frames == 48 and not on_ray.quarantined


def test_a_stream_moves_when_its_actor_dies(cluster: TwoNodeCluster, tmp_path: Path) -> None:
    from stream_fixtures import write_detectors
    from vidshard.detection.pipeline import DetectRecipe
    from vidshard.executors.local import Supervision
    from vidshard.executors.ray_cluster import RayExecutor
    from vidshard.streams.manager import StreamManager
    from vidshard.streams.options import StreamOptions

    clip = write_clip(tmp_path / "live.mp4", ClipSpec(size_wh=(160, 120), frames=50, gop=5))
    detectors = write_detectors(tmp_path)
    recipe = DetectRecipe(detector="class", weights=f"{detectors}:Counting")
    options = StreamOptions(model=f"{detectors}:Counting", loop=True, realtime=True)  # type: ignore[call-arg]
    pool = RayExecutor(cluster.address, Supervision(restart_backoff_s=0.1, max_backoff_s=0.5))
    records: list[Any] = []
    pool.start(pool.resolve_slots("cpu:2"), None, lambda _event: None)
    manager = StreamManager(pool, on_record=records.append)
    try:
        for stream_id in ("a", "b"):
            manager.add(str(clip), options, recipe, stream_id=stream_id)
        slots = {manager.get(i).slot for i in "ab"}
        assert slots == {f"{HEAD_IP}/cpu#0", f"{NODE_IP}/cpu#1"}
        wait_for(lambda: {r.stream_id for r in list(records)} == {"a", "b"}, WAIT_S)
        victim = next(i for i in "ab" if manager.get(i).slot == f"{NODE_IP}/cpu#1")
        (worker,) = worker_pids(f"{NODE_IP}/cpu#1")
        os.kill(worker.parent().pid, signal.SIGKILL)  # type: ignore[union-attr]
        wait_for(
            lambda: any(
                r.stream_id == victim and r.slot == f"{HEAD_IP}/cpu#0" for r in list(records)
            ),
            WAIT_S,
        )
        assert manager.get(victim).failovers == 1
        # the actor is started again on its node, and takes streams again
        wait_for(
            lambda: any(
                s.label == f"{NODE_IP}/cpu#1" and s.state == "idle" for s in pool.slot_states()
            ),
            WAIT_S,
        )
    finally:
        manager.close()
        pool.shutdown()


def test_a_generation_group_runs_its_ranks_on_one_node(
    cluster: TwoNodeCluster, tmp_path: Path
) -> None:
    pytest.importorskip("diffusers")
    from test_generate import frames_of

    from gen_fixtures import test_image, tiny_wan_i2v
    from helpers import same_video

    model = tiny_wan_i2v(tmp_path / "models")
    image = test_image(tmp_path / "first.png", (48, 40))
    common = {
        "image": image,
        "model": str(model),
        "prompt": "a cat walks",
        "size": "32x32",
        "frames": 5,
        "steps": 2,
        "seed": 5,
        "cfg_parallel": True,
    }
    local = vidshard.generate(output=tmp_path / "local.mp4", devices="cpu:2", **common)
    # cpu:4 spreads two slots on each node; the group's two ranks take one node's
    on_ray = vidshard.generate(
        output=tmp_path / "ray.mp4", devices=f"{NODE_IP}/cpu:2", **common, **ray(cluster)
    )
    assert on_ray.layout.world == 2
    assert same_video(frames_of(local.output), frames_of(on_ray.output))


def test_the_storage_check_names_the_node_and_the_path(
    cluster: TwoNodeCluster, media: dict[str, Path], tmp_path: Path
) -> None:
    if not cluster.hidden_works:
        pytest.skip("no mount namespace here (unshare): no path one node cannot see")
    hidden_clip = cluster.hidden / "clip.mp4"
    hidden_clip.write_bytes(media["clip"].read_bytes())
    with pytest.raises(StorageError, match=rf"node {NODE_IP} cannot read {hidden_clip}"):
        vidshard.upscale(hidden_clip, tmp_path / "out.mp4", devices="cpu:2", **ray(cluster))
    assert not list(tmp_path.iterdir())  # nothing written, no work dir left
    # an output folder the second node cannot see: it is not the coordinator's folder
    out = cluster.hidden / "out.mp4"
    with pytest.raises(StorageError, match=rf"node {NODE_IP} cannot see the coordinator's"):
        vidshard.upscale(media["clip"], out, devices="cpu:2", **ray(cluster))
    assert not out.exists() and not [p for p in cluster.hidden.iterdir() if p.name[0] == "."]
    # the command line: one line naming both, exit code 2
    command = [sys.executable, "-m", "vidshard", "upscale", str(hidden_clip)]
    command += ["-o", str(tmp_path / "o.mp4"), "--devices", "cpu:2", "--executor", "ray"]
    proc = subprocess.run(
        [*command, "--ray-address", cluster.address],
        check=False,
        capture_output=True,
        text=True,
        env=ray_env(),
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and NODE_IP in lines[0] and str(hidden_clip) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_interrupted_job_resumes_on_the_cluster(
    cluster: TwoNodeCluster, media: dict[str, Path], tmp_path: Path
) -> None:
    from vidshard.engine.manifest import Manifest
    from vidshard.engine.upscale import work_dir_for

    model = f"{media['root'] / 'slow.py'}:Slow"
    common = {"model": model, "crf": 0, "segment_seconds": 0.25}
    out = tmp_path / "out.mp4"
    command = [sys.executable, "-m", "vidshard", "upscale", str(media["clip"]), "-o", str(out)]
    command += ["--model", model, "--crf", "0", "--segment-seconds", "0.25", "--devices"]
    command += ["cpu:2", "--executor", "ray", "--ray-address", cluster.address]
    proc = subprocess.Popen(
        command, env=ray_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    work_dir = work_dir_for(out)

    def finished() -> int:
        manifest = Manifest.load(work_dir)
        return 0 if manifest is None else len(manifest.finished)

    try:
        wait_for(lambda: finished() >= 2 or proc.poll() is not None, WAIT_S)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGTERM)  # as Ctrl-C: workers end, finished segments kept
        assert proc.wait(60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists() and finished() >= 2
    resumed = vidshard.upscale(media["clip"], out, devices="cpu:2", **common, **ray(cluster))
    assert resumed.resumed_units >= 2
    local = vidshard.upscale(media["clip"], tmp_path / "local.mp4", devices="cpu:2", **common)
    same_output(local.output, resumed.output)
    assert not work_dir_for(out).exists()


def test_the_service_on_the_cluster_shows_each_node_and_one_going(
    cluster: TwoNodeCluster, media: dict[str, Path], tmp_path: Path
) -> None:
    import httpx

    from service_helpers import running_server

    args = ["--executor", "ray", "--ray-address", cluster.address, "--devices", "cpu:2"]
    args += ["--input-root", str(media["root"])]
    with running_server(tmp_path / "data", *args, env=ray_env(), ready_timeout_s=120) as server:
        devices = httpx.get(f"{server.url}/v1/devices", timeout=30).json()
        assert {(d["node"], d["device"]) for d in devices} == {
            (HEAD_IP, f"{HEAD_IP}/cpu"),
            (NODE_IP, f"{NODE_IP}/cpu"),
        }
        assert [len(d["slots"]) for d in devices] == [1, 1]
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        assert (
            f'vidshard_slot_up{{slot="{NODE_IP}/cpu#1",device="{NODE_IP}/cpu",node="{NODE_IP}"}} 1'
            in metrics
        )
        health = httpx.get(f"{server.url}/health", timeout=30).json()
        assert health["nodes"] == {
            HEAD_IP: {"slots_alive": 1, "slots_total": 1},
            NODE_IP: {"slots_alive": 1, "slots_total": 1},
        }
        assert health["nodes_gone"] == []
        params = {"model": "lanczos", "scale": 2, "crf": 0, "segment_seconds": 0.5}
        body = {"input": str(media["clip"]), "params": params}
        job = httpx.post(f"{server.url}/v1/jobs", json=body, timeout=30).json()
        wait_for(
            lambda: (
                httpx.get(f"{server.url}/v1/jobs/{job['id']}", timeout=30).json()["state"]
                in ("succeeded", "failed")
            ),
            WAIT_S,
        )
        done = httpx.get(f"{server.url}/v1/jobs/{job['id']}", timeout=30).json()
        assert done["state"] == "succeeded", done
        local = vidshard.upscale(media["clip"], tmp_path / "local.mp4", devices="cpu:2", **params)
        same_output(local.output, Path(done["result"]["path"]))
        # the second node goes away: health says so, the head's slot still serves
        cluster.stop_second_node()
        try:

            def gone() -> bool:
                seen = httpx.get(f"{server.url}/health", timeout=30).json()
                return bool(seen["nodes_gone"] == [NODE_IP])

            wait_for(gone, WAIT_S, step_s=0.5)
            health = httpx.get(f"{server.url}/health", timeout=30)
            assert health.status_code == 200 and health.json()["slots_alive"] == 1
            assert health.json()["quarantined"] == [f"{NODE_IP}/cpu"]
        finally:
            cluster.wait_for_node_dead(NODE_IP)
            cluster.start_second_node()


def test_a_node_stopped_mid_job_the_job_completes_identical(
    cluster: TwoNodeCluster, media: dict[str, Path], tmp_path: Path
) -> None:
    common, local = slow_job_locally(media, tmp_path)
    on_progress, done = kill_at_first_progress(cluster.stop_second_node)
    try:
        on_ray = vidshard.upscale(
            media["clip"],
            tmp_path / "ray.mp4",
            devices="cpu:4",
            on_progress=on_progress,
            **common,
            **ray(cluster),
        )
        assert done.is_set()
        same_output(local.output, on_ray.output)
        assert on_ray.frames == 48
        # the head's slots finished it
        assert {s.label.split("/")[0] for s in on_ray.slots if s.frames > 0} >= {HEAD_IP}
    finally:
        cluster.wait_for_node_dead(NODE_IP)
        cluster.start_second_node()  # for the tests after this one
