"""Importing Ultralytics (the coordinator does, to check a YOLO config) changes nothing
that the workers it starts later would inherit."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

# Not imported here: importing it in this process is what the test looks at.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ultralytics") is None, reason="ultralytics is not installed"
)

CHECK = """
import os
from vidshard.models.ultralytics_env import import_yolo
import_yolo()
print(repr(os.environ.get("OMP_NUM_THREADS")))
"""


@pytest.mark.parametrize("before", [None, "3"])
def test_importing_ultralytics_leaves_omp_threads_as_they_were(before: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if before is not None:
        env["OMP_NUM_THREADS"] = before
    proc = subprocess.run(
        [sys.executable, "-c", CHECK],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == repr(before)
