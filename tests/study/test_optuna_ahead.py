"""An Optuna study asks its draws ahead, so no worker waits for the sampler: the searcher keeps as many
draws asked as trials run at once (Tune's concurrency limit, the cluster's slots) and hands one out at
once; draws asked together are kept apart by the constant liar; it never asks more draws than the
study has left, and a study that ends or is interrupted leaves no draw RUNNING (an unused or stopped
draw is PRUNED, marked `not_run`, and counts as no draw), so a resumed study continues as before."""

from __future__ import annotations

import json
import os
import pickle
import signal
import time

import optuna
import pytest
import yaml

from study.folder.optuna_db import NOT_RUN, draw_counts, storage_url
from study.spec.loader import parse_spec
from study.tune.search import optuna_searcher
from tests.support.cli import taugate
from tests.support.processes import taugate_process, wait_until
from tests.support.study_folder import ledger_metrics, optuna_study

SPEC = {
    "name": "ahead",
    "foundation": {"epochs": 1},
    "epochs": 1,
    "seeds": [0, 1],
    "methods": {"taugate": {}},
    "search": {
        "kind": "optuna",
        "num_samples": 4,
        "objectives": [{"metric": "val_acc_45", "mode": "max"}, {"metric": "val_sparsity", "mode": "max"}],
        "ranges": {
            "gate_sharpness": {"low": 1, "high": 100, "log": True},
            "sparsity_weight": {"low": 0.00001, "high": 0.1, "log": True},
        },  # fmt: skip
    },
}
STATES = optuna.trial.TrialState


def searcher_for(tmp_path, num_samples: int = 4):
    spec = parse_spec(SPEC | {"search": SPEC["search"] | {"num_samples": num_samples}}, source="test")
    searcher, done = optuna_searcher(spec, {"optuna_study_name": "ahead"}, tmp_path / "optuna.db")
    return searcher, done


def stored(tmp_path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="ahead", storage=storage_url(tmp_path / "optuna.db")).trials


def asked(searcher, count: int) -> list[optuna.Trial]:
    wait_until(lambda: len(searcher._asked) >= count, timeout=60, poll=0.02)
    return [ot_trial for ot_trial, _ in searcher._asked]


def test_draws_are_asked_ahead_and_handed_out_at_once(tmp_path):
    searcher, _ = searcher_for(tmp_path)
    try:
        assert not searcher._asked and not stored(tmp_path)  # nothing asked before Tune runs
        searcher.set_max_concurrency(2)  # what Tune's ConcurrencyLimiter tells it
        ahead = asked(searcher, 2)
        config = searcher.suggest("tune-1")
        assert searcher._ot_trials["tune-1"] is ahead[0]  # the draw asked before, not one asked now
        assert config["gate_sharpness"] == ahead[0].params["gate_sharpness"] and config["seeds"] == [0, 1]
        assert ahead[1] in [t for t, _ in searcher._asked]
        asked(searcher, 2)  # and the next is asked meanwhile
        # the constant liar: draws asked while others run are kept away from their points
        assert searcher._ot_study.sampler._constant_liar
        points = [(t.params["gate_sharpness"], t.params["sparsity_weight"]) for t, _ in searcher._asked]
        assert len(set(points)) == len(points)
        pickle.dumps(searcher)  # Tune pickles its searcher (tuner.pkl, experiment checkpoints) while it asks
    finally:
        searcher.close()


def test_no_more_draws_than_num_samples_and_none_left_running(tmp_path):
    searcher, _ = searcher_for(tmp_path, num_samples=3)
    searcher.set_max_concurrency(4)
    for index in range(3):
        assert searcher.suggest(f"tune-{index}") is not None
        searcher.on_trial_complete(f"tune-{index}", {"val_acc_45": 0.5 + index / 10, "val_sparsity": 0.1})
    assert searcher.suggest("tune-3") is None  # Tune never asks past num_samples; the searcher asks no more
    searcher.close()
    trials = stored(tmp_path)
    assert [t.state for t in trials] == [STATES.COMPLETE] * 3
    assert draw_counts(tmp_path / "optuna.db", "ahead").drawn == 3


def test_an_interrupted_study_leaves_no_draw_running_nor_counted(tmp_path):
    searcher, _ = searcher_for(tmp_path, num_samples=4)
    searcher.set_max_concurrency(2)
    searcher.suggest("tune-0")
    searcher.on_trial_complete("tune-0", {"val_acc_45": 0.5, "val_sparsity": 0.1})
    searcher.suggest("tune-1")  # running when the study is interrupted
    asked(searcher, 2)
    searcher.close()  # the runner closes it once Tune returns, finished or interrupted
    trials = stored(tmp_path)
    assert len(trials) == 4 and not [t for t in trials if t.state == STATES.RUNNING]
    assert sorted(t.user_attrs.get(NOT_RUN, "") for t in trials) == ["", "asked ahead", "asked ahead", "interrupted"]
    assert draw_counts(tmp_path / "optuna.db", "ahead").drawn == 1  # the complete one; pruned draws are none

    # resumed: a killed driver's RUNNING draw is pruned, and the draws left are asked
    optuna.load_study(study_name="ahead", storage=storage_url(tmp_path / "optuna.db")).ask()
    resumed, done = searcher_for(tmp_path, num_samples=4)
    try:
        assert done == 1 and resumed._budget == 3
        stale = stored(tmp_path)[-1]
        assert stale.state == STATES.PRUNED and stale.user_attrs[NOT_RUN] == "left running by an ended driver"
    finally:
        resumed.close()


@pytest.mark.slow
def test_a_study_interrupted_and_resumed_asks_exactly_its_draws(tmp_path, warm_cluster):
    """The real thing: `taugate run` on the session's warm cluster (2 CPUs: two trials at once),
    SIGTERMed after its first configuration, then resumed to the end."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC | {"search": SPEC["search"] | {"num_samples": 6}}))
    study_dir = tmp_path / "study"
    driver = taugate_process("run", str(spec), "--output", str(study_dir), "--address", warm_cluster.address)
    try:
        wait_until(lambda: len(ledger_metrics(study_dir)) >= 2, process=driver, poll=0.1)  # one configuration
        os.kill(driver.pid, signal.SIGTERM)
        _, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    trials = optuna_study(study_dir).trials
    assert not [t for t in trials if t.state == STATES.RUNNING], stderr[-2000:]
    assert all(t.state == STATES.COMPLETE or NOT_RUN in t.user_attrs for t in trials)
    status = json.loads(taugate("status", str(study_dir)).stdout)
    complete = sum(t.state == STATES.COMPLETE for t in trials)
    assert (status["draws"], status["finished"]) == (complete, 2 * complete)
    # Tune told the searcher how many trials run at once (the warm cluster's 2 CPUs): it asks that many ahead
    [state] = (study_dir / "tune" / "run-1").glob("searcher-state-*.pkl")
    assert pickle.loads(state.read_bytes())["_ahead"] == 2

    started = time.monotonic()
    resumed = taugate("resume", str(study_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = optuna_study(study_dir).trials
    assert sum(t.state == STATES.COMPLETE for t in trials) == 6, time.monotonic() - started
    assert not [t for t in trials if t.state == STATES.RUNNING]
    status = json.loads(taugate("status", str(study_dir)).stdout)
    assert (status["draws"], status["repeated_draws"], status["failed"], status["remaining"]) == (6, 0, 0, 0)
    # the draws' seed runs; a draw the interruption stopped after its seeds reached the ledger (pruned,
    # `not_run`) is no draw, as an unfinished one never was, though the ledger keeps its runs
    assert status["finished"] == 12 <= len(ledger_metrics(study_dir))
