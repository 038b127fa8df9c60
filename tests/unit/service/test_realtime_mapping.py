"""How seed 001's start request maps onto a vidshard stream: its model variants, its
placement settings (taken, or refused when they ask for part of the pool), its protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidshard.errors import InputError
from vidshard.service.inputs import ServedModels
from vidshard.service.routers.realtime import ModelSettings, _check_protocol, _model, _placement
from vidshard.service.settings import load_settings


@pytest.fixture
def models(tmp_path: Path) -> ServedModels:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "yolo11s.pt").write_bytes(b"weights")
    (folder / "det.py").write_text("class Det: pass\n")
    return ServedModels(load_settings(model_dirs=[folder], data_dir=tmp_path / "data"))


@pytest.mark.parametrize(
    "variant, model",
    [
        ("yolo11s.pt", "yolo11s.pt"),  # a file in the model dirs, as named
        ("det.py:Det", "det.py:Det"),  # a detector class there
        ("yolo11n.yaml", "yolo11n.yaml"),  # an Ultralytics config (random weights)
        ("multi_gpu_yolov11s", "yolo11s.pt"),  # the seed's own names
        ("MULTI_GPU_YOLOV11_SMALL", "yolo11s.pt"),  # its DetectorType names
        ("yolov11s", "yolo11s.pt"),
        ("something-else", "something-else"),  # the stream's checks judge it
    ],
)
def test_variants(models: ServedModels, variant: str, model: str) -> None:
    assert _model(variant, models)[0] == model


@pytest.mark.parametrize(
    "variant, weights",
    [
        ("multi_gpu_yolov11m", "yolo11m.pt"),  # not in the model dirs
        ("multi_gpu_yolov8n", "yolov8n.pt"),  # before v11, Ultralytics wrote yolov8n
        ("YOLOV11_LARGE", "yolo11l.pt"),
    ],
)
def test_a_seed_variant_without_its_weights_says_what_to_put_where(
    models: ServedModels, variant: str, weights: str
) -> None:
    with pytest.raises(InputError, match=f"put {weights} in one of its model_dirs") as caught:
        _model(variant, models)
    assert str(models.settings.model_dirs[0]) in str(caught.value)


@pytest.mark.parametrize(
    "variant",
    ["x" * 300 + ".pt", "bad\0name.pt", "x" * 300 + ".yaml"],  # names no file system takes
)
def test_odd_variant_names_are_passed_on(models: ServedModels, variant: str) -> None:
    assert _model(variant, models)[0] == variant.strip()


@pytest.mark.parametrize(
    "settings, pool",
    [
        ({"device": "auto", "enable_multi_gpu": True, "max_workers": 4}, ["cuda:0", "cuda:1"]),
        ({"device": None}, ["cpu"]),
        ({"device": "cuda"}, ["cuda:0", "cuda:1"]),  # the one kind the pool has
        ({"device": "gpu"}, ["cuda:0", "cuda:1"]),
        ({"device": "cuda:0"}, ["cuda:0"]),  # the whole pool
        ({"gpu_devices": [0, 1]}, ["cuda:0", "cuda:1"]),  # every device of the pool
        ({"load_balancing": False}, ["cpu"]),  # placement by headroom all the same
    ],
)
def test_placement_settings_vidshard_honours(settings: dict[str, object], pool: list[str]) -> None:
    notes = _placement(ModelSettings(variant="m.pt", **settings), pool, 8)  # type: ignore[arg-type]
    assert set(notes) == {"device", "enable_multi_gpu", "load_balancing", "max_workers"}
    assert "streams_per_slot (8)" in notes["max_workers"]


@pytest.mark.parametrize(
    "settings, pool, words",
    [
        ({"device": "cuda:1"}, ["cuda:0", "cuda:1"], "does not pin"),  # one device of two
        ({"device": "cuda"}, ["cpu"], "does not pin"),  # a kind the pool lacks
        ({"device": "gpu"}, ["cpu"], "does not pin"),
        ({"gpu_devices": [0]}, ["cuda:0", "cuda:1"], "not part of it"),
        ({"gpu_devices": [0]}, ["cpu"], "not part of it"),
    ],
)
def test_placement_settings_that_ask_for_part_of_the_pool_are_refused(
    settings: dict[str, object], pool: list[str], words: str
) -> None:
    with pytest.raises(InputError, match=words):
        _placement(ModelSettings(variant="m.pt", **settings), pool, 8)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "protocol, url, ok",
    [
        ("rtsp", "rtsp://cam/1", True),
        ("RTSP", "rtsps://cam/1", True),
        (None, "rtmp://cam/1", True),  # no protocol: the URL says
        ("hls", "https://cdn/live.m3u8", True),
        ("file", "/clips/a.mp4", True),
        ("rtsp", "rtmp://cam/1", False),  # a contradiction
        ("http", "/clips/a.mp4", False),
        ("carrier-pigeon", "rtsp://cam/1", False),  # no such protocol
    ],
)
def test_the_protocol_must_be_the_urls(protocol: str | None, url: str, ok: bool) -> None:
    if ok:
        _check_protocol(protocol, url)
    else:
        with pytest.raises(InputError, match=r"stream_config\.protocol"):
            _check_protocol(protocol, url)
