"""A study's MLflow experiment as its users expect it (issue 27, item 9): tagged as model training, its
parent run spanning every trial, and `taugate ui` (a real process serving the study's real store) opening
it in a real Chromium on MLflow's machine-learning runs table, not its GenAI pages (traces, evaluation
runs), for a study logged before the kind was set too.

MLflow 3.17's UI picks the GenAI or the machine-learning view by the `workflowType` query parameter, else
by the browser's last choice (localStorage), else GenAI; it does not read `mlflow.experimentKind`. So the
address `taugate ui` prints names the view, and the test opens that address in a fresh browser profile."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study.tracking.tracker import EXPERIMENT_KIND_TAG, KIND_TAG, MODEL_TRAINING, Tracker, study_start_ms
from tests.support.mlflowserver import healthy
from tests.support.processes import TOKEN_ENV, taugate_process, wait_until
from tests.support.raycluster import free_port

UI_BOOT, UI_WAIT = 240.0, 120.0  # seconds: the server's start on a loaded machine; the page's first rows


def store_of(study_dir: Path) -> tuple[MlflowClient, object, dict]:
    study = json.loads((study_dir / "study.json").read_text())
    client = MlflowClient(f"sqlite:///{study_dir / 'mlflow.db'}")
    return client, client.get_experiment_by_name(study["experiment_name"]), study


def test_a_study_experiment_is_tagged_as_model_training(smoke_study: Path):
    _, experiment, _ = store_of(smoke_study)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING == "custom_model_development"


def test_the_parent_run_spans_every_trial_of_the_study(smoke_study: Path):
    client, experiment, study = store_of(smoke_study)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get(KIND_TAG) == "study"]
    children = [r for r in runs if r.data.tags.get(KIND_TAG) == "trial"]
    assert len(children) == 8 and all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert parent.info.start_time == study_start_ms(study)  # the study's start, not its first logged trial's
    assert parent.info.start_time <= min(c.info.start_time for c in children)
    assert parent.info.end_time >= max(c.info.end_time for c in children)
    assert parent.info.status == "FINISHED"


def test_an_experiment_without_a_kind_gets_it_and_a_kind_chosen_by_a_user_stays(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    old = client.create_experiment("logged-before-the-kind")
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert Tracker(tmp_path, uri, "logged-before-the-kind").experiment_id == old
    assert Tracker(tmp_path, uri, "chosen").experiment_id == chosen
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"
    new = Tracker(tmp_path, uri, "new").experiment_id
    assert client.get_experiment(new).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING


@pytest.mark.slow
def test_taugate_ui_opens_an_old_study_on_the_runs_table(smoke_study: Path, tmp_path: Path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    study = tmp_path / "study"  # the study's store and metadata, its kind removed as in a study logged before
    study.mkdir()
    for name in ("study.json", "spec.yaml", "mlflow.db"):
        shutil.copy2(smoke_study / name, study / name)
    client, experiment, _ = store_of(study)
    client.delete_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG)
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(experiment.experiment_id).tags

    port = free_port()
    # a plain PATH, without this environment's bin folder: `taugate ui` finds its own mlflow and uvicorn
    env = os.environ | TOKEN_ENV | {"PATH": "/usr/bin:/bin"}
    ui = taugate_process("ui", str(study), "--port", str(port), env=env)
    try:
        first = ui.stderr.readline()
        assert first.startswith("MLflow UI on http://127.0.0.1:"), first
        address = first.split(" on ", 1)[1].split(" (Ctrl-C", 1)[0]
        experiment_id = experiment.experiment_id
        assert address == (f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs"
                           "?workflowType=machine_learning")  # fmt: skip
        assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING  # set by `ui`
        wait_until(lambda: healthy(f"http://127.0.0.1:{port}"), timeout=UI_BOOT, process=ui)

        browser.get(address)
        browser.refresh()
        body = WebDriverWait(browser, UI_WAIT, poll_frequency=1).until(
            lambda d: (
                (text := d.find_element(By.TAG_NAME, "body").text) and "smoke" in text and "Run Name" in text and text
            )  # the parent run's row in the runs table
        )
        browser.save_screenshot(str(tmp_path / "runs.png"))
        assert "/runs" in browser.current_url and "workflowType=machine_learning" in browser.current_url
        # the experiment's model-training pages (GenAI's are Overview, Traces, Sessions, Evaluation runs, ...)
        assert "\nsmoke\nRuns\nModels\nTraces\n" in body, body[:1000]
        assert "9 matching runs" in body  # the study's parent run and its 8 trials

        # why the address names the view: without it MLflow 3.17 opens the same experiment as GenAI
        browser.get(f"http://127.0.0.1:{port}/#/experiments/{experiment_id}")
        browser.refresh()
        genai = WebDriverWait(browser, UI_WAIT, poll_frequency=1).until(
            lambda d: "workflowType=genai" in d.current_url and d.find_element(By.TAG_NAME, "body").text
        )
        browser.save_screenshot(str(tmp_path / "bare.png"))
        assert "\nsmoke\nRuns\nModels\nTraces\n" not in genai
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGTERM)
        _, stderr = ui.communicate(timeout=60)
    # `taugate ui` prints no dependency's deprecation warning (starlette's, on every MLflow UI start)
    assert "StarletteDeprecationWarning" not in stderr and "DeprecationWarning" not in stderr, stderr[-3000:]
