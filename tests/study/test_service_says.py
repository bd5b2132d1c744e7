"""What the service says must be true (issue 17): counts, failures, the report's rows, tracking
targets, Optuna specs, labels and hints. Each test failed on the code before the fix."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml

from analysis.table.load import load_tune
from study.folder.filenames import PLAN_FILE
from study.spec.loader import parse_spec
from study.spec.plan import planned_trials, run_name, trial_config, trial_key, variants
from study.tune.callbacks import ProgressCallback
from tests.support.cli import assert_spec_refused, taugate

TINY = {"foundation": {"epochs": 1}, "epochs": 1}


# ---- 1. a study whose every trial failed is not a success -------------------------------------


@pytest.mark.slow
def test_an_optuna_study_whose_every_trial_fails_says_so_everywhere(tmp_path):
    spec = tmp_path / "diverge.yaml"  # full fine-tuning at lr 1e30 diverges: no validation accuracy
    spec.write_text(yaml.safe_dump(TINY | {
        "name": "diverge", "seeds": [0], "methods": {"full": {"lr": 1e30}},
        "search": {"kind": "optuna", "num_samples": 2, "objectives": [{"metric": "val_acc_45", "mode": "max"}]},
        "max_failures": 0,
    }))  # fmt: skip
    study_dir = tmp_path / "study"
    result = taugate("run", str(spec), "--output", str(study_dir))
    assert result.returncode == 1, result.stderr[-2000:]
    # both draws are the one configuration {method: full}: one trial, failed once (issue 27)
    assert "0/1 trials finished (1 of Optuna's 2 draws repeated an earlier configuration" in result.stderr
    assert "), 1 failed" in result.stderr
    status = json.loads(taugate("status", str(study_dir)).stdout)
    assert status | {"name": None} == {"name": None, "planned": 1, "finished": 0, "diverged": 1, "failed": 1,
                                       "remaining": 0, "stopped": 0, "draws": 2, "repeated_draws": 1}  # fmt: skip
    # MLflow: one child run per trial that ran (the diverged one), no extra FAILED copies
    client = mlflow.MlflowClient(f"sqlite:///{study_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("diverge").experiment_id
    runs = client.search_runs([experiment], "tags.`taugate.kind` = 'trial'")
    assert [r.data.tags["taugate.status"] for r in runs] == ["diverged"]


def test_an_objective_no_method_reports_is_refused_at_load(tmp_path):
    text = yaml.safe_dump({
        "name": "x", "methods": {"taugate": {}, "lora": {}},
        "search": {"kind": "optuna", "objectives": [{"metric": "val_acc_45_hard", "mode": "max"}]},
    })  # fmt: skip
    assert_spec_refused(text, "only for gated methods, not lora", tmp_path)


def test_retried_attempts_do_not_inflate_the_running_count():
    class Trial:
        config = {
            "base": {},
            "variant": {"members": [{"method": "frozen", "seed": 0}, {"method": "frozen", "seed": 1}]},
        }

    progress = ProgressCallback(total=2)
    progress.on_trial_start(0, [], Trial())
    progress.on_trial_recover(0, [], Trial())  # a failed attempt Tune retries
    progress.on_trial_start(0, [], Trial())
    assert progress.running == 2


# ---- 2. the ledger is the report's source of truth ----------------------------------------------


def _resumed_spec():
    return parse_spec(TINY | {"name": "resumed", "seeds": [0, 1], "methods": {"lora": {"lora_rank": [8]}}})


def _study_folder(tmp_path: Path) -> tuple[Path, list[dict], list[str]]:
    """A grid study's folder as the service writes it: plan.json and the ledger of finished trials."""
    spec = _resumed_spec()
    grid = variants(spec)
    study_dir = tmp_path / "study"
    plan = planned_trials(spec, grid)
    study_dir.mkdir()
    (study_dir / PLAN_FILE).write_text(json.dumps(plan))
    keys = [trial_key(trial_config(spec, v)) for v in grid]
    return study_dir, grid, keys


