"""A study through `taugate run`: results, MLflow runs, idempotent re-tracking. Resuming after a killed
driver is part of the interrupted study in tests/study/test_interrupt.py."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from study.serving import use_tracking_uri
from tests.support.cli import taugate
from tests.support.study_folder import ledger_metrics as ledger

pytestmark = pytest.mark.slow


def runs_of(study_dir: Path, experiment: str, uri: str | None = None):
    """The experiment's runs in the study's own store (or `uri`). MLflow's process-wide tracking URI, and the
    MLFLOW_TRACKING_URI it sets for subprocesses, are restored afterwards: later commands must not log there."""
    with use_tracking_uri(uri or f"sqlite:///{study_dir / 'mlflow.db'}"):
        return mlflow.search_runs(experiment_names=[experiment])


def test_study_writes_every_trial_and_the_tune_experiment(smoke_study):
    finished = ledger(smoke_study)
    assert len(finished) == 8 and all(m["status"] == "ok" for m in finished.values())
    assert {m["method"] for m in finished.values()} == {"frozen", "bitfit", "taugate", "lora"}
    assert len(list((smoke_study / "foundations").glob("*.safetensors"))) == 2  # one per seed, shared
    tune_trials = list((smoke_study / "tune" / "run-1").glob("*/result.json"))
    assert len(tune_trials) == 8
    for trial_dir in (path.parent for path in tune_trials):  # Tune's JSON and CSV logs, no TensorBoard files
        assert (trial_dir / "params.json").is_file() and (trial_dir / "progress.csv").is_file()
        assert not list(trial_dir.glob("events.out.tfevents*"))
    status = json.loads(taugate("status", str(smoke_study)).stdout)
    assert status == {
        "name": "smoke",
        "planned": 8,
        "finished": 8,
        "diverged": 0,
        "failed": 0,
        "remaining": 0,
        "stopped": 0,
    }


def test_tune_trial_actors_get_no_runtime_env_so_prestarted_workers_can_serve_them():
    # pinned Ray: if Tune's default actor env moves, the study still works but starts slower; say so here
    from ray.tune.execution.class_cache import _ActorClassCache

    from study.cluster.ray_patches import use_prestarted_workers

    use_prestarted_workers()

    class Other:
        pass

    after = _ActorClassCache().get(Other)._default_options.get("runtime_env")
    assert not after, f"Tune still gives its trial actors a runtime env: {after}"


def test_mlflow_holds_the_parent_and_every_child_with_params_and_metrics(smoke_study):
    runs = runs_of(smoke_study, "smoke")
    parents = runs[runs["tags.taugate.kind"] == "study"]
    children = runs[runs["tags.taugate.kind"] == "trial"]
    assert len(parents) == 1 and len(children) == 8
    parent_id = parents["run_id"].iloc[0]
    assert (children["tags.mlflow.parentRunId"] == parent_id).all()
    assert parents["tags.taugate.git_commit"].iloc[0] and parents["tags.taugate.torch"].iloc[0]
    names = set(children["tags.mlflow.runName"])
    assert {"taugate-s10-l0-seed1", "lora-r4-seed0", "frozen-seed0"} <= names
    taugate_run = children[children["tags.mlflow.runName"] == "taugate-s10-l0-seed0"].iloc[0]
    assert taugate_run["params.method"] == "taugate" and float(taugate_run["params.gate_sharpness"]) == 10
    assert taugate_run["metrics.trainable_params"] == 512 and 0.5 < taugate_run["metrics.acc_45"] <= 1
    ledger_metrics = next(m for m in ledger(smoke_study).values() if m["method"] == "taugate" and m["seed"] == 0)
    assert taugate_run["metrics.acc_45"] == pytest.approx(ledger_metrics["acc_45"])
    client = mlflow.MlflowClient(f"sqlite:///{smoke_study / 'mlflow.db'}")  # the study's own store, named
    artifacts = {a.path for a in client.list_artifacts(taugate_run["run_id"])}
    assert {"gate_stats.json", "adapter"} <= artifacts


def test_track_twice_leaves_the_same_runs(smoke_study, tmp_path):
    before = set(runs_of(smoke_study, "smoke")["run_id"])
    for _ in range(2):
        assert taugate("track", str(smoke_study)).returncode == 0
    assert set(runs_of(smoke_study, "smoke")["run_id"]) == before
    # a fresh tracking store: track logs the whole study once, then nothing more
    other = f"sqlite:///{tmp_path / 'other.db'}"
    for expected in ("logged 8 new", "logged 0 new"):
        result = taugate("track", str(smoke_study), "--tracking-uri", other)
        assert result.returncode == 0 and expected in result.stderr
    assert len(runs_of(smoke_study, "smoke", other)) == 9
