"""Optuna search through Ray Tune: a multi-objective, conditional space persisted in SQLite."""

from __future__ import annotations

import json

import optuna
import pytest

from tests.cli import taugate

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
    - {metric: acc_45, mode: max}
    - {metric: trainable_params, mode: min}
    - {metric: sparsity, mode: max}
  ranges:
    gate_sharpness: {low: 1, high: 100, log: true}
    sparsity_weight: {low: 0.00001, high: 0.1, log: true}
    lora_rank: {low: 1, high: 16, log: true}
"""


def test_multi_objective_optuna_study_runs_and_persists(tmp_path):
    spec = tmp_path / "search.yaml"
    spec.write_text(SPEC)
    study_dir = tmp_path / "study"
    result = taugate("run", str(spec), "--output", str(study_dir))
    assert result.returncode == 0, result.stderr[-3000:]

    name = json.loads((study_dir / "study.json").read_text())["optuna_study_name"]
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'optuna.db'}")
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

    # identical suggestions are one trial config: the ledger trains it once and reports it twice
    distinct = {json.dumps(t.params, sort_keys=True) for t in complete}
    ledger = [json.loads(p.read_text()) for p in (study_dir / "trials").glob("*/metrics.json")]
    assert len(ledger) == len(distinct)
    assert {t.values[1] for t in complete} == {m["trainable_params"] for m in ledger}
