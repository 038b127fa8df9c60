"""Task options: one model that the CLI, the API and the service read alike, each error
naming the option the way its caller wrote it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated

import pytest
from pydantic import Field

from vidshard.errors import ConfigError
from vidshard.tasks import Cli, Served, TaskOptions
from vidshard.tasks.detect import DetectParams, TrackParams
from vidshard.tasks.options import (
    build_options,
    options_from_request,
    request_schema_model,
    served_fields,
    stored_params,
)
from vidshard.tasks.upscale import UpscaleParams, parse_tile


class Sample(TaskOptions):
    level: Annotated[int, Field(3, ge=0, le=9, description="How much.")]
    name: Annotated[str, Field("x", description="What."), Cli(flags=("--name", "-n"))]
    report: Annotated[str | None, Field(None), Served(exposed=False)]
    model: Annotated[str, Field("m"), Served(default_setting="default_model")]
    must: Annotated[str, Field("d"), Served(required=True)]


@pytest.mark.parametrize(
    ("naming", "where"),
    [("cli", "--level"), ("python", "level"), ("http", "params.level")],
)
def test_a_bad_value_is_named_as_its_caller_names_it(naming: str, where: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{where}: Input should be less than or equal to 9"):
        build_options(Sample, {"level": 12}, naming)  # type: ignore[arg-type]


def test_a_flag_of_its_own_is_the_name_on_the_command_line() -> None:
    with pytest.raises(ConfigError, match=r"^--name: "):
        build_options(Sample, {"name": 5}, "cli")


def test_unknown_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="colour: unknown option"):
        build_options(Sample, {"colour": 1})


def test_a_request_takes_only_the_exposed_options_and_the_servers_defaults() -> None:
    settings = SimpleNamespace(default_model="served-model")
    options = options_from_request(Sample, {"must": "y"}, settings)
    assert options.model == "served-model" and options.report is None
    with pytest.raises(ConfigError, match=r"params\.report: unknown option"):
        options_from_request(Sample, {"must": "y", "report": "/etc"}, settings)
    with pytest.raises(ConfigError, match=r"params\.must: required"):
        options_from_request(Sample, {}, settings)
    with pytest.raises(
        ConfigError, match=r"params.tracker: unknown option \(only for task 'track'\)"
    ):
        options_from_request(
            DetectParams, {"model": "m.pt", "tracker": "sam2"}, settings, {"track": TrackParams}
        )


def test_the_request_schema_lists_only_what_a_request_may_give() -> None:
    schema = request_schema_model(Sample, "SampleParams").model_json_schema()
    assert set(schema["properties"]) == {"level", "name", "model", "must"}
    assert schema["required"] == ["must"]
    assert schema["properties"]["level"]["maximum"] == 9
    assert "default_model" in schema["properties"]["model"]["description"]


def test_what_the_store_keeps_is_what_a_request_may_give() -> None:
    options = build_options(TrackParams, {"annotate_dir": "/tmp/x", "tracker": "sam2"})
    stored = stored_params(options)
    assert "annotate_dir" not in stored and "skip_existing" not in stored
    assert stored["tracker"] == "sam2"
    assert set(stored) == set(served_fields(TrackParams))


@pytest.mark.parametrize(
    ("text", "tile"), [("auto", "auto"), ("0", None), ("none", None), ("256", 256)]
)
def test_tile_as_typed(text: str, tile: object) -> None:
    assert build_options(UpscaleParams, {"tile": parse_tile(text)}).tile == tile


@pytest.mark.parametrize("tile", [8, 9000])
def test_tile_out_of_range(tile: int) -> None:
    with pytest.raises(ConfigError, match=r"--tile: expected 'auto', 0 \(none\), or 16..8192"):
        build_options(UpscaleParams, {"tile": tile}, "cli")


def test_masks_need_sam2() -> None:
    with pytest.raises(ConfigError, match="masks need tracker sam2"):
        build_options(TrackParams, {"masks": True})
