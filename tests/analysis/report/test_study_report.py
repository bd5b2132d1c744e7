"""What a reader sees: the report of a finished study in Chromium, the same table from Tune and
from MLflow, failures listed, and the study's runs in a real MLflow server's UI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request

import mlflow
import pandas as pd
import pytest

from analysis.table.load import comparable, load_mlflow, load_tune
from tests.support.cli import BIN, taugate
from tests.support.raycluster import free_port

pytestmark = pytest.mark.slow


def test_run_ends_with_the_report_and_every_figure_exists(smoke_study):
    report = smoke_study / "report"
    for name in ("report.html", "report.md", "results.csv"):
        assert (report / name).is_file(), name
    html = (report / "report.html").read_text()
    sources = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(sources) >= 4
    assert all((report / src).is_file() for src in sources)
    assert len(pd.read_csv(report / "results.csv")) == 8
    parent = mlflow.MlflowClient(f"sqlite:///{smoke_study / 'mlflow.db'}").search_runs(
        [mlflow.MlflowClient(f"sqlite:///{smoke_study / 'mlflow.db'}").get_experiment_by_name("smoke").experiment_id],
        "tags.`taugate.kind` = 'study'",
    )[0]
    logged = {a.path for a in mlflow.MlflowClient(f"sqlite:///{smoke_study / 'mlflow.db'}").list_artifacts(
        parent.info.run_id, "report")}  # fmt: skip
    assert "report/report.html" in logged


def test_report_command_prints_the_report_path(smoke_study):
    result = taugate("report", str(smoke_study))
    assert result.returncode == 0
    assert str((smoke_study / "report" / "report.html").resolve()) in result.stderr.replace("\n", "")


def test_report_renders_in_chromium_without_broken_images(smoke_study, browser, tmp_path):
    browser.get((smoke_study / "report" / "report.html").resolve().as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"
    )
    assert images and not [src for src, complete, width in images if not complete or width <= 0]
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#paper-table tbody tr')).map(r => r.innerText);"
    )
    assert len(rows) == 5 and rows[2].startswith("TauGate")
    assert browser.save_screenshot(str(tmp_path / "smoke-report.png"))


def test_tune_folder_and_mlflow_give_the_same_table(smoke_study):
    from_tune = load_tune(smoke_study)
    from_mlflow = load_mlflow(f"sqlite:///{smoke_study / 'mlflow.db'}", "smoke")
    assert len(from_tune) == 8 and set(from_tune["status"]) == {"ok"}
    pd.testing.assert_frame_equal(comparable(from_tune), comparable(from_mlflow), check_dtype=False)


def test_a_diverged_trial_still_gets_a_full_report_that_lists_it(tmp_path):
    spec = tmp_path / "diverge.yaml"
    spec.write_text(
        "name: diverge\nfoundation: {epochs: 1}\nepochs: 1\nseeds: [0, 1]\n"
        "methods: {frozen: {}, taugate: {}, full: {lr: 1.0e+30}}\n"
    )
    result = taugate("run", str(spec), "--output", str(tmp_path / "study"))
    assert result.returncode == 0, result.stderr[-3000:]
    table = load_tune(tmp_path / "study")
    assert sorted(table.loc[table["status"] == "diverged", "method"]) == ["full", "full"]
    markdown = (tmp_path / "study" / "report" / "report.md").read_text()
    assert "Failed trials" in markdown and "diverged" in markdown
    html = (tmp_path / "study" / "report" / "report.html").read_text()
    failed = html[html.index('id="failed-trials-table"') :]
    assert failed.count("<td>diverged</td>") == 2 and "method=full" in failed and "lr=1e+30" in failed
    assert "taugate" in html and 'id="paper-table"' in html


@pytest.fixture
def mlflow_server(smoke_study, tmp_path):
    port = free_port()
    command = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{smoke_study / 'mlflow.db'}",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    log = open(tmp_path / "mlflow.log", "w")  # noqa: SIM115 - closed with the server
    server = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True,
                              env=os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError(f"mlflow server did not start: {(tmp_path / 'mlflow.log').read_text()[-2000:]}")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_mlflow_ui_shows_the_study_and_its_trial_runs(mlflow_server, smoke_study, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    experiment = mlflow.MlflowClient(f"sqlite:///{smoke_study / 'mlflow.db'}").get_experiment_by_name("smoke")
    browser.get(f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs")
    browser.refresh()
    WebDriverWait(browser, 60).until(lambda d: "smoke" in d.find_element(By.TAG_NAME, "body").text)
    # child runs start collapsed under their parent: click the expander in the parent's name cell
    expander = "button[data-component-id*='runnamecellrenderer']"
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, expander))
    browser.find_elements(By.CSS_SELECTOR, expander)[0].click()
    children = {"taugate-s10-l0-seed0", "lora-r4-seed1", "frozen-seed0", "bitfit-seed1"}
    WebDriverWait(browser, 60).until(lambda d: children <= set(d.find_element(By.TAG_NAME, "body").text.split()))
    assert browser.save_screenshot(str(tmp_path / "mlflow-ui.png"))
