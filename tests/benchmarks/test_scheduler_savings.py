"""The ASHA benchmark's arithmetic (benchmarks/scheduler_savings.py) on hand-made ledgers: trial-epochs spent
against the full grid's, and the configuration each ranks best on validation."""

from __future__ import annotations

import pytest

from benchmarks.scheduler_savings import asha_ranking, compare, full_grid_ranking


def entry(config: str, seed: int, value: float | None, ran: int, status: str = "ok", planned: int = 8) -> dict:
    return {"configuration": f'{{"c": "{config}"}}', "seed": seed, "status": status, "epochs_run": ran,
            "epochs_planned": planned, "value": value, "seconds": 10.0}  # fmt: skip


GRID = [entry("a", 0, 0.90, 8), entry("a", 1, 0.92, 8), entry("b", 0, 0.93, 8), entry("b", 1, 0.95, 8),
        entry("c", 0, 0.80, 8), entry("c", 1, 0.70, 8)]  # fmt: skip


def test_the_full_grid_ranks_by_seed_mean_with_the_seed_range():
    ranking = full_grid_ranking(GRID)
    assert ranking['{"c": "b"}']["mean"] == pytest.approx(0.94)
    assert (ranking['{"c": "b"}']["min"], ranking['{"c": "b"}']["max"]) == (0.93, 0.95)


def test_asha_ranks_only_trials_that_reached_the_top_rung():
    asha = [entry("a", 0, 0.91, 8), entry("b", 0, 0.99, 3, "stopped"), entry("c", 0, 0.60, 1, "stopped")]
    assert asha_ranking(asha) == {'{"c": "a"}': 0.91}


def test_savings_and_whether_asha_picked_within_the_best_seed_range():
    asha = [
        entry("a", 0, 0.91, 8),
        entry("a", 1, 0.935, 8),
        entry("b", 0, 0.93, 3, "stopped"),
        entry("b", 1, 0.5, 1, "stopped"),
        entry("c", 0, 0.6, 1, "stopped"),
        entry("c", 1, 0.6, 1, "stopped"),
    ]
    result = compare(asha, GRID)
    assert (result["asha_trial_epochs"], result["full_grid_trial_epochs"]) == (22, 48)
    assert result["epochs_ratio"] == pytest.approx(22 / 48, abs=1e-3)
    assert result["stopped_at_epoch"] == {1: 3, 3: 1}
    assert result["asha_best"] == {"c": "a"} and result["full_grid_best"] == {"c": "b"}
    assert not result["same_best"] and not result["within_seed_range"]  # a's grid mean 0.91 < b's range 0.93
    assert result["asha_best_full_grid_rank"] == 2
