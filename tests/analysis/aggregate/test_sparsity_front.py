"""TauGate's sparsity front: the knee (validation only), lambda's saturation, requested ratios,
and dual ascent against the lambda sweep, on constructed studies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.aggregate.sparsity_budget import UNMATCHED, compare_dual_sweep, saturation, target_outcomes
from analysis.aggregate.sparsity_front import (
    DUAL,
    SWEEP,
    has_sparsity_front,
    knee_index,
    sparsity_front,
)
from analysis.aggregate.stats import seed_statistics
from tests.support.sparse_study import SWEEP_1, SWEEP_25, point, sparse_study
from tests.support.synthetic import synthetic_study


def statistics(points) -> pd.DataFrame:
    return seed_statistics(sparse_study(points))


def corrupt_test_metrics(stats: pd.DataFrame, rng_seed: int = 1) -> pd.DataFrame:
    """Every statistic of a test metric (accuracies of both modes, the test ratio) replaced by noise."""
    rng = np.random.default_rng(rng_seed)
    out = stats.copy()
    for column in out.columns:
        if column.startswith(("acc_", "high_activation_ratio")):
            out[column] = rng.uniform(0, 1, len(out))
    return out


def test_the_knee_is_where_the_front_bends() -> None:
    front = sparsity_front(statistics(SWEEP_25 + SWEEP_1))
    assert front.knee is not None
    assert (front.knee["tau_lr_multiplier"], front.knee["sparsity_weight"]) == (25, 1.0)
    assert front.table["knee"].sum() == 1
    # the x1 budget never gets below 0.69: each of its configurations is beaten by one of x25's
    assert not front.table.loc[front.table["tau_lr_multiplier"] == 1, "on_front"].any()
    assert list(front.references.index) == ["frozen", "bitfit", "lora"]


def test_the_knee_moves_with_the_front() -> None:
    """Make lambda 3 nearly as accurate as lambda 1 on validation: the knee follows to the sparser point."""
    moved = [p | {"val_acc_45": 0.888} if p["sparsity_weight"] == 3.0 else p for p in SWEEP_25]
    front = sparsity_front(statistics(moved))
    assert front.knee is not None and front.knee["sparsity_weight"] == 3.0


def test_the_knee_reads_validation_only() -> None:
    stats = statistics(SWEEP_25 + SWEEP_1)
    knee = sparsity_front(stats).knee
    assert sparsity_front(corrupt_test_metrics(stats)).knee["config_id"] == knee["config_id"]


def test_the_knee_is_the_sparsest_front_point_within_the_tolerance_of_the_best() -> None:
    assert knee_index([0.1, 0.5], [0.7, 0.9]) is None  # a front of 2 points has no knee
    assert knee_index([0.1, 0.3, 0.5], [0.7, 0.8, 0.9]) == 2  # every sparser point gives up > 0.01
    assert knee_index([0.1, 0.3, 0.5], [0.7, 0.895, 0.9]) == 1
    assert knee_index([0.1, 0.3, 0.5], [0.7, 0.895, 0.9], tolerance=0.001) == 2
    # a collapsed sparsest point (accuracy 0.27) does not pull the knee towards it
    assert knee_index([0.02, 0.09, 0.2, 0.32, 0.46], [0.27, 0.73, 0.85, 0.87, 0.874]) == 3
    # points off the front never are the knee: (0.25, 0.6) is beaten by (0.2, 0.85)
    assert knee_index([0.25, 0.2, 0.32, 0.46], [0.6, 0.85, 0.87, 0.874]) == 2


def test_front_needs_the_budget_column_and_a_span_of_ratios() -> None:
    assert has_sparsity_front(statistics(SWEEP_25))
    assert not has_sparsity_front(statistics(SWEEP_1))  # 0.69 to 0.73: no front to speak of
    old, _ = synthetic_study(seeds=3, failures=False)  # no tau_lr_multiplier column: an older study
    assert not has_sparsity_front(seed_statistics(old))


def test_lambda_saturates_under_the_small_budget_only() -> None:
    table = saturation(sparsity_front(statistics(SWEEP_25 + SWEEP_1)).table).set_index("budget")
    small, large = table.loc["×τ=1 s=10"], table.loc["×τ=25 s=10"]
    assert bool(small["saturated"]) and not bool(large["saturated"])
    assert small["share"] == pytest.approx(0.34 / 0.36)
    assert large["ratio_at_max"] < 0.12 < 0.6 < small["ratio_at_max"]


def test_requested_ratios_are_met_within_three_hundredths() -> None:
    dual = [point(25, 1.0, 0.31, 0.9, sparsity_target=0.3), point(25, 1.0, 0.57, 0.9, sparsity_target=0.5)]
    outcomes = target_outcomes(sparsity_front(statistics(SWEEP_25 + dual)).table).set_index("requested")
    assert bool(outcomes.loc[0.3, "met"]) and not bool(outcomes.loc[0.5, "met"])
    assert outcomes.loc[0.3, "n"] == 5 and outcomes.loc[0.3, "landed_ci95"] > 0


@pytest.mark.parametrize(("shift", "dominant"), [(0.012, DUAL), (-0.012, SWEEP), (0.0, "neither")])
def test_dual_against_sweep_names_the_dominating_front(shift: float, dominant: str) -> None:
    """Dual ascent lands on the sweep's ratios (0.33, 0.50) with accuracy shifted by `shift`."""
    dual = [point(25, 1.0, 0.33, 0.890 + shift, sparsity_target=0.33),
            point(25, 1.0, 0.50, 0.893 + shift, sparsity_target=0.5)]  # fmt: skip
    result = compare_dual_sweep(sparsity_front(statistics(SWEEP_25 + dual)).table, "acc_45")
    assert result.dominant == dominant
    assert result.trials == {DUAL: 10, SWEEP: 25}  # every trial of the compared budget
    assert set(result.pairs["sweep"]) == {"taugate λ=1", "taugate λ=0.3"}  # the partners nearest in ratio


def test_a_dual_point_far_from_every_lambda_point_is_not_compared() -> None:
    """0.6 lies 0.1 from the sweep's nearest ratio (0.50, 0.72): it is not compared, whatever its accuracy."""
    dual = [point(25, 1.0, 0.33, 0.905, sparsity_target=0.33), point(25, 1.0, 0.61, 0.5, sparsity_target=0.6)]
    result = compare_dual_sweep(sparsity_front(statistics(SWEEP_25 + dual)).table, "acc_45")
    outcomes = dict(zip(result.pairs["dual"], result.pairs["outcome"], strict=True))
    assert outcomes == {"taugate λ=1 r*=0.33": f"{DUAL} dominates", "taugate λ=1 r*=0.6": UNMATCHED}
    assert result.dominant == DUAL  # the far, inaccurate point counts for neither front
