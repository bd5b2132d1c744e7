"""A study folder is relocatable: copied (to archive, to share) or moved (to a cluster's shared storage,
mounted at another path), `taugate report`, `resume` and `track` work on it where it now is, and never
write into the folder it came from. Its own MLflow store records absolute artifact locations; opening
it points them at the folder it is in (`study.tracking.mlflow_store.relocate_own_store`)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from study.tracking.mlflow_store import default_tracking_uri, relocate_own_store, resolve_uri
from tests.support.cli import taugate

pytestmark = pytest.mark.slow


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under `folder` (the MLflow store and its artifacts included) by its SHA-256."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def locations(study: Path) -> list[str]:
    """Every artifact location the study's own store records: experiments, runs and logged models."""
    with sqlite3.connect(study / "mlflow.db") as db:
        return [row[0] for row in db.execute(
            "SELECT artifact_location FROM experiments UNION ALL SELECT artifact_uri FROM runs "
            "UNION ALL SELECT artifact_location FROM logged_models")]  # fmt: skip


def report_run_and_track(study: Path) -> None:
    for command in (("report", str(study)), ("resume", str(study), "--no-report"), ("track", str(study))):
        result = taugate(*command)
        assert result.returncode == 0, f"taugate {' '.join(command)}: {result.stderr[-3000:]}"


def assert_runs_live_in(study: Path) -> None:
    """The store's artifact locations lie in `study`; the parent run's report artifact names `study`."""
    inside = (str(study / "mlartifacts"), (study / "mlartifacts").as_uri())
    recorded = locations(study)
    assert recorded and all(location.startswith(inside) for location in recorded), recorded
    client = MlflowClient(default_tracking_uri(study))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    assert len(runs) == 9  # the parent and one child per trial: nothing duplicated on the way
    for run in runs:
        assert run.info.artifact_uri.startswith((study / "mlartifacts").as_uri()), run.info.artifact_uri
    parent = next(run for run in runs if run.data.tags.get("taugate.kind") == "study")
    # read where the run's URI points (MLflow's client caches artifact stores by run id alone, process-wide)
    store = get_artifact_repository(parent.info.artifact_uri)
    report = Path(store.download_artifacts("report/report.md", str(study.parent)))
    assert str(study) in report.read_text()


def test_a_copied_study_works_where_it_is_and_leaves_the_original_byte_for_byte_unchanged(smoke_study, tmp_path):
    original = fingerprint(smoke_study)
    copy = tmp_path / "archive" / "study-copy"
    shutil.copytree(smoke_study, copy, symlinks=True)

    report_run_and_track(copy)

    assert fingerprint(smoke_study) == original  # report, resume and track wrote nothing into the original
    assert_runs_live_in(copy)


def test_a_moved_study_works_where_it_is_and_never_recreates_its_old_path(smoke_study, tmp_path):
    original = fingerprint(smoke_study)
    first = tmp_path / "here" / "study"
    shutil.copytree(smoke_study, first, symlinks=True)
    assert taugate("track", str(first)).returncode == 0  # used where it was first: its store names `first`
    moved = tmp_path / "shared-storage" / "mounted" / "study"
    moved.parent.mkdir(parents=True)
    os.rename(first, moved)

    report_run_and_track(moved)

    assert not first.exists() and not first.parent.joinpath("study").exists()
    assert list((tmp_path / "here").iterdir()) == []
    assert fingerprint(smoke_study) == original
    assert_runs_live_in(moved)


def test_a_copys_recorded_own_store_uri_means_the_copys_own_store(tmp_path):
    """study.json keeps the URI a study ran with: `--tracking-uri sqlite:///<study>/mlflow.db` names the
    study's own store, which in a copy or a moved folder is the copy's, never the original's; any other
    store named is kept."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    for folder in (original, copy):
        folder.mkdir()
        (folder / "study.json").write_text('{"study_id": "same"}')
        (folder / "mlflow.db").write_bytes(b"")
    recorded = default_tracking_uri(original)
    assert resolve_uri(copy, recorded) == default_tracking_uri(copy)
    (original / "study.json").write_text('{"study_id": "another"}')  # a different study's store stays as named
    assert resolve_uri(copy, recorded) == recorded
    shutil.rmtree(original)  # moved away: the old path is gone and is never recreated
    assert resolve_uri(copy, recorded) == default_tracking_uri(copy)
    assert resolve_uri(copy, "sqlite:////elsewhere/runs.db") == "sqlite:////elsewhere/runs.db"
    assert resolve_uri(copy, "http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_relocation_rewrites_every_recorded_form_of_the_old_root_and_nothing_else(tmp_path):
    """Paths with spaces (percent-encoded in file URIs), MLflow's Default experiment (a plain path), runs and
    logged models move; a sibling folder whose name only starts like `mlartifacts`, and a store that is not a
    study's own (no study.json beside it), stay as they are."""
    old, new = tmp_path / "old place" / "study", tmp_path / "new place" / "study"
    new.mkdir(parents=True)
    art = old / "mlartifacts"
    rows = {
        "experiments": ("artifact_location", [str(art / "0"), art.as_uri(), "s3://bucket/elsewhere"]),
        "runs": ("artifact_uri", [f"{art.as_uri()}/abc/artifacts", f"{art.as_uri()}2/abc/artifacts"]),
        "logged_models": ("artifact_location", [f"{art.as_uri()}/models/m-1/artifacts"]),
    }

    def store(folder: Path) -> Path:
        with sqlite3.connect(folder / "mlflow.db") as db:
            for table, (column, values) in rows.items():
                db.execute(f"CREATE TABLE {table} ({column} TEXT)")
                db.executemany(f"INSERT INTO {table} VALUES (?)", [(v,) for v in values])  # noqa: S608
        return folder / "mlflow.db"

    assert relocate_own_store(store(new)) == 0  # no study.json: not a study's own store, left as it is
    (new / "mlflow.db").unlink()
    (new / "study.json").write_text("{}")
    assert relocate_own_store(store(new)) == 4  # two experiments, a run, a logged model
    moved = new / "mlartifacts"
    assert locations(new) == [str(moved / "0"), moved.as_uri(), "s3://bucket/elsewhere",
                              f"{moved.as_uri()}/abc/artifacts", f"{art.as_uri()}2/abc/artifacts",
                              f"{moved.as_uri()}/models/m-1/artifacts"]  # fmt: skip
    assert "%20" in moved.as_uri()
    assert relocate_own_store(new / "mlflow.db") == 0  # in place: nothing to do
