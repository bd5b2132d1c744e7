"""Batched tracking (study.tracking.sqlite_runs, Tracker.log_trials, the callback's Batches) writes what
MLflow's own client wrote before it: the session's smoke study logged both ways gives equal stores, row
for row (run ids aside) and run for run as MlflowClient reads them."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from study.folder.filenames import CONFIG_FILE
from study.folder.storage import TrialLedger
from study.tracking.mlflow_store import template_path
from study.tracking.sqlite_runs import KNOWN_SCHEMAS, SqliteRuns, sqlite_path
from study.tracking.tracker import Tracker
from study.tune.callbacks import Batches

LEFT_OUT = shutil.ignore_patterns("mlflow.db", "mlartifacts", "tune", "report")


def logged(smoke: Path, folder: Path, bulk: bool) -> Tracker:
    """A copy of the smoke study without its MLflow store, its trials logged through MLflow's client one by one
    (`log_trial`, how every run was logged before batching) or in one batch (`log_trials`)."""
    shutil.copytree(smoke, folder, ignore=LEFT_OUT)
    study = json.loads((folder / "study.json").read_text())
    tracker = Tracker(folder, None, study["experiment_name"])
    ledger = TrialLedger(folder)
    finished = [(key, json.loads((ledger.trial_dir(key) / CONFIG_FILE).read_text()), metrics)
                for key, metrics in sorted(ledger.all_finished().items())]  # fmt: skip
    if bulk:
        assert tracker.log_trials(study, finished) == len(finished)
    else:
        assert all(tracker.log_trial(study, *entry) for entry in finished)
    return tracker


@pytest.fixture(scope="module")
def both(smoke_study, tmp_path_factory):
    root = tmp_path_factory.mktemp("bulk")
    return logged(smoke_study, root / "client" / "study", bulk=False), logged(smoke_study, root / "bulk" / "study",
                                                                              bulk=True)  # fmt: skip


def ids(db: sqlite3.Connection) -> dict[str, str]:
    """Every generated id in a store (runs, inputs, datasets) -> a name both stores share."""
    names = {
        run: f"run:{key}" for run, key in db.execute("SELECT run_uuid, value FROM tags WHERE key = 'taugate.trial_key'")
    }
    names |= {run: "run:study" for (run,) in db.execute(
        "SELECT run_uuid FROM tags WHERE key = 'taugate.kind' AND value = 'study'")}  # fmt: skip
    names |= {uid: f"dataset:{name}:{digest}" for uid, name, digest in db.execute(
        "SELECT dataset_uuid, name, digest FROM datasets")}  # fmt: skip
    names |= {uid: f"input:{names[run]}" for uid, run in db.execute("SELECT input_uuid, destination_id FROM inputs")}
    return names


def rows(tracker: Tracker) -> dict[str, list[tuple]]:
    """Every row of every table of a store, with its ids and its folder named alike."""
    with sqlite3.connect(tracker.study_dir / "mlflow.db") as db:
        names = ids(db)
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]

        def same(value):
            if isinstance(value, str):
                value = value.replace(str(tracker.study_dir.parent), "ROOT")
                for uid, name in names.items():
                    value = value.replace(uid, name)
            return value

        out = {}
        for table in tables:
            cursor = db.execute(f"SELECT * FROM {table}")
            # when each store's experiment was made differs; nothing logged to it changes these
            made = [column[0] in ("creation_time", "last_update_time") for column in cursor.description]
            out[table] = sorted((tuple(None if t else same(v) for v, t in zip(row, made, strict=True))
                                 for row in cursor), key=repr)  # fmt: skip
        return out


def read_back(tracker: Tracker) -> list[dict]:
    """Each run as MlflowClient gives it: info, tags, params, metrics with their histories, inputs, artifacts."""
    client, out = tracker.client, []
    for run in client.search_runs([tracker.experiment_id], max_results=1000):
        files, folders = {}, [None]
        while folders:
            for info in tracker.artifacts(run).list_artifacts(folders.pop()):
                folders.append(info.path) if info.is_dir else files.update({info.path: info.file_size})
        histories = {}
        for key in run.data.metrics:
            histories[key] = sorted(
                (m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, key)
            )
        out.append({
            "name": run.info.run_name, "status": run.info.status, "times": (run.info.start_time, run.info.end_time),
            "user": run.info.user_id, "stage": run.info.lifecycle_stage,
            "tags": {k: v for k, v in run.data.tags.items() if k != "mlflow.parentRunId"},
            "parent": "mlflow.parentRunId" in run.data.tags,
            "params": run.data.params, "metrics": run.data.metrics, "histories": histories, "artifacts": files,
            "inputs": [(i.dataset.name, i.dataset.digest, i.dataset.source_type, i.dataset.source, i.dataset.schema,
                        i.dataset.profile, [(t.key, t.value) for t in i.tags]) for i in run.inputs.dataset_inputs],
        })  # fmt: skip
    return sorted(out, key=lambda run: (run["tags"].get("taugate.kind"), run["tags"].get("taugate.trial_key", "")))


def test_the_batch_went_to_the_sqlite_store_directly(both):
    _, bulk = both
    assert bulk._bulk == bulk.study_dir / "mlflow.db"  # not MLflow's client: the direct path was taken


def test_batched_runs_equal_the_clients_row_for_row(both):
    client, bulk = both
    before, after = rows(client), rows(bulk)
    assert len(after["runs"]) == 9 and len(after["inputs"]) == 8  # the study's run and its 8 trials
    for table in before:
        assert after[table] == before[table], table


def test_batched_runs_read_back_equal_through_mlflow(both):
    client, bulk = both
    before, after = read_back(client), read_back(bulk)
    assert len(after) == 9 and sum(bool(run["artifacts"]) for run in after) >= 2
    assert after == before


def test_a_batch_is_all_or_nothing(both, tmp_path):
    """A run that cannot be written takes its whole batch back: no run of it stays in the store."""
    _, bulk = both
    folder = tmp_path / "study"
    shutil.copytree(bulk.study_dir, folder)
    study = json.loads((folder / "study.json").read_text())
    tracker = Tracker(folder, None, study["experiment_name"])
    ledger = TrialLedger(folder)
    key, metrics = next(iter(ledger.all_finished().items()))
    record = json.loads((ledger.trial_dir(key) / CONFIG_FILE).read_text())
    good = tracker._describe(study, tracker.parent(study), key, record, metrics)
    broken = tracker._describe(study, tracker.parent(study), key, record, metrics)
    broken.metrics = [*broken.metrics, object()]  # not a metric: the insert fails after `good` went in
    count = "SELECT count(*) FROM runs"
    with sqlite3.connect(folder / "mlflow.db") as db:
        runs_before = db.execute(count).fetchone()[0]
    with pytest.raises(AttributeError):
        SqliteRuns(folder / "mlflow.db", tracker.experiment_id).write([good, broken])
    with sqlite3.connect(folder / "mlflow.db") as db:
        assert db.execute(count).fetchone()[0] == runs_before


def test_only_a_sqlite_store_at_a_known_schema_is_written_directly(tmp_path):
    template = template_path()
    if not template.is_file():
        assert Tracker(tmp_path / "any", None, "any").experiment_id  # builds the migrated template
    with sqlite3.connect(template) as db:  # MLflow's current schema: a new MLflow needs the equality tests again
        assert {row[0] for row in db.execute("SELECT version_num FROM alembic_version")} <= KNOWN_SCHEMAS
    other = tmp_path / "other.db"
    shutil.copyfile(template, other)
    with sqlite3.connect(other) as db:
        db.execute("UPDATE alembic_version SET version_num = 'a-later-mlflow'")
    assert sqlite_path(f"sqlite:///{template}") == template
    assert sqlite_path(f"sqlite:///{other}") is None
    assert sqlite_path(f"sqlite:///{tmp_path / 'absent.db'}") is None
    assert sqlite_path("http://127.0.0.1:5000") is None


def test_batches_close_on_size_and_on_close_without_waiting_out_their_time():
    flushed: list[list[int]] = []
    started = time.monotonic()
    batches = Batches(flushed.append, wait_s=60, most=3, name="test-batches")
    for item in (1, 2, 3, 4):  # three close a batch at once; the fourth waits for its time or the close
        batches.put(item)
    while not flushed and time.monotonic() - started < 30:
        time.sleep(0.01)
    assert flushed == [[1, 2, 3]]
    batches.close()
    assert flushed == [[1, 2, 3], [4]] and time.monotonic() - started < 30  # the close did not wait 60 s
    assert not any(thread.name == "test-batches" for thread in threading.enumerate())


def test_a_batch_waits_its_time_for_more():
    flushed: list[tuple[float, list[int]]] = []
    batches = Batches(lambda batch: flushed.append((time.monotonic(), batch)), wait_s=0.3, most=100, name="waits")
    first = time.monotonic()
    batches.put(1)
    batches.put(2)
    while not flushed and time.monotonic() - first < 30:
        time.sleep(0.01)
    batches.close()
    assert flushed[0][1] == [1, 2] and flushed[0][0] - first >= 0.3


def test_sync_reads_back_only_runs_it_did_not_write_itself(smoke_study, tmp_path):
    """`taugate run` syncs with the tracker that logged its trials: the runs it wrote whole are not read back
    (2,000 of them took seconds), while a fresh tracker (`taugate track`) checks and completes every run."""
    tracker = logged(smoke_study, tmp_path / "study", bulk=True)
    study = json.loads((tracker.study_dir / "study.json").read_text())
    assert len(tracker.written) == 8
    gone = next(path for path in (tracker.study_dir / "mlartifacts").rglob("gate_stats.json"))
    gone.unlink()  # one run now lacks an artifact
    assert tracker.sync(study) == 0 and tracker.completed == [] and not gone.exists()
    fresh = Tracker(tracker.study_dir, None, study["experiment_name"])
    assert fresh.sync(study) == 0 and len(fresh.completed) == 1 and gone.exists()
