"""The status page in a real browser: Debian's chromium, driven headless through chromedriver,
against a running `--demo` exporter. One browser and one exporter serve every test here.

The exporter also polls an account of its own test config: a simulated cloud, run in this
process, whose one job reports a failure reason made to break out of HTML, so the hostile string
travels the real path (cloud answer, provider, store, page) before the browser sees it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from exporter.simulator.metastudio import (
    DEMO_ACCESS_KEY,
    DEMO_PROJECT_ID,
    DEMO_SECRET_KEY,
    demo_simulator,
    start_simulator,
)
from tests.support import REPO, ExporterProcess, eventually, http, start_exporter

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Screenshots for people to look at; never committed (.gitignore).
ARTEFACTS = REPO / "test-artefacts" / "status-page"
# Every flag keeps chromium from calling home: the tests assert no request leaves loopback.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
HOSTILE_ACCOUNT = "hostile"
HOSTILE_REASON = "<img src=x onerror=alert(1)> then </script><script>alert(2)</script>"


@dataclass
class Browser:
    """A chromium session that checks every page it loads: no console error, and no request
    to anywhere but the exporter on loopback."""

    driver: webdriver.Chrome
    base: str
    requests: list[str] = field(default_factory=list)

    def visit(self, path: str) -> None:
        self.driver.get(self.base + path)
        self.check_page()

    def check_page(self) -> None:
        errors = [entry for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == [], errors
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
        outside = [url for url in self.requests if not _on_loopback(url, self.base)]
        assert outside == [], outside
        with pytest.raises(NoAlertPresentException):
            _ = self.driver.switch_to.alert.text

    def texts(self, selector: str) -> list[str]:
        return [element.text for element in self.driver.find_elements(By.CSS_SELECTOR, selector)]

    def screenshot(self, name: str) -> None:
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        assert self.driver.save_screenshot(str(ARTEFACTS / name))


def _on_loopback(url: str, base: str) -> bool:
    """The exporter's own address, or a URL that never touches the network (chrome:// is
    chromium's new-tab page, served from inside the browser)."""
    return url.startswith(base + "/") or url.split(":", 1)[0] in ("data", "about", "chrome")


@pytest.fixture(scope="module")
def hostile_cloud() -> Iterator[tuple[str, str]]:
    """A simulated MetaStudio in this process whose one job failed with a hostile reason."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="hostile cloud", daemon=True)
    thread.start()
    sim = demo_simulator(
        project_id=DEMO_PROJECT_ID,
        access_key=DEMO_ACCESS_KEY,
        secret_key=DEMO_SECRET_KEY,
        jobs=1,
        training_jobs=0,
    )
    (job_id,) = sim.job_ids()
    sim.set_override(job_id, state="FAILED")
    sim.set_override(job_id, body={**sim.answer(job_id), "job_failed_reason": HOSTILE_REASON})
    runner, url = asyncio.run_coroutine_threadsafe(start_simulator(sim), loop).result(10)
    try:
        yield url, job_id
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def exporter(
    tmp_path_factory: pytest.TempPathFactory, hostile_cloud: tuple[str, str]
) -> Iterator[ExporterProcess]:
    url, job_id = hostile_cloud
    directory = tmp_path_factory.mktemp("status-page")
    config = directory / "config.yaml"
    config.write_text(
        f"""accounts:
  {HOSTILE_ACCOUNT}:
    provider: huawei_metastudio
    region: test
    project_id: "{DEMO_PROJECT_ID}"
    endpoint: "{url}"
    auth: {{ak_env: HOSTILE_AK, sk_env: HOSTILE_SK}}
jobs:
  - {{account: {HOSTILE_ACCOUNT}, id: "{job_id}", labels: {{team: "<b>red</b>"}}}}
