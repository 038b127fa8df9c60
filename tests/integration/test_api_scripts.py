"""The Python API run the ways people run Python: a script without a main guard, stdin,
``python -c``, ``python -m``, a Jupyter kernel.

Workers start on vidshard's own entry point, so none of these runs the user's code a
second time (or fails to find it), and no work dir is left beside the output.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.clips import ClipSpec, write_clip
from tests.helpers import EXAMPLES

import vidshard
from vidshard.media import probe

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
README_FRAMES = 377  # examples/car-detection.mp4
RUN_TIMEOUT_S = 240


def readme_api_block() -> str:
    blocks = [
        b for b in re.findall(r"```python\n(.*?)```", README, re.DOTALL) if "vidshard.upscale(" in b
    ]
    assert len(blocks) == 1, "expected one README python block calling vidshard.upscale("
    return blocks[0]


def clean_env() -> dict[str, str]:
    """This environment without a fault a test may have set."""
    return {k: v for k, v in os.environ.items() if k != "VIDSHARD_FAULT"}


def python(
    cwd: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env or clean_env(),
    )


def work_dirs(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".*.vidshard"))


def assert_readme_result(folder: Path, printed: str) -> None:
    """What the README block prints and writes: the output, then one line per slot."""
    lines = printed.strip().splitlines()
    assert re.fullmatch(rf"car-x2\.mp4 {README_FRAMES} \d+\.\d fps", lines[0]), printed
    slot_lines = [re.fullmatch(r"(cpu#[01]) (\d+) \d+\.\d fps", line) for line in lines[1:]]
    assert len(slot_lines) == 2 and all(slot_lines), printed
    assert sum(int(m.group(2)) for m in slot_lines if m) == README_FRAMES
    assert probe(folder / "car-x2.mp4").video.frame_count == README_FRAMES
    assert work_dirs(folder) == []


@pytest.fixture
def readme_dir(tmp_path: Path) -> Path:
    """A folder to run the README block in: it names examples/car-detection.mp4."""
    (tmp_path / "examples").symlink_to(EXAMPLES)
    return tmp_path


# --- the README's block, as a file, from stdin, with -c -----------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "how",
    [
        "script",  # saved as example.py (no main guard) and run: python example.py
        "stdin",  # piped in: python - < example.py
        "dash-c",  # python -c "<the block>"
    ],
)
def test_readme_block_runs_as_written(readme_dir: Path, how: str) -> None:
    code = readme_api_block()
    if how == "script":
        (readme_dir / "example.py").write_text(code)
        done = python(readme_dir, "example.py")
    elif how == "stdin":
        done = python(readme_dir, "-", stdin=code)
    else:
        done = python(readme_dir, "-c", code)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr  # no worker failed along the way
    assert_readme_result(readme_dir, done.stdout)


@pytest.mark.slow
def test_readme_block_runs_in_a_jupyter_kernel(readme_dir: Path) -> None:
    from jupyter_client.manager import start_new_kernel

    try:
        manager, client = start_new_kernel(
            kernel_name="python3", startup_timeout=120, cwd=str(readme_dir), env=clean_env()
        )
    except RuntimeError as exc:  # the kernel did not answer in time
        pytest.skip(f"a Jupyter kernel could not start here: {exc}")
    stdout: list[str] = []
    errors: list[str] = []

    def on_output(message: dict[str, object]) -> None:
        content = message["content"]
        assert isinstance(content, dict)
        if message["msg_type"] == "stream" and content.get("name") == "stdout":
            stdout.append(str(content["text"]))
        elif message["msg_type"] == "error":
            errors.append(f"{content['ename']}: {content['evalue']}")

    try:
        reply = client.execute_interactive(
            readme_api_block(), timeout=RUN_TIMEOUT_S, output_hook=on_output
        )
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok", errors
    assert_readme_result(readme_dir, "".join(stdout))


# --- user code around a job: it runs once, whatever the way it is started -------------

JOB = """\
import vidshard

