"""GPU tests: skipped unless a CUDA device is visible. Run them on a lent GPU machine:

python -m pytest tests/gpu -q
"""

from __future__ import annotations

import pytest


def cuda_count() -> int:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pytest_collection_modifyitems(config, items):
    if cuda_count() > 0:
        return
    skip = pytest.mark.skip(reason="no CUDA device visible")
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)
