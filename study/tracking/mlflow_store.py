"""Opening a study's MLflow tracking store, fast.

A study logs to the store named by `--tracking-uri`, the spec or MLFLOW_TRACKING_URI, else to its
own SQLite file `<study>/mlflow.db`. Creating a SQLite store runs MLflow's schema migrations from
the first to the last (1.5 s of CPU here, on top of 1 s to import mlflow), which every new study
and every test would pay while Ray starts on the same cores. So a new SQLite store starts as a
copy of an empty store migrated once per MLflow version (kept in the taugate cache folder), and
the store is opened on a background thread while Ray starts (`open_in_background`). MLflow then
opens the copy as it opens any store at its current schema; if anything about the template is
off, the store is created the ordinary way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

from study import environment  # noqa: F401 - MLflow's HTTP retries and timeout, before MLflow is imported
from trainables.data import cache_dir
from trainables.files import atomic_path

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def default_tracking_uri(study_dir: Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / 'mlflow.db'}"


def resolve_uri(study_dir: Path, tracking_uri: str | None) -> str:
    """The store a study logs to: the one named (flag or spec), MLFLOW_TRACKING_URI, or the study's own SQLite."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(Path(study_dir))


def absolute_sqlite(uri: str | None) -> str | None:
    """`sqlite:///relative.db` (relative to the current folder) as `sqlite:////abs/relative.db`; other URIs as given.
    A study records the URI it was given (study.json), which a command run from another folder reads."""
    prefix = "sqlite:///"
    if uri and uri.startswith(prefix) and not Path(uri.removeprefix(prefix)).is_absolute():
        return prefix + str(Path(uri.removeprefix(prefix)).resolve())
    return uri


def tracking_options(study_dir: Path, tracking_uri: str | None, recorded: str | None = None) -> list[str]:
    """`--tracking-uri URI` for a printed command when a study logs anywhere but its own SQLite store (the flag,
    the URI recorded in study.json, or MLFLOW_TRACKING_URI), a relative SQLite path made absolute."""
    uri = resolve_uri(Path(study_dir).resolve(), tracking_uri or recorded)
    if uri == default_tracking_uri(Path(study_dir).resolve()):
        return []
    return ["--tracking-uri", absolute_sqlite(uri)]


def client_for(uri: str):
    """One MlflowClient per tracking URI in this process (a new SQLite store seeded from the template)."""
    with _clients_lock:
        if uri not in _clients:
            from mlflow.tracking import MlflowClient

            if uri.startswith("sqlite:///"):
                seed_sqlite_store(Path(uri.removeprefix("sqlite:///")))
            _clients[uri] = MlflowClient(tracking_uri=uri)
        return _clients[uri]


def open_in_background(uri: str) -> threading.Thread:
    """Start opening the store; whoever needs the client next waits for it (errors surface there)."""

    def attempt() -> None:
        with contextlib.suppress(Exception):  # the Tracker that needs the client reports the failure
            client_for(uri)

    thread = threading.Thread(target=attempt, name="taugate-mlflow-open", daemon=True)
    thread.start()
    return thread


def template_path() -> Path:
    return cache_dir() / f"mlflow-{metadata.version('mlflow')}-empty.db"


def _build_template(path: Path) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    with atomic_path(path) as partial:  # atomic: concurrent studies never copy half a template
        store = SqlAlchemyStore(f"sqlite:///{partial}", str(path.parent / "mlruns"))  # runs the migrations
        store.engine.dispose()


def seed_sqlite_store(db_path: Path) -> bool:
    """Make a new SQLite store at `db_path` a copy of the migrated empty template; False (and nothing
    written) when the file exists already or the template cannot be used, and MLflow creates it."""
    if db_path.exists() or not db_path.parent.is_dir():
        return False
    try:
        template = template_path()
        if not template.is_file():
            _build_template(template)
        with atomic_path(db_path) as partial:  # on any error the partial copy goes and nothing is written
            shutil.copyfile(template, partial)
            with contextlib.closing(sqlite3.connect(partial)) as db, db:  # the Default experiment's artifacts
                db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                           (str(db_path.parent / "mlartifacts" / "0"),))  # fmt: skip
        return True
    except (OSError, sqlite3.Error, ImportError):
        return False
