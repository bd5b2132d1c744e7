"""Half-logged runs are completed: a driver killed, or a tracking server lost, while a trial's child run was
being logged leaves that run RUNNING, with no end time, dataset input, metrics or artifacts. `taugate track`
finds it and completes it from the ledger, as a normal run is logged, without adding a run; a second
`track` changes nothing. In the study's own SQLite store, and against a real `mlflow server`."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from study.tracking.mlflow_store import default_tracking_uri
from study.tracking.tracker import KIND_TAG, PARENT_TAG, RUN_STATUS, TRIAL_TAG
from tests.support.cli import taugate
from tests.support.mlflowserver import MlflowServer

pytestmark = pytest.mark.slow


def children(client: MlflowClient) -> dict[str, list]:
    """The store's active child runs by trial key."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.`{KIND_TAG}` = 'trial'", max_results=1000)
    out: dict[str, list] = {}
    for run in runs:
        out.setdefault(run.data.tags[TRIAL_TAG], []).append(run)
    return out


def files(client: MlflowClient, run) -> dict[str, int]:
    """A run's artifact files (path -> size), every level, read where the run's artifact URI points (not through
    the client, whose artifact stores MLflow caches by run id alone: a copy's runs have the original's ids)."""
    store = get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri)
    out, folders = {}, [None]
    while folders:
        for info in store.list_artifacts(folders.pop()):
            if info.is_dir:
                folders.append(info.path)
            else:
                out[info.path] = info.file_size
    return out


def state(client: MlflowClient, run) -> dict:
    """Everything a trial's run holds that `track` logs: status, times, params, every metric's history,
    dataset inputs and artifact files."""
    run = client.get_run(run.info.run_id)
    return {
        "status": run.info.status, "start": run.info.start_time, "end": run.info.end_time,
        "params": run.data.params, "tags": run.data.tags,
        "metrics": {key: sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, key))
                    for key in run.data.metrics},
        "datasets": sorted((d.dataset.name, d.dataset.digest, d.dataset.profile) for d in run.inputs.dataset_inputs),
        "artifacts": files(client, run),
    }  # fmt: skip


def cut_off(db_path: Path, run_id: str, artifacts: Path) -> None:
    """The run as a driver killed after creating it leaves it: RUNNING, no end time, no metrics, dataset
    input or artifacts, half its params (written with the store's own SQL, as MLflow cannot un-end a run)."""
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE runs SET status = 'RUNNING', end_time = NULL WHERE run_uuid = ?", (run_id,))
        inputs = [row[0] for row in db.execute("SELECT input_uuid FROM inputs WHERE destination_id = ?", (run_id,))]
        db.executemany("DELETE FROM input_tags WHERE input_uuid = ?", [(uuid,) for uuid in inputs])
        db.execute("DELETE FROM inputs WHERE destination_id = ?", (run_id,))
        for table in ("metrics", "latest_metrics"):
            db.execute(f"DELETE FROM {table} WHERE run_uuid = ?", (run_id,))  # noqa: S608
        keys = sorted(row[0] for row in db.execute("SELECT key FROM params WHERE run_uuid = ?", (run_id,)))
        db.executemany("DELETE FROM params WHERE run_uuid = ? AND key = ?", [(run_id, k) for k in keys[::2]])
    shutil.rmtree(artifacts)


def start_like_the_tracker(client: MlflowClient, complete_run) -> str:
    """A run as `Tracker.log_trial` creates it (its identity tags, the trial's start), nothing logged after."""
    tags = {k: v for k, v in complete_run.data.tags.items() if k.startswith("taugate.") or k == PARENT_TAG}
    run = client.create_run(complete_run.info.experiment_id, start_time=complete_run.info.start_time, tags=tags,
                            run_name=complete_run.info.run_name)  # fmt: skip
    return run.info.run_id


def track(study: Path, *options: str) -> str:
    result = taugate("track", str(study), *options)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def check_completed_from_the_ledger(study: Path, client: MlflowClient, expected: dict[str, dict]) -> None:
    """Each trial has one run again, holding what its complete run held, with the ledger's status and end."""
    runs = children(client)
    assert sorted(runs) == sorted(expected) and all(len(found) == 1 for found in runs.values())
    for key, before in expected.items():
        now = state(client, runs[key][0])
        ledger = json.loads((study / "trials" / key / "metrics.json").read_text())
        record = json.loads((study / "trials" / key / "config.json").read_text())
        assert now["status"] == RUN_STATUS[ledger["status"]]
        assert now["end"] == int(record["ended_at"] * 1000)
        assert now["datasets"] and now["artifacts"]
        assert now == before, key


@pytest.fixture
def copied(smoke_study, tmp_path) -> Path:
    study = tmp_path / "study"
    shutil.copytree(smoke_study, study, symlinks=True)
    return study


def test_track_completes_half_logged_runs_of_the_studys_own_store(copied):
    track(copied)  # the copy's store, pointed at the copy
    client = MlflowClient(default_tracking_uri(copied))
    runs = children(client)
    expected = {key: state(client, found[0]) for key, found in runs.items()}
    cut, bare, twice = sorted(runs)[:3]
    run = runs[cut][0]
    cut_off(copied / "mlflow.db", run.info.run_id, copied / "mlartifacts" / run.info.run_id)
    assert client.get_run(run.info.run_id).info.status == "RUNNING"
    client.delete_run(runs[bare][0].info.run_id)  # its run as the tracker starts one, never finished
    start_like_the_tracker(client, runs[bare][0])
    duplicate = start_like_the_tracker(client, runs[twice][0])  # a create retried: two runs of one trial

    out = track(copied)

    assert "logged 0 new trial runs" in out
    assert "completed 2 half-logged trial runs" in out and "deleted 1 duplicate trial runs" in out
    assert client.get_run(duplicate).info.lifecycle_stage == "deleted"
    check_completed_from_the_ledger(copied, client, expected)
    settled = {key: state(client, found[0]) for key, found in children(client).items()}

    again = track(copied)

    assert "logged 0 new trial runs" in again and "completed" not in again and "duplicate" not in again
    assert {key: state(client, found[0]) for key, found in children(client).items()} == settled


def test_track_completes_a_half_logged_run_on_a_real_mlflow_server(copied, tmp_path):
    home = tmp_path / "server"
    home.mkdir()
    server = MlflowServer(f"sqlite:///{home / 'mlflow.db'}", tmp_path / "server.log", cwd=home)
    try:
        url = server.wait_healthy()
        track(copied, "--tracking-uri", url)
        client = MlflowClient(url)
        runs = children(client)
        assert len(runs) == 8
        expected = {key: state(client, found[0]) for key, found in runs.items()}
        run = runs[sorted(runs)[0]][0]
        on_disk = home / "mlartifacts" / run.info.experiment_id / run.info.run_id
        assert on_disk.is_dir() and run.info.artifact_uri.startswith("mlflow-artifacts:")
        cut_off(home / "mlflow.db", run.info.run_id, on_disk)
        assert client.get_run(run.info.run_id).info.status == "RUNNING"

        out = track(copied, "--tracking-uri", url)

        assert "logged 0 new trial runs" in out and "completed 1 half-logged trial runs" in out
        check_completed_from_the_ledger(copied, client, expected)
        again = track(copied, "--tracking-uri", url)
        assert "completed" not in again
        assert {key: state(client, found[0]) for key, found in children(client).items()} == expected
    finally:
        server.stop()
