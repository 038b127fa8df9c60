"""SAM2 video propagation through transformers, streamed frame by frame, its memory
trimmed: the model behind :class:`~vidshard.models.trackers.Sam2Tracker`.

transformers is imported in :meth:`TransformersSam2Propagator.load`, never at import.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vidshard.errors import ModelError

logger = logging.getLogger(__name__)


# Per-object tables of Sam2VideoInferenceSession, keyed by object index (transformers 5.x).
_SESSION_TABLES = (
    "point_inputs_per_obj",
    "mask_inputs_per_obj",
    "output_dict_per_obj",
    "frames_tracked_per_obj",
)


class TransformersSam2Propagator:
    """SAM2 video through transformers (``Sam2VideoModel`` + ``Sam2VideoProcessor``), in
    streaming mode: frames are given one at a time and never all at once.

    transformers keeps every streamed frame and every frame's outputs in the session, so
    after each frame this prunes it to what SAM2 reads next: the current frame only, the
    last ``max(num_maskmem, max_object_pointers_in_encoder)`` tracked frames, the last
    ``max_conditioning_frames`` prompted frames per object, and no high-resolution masks.
    Memory is flat over a segment however long it is.
    """

    def __init__(self, folder: str | Path, *, half: bool = False, max_conditioning_frames: int = 4):
        self.folder = Path(folder)
        self.half = half
        self.max_conditioning_frames = max_conditioning_frames
        self._model: Any = None
        self._processor: Any = None
        self._device: Any = None
        self._dtype: Any = None
        self._session: Any = None
        self._window = 0

    def load(self, device: str) -> None:
        if not (self.folder.is_dir() and (self.folder / "config.json").is_file()):
            raise ModelError(
                f"--sam2: expected a transformers SAM2 model folder (config.json, weights, "
                f"processor_config.json), got {str(self.folder)!r}"
            )
        from vidshard._compat.torchvision_ops import ensure_torchvision_ops

        ensure_torchvision_ops()
        import torch
        from transformers import Sam2VideoModel, Sam2VideoProcessor

        self._device = torch.device(device)
        on_cpu = self._device.type == "cpu"
        self._dtype = torch.bfloat16 if self.half and not on_cpu else torch.float32
        try:
            model = Sam2VideoModel.from_pretrained(str(self.folder), local_files_only=True)
            processor = Sam2VideoProcessor.from_pretrained(str(self.folder), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"--sam2 {str(self.folder)!r}: cannot load SAM2 video: {exc}") from exc
        self._model = model.to(self._device, dtype=self._dtype).eval()
        self._processor = processor
        config = model.config
        self._window = max(int(config.num_maskmem), int(config.max_object_pointers_in_encoder))
        self._session = None

    def start(self) -> None:
        self._session = None  # a fresh one at the next step

    def step(
        self,
        frame: np.ndarray,
        frame_index: int,
        prompts: Mapping[int, NDArray[np.float32]],
        forget: Collection[int],
    ) -> tuple[list[int], NDArray[np.bool_]]:
        if self._model is None:
            raise ModelError("sam2: load() must be called before update()")
        import torch

        h, w = frame.shape[:2]
        if self._session is None:
            self._session = self._processor.init_video_session(
                inference_device=self._device, dtype=self._dtype, max_vision_features_cache_size=1
            )
        session = self._session
        if forget:
            _forget_objects(session, forget)
        if prompts:
            ids = list(prompts)
            self._processor.add_inputs_to_inference_session(
                session,
                frame_idx=frame_index,
                obj_ids=ids,
                input_boxes=[[[float(v) for v in prompts[i]] for i in ids]],
                original_size=(h, w),
            )
        if session.get_obj_num() == 0:
            return [], np.zeros((0, h, w), dtype=np.bool_)
        with torch.inference_mode():
            pixels = self._processor(images=frame, device=self._device, return_tensors="pt")
            out = self._model(
                inference_session=session, frame=pixels.pixel_values[0], frame_idx=frame_index
            )
            masks = self._processor.post_process_masks(
                [out.pred_masks.float()], original_sizes=[[h, w]], binarize=True
            )[0]
        self._prune(session, frame_index)
        return list(out.object_ids), masks[:, 0].cpu().numpy()

    def _prune(self, session: Any, frame_index: int) -> None:
        for f in [f for f in session.processed_frames if f != frame_index]:
            del session.processed_frames[f]
        oldest = frame_index - self._window
        for outputs in session.output_dict_per_obj.values():
            tracked, prompted = outputs["non_cond_frame_outputs"], outputs["cond_frame_outputs"]
            for table in (tracked, prompted):
                if frame_index in table:
                    table[frame_index].pop("high_res_masks", None)  # only used inside forward
            for f in [f for f in tracked if f < oldest]:
                del tracked[f]
            for f in sorted(prompted)[: -self.max_conditioning_frames]:
                del prompted[f]
        for name in ("point_inputs_per_obj", "mask_inputs_per_obj", "frames_tracked_per_obj"):
            for per_frame in getattr(session, name).values():
                for f in [f for f in per_frame if f < frame_index]:
                    del per_frame[f]


def _forget_objects(session: Any, forget: Collection[int]) -> None:
    """Remove objects from a transformers SAM2 video session, keeping the others' memory.

    The session has no API for it and indexes objects 0..N-1, so the per-object tables are
    re-indexed in place."""
    doomed = {oid for oid in forget if oid in session._obj_id_to_idx}
    if not doomed:
        return
    kept = [oid for oid in session.obj_ids if oid not in doomed]
    old = {oid: session._obj_id_to_idx[oid] for oid in kept}
    for name in _SESSION_TABLES:
        table = getattr(session, name)
        setattr(session, name, {new: table[old[oid]] for new, oid in enumerate(kept)})
    session._obj_id_to_idx = OrderedDict((oid, i) for i, oid in enumerate(kept))
    session._obj_idx_to_id = OrderedDict((i, oid) for i, oid in enumerate(kept))
    session.obj_ids = kept
    session.obj_with_new_inputs = [o for o in session.obj_with_new_inputs if o not in doomed]
