"""A new study's SQLite tracking store starts from a migrated empty template, and works as one MLflow made."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from study.tracking.mlflow_store import seed_sqlite_store, template_path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A template cache of this module's own, shared by its tests: the template is migrated once."""
    return tmp_path_factory.mktemp("cache")


def test_a_new_store_is_a_copy_of_the_template_and_mlflow_uses_it(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("TAUGATE_CACHE_DIR", str(cache))
    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    first.parent.mkdir(), second.parent.mkdir()
    assert seed_sqlite_store(first)
    built = template_path().stat().st_mtime_ns
    assert seed_sqlite_store(second)
    assert template_path().stat().st_mtime_ns == built  # migrated once, copied after
    client = MlflowClient(f"sqlite:///{second}")
    default = client.get_experiment("0")
    assert default.artifact_location == str(second.parent / "mlartifacts" / "0")  # not the template's folder
    run = client.create_run(client.create_experiment("x"))
    client.log_metric(run.info.run_id, "acc_45", 0.9)
    assert client.get_run(run.info.run_id).data.metrics == {"acc_45": 0.9}
    assert MlflowClient(f"sqlite:///{first}").search_runs(["0"]) == []  # the copies are separate stores


def test_an_existing_store_is_left_alone(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("TAUGATE_CACHE_DIR", str(cache))
    db = tmp_path / "mlflow.db"
    assert seed_sqlite_store(db)  # a store (from the template: no migration of its own to wait for)
    MlflowClient(f"sqlite:///{db}").create_experiment("kept")
    assert not seed_sqlite_store(db)
    assert MlflowClient(f"sqlite:///{db}").get_experiment_by_name("kept") is not None


def test_a_broken_template_falls_back_to_mlflow_creating_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("TAUGATE_CACHE_DIR", str(tmp_path / "cache"))
    template_path().parent.mkdir(parents=True)
    template_path().write_bytes(b"not a database")
    db = tmp_path / "mlflow.db"
    assert not seed_sqlite_store(db)
    assert not db.exists() and not list(tmp_path.glob(".mlflow.db.*"))  # nothing half-written left
    assert MlflowClient(f"sqlite:///{db}").get_experiment("0").name == "Default"
