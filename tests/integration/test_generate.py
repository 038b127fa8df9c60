"""``vidshard generate`` and ``vidshard.generate``: the tiny random Wan2.1 model on a group
of CPU slots (gloo), end to end: the mp4 and its frames, layouts that match one rank,
the same seed giving the same video, and one-line errors for bad input.

Runs are tiny (32x32, 5 frames, 2 steps); bounds are generous, nothing measures time.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

import vidshard
from gen_fixtures import test_image, tiny_wan_i2v
from helpers import same_video
from vidshard.cli.app import app
from vidshard.errors import ConfigError, InputError, OutputError

pytest.importorskip("diffusers")

FAST = ["--size", "32x32", "--frames", "5", "--steps", "2"]
runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_wan_i2v(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return test_image(tmp_path_factory.mktemp("images") / "first.png", (48, 40))


def frames_of(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 16
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])


def generate(model: Path, image: Path, out: Path, *extra: str) -> dict[str, object]:
    args = ["generate", "--model", model, "--image", image, "--prompt", "a cat walks", *FAST]
    result = runner.invoke(app, [str(a) for a in [*args, *extra, "-o", out, "--json"]])
    assert result.exit_code == 0, result.output
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


def test_cfg_parallel_on_two_slots_is_the_one_slot_video(
    model: Path, image: Path, tmp_path: Path
) -> None:
    # cpu:2 for both: one torch thread a rank, so the float sums run in the same order
    one = generate(model, image, tmp_path / "one.mp4", "--seed", "7", "--devices", "cpu:2")
    two = generate(
        model, image, tmp_path / "two.mp4", "--seed", "7", "--devices", "cpu:2", "--cfg-parallel"
    )
    assert (one["ranks"], two["ranks"], two["cfg"]) == (1, 2, 2)
    assert one["frames"] == two["frames"] == 5 and one["fps"] == 16
    first, second = frames_of(tmp_path / "one.mp4"), frames_of(tmp_path / "two.mp4")
    assert first.shape == (5, 32, 32, 3)
    assert same_video(first, second)  # the same frames (exact: tests/unit/generation)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_the_python_api_same_seed_same_video(model: Path, image: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    results = [
        vidshard.generate(
            image=image,
            output=tmp_path / f"{name}.mp4",
            model=str(model),
            prompt="a dog runs",
            size="32x32",
            frames=5,
            steps=2,
            seed=seed,
            devices="cpu:2",  # one torch thread a rank: the same sums in the same order
            on_progress=lambda snap: seen.append(snap.frames_done),
        )
        for name, seed in (("a", 3), ("b", 3), ("c", 4))
    ]
    assert [r.seed for r in results] == [3, 3, 4]
    assert seen and seen == sorted(seen[: len(seen) // 3]) + seen[len(seen) // 3 :]
    assert max(seen) == 2
    a, b, c = (frames_of(r.output) for r in results)
    assert same_video(a, b) and not same_video(a, c)
    assert np.abs(a.astype(int) - c).mean() > 1.0  # another seed: another video


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "6"], "--frames: expected 4k+1"),
        (["--size", "30x30"], "--size: expected sides that are multiples of 16"),
        (["--size", "wide"], "--size: expected WIDTHxHEIGHT"),
        (["--ulysses", "3", "--devices", "cpu:3"], "ulysses"),  # 3 does not divide 2 heads
        (["--ulysses", "2", "--devices", "cpu:1"], "needs 2 slot(s)"),
        (["--cfg-parallel", "--guidance", "1"], "cfg_parallel needs guidance above 1"),
        (["--attention-cache", "--cache-start-step", "5"], "attention cache"),
        (["--solver", "ddim"], "--solver"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    model: Path, image: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    base = ["generate", "--model", str(model), "--image", str(image), "--prompt", "x", *FAST]
    result = runner.invoke(app, [*base, *args, "-o", str(tmp_path / "out.mp4")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


def test_bad_inputs_and_outputs_are_typed_errors(model: Path, image: Path, tmp_path: Path) -> None:
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    cases: list[tuple[dict[str, object], type[Exception], str]] = [
        ({"image": not_image}, InputError, "is not an image"),
        ({"image": tmp_path / "missing.png"}, InputError, "image not found"),
        ({"model": str(tmp_path)}, ConfigError, "is not a diffusers model folder"),
        ({"output": tmp_path / "out.avi"}, OutputError, "must be an .mp4"),
        ({"output": tmp_path / "no" / "out.mp4"}, OutputError, "does not exist"),
    ]
    for change, error, message in cases:
        given = {
            "image": image,
            "output": tmp_path / "out.mp4",
            "model": str(model),
            "prompt": "x",
            "size": "32x32",
            "frames": 5,
            "steps": 1,
            "devices": "cpu:1",
            **change,
        }
        with pytest.raises(error, match=message):
            vidshard.generate(**given)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.png"]


DOCS = Path(__file__).resolve().parents[2] / "docs" / "generate.md"
REPO = DOCS.parents[1]


def docs_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), flags=re.S)


def test_the_docs_examples_run_as_written(tmp_path: Path) -> None:
    """docs/generate.md's bash and Python blocks, in order, with /tmp/ moved to a temporary
    folder: the tiny model written, the CLI run on one slot and on two, the Python API."""
    commands = [line for block in docs_blocks("bash") for line in block.splitlines() if line]
    assert [c.split()[:2] for c in commands] == [
        ["python", "-m"],
        ["vidshard", "generate"],
        ["vidshard", "generate"],
    ]
    here = str(tmp_path) + "/"
    for command in commands:
        args = shlex.split(command.replace("/tmp/", here))
        args = [sys.executable, *args[1:]] if args[0] == "python" else [sys.executable, "-m", *args]
        done = subprocess.run(
            args, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr
    for name in ("car.mp4", "car-cfg.mp4"):
        assert frames_of(tmp_path / name).shape == (9, 32, 32, 3)
    (python,) = docs_blocks("python")
    done = subprocess.run(
        [sys.executable, "-c", python.replace("/tmp/", here)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "step 4/4" in done.stdout and str(tmp_path / "car-api.mp4") in done.stdout


def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Generate", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    here = str(tmp_path) + "/"
    for command in block.strip().replace("/tmp/", here).split(" && "):
        args = shlex.split(command)
        args = [sys.executable, *args[1:]] if args[0] == "python" else [sys.executable, "-m", *args]
        done = subprocess.run(
            args, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr
    assert frames_of(tmp_path / "car-gen.mp4").shape == (9, 32, 32, 3)


def test_an_image_swapped_after_its_check_is_refused(image: Path, tmp_path: Path) -> None:
    """The service checks an input's identity at submit; the run opens the image once,
    refuses it if it is no longer that file, and hands the ranks a private copy."""
    from vidshard.engine.generate import staged_image
    from vidshard.errors import InputChanged
    from vidshard.media.source import file_identity

    mine = tmp_path / "in.png"
    mine.write_bytes(image.read_bytes())
    checked = file_identity(mine)
    with staged_image(mine, checked, tmp_path) as staged:
        assert staged.read_bytes() == mine.read_bytes() and staged.name.startswith(".")
    assert not staged.exists()
    swapped = tmp_path / "other.png"
    test_image(swapped, (48, 40), seed=1)
    swapped.replace(mine)  # another file at the checked path
    with (
        pytest.raises(InputChanged, match="names another file"),
        staged_image(mine, checked, tmp_path),
    ):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]