"""
    )
    process = start_exporter(
        "--demo",
        "--config",
        str(config),
        log=directory / "exporter.log",
        env={"HOSTILE_AK": DEMO_ACCESS_KEY, "HOSTILE_SK": DEMO_SECRET_KEY},
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser(
    tmp_path_factory: pytest.TempPathFactory, exporter: ExporterProcess
) -> Iterator[Browser]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            "chromium is missing: `make test` installs Debian's chromium and chromium-driver"
        )
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.get("about:blank")
    driver.get_log("performance")
    driver.get_log("browser")
    try:
        yield Browser(driver, exporter.url)
    finally:
        driver.quit()


def _jobs(exporter: ExporterProcess) -> list[dict[str, Any]]:
    status, body = http("GET", exporter.url + "/api/v1/jobs")
    assert status == 200
    jobs: list[dict[str, Any]] = body["jobs"]
    return jobs


def _job_path(job: dict[str, Any]) -> str:
    quote = urllib.parse.quote
    return f"/jobs/{quote(job['account'], safe='')}/{quote(job['job_id'], safe='')}"


def test_every_demo_job_appears_across_pages(browser: Browser, exporter: ExporterProcess) -> None:
    expected = {(job["account"], job["job_id"]) for job in _jobs(exporter)}
    assert len(expected) > 14  # the demo's jobs and the hostile one: more than two pages of 7
    seen: list[tuple[str, str]] = []
    browser.visit("/?limit=7")
    pages = 0
    while True:
        pages += 1
        for row in browser.driver.find_elements(By.CSS_SELECTOR, "#job-table tbody tr"):
            cells = row.find_elements(By.TAG_NAME, "td")
            seen.append((cells[0].text, cells[1].text))
        following = browser.driver.find_elements(By.CSS_SELECTOR, "nav.pages a[rel=next]")
        if not following:
            break
        following[0].click()
        browser.check_page()
    assert pages >= 3
    assert len(seen) == len(set(seen))  # no job on two pages
    # Jobs discovered while paging may add to the end; every job known before is there.
    assert expected <= set(seen)
    browser.visit("/")
    browser.screenshot("status.png")


def test_choosing_a_phase_narrows_the_table(browser: Browser, exporter: ExporterProcess) -> None:
    browser.visit("/")
    everything = len(browser.texts("#job-table tbody tr"))
    # The packaged script submits the form when a select changes.
    Select(browser.driver.find_element(By.NAME, "phase")).select_by_visible_text("running")
    eventually(lambda: "phase=running" in browser.driver.current_url, what="the filter to apply")
    browser.check_page()
    phases = browser.texts("#job-table tbody td.phase")
    assert phases
    assert set(phases) == {"running"}
    assert len(phases) < everything
    search = browser.driver.find_element(By.NAME, "q")
    search.clear()
    search.send_keys("team=<b>red")
    browser.driver.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    browser.check_page()
    assert browser.texts("#job-table tbody td:first-child") == []  # the hostile job failed
    Select(browser.driver.find_element(By.NAME, "phase")).select_by_visible_text("all")
    eventually(
        lambda: "phase=running" not in browser.driver.current_url, what="the filter to clear"
    )
    browser.check_page()
    assert browser.texts("#job-table tbody td:first-child") == [HOSTILE_ACCOUNT]


def test_a_failed_demo_jobs_reason_is_on_its_page(
    browser: Browser, exporter: ExporterProcess
) -> None:
    failed = eventually(
        lambda: [
            job
            for job in _jobs(exporter)
            if job["phase"] == "failed"
            and job["account"].startswith("demo-")
            and job["failure"]["reason"]
        ],
        within=60,
        what="a failed demo job",
    )[0]
    browser.visit(_job_path(failed))
    assert browser.texts("dd.reason") == [failed["failure"]["reason"]]
    assert browser.texts("dd.code") == [failed["failure"]["code"]]


def test_the_assessment_has_one_bar_per_metric(browser: Browser, exporter: ExporterProcess) -> None:
    assessed = eventually(
        lambda: [job for job in _jobs(exporter) if job.get("assessment", {}).get("metrics")],
        within=60,
        what="an assessed demo job",
    )[0]
    browser.visit(_job_path(assessed))
    bars = browser.driver.find_elements(By.CSS_SELECTOR, "#assessment svg.bar rect.actual")
    assert sorted(bar.get_attribute("data-metric") or "" for bar in bars) == sorted(
        assessed["assessment"]["metrics"]
    )
    # Coloured by status through the packaged stylesheet, not inline style.
    for bar in bars:
        assert bar.value_of_css_property("fill") != "rgb(0, 0, 0)"
    english = [m["suggestion_en"] for m in assessed["assessment"]["metrics"].values()]
    shown = browser.texts("#assessment td[lang=en]")
    assert [text for text in english if text] == [text for text in shown if text]
    browser.screenshot("job.png")


def test_hostile_strings_from_a_cloud_stay_text(
    browser: Browser, exporter: ExporterProcess
) -> None:
    job = eventually(
        lambda: next(
            (
                j
                for j in _jobs(exporter)
                if j["account"] == HOSTILE_ACCOUNT and j["phase"] == "failed"
            ),
            None,
        ),
        within=30,
        what="the hostile job polled",
    )
    assert job["failure"]["reason"] == HOSTILE_REASON
    browser.visit("/")
    details = browser.texts("#attention td.detail")
    assert any(HOSTILE_REASON in text for text in details), details
    assert browser.driver.find_elements(By.CSS_SELECTOR, "main img") == []
    assert browser.driver.find_elements(By.CSS_SELECTOR, "main script, main b") == []
    browser.visit(_job_path(job))
    assert browser.texts("dd.reason") == [HOSTILE_REASON]
    assert browser.texts("#facts .label") == ["team=<b>red</b>"]
    assert browser.driver.find_elements(By.CSS_SELECTOR, "main img, main script, main b") == []
    # The page's only script is the packaged one; a second would be the reason's.
    scripts = browser.driver.find_elements(By.TAG_NAME, "script")
    assert [s.get_attribute("src") for s in scripts] == [exporter.url + "/static/status.js"]


def test_the_browser_stayed_on_loopback(browser: Browser) -> None:
    """Every test above checked its pages; this one checks they loaded the packaged files."""
    loaded = {urllib.parse.urlsplit(url).path for url in browser.requests}
    assert {"/static/status.css", "/static/status.js"} <= loaded


def test_the_screenshots_are_saved(browser: Browser) -> None:
    """Screenshots of / and of a job page, for people to look at after a run."""
    for name in ("status.png", "job.png"):
        path = ARTEFACTS / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert path.stat().st_size > 10_000, name