result = vidshard.upscale(
    {source!r}, {output!r}, model={model!r}, scale=2, devices="cpu:2", preset="ultrafast"
)
print("frames", result.frames)
"""
# Top-level code that must run once: each run appends a line.
MARK = "open({marker!r}, 'a').write('ran\\n')\n"


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.mp4", ClipSpec(frames=24, size_wh=(64, 48)))


def job_code(clip: Path, output: Path, marker: Path, model: str = "lanczos") -> str:
    job = JOB.format(source=str(clip), output=str(output), model=model)
    return MARK.format(marker=str(marker)) + job


@pytest.mark.parametrize(
    "how",
    [
        "script",  # a script without a main guard
        "guarded",  # a script WITH a main guard: its top-level code still ran again once
        "module",  # a plain module run as python -m jobmod
        "self-deleting",  # a script that removes its own file and sets an odd sys.argv
        "stdin",  # python - with the code on stdin
        "dash-c",  # python -c
    ],
)
def test_the_callers_code_runs_once(tmp_path: Path, clip: Path, how: str) -> None:
    output, marker = tmp_path / "out.mp4", tmp_path / "marker.txt"
    code = job_code(clip, output, marker)
    if how == "guarded":
        body = textwrap.indent(
            JOB.format(source=str(clip), output=str(output), model="lanczos"), "    "
        )
        code = MARK.format(marker=str(marker)) + 'if __name__ == "__main__":\n' + body
    elif how == "self-deleting":
        code = "import os, sys\nos.remove(__file__)\nsys.argv = ['']\n" + code
    if how in ("script", "guarded", "self-deleting"):
        (tmp_path / "job.py").write_text(code)
        done = python(tmp_path, "job.py")
    elif how == "module":
        (tmp_path / "jobmod.py").write_text(code)
        done = python(tmp_path, "-m", "jobmod")
    elif how == "stdin":
        done = python(tmp_path, "-", stdin=code)
    else:
        done = python(tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "frames 24"
    assert marker.read_text() == "ran\n"  # once: no worker ran it again
    assert probe(output).video.frame_count == 24
    assert work_dirs(tmp_path) == []


def test_a_model_module_beside_the_script_imports_in_the_workers(
    tmp_path: Path, clip: Path
) -> None:
    # The script's folder is on the caller's sys.path, not on a fresh interpreter's: the
    # workers get the caller's path, so ``mymodels.nearest:Nearest`` imports there too.
    scripts, run_dir = tmp_path / "scripts", tmp_path / "run"
    (scripts / "mymodels").mkdir(parents=True)
    run_dir.mkdir()
    (scripts / "mymodels" / "__init__.py").write_text("")
    (scripts / "mymodels" / "nearest.py").write_text(
        textwrap.dedent(
            """\
            import numpy as np
            from vidshard.models import ModelSpec

            class Nearest:
                spec = ModelSpec(name="nearest", scale=2)

                def load(self, device):
                    pass

                def run(self, batch):
                    return np.repeat(np.repeat(batch, 2, axis=1), 2, axis=2)
            """
        )
    )
    output, marker = tmp_path / "out.mp4", tmp_path / "marker.txt"
    (scripts / "job.py").write_text(job_code(clip, output, marker, "mymodels.nearest:Nearest"))
    done = python(run_dir, str(scripts / "job.py"))
    assert done.returncode == 0, done.stderr
    assert probe(output).video.size_wh == (128, 96)
    assert marker.read_text() == "ran\n"


def test_a_caller_that_found_vidshard_on_a_path_it_set_itself(tmp_path: Path, clip: Path) -> None:
    # python -S: no site-packages; the caller puts its own path in place. A fresh
    # interpreter (a worker) finds vidshard only through the path it is handed.
    paths = [p for p in sys.path if p] + [str(Path(vidshard.__file__).parents[1])]
    output, marker = tmp_path / "out.mp4", tmp_path / "marker.txt"
    code = f"import sys\nsys.path[:] = {paths!r}\n" + job_code(clip, output, marker)
    (tmp_path / "job.py").write_text(code)
    done = python(tmp_path, "-S", "job.py")
    assert done.returncode == 0, done.stderr
    assert probe(output).video.frame_count == 24
    assert marker.read_text() == "ran\n"


# --- a job that fails or is stopped before its first unit leaves nothing --------------


@pytest.mark.parametrize(
    "how",
    [
        # every worker exits while loading: WorkerError from the executor's start
        "workers-exit",
        # Ctrl-C while the workers start (raised from the phase callback)
        "interrupted",
    ],
)
def test_a_job_stopped_during_worker_start_leaves_no_work_dir(
    tmp_path: Path, clip: Path, how: str
) -> None:
    output, marker = tmp_path / "out.mp4", tmp_path / "marker.txt"
    code = job_code(clip, output, marker)
    env = clean_env()
    if how == "workers-exit":
        env["VIDSHARD_FAULT"] = "point=load;action=exit"
        expected = "WorkerError: worker cpu#0 exited while loading the model (exit code 3)"
        returncode = 1
    else:
        hook = (
            "def on_phase(name):\n"
            "    if name.startswith('starting'):\n"
            "        raise KeyboardInterrupt\n"
        )
        code = code.replace('preset="ultrafast"', 'preset="ultrafast", on_phase=on_phase')
        code = hook + code
        expected = "KeyboardInterrupt"
        returncode = -signal.SIGINT  # Python ends itself by the signal it did not handle
    (tmp_path / "job.py").write_text(code)
    done = python(tmp_path, "job.py", env=env)
    assert done.returncode == returncode, done.stderr
    assert expected in done.stderr.strip().splitlines()[-1]
    assert marker.read_text() == "ran\n"
    assert not output.exists()
    assert work_dirs(tmp_path) == []  # no lock folder, no manifest


def test_an_interrupted_job_keeps_finished_units_but_no_partial_file(tmp_path: Path) -> None:
    from vidshard.engine.manifest import Manifest
    from vidshard.engine.upscale import _WorkDir

    output = tmp_path / "out.mp4"
    with _WorkDir(output) as work:
        Manifest("digest", [0, 12, 24], 0).save(work.path)
        assert not work.keep_for_resume()  # planned, nothing finished: nothing to keep
        Manifest("digest", [0, 12, 24], 0, finished=["segment-00000"]).save(work.path)
        (work.path / "core-00000.mp4").write_bytes(b"done")
        (work.path / "core-00001.partial.mp4").write_bytes(b"half")  # a killed worker's
        (work.path / "seam-00000.partial.npy").write_bytes(b"half")
        assert work.keep_for_resume()
        assert sorted(p.name for p in work.path.iterdir()) == [
            "core-00000.mp4",
            "finished.txt",
            "lock",
            "manifest.json",
        ]
