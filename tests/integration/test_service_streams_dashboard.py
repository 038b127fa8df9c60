"""The dashboard's streams panel in headless Chromium against a real ``vidshard serve``
with an API key and a real RTSP server: a stream added through the form goes live with
its slot, fps and latency shown, its snapshot refreshes (fetched with the key), an input
error is shown in the form, and the Stop button stops it.

Needs Debian's ``chromium`` and ``chromium-driver``, as test_service_dashboard does.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from tests.integration import test_service_dashboard as dashboard
from tests.service_helpers import Server, running_server

from rtsp_fixtures import RtspServer, rtsp_server_fixture
from stream_fixtures import write_detectors

KEY = "streams-secret"
DETECTOR = "stream_detectors.py:Counting"
WAIT_S = 60.0

rtsp_server = rtsp_server_fixture()
browser = dashboard.browser  # the dashboard tests' headless Chromium
downloads = dashboard.downloads
find, open_dashboard, wait = dashboard.find, dashboard.open_dashboard, dashboard.wait


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    models = tmp_path_factory.mktemp("dashboard-models")
    write_detectors(models)
    data = tmp_path_factory.mktemp("dashboard-streams") / "data"
    args = ("--devices", "cpu:2", "--model-dir", str(models), "--input-root", str(models))
    with running_server(data, *args, env={"VIDSHARD_API_KEY": KEY}) as running:
        yield running


def enter_key(driver: object) -> None:
    wait(driver, lambda d: (f := find(d, "#auth")) and f.is_displayed(), "no key form")
    find(driver, "#api-key").send_keys(KEY + "\n")
    wait(driver, lambda d: find(d, "#devices .device[data-device='cpu']"), "no devices")


def add_stream(driver: object, url: str, model: str = DETECTOR, max_fps: str = "") -> None:
    for css, value in (
        ("#stream-url", url),
        ("#stream-model", model),
        ("#stream-max-fps", max_fps),
    ):
        field = find(driver, css)
        field.clear()
        if value:
            field.send_keys(value)
    find(driver, "#stream-button").click()


def card(driver: object, state: str) -> object:
    return find(driver, f"#streams .stream[data-state='{state}']")


def test_a_stream_added_in_the_panel_goes_live_and_is_stopped(
    browser: object, server: Server, rtsp_server: RtspServer
) -> None:
    open_dashboard(browser, server.url)
    enter_key(browser)

    add_stream(browser, "ftp://127.0.0.1/cam")  # refused: said in the form
    error = wait(
        browser,
        lambda d: (e := find(d, "#stream-error")) and e.is_displayed() and e,
        "no error shown",
    )
    assert "stream_url_schemes" in error.text

    add_stream(browser, rtsp_server.url("squares"), max_fps="10")
    live = wait(browser, lambda d: card(d, "live"), "the stream never went live", WAIT_S)
    stream_id = live.get_attribute("data-stream-id")
    assert find(browser, "#stream-status").is_displayed()
    wait(
        browser,
        lambda d: find(d, ".stream .fps").text not in ("", "0.0 fps"),
        "no fps shown",
        WAIT_S,
    )
    assert find(browser, ".stream .slot").text.startswith("cpu#")
    wait(browser, lambda d: "p50 —" not in find(d, ".stream .latency").text, "no latency")

    # the snapshot: fetched with the key, shown, and fetched again while it is live
    image = wait(
        browser,
        lambda d: (i := find(d, ".stream img.snapshot")) and i.get_attribute("data-loaded") and i,
        "no snapshot shown",
        WAIT_S,
    )
    assert image.get_attribute("src").startswith("data:image/jpeg")
    first = image.get_attribute("data-loaded")
    wait(
        browser,
        lambda d: find(d, ".stream img.snapshot").get_attribute("data-loaded") != first,
        "the snapshot was not refreshed",
        WAIT_S,
    )
    assert (
        browser.execute_script(  # type: ignore[attr-defined]
            "return document.querySelector('.stream img.snapshot').naturalWidth"
        )
        == 320
    )

    find(browser, ".stream button.stop").click()
    wait(browser, lambda d: card(d, "stopped"), "the stream never showed stopped", WAIT_S)
    assert not find(browser, ".stream button.stop").is_displayed()
    answer = httpx.get(f"{server.url}/v1/streams/{stream_id}", headers={"X-API-Key": KEY})
    assert answer.json()["state"] == "stopped"
    assert answer.json()["params"]["max_fps"] == 10
