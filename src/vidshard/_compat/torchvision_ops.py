"""Make ``import torchvision`` work when its compiled ops cannot load.

torchvision's wheels are built against one exact torch; with another build (for example
the CPU-only torch 2.13.0 used on machines without a GPU) its ``_C`` extension fails to
load and ``torchvision/_meta_registrations.py`` then fails at import time, because it
registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms``, operators that
only the extension defines. spandrel, ultralytics and transformers import torchvision,
so all of them break.

:func:`ensure_torchvision_ops` defines those two operators with a pure-torch NMS, but
only when torchvision is installed and its own extension does not load. Where the real
ops load (a matching torchvision build) it does nothing. Call it before importing
anything that imports torchvision.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

_library: torch.library.Library | None = None
_checked = False


def _op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _real_extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True  # torchvision absent: nothing to patch
    for candidate in sorted(Path(spec.origin).parent.glob("_C*.so")) + sorted(
        Path(spec.origin).parent.glob("_C*.pyd")
    ):
        try:
            torch.ops.load_library(str(candidate))
        except (OSError, RuntimeError):
            return False
        return True
    return False


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression; same contract as ``torchvision.ops.nms``."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True)
    suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    keep: list[int] = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas - inter).clamp(min=torch.finfo(torch.float32).tiny)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def _qnms(
    dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float
) -> torch.Tensor:  # pragma: no cover - quantized path never used here
    return nms(dets.dequantize(), scores.dequantize(), iou_threshold)


def ensure_torchvision_ops() -> bool:
    """Register CPU fallbacks for torchvision's NMS ops if needed; True if it did."""
    global _library, _checked
    if _checked:
        return _library is not None
    _checked = True
    if _op_exists("nms") or _real_extension_loads():
        return False
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms", nms, "CompositeExplicitAutograd")
    lib.impl("qnms", _qnms, "CompositeExplicitAutograd")
    _library = lib
    import torchvision.extension

    # torchvision.ops.nms asks this before dispatching; the ops now exist.
    torchvision.extension._has_ops = lambda: True  # type: ignore[attr-defined]
    logger.debug("torchvision's compiled ops did not load; using pure-torch NMS")
    return True
