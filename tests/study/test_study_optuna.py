"""Optuna search through Ray Tune: a multi-objective, conditional space persisted in SQLite."""

from __future__ import annotations

import json

import optuna
import pytest

from analysis.figures.gate_plots import param_importances
from tests.support.cli import run_spec, taugate
from tests.support.study_folder import optuna_study

pytestmark = pytest.mark.slow

SPEC = """
name: search
foundation: {epochs: 1}
epochs: 1
seeds: [0, 1]
methods: {taugate: {}, lora: {}, bitfit: {}}
search:
  kind: optuna
  num_samples: 6
  objectives:
    - {metric: val_acc_45, mode: max}
    - {metric: trainable_params, mode: min}
    - {metric: val_sparsity, mode: max}
  ranges:
    gate_sharpness: {low: 1, high: 100, log: true}
    sparsity_weight: {low: 0.00001, high: 0.1, log: true}
    lora_rank: {low: 1, high: 16, log: true}
"""


def test_multi_objective_optuna_study_runs_and_persists(tmp_path):
    study_dir = run_spec(tmp_path, SPEC)

    study = optuna_study(study_dir)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 6
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MAXIMIZE"]
    for trial in complete:
        assert len(trial.values) == 3
        method = trial.params["method"]
        # conditional space: the rank exists only for LoRA, s and lambda only for TauGate
        assert ("lora_rank" in trial.params) == (method == "lora")
        assert ("gate_sharpness" in trial.params) == (method == "taugate")
    assert len(study.best_trials) >= 1

    entries = sorted((study_dir / "trials").glob("*/metrics.json"))
    ledger = [json.loads(p.read_text()) for p in entries]
    configs = [json.loads((p.parent / "config.json").read_text()) for p in entries]
    assert {t.values[1] for t in complete} == {m["trainable_params"] for m in ledger}

    # seeds are repeats, not a hyperparameter: Optuna never sees the seed, and each configuration
    # is evaluated on both seeds, each its own ledger entry
    assert all("seed" not in t.params for t in study.trials)
    distinct = {json.dumps(t.params, sort_keys=True) for t in complete}
    assert len(ledger) == 2 * len(distinct)
    assert {m["seed"] for m in ledger} == {0, 1}

    # the objective is the seed mean of the *validation* accuracy, never the test accuracy
    def seed_mean(params: dict, metric: str) -> float:
        runs = [m for m, c in zip(ledger, configs, strict=True)
                if all(c["config"][k] == v for k, v in params.items())]  # fmt: skip
        assert len(runs) == 2
        return sum(r[metric] for r in runs) / 2

    for trial in complete:
        assert trial.values[0] == pytest.approx(seed_mean(trial.params, "val_acc_45"), abs=1e-6)
        assert trial.values[0] != pytest.approx(seed_mean(trial.params, "acc_45"), abs=1e-6)

    # the results table holds one row per seed run, MLflow one child run per seed run
    table = (study_dir / "report" / "results.csv").read_text().splitlines()
    assert len(table) - 1 == len(ledger)

    # a configuration Optuna drew twice (bitfit has nothing to search) is one configuration: the
    # status counts the ledger's seed runs and says how many draws repeated one
    status = json.loads(taugate("status", str(study_dir)).stdout)
    assert status["planned"] == status["finished"] == len(ledger)
    assert (status["draws"], status["repeated_draws"]) == (6, 6 - len(distinct))

    # the study names its objectives (optuna-dashboard's axes), and so does the importance figure,
    # where trainable_params is assessed only over what can change a parameter count
    objectives = ["val_acc_45", "trainable_params", "val_sparsity"]
    assert study.metric_names == objectives
    panels = param_importances(study)
    assert panels and all(p.metric in objectives for p in panels)
    for panel in panels:
        if panel.metric == "trainable_params":
            assert set(panel.importances) <= {"method", "lora_rank"}
    assert (study_dir / "report" / "figures" / "optuna-importances.png").is_file()
