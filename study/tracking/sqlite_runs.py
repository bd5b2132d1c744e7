"""Many trials' child runs written to a SQLite tracking store in one transaction.

MLflow's client writes a run through SQLAlchemy's ORM: `create_run`, `log_batch`, `log_inputs` and
`set_terminated` each open a session, query and commit, about 75 ms of the driver's CPU per trial on a
2-core machine, most of what a 400-trial study's driver spent. For a SQLite store at a schema this
module knows (`KNOWN_SCHEMAS`, MLflow's alembic revision), the rows those calls write are inserted
directly instead, for a whole batch of runs in one transaction: the same tables, columns and values
MLflow writes (a run, its tags with `mlflow.runName`, params, metric histories and latest metrics,
the dataset once per experiment, the input edge and its context tag), each run already ended with its
status and end time. `tests/study/test_bulk_tracking.py` holds this to MLflow's own path: one study
logged both ways gives equal stores, run ids aside. A store at another schema (another MLflow) and
every non-SQLite store are written through MLflow's client as before.

A batch is all or nothing: a driver killed mid-transaction leaves no part of it, and the study's
`taugate track` logs it again. Artifacts are copied after the commit, through MLflow's artifact
repository for the run's URI; a run whose artifacts were cut off is one `taugate track` completes
(`Tracker.missing` finds them lacking).
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# MLflow's tracking-store schema revisions (alembic) whose rows this module writes; tests hold them to MLflow.
KNOWN_SCHEMAS = frozenset({"dc11669786a5"})  # MLflow 3.17
DATASET_CONTEXT = "mlflow.data.context"  # mlflow.utils.mlflow_tags.MLFLOW_DATASET_CONTEXT
RUN_NAME_TAG = "mlflow.runName"


@dataclass
class TrialRun:
    """One finished trial's child run, whole: what MLflow's client calls would log for it."""

    key: str
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: list[Any]  # mlflow.entities.Metric, in logging order
    start_ms: int
    end_ms: int
    status: str  # FINISHED, FAILED, KILLED
    dataset: Any  # mlflow.entities.Dataset, logged with context "training"
    artifacts: list[Path] = field(default_factory=list)  # files and folders logged at the run's root
    run_id: str = ""
    artifact_uri: str = ""


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///` tracking URI whose schema this module writes; None for any other store."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = Path(uri.removeprefix(prefix))
    if not path.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            revisions = {row[0] for row in db.execute("SELECT version_num FROM alembic_version")}
    except sqlite3.Error:
        return None
    return path if revisions and revisions <= KNOWN_SCHEMAS else None


def latest(metrics: list[Any]) -> dict[str, Any]:
    """Each key's latest metric as MLflow keeps it (`latest_metrics`): the greatest (step, timestamp, value)."""
    out: dict[str, Any] = {}
    for metric in metrics:
        kept = out.get(metric.key)
        if kept is None or (metric.step, metric.timestamp, metric.value) > (kept.step, kept.timestamp, kept.value):
            out[metric.key] = metric
    return out


class SqliteRuns:
    """Writes runs of one experiment to a SQLite tracking store, a batch per transaction."""

    def __init__(self, db_path: Path, experiment_id: str):
        self.db_path, self.experiment_id = Path(db_path), int(experiment_id)

    def write(self, runs: list[TrialRun]) -> None:
        """Insert `runs` (their `run_id` and `artifact_uri` set here) in one transaction, then copy their artifacts."""
        from mlflow.utils.uri import append_to_uri_path

        with contextlib.closing(sqlite3.connect(self.db_path, timeout=60, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                found = db.execute("SELECT artifact_location, lifecycle_stage FROM experiments WHERE experiment_id = ?",
                                   (self.experiment_id,)).fetchone()  # fmt: skip
                if found is None or found[1] != "active":
                    raise sqlite3.IntegrityError(f"experiment {self.experiment_id} is not an active experiment")
                for run in runs:
                    run.run_id = uuid.uuid4().hex
                    run.artifact_uri = append_to_uri_path(found[0], run.run_id, "artifacts")
                    self._insert(db, run)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        for run in runs:
            self._copy_artifacts(run)

    def _insert(self, db: sqlite3.Connection, run: TrialRun) -> None:
        db.execute(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time,"
            " end_time, source_version, lifecycle_stage, artifact_uri, experiment_id, deleted_time)"
            " VALUES (?, ?, 'UNKNOWN', '', '', ?, ?, ?, ?, '', 'active', ?, ?, NULL)",
            (
                run.run_id,
                run.name,
                run.tags.get("mlflow.user", "unknown"),
                run.status,
                run.start_ms,
                run.end_ms,
                run.artifact_uri,
                self.experiment_id,
            ),  # fmt: skip
        )
        tags = run.tags if RUN_NAME_TAG in run.tags else run.tags | {RUN_NAME_TAG: run.name}
        db.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                       [(k, v, run.run_id) for k, v in tags.items()])  # fmt: skip
        db.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
                       [(k, v, run.run_id) for k, v in run.params.items()])  # fmt: skip
        db.executemany(
            "INSERT OR IGNORE INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, ?, 0)",
            [(m.key, m.value, m.timestamp, run.run_id, m.step) for m in run.metrics],
        )
        db.executemany(
            "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES (?, ?, ?, ?, 0, ?)",
            [(m.key, m.value, m.timestamp, m.step, run.run_id) for m in latest(run.metrics).values()],
        )
        if run.dataset is not None:
            dataset_uuid = self._dataset(db, run.dataset)
            input_uuid = uuid.uuid4().hex
            db.execute("INSERT INTO inputs (input_uuid, source_type, source_id, destination_type, destination_id, step)"
                       " VALUES (?, 'DATASET', ?, 'RUN', ?, 0)", (input_uuid, dataset_uuid, run.run_id))  # fmt: skip
            db.execute("INSERT INTO input_tags (input_uuid, name, value) VALUES (?, ?, 'training')",
                       (input_uuid, DATASET_CONTEXT))  # fmt: skip

    def _dataset(self, db: sqlite3.Connection, dataset: Any) -> str:
        """The experiment's row for this dataset (name and digest), inserted when it has none."""
        found = db.execute("SELECT dataset_uuid FROM datasets WHERE experiment_id = ? AND name = ? AND digest = ?",
                           (self.experiment_id, dataset.name, dataset.digest)).fetchone()  # fmt: skip
        if found:
            return found[0]
        dataset_uuid = uuid.uuid4().hex
        db.execute(
            "INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, dataset_source_type, dataset_source,"
            " dataset_schema, dataset_profile) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                dataset_uuid,
                self.experiment_id,
                dataset.name,
                dataset.digest,
                dataset.source_type,
                dataset.source,
                dataset.schema,
                dataset.profile,
            ),  # fmt: skip
        )
        return dataset_uuid

    @staticmethod
    def _copy_artifacts(run: TrialRun) -> None:
        if not run.artifacts:
            return
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        log_paths(get_artifact_repository(run.artifact_uri), run.artifacts)


def log_paths(store: Any, paths: list[Path]) -> None:
    """Log files and folders (those that exist) at the root of a run's artifact store, a folder under its name."""
    for path in paths:
        if path.is_dir():
            store.log_artifacts(str(path), artifact_path=path.name)
        elif path.is_file():
            store.log_artifact(str(path))
