"""report.html in a real headless Chromium: every figure loads from disk and the paper table renders.

Needs Debian's `chromium` and `chromium-driver` packages (/usr/bin/chromium, /usr/bin/chromedriver).
Their absence is a failure, not a skip: a report nobody checked in a browser is not tested.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from analysis.report import write_report
from analysis.synthetic import synthetic_study

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not binary.is_file() or not os.access(binary, os.X_OK):
            pytest.fail(
                f"{binary} is missing: install it with `apt-get install -y chromium chromium-driver` ({package})"
            )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-quic", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,2400",
    ):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_report_renders_in_chromium(browser, tmp_path: Path) -> None:
    df, gate_stats = synthetic_study(seeds=3)
    paths = write_report(df, tmp_path / "report", {"git_commit": "0123abcd"}, gate_stats)
    browser.get(paths["html"].resolve().as_uri())

    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"
    )
    assert len(images) >= 9
    broken = [src for src, complete, width in images if not complete or width <= 0]
    assert not broken, f"images that did not load: {broken}"

    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#paper-table tbody tr')).map(r => r.innerText);"
    )
    assert len(rows) == 5 and rows[0].startswith("Frozen")
    assert browser.find_element("id", "failed-trials-table").is_displayed()

    screenshot = tmp_path / "report.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
