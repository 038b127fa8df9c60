"""A real two-node Ray cluster on this machine, for the Ray executor's tests.

The head listens on 127.0.0.2, the second node on 127.0.0.3 (loopback addresses other
than 127.0.0.1, which Ray would swap for the machine's outward address). Each node
offers 2 CPUs (``cpus``), 2 fake GPUs (Ray sets ``CUDA_VISIBLE_DEVICES`` per actor from
them) and a custom resource naming it. Each runs in its own process group, so a test can stop one
node (all its processes) without touching anything else; only the cluster a test
started is ever stopped.

The second node runs in its own mount namespace with an empty tmpfs over
:attr:`TwoNodeCluster.hidden`: files the head sees there, that node does not (the
storage check's case). That needs ``unshare`` (root, or unprivileged user namespaces);
without it the cluster starts without the hidden folder and ``hidden_works`` is False.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HEAD_IP = "127.0.0.2"
NODE_IP = "127.0.0.3"
START_TIMEOUT_S = 90.0


def ray_env() -> dict[str, str]:
    """The environment for ``ray start`` and for processes that join the cluster."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # set, Ray refuses a second node
    env.pop("RAY_ADDRESS", None)
    return env


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ray_command() -> list[str]:
    """``ray`` from this interpreter's environment."""
    found = Path(sys.executable).with_name("ray")
    return [str(found)] if found.exists() else [shutil.which("ray") or "ray"]


class TwoNodeCluster:
    def __init__(self, root: Path, cpus: int = 2) -> None:
        self.root = root
        self.cpus = cpus  # each node offers this many CPUs to Ray
        self.port = _free_port(HEAD_IP)
        self.address = f"{HEAD_IP}:{self.port}"
        self.hidden = root / "hidden"  # the head sees its files; the second node does not
        self.hidden_works = False
        self._head: subprocess.Popen[bytes] | None = None
        self._node: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # this process joins the cluster too (the executor's driver): the same settings
        self._saved_env = {
            k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")
        }
        os.environ.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"})
        self.hidden.mkdir(parents=True, exist_ok=True)
        head = [
            *ray_command(),
            "start",
            "--head",
            "--node-ip-address",
            HEAD_IP,
            "--port",
            str(self.port),
            "--num-cpus",
            str(self.cpus),
            "--num-gpus",
            "2",
            "--resources",
            '{"node_a": 1}',
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
            "--block",
        ]
        self._head = self._spawn(head, "head.log")
        self._wait_for_port()
        self.start_second_node()

    def start_second_node(self) -> None:
        join = [
            *ray_command(),
            "start",
            "--address",
            self.address,
            "--node-ip-address",
            NODE_IP,
            "--num-cpus",
            str(self.cpus),
            "--num-gpus",
            "2",
            "--resources",
            '{"node_b": 1}',
            "--disable-usage-stats",
            "--block",
        ]
        self.hidden_works = _unshare_works()
        if self.hidden_works:
            quoted = " ".join(f"'{part}'" for part in join)
            script = f"mount -t tmpfs vidshard-hidden '{self.hidden}' && exec {quoted}"
            self._node = self._spawn(["unshare", "-m", "sh", "-c", script], "node.log")
        else:
            self._node = self._spawn(join, "node.log")
        self.wait_for_nodes(2)

    def _spawn(self, command: list[str], log: str) -> subprocess.Popen[bytes]:
        with (self.root / log).open("ab") as out:
            return subprocess.Popen(
                command,
                env=ray_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: stopped alone, with all it starts
            )

    def _wait_for_port(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((HEAD_IP, self.port), 1):
                return
            if self._head is not None and self._head.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"the Ray head did not start: {self.log('head.log')}")

    def alive_nodes(self) -> list[dict[str, Any]]:
        import ray

        return [n for n in ray.nodes() if n.get("Alive")]

    def wait_for_nodes(self, count: int) -> None:
        """Until ``count`` nodes are alive (the test process stays connected)."""
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if len(self.alive_nodes()) == count:
                return
            time.sleep(0.25)
        raise RuntimeError(
            f"{count} Ray nodes were not up in {START_TIMEOUT_S:.0f} s: {self.log('node.log')}"
        )

    def wait_for_node_dead(self, ip: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(n["NodeManagerAddress"] != ip for n in self.alive_nodes()):
                return
            time.sleep(0.25)
        raise RuntimeError(f"Ray did not mark {ip} dead in {timeout_s:.0f} s")

    def stop_second_node(self) -> None:
        """Every process of the second node, at once (as a machine that goes away)."""
        _stop_group(self._node, signal.SIGKILL)
        self._node = None

    def stop(self) -> None:
        import ray

        ray.shutdown()
        for proc in (self._node, self._head):
            _stop_group(proc, signal.SIGTERM)
        self._node = self._head = None
        for key, value in getattr(self, "_saved_env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def log(self, name: str) -> str:
        path = self.root / name
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"


def _stop_group(proc: subprocess.Popen[bytes] | None, first: signal.Signals) -> None:
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, first)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10.0)
    with contextlib.suppress(ProcessLookupError):  # what is left of its group
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5.0)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs probe /mnt 2>/dev/null || exit 1"],
        check=False,
        capture_output=True,
    )
    return probe.returncode == 0
