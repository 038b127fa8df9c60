"""What a stream request may ask for: its source (schemes, camera host rules, files in
the input roots, capture devices), its model and options, its webhook; and URLs shown
without their credentials."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from vidshard.errors import ConfigError, InputError
from vidshard.service.security import AccessDenied, HostRules
from vidshard.service.settings import ServiceSettings, load_settings
from vidshard.service.streams.checks import StreamChecks, hide_credentials, scrub


def settings_for(tmp_path: Path, **values: Any) -> ServiceSettings:
    roots = tmp_path / "clips"
    models = tmp_path / "models"
    roots.mkdir(exist_ok=True)
    models.mkdir(exist_ok=True)
    (roots / "clip.mp4").write_bytes(b"not really a video")  # the worker finds out
    (models / "det.py").write_text("class Det: pass\n")
    defaults: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "input_roots": [roots],
        "model_dirs": [models],
    }
    return load_settings(**{**defaults, **values})


@pytest.fixture
def checks(tmp_path: Path) -> StreamChecks:
    return StreamChecks(settings_for(tmp_path))


# --- host rules: "only these" ------------------------------------------------------------


def ip(text: str) -> Any:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    "host, addresses, allowed",
    [
        ("cam.local", ["192.168.1.20"], True),  # listed by name, wherever it points
        ("CAM.LOCAL.", ["8.8.8.8"], True),  # names match in any case, trailing dot or not
        ("other", ["10.1.2.3"], True),  # its address is in a listed range
        ("other", ["10.1.2.3", "10.9.0.1"], False),  # one address outside: refused
        ("public", ["8.8.8.8"], False),  # public is no pass: only the listed hosts
        ("mapped", ["::ffff:10.1.2.3"], True),  # an IPv4-mapped address of the range
        ("lo", ["127.0.0.1"], False),  # loopback is not listed
    ],
)
def test_only_listed_hosts_pass(host: str, addresses: list[str], allowed: bool) -> None:
    rules = HostRules.only(["cam.local", "10.1.0.0/16"], "stream_allowed_hosts")
    if allowed:
        rules.check(host, [ip(a) for a in addresses], own=())
    else:
        with pytest.raises(AccessDenied, match="stream_allowed_hosts"):
            rules.check(host, [ip(a) for a in addresses], own=())


def test_an_empty_list_opens_every_host() -> None:
    rules = HostRules.only([], "stream_allowed_hosts")
    assert rules.is_open
    rules.check("anything", [ip("127.0.0.1"), ip("10.0.0.1")], own=())


def test_a_bad_entry_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="stream_allowed_hosts"):
        HostRules.only(["not a host!"], "stream_allowed_hosts")


# --- sources ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://10.0.0.7:554/stream1",  # a private camera: open by default
        "rtsps://cam.example/live",
        "rtmp://127.0.0.1/live/key",
        "https://cdn.example/live/index.m3u8",
    ],
)
def test_network_sources_of_allowed_schemes_pass(checks: StreamChecks, url: str) -> None:
    checked = checks.source(url)
    assert checked.kind == "network" and checked.url == url


@pytest.mark.parametrize(
    "url, error, words",
    [
        ("ftp://cam/stream", AccessDenied, "stream_url_schemes"),  # a scheme not allowed
        ("udp://127.0.0.1:1234", AccessDenied, "stream_url_schemes"),  # allowed only if set
        ("/dev/video0", AccessDenied, "stream_allow_devices"),  # a capture device
        ("v4l2:///dev/video0", AccessDenied, "stream_allow_devices"),
        ("/etc/passwd", AccessDenied, "outside"),  # a file outside the input roots
        ("file:///etc/hostname", AccessDenied, "outside"),
        ("rtsp://", InputError, "host"),  # no host
        ("rtsp://cam:99999/x", InputError, "malformed"),  # a port out of range
        ("rtsp://cam/\x07", InputError, "control"),  # a control character
        ("missing.mp4", InputError, "not found"),  # inside the roots, but no such file
    ],
)
def test_refused_sources(
    checks: StreamChecks, url: str, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        checks.source(url)


def test_a_file_inside_the_input_roots_is_its_real_path(
    checks: StreamChecks, tmp_path: Path
) -> None:
    for given in ("clip.mp4", f"file://{tmp_path / 'clips' / 'clip.mp4'}"):
        checked = checks.source(given)
        assert checked.kind == "file"
        assert checked.url == str((tmp_path / "clips" / "clip.mp4").resolve())


def test_devices_pass_when_the_operator_allows_them(tmp_path: Path) -> None:
    checks = StreamChecks(settings_for(tmp_path, stream_allow_devices=True))
    assert checks.source("/dev/video0").kind == "device"


def test_camera_host_rules_when_set(tmp_path: Path) -> None:
    checks = StreamChecks(settings_for(tmp_path, stream_allowed_hosts=["127.0.0.1"]))
    assert checks.source("rtsp://127.0.0.1:8554/cam").kind == "network"
    with pytest.raises(AccessDenied, match="stream_allowed_hosts"):
        checks.source("rtsp://10.0.0.9/cam")


def test_a_scheme_the_operator_adds_passes(tmp_path: Path) -> None:
    checks = StreamChecks(settings_for(tmp_path, stream_url_schemes=["srt", "rtsp"]))
    assert checks.source("srt://127.0.0.1:9000").kind == "network"
    with pytest.raises(AccessDenied):
        checks.source("http://127.0.0.1/live.m3u8")  # no longer in the list


# --- options, model, webhook ----------------------------------------------------------


def test_the_model_can_be_top_level_or_in_params(checks: StreamChecks) -> None:
    assert checks.options({}, "det.py:Det").model == "det.py:Det"
    assert checks.options({"model": "det.py:Det", "max_fps": 5}).max_fps == 5
    assert checks.options({"model": "det.py:Det"}, "det.py:Det").model == "det.py:Det"


@pytest.mark.parametrize(
    "params, model, error, words",
    [
        ({}, None, InputError, "model: required"),
        ({"model": "a.pt"}, "b.pt", InputError, "given twice"),
        ({"fps": 5}, "det.py:Det", ConfigError, "params.fps: unknown option"),
        ({"max_fps": 0}, "det.py:Det", ConfigError, "params.max_fps"),
        ({"transport": "sctp"}, "det.py:Det", ConfigError, "params.transport"),
    ],
)
def test_refused_options(
    checks: StreamChecks,
    params: dict[str, Any],
    model: str | None,
    error: type[Exception],
    words: str,
) -> None:
    with pytest.raises(error, match=words):
        checks.options(params, model)


def test_model_files_come_only_from_model_dirs(checks: StreamChecks, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.py"
    outside.write_text("class Det: pass\n")
    recipe = checks.recipe(checks.options({}, "det.py:Det"))
    assert recipe.detector == "class"
    with pytest.raises(AccessDenied, match="model_dirs"):
        checks.recipe(checks.options({}, f"{outside}:Det"))


@pytest.mark.parametrize(
    "model",
    [
        "x" * 300 + ".yaml",  # a config name no file system takes
        "x" * 300 + ".pt",
    ],
)
def test_a_model_name_the_file_system_refuses_is_a_422(checks: StreamChecks, model: str) -> None:
    with pytest.raises(InputError, match=r"params\.model"):
        checks.recipe(checks.options({}, model))


@pytest.mark.parametrize(
    "url, error, words",
    [
        ("http://10.0.0.1/hook", AccessDenied, "url_allowed_hosts"),  # internal
        ("http://127.0.0.1:9/hook", AccessDenied, "url_allowed_hosts"),  # loopback
        ("ftp://example.com/hook", AccessDenied, "scheme"),  # not http(s)
        ("http:///hook", InputError, "no host"),
    ],
)
def test_webhooks_follow_the_url_input_rules(
    checks: StreamChecks, url: str, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words) as caught:
        checks.options({"webhook_url": url}, "det.py:Det")
    assert str(caught.value).startswith("params.webhook_url")


def test_a_webhook_to_an_allowed_internal_host_passes(tmp_path: Path) -> None:
    checks = StreamChecks(settings_for(tmp_path, url_allowed_hosts=["127.0.0.1"]))
    options = checks.options({"webhook_url": "http://127.0.0.1:9/hook"}, "det.py:Det")
    assert options.webhook_url == "http://127.0.0.1:9/hook"


# --- credentials ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, shown",
    [
        ("rtsp://admin:s3cret@10.0.0.7:554/s1", "rtsp://***@10.0.0.7:554/s1"),
        ("rtsp://admin@10.0.0.7/s1", "rtsp://***@10.0.0.7/s1"),  # a user alone is hidden too
        ("rtsp://10.0.0.7/s1", "rtsp://10.0.0.7/s1"),  # nothing to hide
        (
            "http://cam/live.m3u8?user=a&password=s3cret&res=hd",
            "http://cam/live.m3u8?user=a&password=***&res=hd",
        ),
        ("https://cdn/x.m3u8?token=abcdef", "https://cdn/x.m3u8?token=***"),
        ("/srv/clips/a.mp4", "/srv/clips/a.mp4"),  # a path has none
    ],
)
def test_credentials_are_never_shown(url: str, shown: str) -> None:
    assert hide_credentials(url) == shown


def test_reasons_are_scrubbed_of_the_streams_credentials() -> None:
    url = "rtsp://admin:s3cret@10.0.0.7/s1?token=abcdef"
    reason = f"cannot open {url}: 401; rtsp://admin:***@10.0.0.7/s1 said abcdef s3cret"
    cleaned = scrub(reason, url)
    for secret in ("s3cret", "abcdef", "admin"):
        assert secret not in cleaned