def _ledger_entry(study_dir: Path, key: str, record: dict) -> None:
    folder = study_dir / "trials" / key
    folder.mkdir(parents=True)
    config = trial_config(_resumed_spec(), record["variant"]).model_dump()  # a whole ledger entry, as the study writes
    (folder / "config.json").write_text(json.dumps({"config": config} | record))
    metrics = {"status": "ok", "method": config["method"], "seed": config["seed"], "trainable_params": 0,
               "train_seconds": 0.1, "acc_45": 0.9, "val_acc_45": 0.88}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))


def _failed_tune_trial(study_dir: Path, run: str, variant: dict, result: str = "") -> None:
    folder = study_dir / "tune" / run / f"{run_name(variant)}_0000{variant['seed']}"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"base": {}, "variant": variant}))
    (folder / "result.json").write_text(result)  # an interrupted trial leaves it empty
    (folder / "error.txt").write_text("Traceback ...\nRuntimeError: the node was lost\n")


def test_trials_that_succeed_on_resume_are_not_reported_failed(tmp_path):
    study_dir, grid, keys = _study_folder(tmp_path)
    plan = json.loads((study_dir / PLAN_FILE).read_text())
    for variant in grid:  # run-1 lost both; run-2 (the resume) finished both
        _failed_tune_trial(study_dir, "run-1", variant)
    for key in keys:
        _ledger_entry(study_dir, key, plan[key])
    table = load_tune(study_dir)
    assert list(table["status"]) == ["ok", "ok"] and sorted(table["trial_id"]) == sorted(keys)


def test_a_trial_that_never_finished_is_one_error_row_grouped_with_its_siblings(tmp_path):
    study_dir, grid, keys = _study_folder(tmp_path)
    plan = json.loads((study_dir / PLAN_FILE).read_text())
    _ledger_entry(study_dir, keys[0], plan[keys[0]])
    _failed_tune_trial(study_dir, "run-1", grid[1])
    _failed_tune_trial(study_dir, "run-2", grid[1])  # retried by a resume, failed again: still one row
    table = load_tune(study_dir)
    assert sorted(table["status"]) == ["error", "ok"]
    error = table[table["status"] == "error"].iloc[0]
    assert error["trial_id"] == f"error:{keys[1]}" and error["error"] == "RuntimeError: the node was lost"
    # the same configuration columns as the finished seed (defaults included): one configuration
    columns = [c for c in plan[keys[0]]["columns"] if c != "seed"]
    assert table[columns].drop_duplicates().shape[0] == 1


# ---- 3. the tracking target -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_tracking_uri_whose_client_cannot_be_built_never_fails_the_study(tmp_path):
    uri = "postgresql://taugate@127.0.0.1:1/nowhere"  # no driver installed, no server: the client cannot be built
    study_dir = tmp_path / "study"
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY | {"name": "tiny", "seeds": [0], "methods": {"frozen": {}, "bitfit": {}}}))
    result = taugate("run", str(spec), "--output", str(study_dir), "--tracking-uri", uri, "--no-report")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2/2 trials finished, 0 failed" in result.stderr and "Traceback" not in result.stderr
    assert "warning" in result.stderr and "taugate track" in result.stderr
    # the tracking thread says once that it failed, naming the store, and stops trying
    assert result.stderr.replace("\n", "").count(f"MLflow tracking at {uri} failed") == 1, result.stderr[-2000:]
    # the URI is part of the study's record: track (and resume, report) write where run wrote
    assert json.loads((study_dir / "study.json").read_text())["tracking_uri"] == uri
    track = taugate("track", str(study_dir))
    assert track.returncode == 1 and uri in track.stderr.replace("\n", "")
    assert "Traceback" not in track.stderr and "nothing was lost" in track.stderr
    assert not (study_dir / "mlflow.db").exists()  # nothing silently written to another store


# ---- 4. Optuna honours the spec or refuses it -------------------------------------------------------


