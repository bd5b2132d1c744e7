"""report.html in a real headless Chromium: every figure loads from disk and the paper table renders.

Needs Debian's `chromium` and `chromium-driver` packages (/usr/bin/chromium, /usr/bin/chromedriver).
Their absence is a failure, not a skip: a report nobody checked in a browser is not tested.
"""

from __future__ import annotations

from pathlib import Path

from analysis.report.document import write_report
from tests.support.synthetic import synthetic_study


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
