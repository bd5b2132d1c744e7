"""Opening a study's MLflow tracking store, fast.

A study logs to the store named by `--tracking-uri`, the spec or MLFLOW_TRACKING_URI, else to its
own SQLite file `<study>/mlflow.db`. Creating a SQLite store runs MLflow's schema migrations from
the first to the last (1.5 s of CPU here, on top of 1 s to import mlflow), which every new study
and every test would pay while Ray starts on the same cores. So a new SQLite store starts as a
copy of an empty store migrated once per MLflow version (kept in the taugate cache folder), and
the store is opened on a background thread while Ray starts (`open_in_background`). MLflow then
opens the copy as it opens any store at its current schema; if anything about the template is
off, the store is created the ordinary way.

A study folder is relocatable (copied, moved, mounted at another path). MLflow records absolute
artifact locations in a SQLite store (an experiment's `artifact_location`, a run's `artifact_uri`, a
logged model's `artifact_location`), and writes artifacts wherever they point. So opening a study's
own store (`<study>/mlflow.db` beside its `study.json`) first checks where its artifacts are
recorded: a root `<old>/mlartifacts` that is not this folder's (a copy's still names the original; a
moved folder's names where it was) is rewritten, in one transaction, to this folder's `mlartifacts`
(`relocate_own_store`). A copy therefore never writes into the original, and a moved folder never
recreates its old path. A user's own store (a server, another SQLite file) is never rewritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import threading
import urllib.parse
from importlib import metadata
from pathlib import Path
from typing import Any

from study import environment  # noqa: F401 - MLflow's HTTP retries and timeout, before MLflow is imported
from study.folder.filenames import STUDY_FILE
from trainables.files import atomic_path, cache_dir

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def default_tracking_uri(study_dir: Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / 'mlflow.db'}"


def resolve_uri(study_dir: Path, tracking_uri: str | None) -> str:
    """The store a study logs to: the one named (flag or spec), MLFLOW_TRACKING_URI, or the study's own SQLite.
    A named SQLite store that is this study's own store in another place (a copy's original, a moved
    folder's old path: `<there>/mlflow.db` of the same study id, or of a folder that is gone) is this folder's."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri and _own_store_elsewhere(Path(study_dir), uri):
        return default_tracking_uri(Path(study_dir))
    return uri or default_tracking_uri(Path(study_dir))


OWN_STORE = "mlflow.db"  # a study's own tracking store, beside its study.json


def _study_id(folder: Path) -> str | None:
    try:
        return json.loads((folder / STUDY_FILE).read_text()).get("study_id")
    except (OSError, ValueError, AttributeError):
        return None


def _own_store_elsewhere(study_dir: Path, uri: str) -> bool:
    """`uri` names `<there>/mlflow.db`, the own store of this same study recorded before the folder was copied
    or moved (study.json keeps the URI a study was run with, `--tracking-uri sqlite:///<study>/mlflow.db`)."""
    prefix, here = "sqlite:///", Path(study_dir).resolve()
    if not uri.startswith(prefix):
        return False
    named = Path(uri.removeprefix(prefix))
    if named.name != OWN_STORE or not named.is_absolute() or named.parent == here:
        return False
    ours = _study_id(here)
    if ours is None or not (here / OWN_STORE).is_file():
        return False
    there = named.parent
    return _study_id(there) == ours if there.exists() else True


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
                db_path = Path(uri.removeprefix("sqlite:///"))
                if not seed_sqlite_store(db_path):
                    relocate_own_store(db_path)
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


class StoreRelocationError(RuntimeError):
    """A moved or copied study's own store could not be pointed at its new folder (nothing is written then)."""


# Where MLflow 3.17 keeps artifact locations in a tracking store (table, column[, rows]); tables a store
# lacks are skipped. A trace's location is a tag (MLflow writes `mlflow.artifactLocation` per trace).
LOCATION_COLUMNS = (
    ("experiments", "artifact_location", None),
    ("runs", "artifact_uri", None),
    ("logged_models", "artifact_location", None),
    ("trace_tags", "value", "key = 'mlflow.artifactLocation'"),
    ("model_versions", "source", None),
    ("model_versions", "storage_location", None),
)
ARTIFACTS = "mlartifacts"


def _recorded_root(location: str) -> str | None:
    """The `<folder>/mlartifacts` an experiment's artifact location lies in, as recorded (a file URI or a
    path; `.../mlartifacts` for a study's experiment, `.../mlartifacts/0` for MLflow's Default one)."""
    path = urllib.parse.unquote(urllib.parse.urlparse(location).path) if location.startswith("file:") else location
    marker = f"/{ARTIFACTS}"
    if not path.startswith("/") or marker not in path:
        return None
    head, _, tail = path.rpartition(marker)
    return head + marker if tail in ("", "/") or tail.strip("/").isdigit() else None


def own_store_roots(db_path: Path) -> set[str]:
    """The artifact roots (`<folder>/mlartifacts`, as paths) that a study's own store records."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT artifact_location FROM experiments").fetchall()
    return {root for (location,) in rows if location and (root := _recorded_root(location))}


def relocate_own_store(db_path: Path) -> int:
    """Point the artifact locations of a study's own store (`<study>/mlflow.db` beside `study.json`) recorded
    under another folder's `mlartifacts` at this folder's; how many values were rewritten (0: nothing had
    moved, or not a study's own store). Raises `StoreRelocationError` when the store cannot be rewritten (a
    read-only copy): MLflow would otherwise write into the other folder."""
    db_path = Path(db_path).resolve()
    folder = db_path.parent
    if db_path.name != OWN_STORE or not db_path.is_file() or not (folder / STUDY_FILE).is_file():
        return 0
    here = str(folder / ARTIFACTS)
    try:
        moved = {root for root in own_store_roots(db_path) if root != here}
    except sqlite3.Error:
        return 0  # not a readable store: MLflow says what is wrong with it
    if not moved:
        return 0
    new_uri, changed = Path(here).as_uri(), 0
    try:
        with contextlib.closing(sqlite3.connect(db_path, timeout=60)) as db, db:
            db.execute("BEGIN IMMEDIATE")  # one writer: two commands opening a moved store rewrite it once
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for root in sorted(moved):
                # the forms MLflow records: a file URI (as recorded, and as Path.as_uri spells it) and a path
                old_uris = {Path(root).as_uri()} | {
                    location[: location.rindex(f"/{ARTIFACTS}") + len(ARTIFACTS) + 1]
                    for (location,) in db.execute("SELECT artifact_location FROM experiments")
                    if location and location.startswith("file:") and _recorded_root(location) == root
                }
                pairs = [(old, new_uri) for old in old_uris] + [(root, here)]
                for table, column, rows in LOCATION_COLUMNS:
                    if table not in tables:
                        continue
                    for old, new in pairs:
                        where = f"({column} = ? OR substr({column}, 1, ?) = ?)" + (f" AND {rows}" if rows else "")
                        changed += db.execute(
                            f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE {where}",  # noqa: S608
                            (new, len(old) + 1, old, len(old) + 1, old + "/"),
                        ).rowcount
    except sqlite3.Error as err:
        raise StoreRelocationError(
            f"{db_path}: this study folder was copied or moved from {', '.join(sorted(moved))}, and its MLflow "
            f"store could not be pointed at {here} ({err}); nothing was logged, so nothing is written there"
        ) from err
    return changed