@pytest.mark.parametrize(
    ("methods", "field"),
    [
        ({"lora": {"lora_rank": [4, 8]}}, "methods.lora.lora_rank"),
        ({"taugate": {"seeds": [3]}}, "methods.taugate.seeds"),
        ({"taugate": {"sparsity_weight": [0.1]}}, "methods.taugate.sparsity_weight"),
    ],
)
def test_optuna_refuses_per_method_lists_it_would_ignore(methods, field, tmp_path):
    text = yaml.safe_dump({"name": "x", "methods": methods, "search": {"kind": "optuna"}})
    assert_spec_refused(text, field, tmp_path)


def test_optuna_honours_a_methods_fixed_lr_and_epochs():
    import optuna

    from study.tune.search import ConditionalSpace

    spec = parse_spec({"name": "x", "seeds": [0, 1], "methods": {"lora": {"lr": 0.05, "epochs": 2}},
                       "search": {"kind": "optuna"}})  # fmt: skip
    suggested = ConditionalSpace(spec)(optuna.create_study().ask())
    assert suggested["lr"] == 0.05 and suggested["epochs"] == 2 and suggested["seeds"] == [0, 1]


def test_plan_of_an_optuna_spec_does_not_contradict_its_total(tmp_path):
    spec = tmp_path / "o.yaml"
    spec.write_text(yaml.safe_dump({"name": "o", "seeds": [0, 1, 2], "methods": {"taugate": {}, "lora": {}},
                                    "search": {"kind": "optuna", "num_samples": 5}}, sort_keys=False))  # fmt: skip
    totals = json.loads(taugate("plan", str(spec), "--json").stdout)
    assert totals["trials"] == 15 and totals["per_method"] == {}
    text = taugate("plan", str(spec)).stdout.replace("\n", " ")
    assert "15 trials (optuna): 5 configurations drawn over taugate, lora, each on 3 seeds" in text


def test_a_resumed_search_does_not_replay_its_first_points(tmp_path):
    import optuna

    from study.folder.optuna_db import storage_url
    from study.tune.search import optuna_searcher

    spec = parse_spec({"name": "x", "methods": {"taugate": {}}, "search": {"kind": "optuna"}})
    db = tmp_path / "optuna.db"
    study = {"optuna_study_name": "x-1"}
    first, _ = optuna_searcher(spec, study, db)
    persisted = optuna.create_study(study_name="x-1", storage=storage_url(db), direction="maximize",
                                    load_if_exists=True)  # fmt: skip
    persisted.add_trial(optuna.trial.create_trial(params={}, distributions={}, values=[0.5]))
    again, done = optuna_searcher(spec, study, db)
    assert done == 1 and again._seed != first._seed


# ---- 6. labels and hints --------------------------------------------------------------------------


def test_trial_config_file_keeps_its_method_and_seed(tmp_path):
    config = tmp_path / "trial.yaml"
    config.write_text(yaml.safe_dump({"method": "bitfit", "seed": 3, "foundation_epochs": 0, "epochs": 0}))
    result = taugate("trial", "--config", str(config), "--device", "cpu")
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["method"] == "bitfit" and metrics["seed"] == 3
    override = taugate("trial", "--config", str(config), "--device", "cpu", "--seed", "4")
    assert json.loads(override.stdout.strip().splitlines()[-1])["seed"] == 4  # the command line wins


def test_error_messages_print_as_written():
    result = taugate("trial", "--device", "directml")
    assert result.returncode == 2 and "pip install '.[directml]'" in result.stderr


@pytest.mark.slow
def test_an_unreachable_cluster_address_fails_with_a_clear_error(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY | {"name": "tiny", "methods": {"frozen": {}}}))
    result = taugate("run", str(spec), "--output", str(tmp_path / "study"), "--address", "127.0.0.2:1")
    assert result.returncode == 1 and "cannot reach the Ray cluster at 127.0.0.2:1" in result.stderr
    assert "taugate resume" in result.stderr and "Traceback" not in result.stderr
