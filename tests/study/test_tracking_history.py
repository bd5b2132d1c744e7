"""What a trial's MLflow child run holds once trials report every epoch: `loss` / `val_acc` histories
with step = epoch, the trial's own start and end, its training data as a dataset input, a stopped
trial as KILLED; old ledger entries (no history, no times) still log. Then the MLflow UI of a real
server, in a real Chromium, charts a run's `val_acc` over its epochs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from study.tracking.datasets import split_sizes
from study.tracking.tracker import BATCH_ENTITIES, BATCH_PARAMS, Tracker, batches, run_metrics
from tests.support.ledger import record_trial
from tests.support.mlflowserver import MlflowServer
from tests.support.mnist_files import mnist_root
from trainables.config import parse_config
from trainables.data import load_digits

UI_WAIT = 120.0  # seconds

CONFIG = {"method": "taugate", "hidden": [16, 16], "epochs": 4, "angles": [0, 45], "target_angle": 45}
STARTED = 1_700_000_000.125  # the trial's own start on its worker (unix seconds)
EPOCHS = [
    {"epoch": 1, "loss": 0.53, "val_acc": 0.81, "seconds": 0.4},
    {"epoch": 2, "loss": 0.41, "val_acc": 0.84, "seconds": 0.8, "val_acc_hard": 0.83},
    {"epoch": 3, "loss": 0.37, "val_acc": 0.86, "seconds": 1.25},
    {"epoch": 4, "loss": 0.35, "val_acc": 0.87, "seconds": 1.6},
]
OK_METRICS = {"status": "ok", "method": "taugate", "seed": 0, "trainable_params": 64, "train_seconds": 1.6,
              "final_loss": 0.35, "val_acc_45": 0.87, "acc_45": 0.85, "acc_0": 0.9}  # fmt: skip
STOPPED_METRICS = {"status": "stopped", "method": "taugate", "seed": 1, "trainable_params": 64,
                   "train_seconds": 0.7, "final_loss": 0.48, "val_acc_45": 0.8, "stopped_at_epoch": 2}  # fmt: skip
DIVERGED_METRICS = {"status": "diverged", "method": "full", "seed": 0, "trainable_params": 1000,
                    "train_seconds": 0.3, "diverged_at_step": 9}  # fmt: skip
LONG_EPOCHS = 600  # 1,200 epoch metrics: more than one MLflow batch


@dataclass
class Synced:
    study: Path
    uri: str
    client: MlflowClient
    runs: dict  # trial key -> mlflow Run
    added: int
    added_again: int


@pytest.fixture(scope="module")
def synced(tmp_path_factory) -> Synced:
    """A study folder with an ok trial (4 epochs), a stopped and a diverged one, an old-style entry
    (no history, no times) and a long one, synced into a real SQLite MLflow store."""
    study = tmp_path_factory.mktemp("history") / "study"
    record_trial(study, "ok", CONFIG, OK_METRICS, history=EPOCHS, started_at=STARTED, ended_at=STARTED + 2.5,
                 worker_pid=4242)  # fmt: skip
    record_trial(study, "stopped", CONFIG | {"seed": 1}, STOPPED_METRICS, history=EPOCHS[:2],
                 started_at=STARTED + 10, ended_at=STARTED + 11, worker_pid=4243)  # fmt: skip
    record_trial(study, "diverged", CONFIG | {"method": "full", "lr": 1e30}, DIVERGED_METRICS,
                 history=[{"epoch": 1, "loss": 9.5, "val_acc": 0.1, "seconds": 0.1},
                          {"epoch": 2, "loss": None, "val_acc": 0.1, "seconds": 0.3, "diverged": True}],
                 started_at=STARTED + 20, ended_at=STARTED + 21)  # fmt: skip
    record_trial(study, "old", CONFIG | {"seed": 2}, OK_METRICS | {"seed": 2})
    long = [{"epoch": e, "loss": 1 / e, "val_acc": 1 - 1 / (e + 1), "seconds": e * 0.01} for e in range(1, 601)]
    record_trial(study, "long", CONFIG | {"seed": 3, "epochs": LONG_EPOCHS}, OK_METRICS | {"seed": 3}, history=long,
                 started_at=STARTED + 30, ended_at=STARTED + 40)  # fmt: skip
    uri = f"sqlite:///{study / 'mlflow.db'}"
    record = {"study_id": "history-study", "name": "history", "experiment_name": "history"}
    tracker = Tracker(study, uri, "history")
    added = tracker.sync(record)
    added_again = Tracker(study, uri, "history").sync(record)  # a fresh tracker, as `taugate track` makes
    client = MlflowClient(uri)
    found = client.search_runs([tracker.experiment_id], "tags.`taugate.kind` = 'trial'", max_results=100)
    runs = {run.data.tags["taugate.trial_key"]: run for run in found}
    return Synced(study, uri, client, runs, added, added_again)


def history(synced: Synced, key: str, metric: str) -> list[tuple[int, float, int]]:
    points = synced.client.get_metric_history(synced.runs[key].info.run_id, metric)
    return sorted((p.step, p.value, p.timestamp) for p in points)


def test_every_trial_is_one_run_and_syncing_again_adds_none(synced):
    assert synced.added == 5 and synced.added_again == 0
    assert sorted(synced.runs) == ["diverged", "long", "ok", "old", "stopped"]


def test_val_acc_and_loss_are_histories_with_one_step_per_epoch_at_the_trials_own_times(synced):
    start = int(STARTED * 1000)
    assert history(synced, "ok", "val_acc") == [
        (e["epoch"], e["val_acc"], start + int(e["seconds"] * 1000)) for e in EPOCHS
    ]  # fmt: skip
    assert [(step, value) for step, value, _ in history(synced, "ok", "loss")] == [
        (e["epoch"], e["loss"]) for e in EPOCHS
    ]  # fmt: skip
    assert [(step, value) for step, value, _ in history(synced, "ok", "val_acc_hard")] == [(2, 0.83)]
    # the chart's latest value is the last epoch's; no final metric adds a step 0 to either series
    assert synced.runs["ok"].data.metrics["val_acc"] == 0.87
    assert synced.runs["ok"].data.metrics["loss"] == 0.35


def test_final_metrics_are_logged_as_before_at_the_trials_end(synced):
    metrics = synced.runs["ok"].data.metrics
    for name in ("val_acc_45", "acc_45", "acc_0", "final_loss", "trainable_params", "train_seconds"):
        assert metrics[name] == OK_METRICS[name]
    [(step, value, timestamp)] = history(synced, "ok", "val_acc_45")
    assert (step, value, timestamp) == (0, 0.87, int((STARTED + 2.5) * 1000))
    assert synced.runs["ok"].data.params["epochs"] == "4"


def test_runs_start_and_end_when_the_trial_did_on_its_worker(synced):
    for key, start, end in (("ok", STARTED, STARTED + 2.5), ("stopped", STARTED + 10, STARTED + 11),
                            ("diverged", STARTED + 20, STARTED + 21)):  # fmt: skip
        info = synced.runs[key].info
        assert (info.start_time, info.end_time) == (int(start * 1000), int(end * 1000)), key
    assert synced.runs["ok"].data.tags["taugate.worker_pid"] == "4242"


def test_status_ok_is_finished_diverged_failed_and_stopped_killed(synced):
    statuses = {key: (run.info.status, run.data.tags["taugate.status"]) for key, run in synced.runs.items()}
    assert statuses == {"ok": ("FINISHED", "ok"), "old": ("FINISHED", "ok"), "long": ("FINISHED", "ok"),
                        "diverged": ("FAILED", "diverged"), "stopped": ("KILLED", "stopped")}  # fmt: skip
    stopped = synced.runs["stopped"]
    assert stopped.data.tags["taugate.stopped_at_epoch"] == "2"
    assert [(s, v) for s, v, _ in history(synced, "stopped", "val_acc")] == [(1, 0.81), (2, 0.84)]
    assert stopped.data.metrics["val_acc_45"] == 0.8
    # a diverged epoch's loss (null in the ledger) is left out, its accuracy kept
    assert [(s, v) for s, v, _ in history(synced, "diverged", "loss")] == [(1, 9.5)]
    assert [s for s, _, _ in history(synced, "diverged", "val_acc")] == [1, 2]


def test_old_entries_without_history_or_times_log_as_before(synced):
    run = synced.runs["old"]
    assert history(synced, "old", "val_acc") == [] and history(synced, "old", "loss") == []
    assert run.data.metrics["val_acc_45"] == 0.87 and run.info.status == "FINISHED"
    assert run.info.end_time >= run.info.start_time > int(STARTED * 1000)  # logged now: no times in the record
    assert run.inputs.dataset_inputs  # its training data all the same


def test_a_long_history_is_logged_whole_across_batches(synced):
    val_acc = history(synced, "long", "val_acc")
    assert [step for step, _, _ in val_acc] == list(range(1, LONG_EPOCHS + 1))
    assert len(history(synced, "long", "loss")) == LONG_EPOCHS
    assert synced.runs["long"].data.params["epochs"] == str(LONG_EPOCHS)


def test_training_data_is_a_dataset_input_with_its_split_sizes(synced):
    inputs = {key: run.inputs.dataset_inputs for key, run in synced.runs.items()}
    assert all(len(found) == 1 for found in inputs.values())
    ok = inputs["ok"][0]
    assert ok.dataset.name == "mnist5k@45"
    assert {(t.key, t.value) for t in ok.tags} == {("mlflow.data.context", "training")}
    profile = json.loads(ok.dataset.profile)
    assert {k: profile[k] for k in ("train", "val", "test")} == {"train": 3200, "val": 800, "test": 1000}
    assert profile["target_angle"] == 45 and json.loads(ok.dataset.source)["uri"].endswith("mnist_5k.csv.gz")
    # the same digits for every seed and method: one digest, one dataset in the store
    assert len({(i[0].dataset.name, i[0].dataset.digest) for i in inputs.values()}) == 1
    assert len(ok.dataset.digest) <= 36  # MLflow's column


def test_a_different_target_or_split_is_a_different_dataset(tmp_path):
    study = tmp_path / "study"
    record_trial(study, "t0", CONFIG | {"target_angle": 0}, OK_METRICS)
    record_trial(study, "v3", CONFIG | {"val_fraction": 0.3}, OK_METRICS)
    record_trial(study, "t45", CONFIG, OK_METRICS)
    uri = f"sqlite:///{study / 'mlflow.db'}"
    tracker = Tracker(study, uri, "datasets")
    tracker.sync({"study_id": "datasets", "name": "datasets"})
    runs = MlflowClient(uri).search_runs([tracker.experiment_id], "tags.`taugate.kind` = 'trial'")
    datasets = {r.data.tags["taugate.trial_key"]: r.inputs.dataset_inputs[0].dataset for r in runs}
    assert datasets["t0"].name == "mnist5k@0" and datasets["v3"].name == datasets["t45"].name == "mnist5k@45"
    assert len({d.digest for d in datasets.values()}) == 3
    assert json.loads(datasets["v3"].profile)["val"] == 1200


@pytest.mark.parametrize(("test_fraction", "val_fraction"), [(0.2, 0.2), (0.15, 0.33), (0.5, 0.05)])
def test_split_sizes_are_the_splits_trials_train_on(test_fraction, val_fraction):
    config = parse_config({"test_fraction": test_fraction, "val_fraction": val_fraction})
    train, val, test = load_digits(config)
    expected = {"train": len(train.labels), "val": len(val.labels), "test": len(test.labels)}
    assert split_sizes("mnist5k", test_fraction, val_fraction) == expected


def test_split_sizes_of_torchvision_mnist_read_its_label_files(tmp_path):
    mnist_root(tmp_path, train=203, test=61, random_labels=True)
    config = parse_config({"dataset": "mnist", "data_root": str(tmp_path), "val_fraction": 0.3})
    train, val, test = load_digits(config)
    expected = {"train": len(train.labels), "val": len(val.labels), "test": len(test.labels)}
    assert split_sizes("mnist", 0.2, 0.3, str(tmp_path)) == expected
    # without the files on the driver: MNIST's published 60,000 / 10,000 digits
    assert split_sizes("mnist", 0.2, 0.2, str(tmp_path / "elsewhere")) == {"train": 48000, "val": 12000, "test": 10000}


def test_a_final_metric_named_like_a_series_joins_it_at_the_last_epoch():
    metrics = run_metrics({"status": "ok", "loss": 0.35, "final_loss": 0.35}, EPOCHS, start_ms=1000, end_ms=9000)
    loss = sorted((m.step, m.timestamp) for m in metrics if m.key == "loss")
    assert loss == [(1, 1400), (2, 1800), (3, 2250), (4, 2600), (4, 9000)]
    assert [(m.step, m.timestamp) for m in metrics if m.key == "final_loss"] == [(0, 9000)]


def test_batches_keep_within_mlflow_limits_and_lose_nothing():
    params = [Param(f"p{i}", "v") for i in range(150)]
    metrics = [Metric("m", float(i), 0, i) for i in range(2500)]
    chunks = list(batches(params, metrics))
    assert all(len(p) <= BATCH_PARAMS and len(p) + len(m) <= BATCH_ENTITIES for p, m in chunks)
    assert [x for p, _ in chunks for x in p] == params and [x for _, m in chunks for x in m] == metrics
    assert len(list(batches(params[:40], metrics[:200]))) == 1  # a usual trial: one call


@pytest.fixture(scope="module", autouse=True)
def booting_server(request):
    """When a UI test is selected, the server starts as soon as the store is synced, so that it boots
    while the other tests of this file run."""
    if not any("mlflow_ui" in item.fixturenames for item in request.session.items):
        yield None
        return
    synced = request.getfixturevalue("synced")
    server = MlflowServer(synced.uri, synced.study.parent / "mlflow-server.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_ui(booting_server) -> str:
    return booting_server.wait_healthy()


# Every plotly chart on the page as its traces' (type, x, y).
PLOTS = """return Array.from(document.querySelectorAll('.js-plotly-plot'))
    .map(plot => (plot.data || []).map(trace => [trace.type, trace.x, trace.y]));"""


@pytest.mark.slow
def test_mlflow_ui_charts_a_trials_val_acc_over_its_epochs(synced, mlflow_ui, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run = synced.runs["ok"]
    page = f"{mlflow_ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    browser.get(page)
    browser.refresh()
    overview = WebDriverWait(browser, UI_WAIT).until(
        lambda d: (text := d.find_element(By.TAG_NAME, "body").text) and "mnist5k@45" in text and text
    )
    assert re.search(r"Duration\s+2\.5s", overview)  # the trial's own start and end
    assert "Training" in overview[overview.index("mnist5k@45") :]  # the dataset's context

    browser.get(f"{page}/model-metrics")
    browser.refresh()
    val_acc = ["scatter", [e["epoch"] for e in EPOCHS], [e["val_acc"] for e in EPOCHS]]

    def charted(driver) -> bool:
        return any(val_acc in traces for traces in driver.execute_script(PLOTS))

    try:
        WebDriverWait(browser, UI_WAIT, poll_frequency=1).until(charted)
    finally:
        browser.save_screenshot(str(tmp_path / "model-metrics.png"))
