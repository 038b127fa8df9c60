"""The dashboard at ``/`` in headless Chromium against a real ``vidshard serve``: devices
and health, a job submitted through the form running to success, a slow job cancelled from
its row, input errors shown in the form, and the API key asked for and used.

Needs Debian's ``chromium`` and ``chromium-driver`` (CI installs them); without them the
tests fail, unless ``VIDSHARD_SKIP_BROWSER_TESTS=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from tests.clips import ClipSpec, write_clip
from tests.helpers import slow_model_source
from tests.service_helpers import running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 20.0
SLOW_MODEL = slow_model_source("Slow", 0.05)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(tmp_path_factory, downloads):
    if os.environ.get("VIDSHARD_SKIP_BROWSER_TESTS") == "1":
        pytest.skip("VIDSHARD_SKIP_BROWSER_TESTS=1")
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(
            f"the dashboard tests need headless Chromium, but {' and '.join(missing)} "
            "is missing: install the Debian packages `chromium chromium-driver` "
            "(apt-get install chromium chromium-driver), "
            "or set VIDSHARD_SKIP_BROWSER_TESTS=1 to skip these tests"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the dashboard tests need selenium 4: pip install -e '.[dev]'")

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    # An explicit driver path: Selenium Manager (which would go online) is never run.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    write_clip(root / "short.mp4", ClipSpec(frames=12, size_wh=(64, 48)))
    write_clip(root / "long.mp4", ClipSpec(frames=300, size_wh=(64, 48)))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, clips):
    models = tmp_path_factory.mktemp("models")
    (models / "slow.py").write_text(SLOW_MODEL)
    data = tmp_path_factory.mktemp("service") / "data"
    with running_server(
        data,
        "--devices",
        "cpu:2",
        "--input-root",
        str(clips),
        "--max-running-jobs",
        "1",
        "--model-dir",
        str(models),
    ) as running:
        yield running


def wait(driver, condition, message, timeout_s=WAIT_S):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver, timeout_s, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    ).until(condition, message)


def find(driver, css):
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else None


def open_dashboard(driver, url):
    driver.get(url + "/")
    driver.execute_script("localStorage.clear()")
    driver.get(url + "/")
    wait(driver, lambda d: find(d, "#health[data-status='ok']"), "health badge never said ok")


def submit(driver, input_name, model="lanczos", scale=""):
    for css, value in (("#input-path", input_name), ("#model", model), ("#scale", scale)):
        field = find(driver, css)
        field.clear()
        if value:
            field.send_keys(value)
    find(driver, "#submit-button").click()


def submitted_job(driver, before):
    """The id of the job the form just queued: the row that was not there before."""

    def new_row(d):
        rows = d.execute_script(
            "return [...document.querySelectorAll('#jobs tbody tr')].map(r => r.dataset.jobId)"
        )
        fresh = [job_id for job_id in rows if job_id not in before]
        return fresh[0] if fresh else None

    return wait(driver, new_row, "the submitted job never appeared in the table")


def job_ids(driver):
    return set(
        driver.execute_script(
            "return [...document.querySelectorAll('#jobs tbody tr')].map(r => r.dataset.jobId)"
        )
    )


def row(driver, job_id):
    return find(driver, f"#jobs tbody tr[data-job-id='{job_id}']")


def wait_state(driver, job_id, state, timeout_s=WAIT_S):
    wait(
        driver,
        lambda d: find(d, f"#jobs tbody tr[data-job-id='{job_id}'][data-state='{state}']"),
        f"job {job_id} never became {state}",
        timeout_s,
    )


def test_page_and_static_files_are_served_without_key(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for name, kind in (("dashboard.js", "javascript"), ("dashboard.css", "css")):
        answer = httpx.get(f"{server.url}/static/{name}")
        assert answer.status_code == 200
        assert kind in answer.headers["content-type"]
    # only the dashboard's own files, by name: no other file, no way out of the folder
    for name in ("index.html", "..%2Fdashboard.py", "../routers/dashboard.py", "nope.js"):
        assert httpx.get(f"{server.url}/static/{name}").status_code == 404


def test_devices_and_health(browser, server):
    open_dashboard(browser, server.url)
    wait(
        browser,
        lambda d: (
            len(d.find_elements("css selector", "#devices .device[data-device='cpu'] .chip")) == 2
        ),
        "the devices panel never listed cpu with two slots",
    )
    slots = browser.find_elements("css selector", "#devices .device[data-device='cpu'] .chip")
    assert [s.get_attribute("data-slot") for s in slots] == ["cpu#0", "cpu#1"]
    assert all(s.get_attribute("data-state") for s in slots)
    assert "GiB" in find(browser, "#devices .device .memory .value").text
    assert "2/2 slots" in find(browser, "#health").text


def test_submit_runs_to_success(browser, server, downloads):
    open_dashboard(browser, server.url)
    before = job_ids(browser)
    submit(browser, "short.mp4", scale="2")
    job_id = submitted_job(browser, before)
    wait_state(browser, job_id, "succeeded")
    line = row(browser, job_id)
    assert "100%" in line.find_element("css selector", ".progress .label").text
    assert "12/12" in line.find_element("css selector", ".progress .label").text
    assert line.find_element("css selector", ".badge").get_attribute("data-state") == "succeeded"
    link = line.find_element("css selector", "a.download")
    assert link.get_attribute("href").endswith(f"/v1/jobs/{job_id}/result")
    assert "short.mp4" in line.find_element("css selector", "td.input").text
    assert "Queued job" in find(browser, "#submit-status").text
    # no key: a plain link, which the browser saves
    link.click()
    wait(browser, lambda _: list(downloads.glob("short-x2*.mp4")), "the result was not saved")


def test_upload_through_the_form(browser, server, clips):
    open_dashboard(browser, server.url)
    before = job_ids(browser)
    find(browser, "#input-file").send_keys(str(clips / "short.mp4"))
    submit(browser, "")
    job_id = submitted_job(browser, before)
    wait_state(browser, job_id, "succeeded")
    assert row(browser, job_id).find_element("css selector", "td.input .name").text == "short.mp4"
    assert find(browser, "#input-file").get_attribute("value") == ""


def test_cancel_a_running_job(browser, server, tmp_path_factory):
    open_dashboard(browser, server.url)
    before = job_ids(browser)
    submit(browser, "long.mp4", model="slow.py:Slow")
    job_id = submitted_job(browser, before)
    css = f"#jobs tbody tr[data-job-id='{job_id}'][data-state='running'] td.progress-cell"

    def partly_done(d):
        progress = find(d, css)
        return progress is not None and 0 < int(progress.get_attribute("data-progress")) < 100

    wait(browser, partly_done, "the slow job never showed progress between 0 and 100 %")
    busy = find(browser, f"#devices .chip[data-state='busy'][data-job='{job_id}']")
    assert busy is not None, "no slot chip showed the job it works for"
    shot = tmp_path_factory.mktemp("screens") / "dashboard-running.png"
    assert browser.save_screenshot(str(shot))
    row(browser, job_id).find_element("css selector", "button.cancel").click()
    wait_state(browser, job_id, "cancelled")
    line = row(browser, job_id)
    assert not line.find_elements("css selector", "button.cancel, a.download")
    assert line.find_element("css selector", ".badge").text.lower() == "cancelled"


@pytest.mark.parametrize(
    ("input_name", "expected"),
    [
        # a path that climbs out of the input root: 403 AccessDenied
        ("../x.mp4", "must not contain '..'"),
        # a file that is not there: 422 InputError
        ("missing.mp4", "not found"),
    ],
)
def test_bad_input_is_shown_in_the_form(browser, server, input_name, expected):
    open_dashboard(browser, server.url)
    wait(browser, lambda d: find(d, "#updated").text.startswith("updated"), "no first refresh")
    before = job_ids(browser)
    submit(browser, input_name)
    error = wait(
        browser,
        lambda d: (e := find(d, "#submit-error")) is not None and e.is_displayed() and e,
        "no error was shown in the form",
    )
    assert expected in error.text
    assert job_ids(browser) == before


def test_api_key_is_asked_for_and_used(browser, tmp_path_factory, clips, downloads):
    data = tmp_path_factory.mktemp("keyed") / "data"
    with running_server(
        data, "--devices", "cpu:2", "--input-root", str(clips), env={"VIDSHARD_API_KEY": "secret"}
    ) as keyed:
        open_dashboard(browser, keyed.url)
        key_form = wait(
            browser, lambda d: (f := find(d, "#auth")) and f.is_displayed() and f, "no key form"
        )
        assert not find(browser, "#devices .device")
        # a wrong key is refused and asked for again
        find(browser, "#api-key").send_keys("wrong\n")
        wait(
            browser,
            lambda _: key_form.is_displayed() and "did not accept" in key_form.text,
            "a wrong key was not refused",
        )
        find(browser, "#api-key").send_keys("secret\n")
        wait(browser, lambda d: find(d, "#devices .device[data-device='cpu']"), "no devices")
        assert not key_form.is_displayed()
        # the key goes with submits and downloads too (a download is fetched as a blob)
        submit(browser, "short.mp4")
        job_id = submitted_job(browser, set())
        wait_state(browser, job_id, "succeeded")
        saved = set(downloads.glob("*.mp4"))
        row(browser, job_id).find_element("css selector", "a.download").click()
        wait(browser, lambda _: set(downloads.glob("*.mp4")) - saved, "the blob was not saved")
