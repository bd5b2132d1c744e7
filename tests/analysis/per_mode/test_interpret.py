"""Neuron-level interpretation of gate statistics, on small crafted statistics."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.per_mode.interpret import (
    active_set,
    interpret_configurations,
    interpret_trial,
    jaccard,
    mode_exclusive_neurons,
    mode_keys,
    mode_overlap,
)


def gate_stats(rate_0: list[list[float]], rate_45: list[list[float]]) -> dict:
    def mode(rate: list[list[float]]) -> dict:
        return {"rate": rate, "rate_by_class": [[layer] * 10 for layer in rate], "active_ratio": 0.5}

    return {"method": "taugate", "modes": {"0": mode(rate_0), "45": mode(rate_45)}}


# two layers of four neurons
STATS = gate_stats(
    rate_0=[[0.9, 0.6, 0.05, 0.5], [0.0, 0.7, 0.2, 0.95]],
    rate_45=[[0.9, 0.05, 0.7, 0.1], [0.6, 0.7, 0.0, 0.3]],
)


def test_active_set_is_rate_at_least_one_half() -> None:
    assert active_set(STATS, "0") == {(0, 0), (0, 1), (0, 3), (1, 1), (1, 3)}
    assert active_set(STATS, "45") == {(0, 0), (0, 2), (1, 0), (1, 1)}
    assert active_set(STATS, "45", threshold=0.8) == {(0, 0)}


def test_mode_exclusive_neurons_fire_in_one_mode_and_are_silent_in_the_other() -> None:
    # (0, 3): 0.5 vs 0.1 sits on both thresholds, which are inclusive; (1, 3): 0.95 vs 0.3 is not silent
    assert mode_exclusive_neurons(STATS, "0", "45") == {(0, 1), (0, 3)}
    assert mode_exclusive_neurons(STATS, "45", "0") == {(0, 2), (1, 0)}


def test_mode_exclusive_thresholds_are_parameters() -> None:
    assert mode_exclusive_neurons(STATS, "0", "45", active=0.8, silent=0.0) == set()
    assert mode_exclusive_neurons(STATS, "45", "0", active=0.6, silent=0.0) == {(1, 0)}
    assert mode_exclusive_neurons(STATS, "0", "45", active=0.9, silent=0.35) == {(1, 3)}


def test_jaccard_overlap_of_active_sets() -> None:
    # shared {(0,0), (1,1)}; union 5 + 4 - 2 = 7
    assert mode_overlap(STATS, "0", "45") == pytest.approx(2 / 7)
    assert mode_overlap(STATS, "0", "0") == 1.0
    assert jaccard(set(), set()) == 1.0
    assert jaccard({1}, {2}) == 0.0


def test_trial_summary() -> None:
    assert interpret_trial(STATS, "0", "45") == {
        "active_0": 5,
        "active_45": 4,
        "exclusive_0": 2,
        "exclusive_45": 2,
        "jaccard": pytest.approx(2 / 7),
    }


def test_missing_mode_names_the_available_ones() -> None:
    with pytest.raises(KeyError, match="m30.*0, 45"):
        active_set(STATS, "m30")


def test_mode_keys_in_angle_order() -> None:
    stats = {"modes": {"45": {}, "0": {}, "m30": {}, "22p5": {}}}
    assert mode_keys(stats) == ["m30", "0", "22p5", "45"]


def test_configuration_summary_averages_trials_over_seeds() -> None:
    disjoint = gate_stats(rate_0=[[1.0, 1.0, 0.0, 0.0]], rate_45=[[0.0, 0.0, 1.0, 1.0]])
    same = gate_stats(rate_0=[[1.0, 1.0, 0.0, 0.0]], rate_45=[[1.0, 1.0, 0.0, 0.0]])
    df = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e"],
        "status": ["ok", "ok", "diverged", "ok", "ok"],
        "method": ["taugate", "taugate", "taugate", "taugate", "frozen"],
        "gate_sharpness": [10.0, 10.0, 10.0, 10.0, math.nan],
        "seed": [0, 1, 2, 3, 0],
        "acc_45": [0.8, 0.8, math.nan, 0.8, 0.7],
    })  # fmt: skip
    # "c" diverged (ignored although it has statistics), "d" has no statistics
    summary = interpret_configurations(df, {"a": disjoint, "b": same, "c": disjoint, "e": same})
    taugate = summary[summary["n"] == 2].iloc[0]
    assert taugate["jaccard_mean"] == pytest.approx(0.5)  # 0 and 1
    assert taugate["jaccard_std"] == pytest.approx(math.sqrt(0.5))
    assert taugate["exclusive_0_mean"] == pytest.approx(1.0)  # 2 and 0
    assert taugate["active_45_mean"] == pytest.approx(2.0)
    frozen = summary[summary["n"] == 1].iloc[0]
    assert frozen["jaccard_mean"] == 1.0 and math.isnan(frozen["jaccard_std"])
    assert len(summary) == 2


def test_configuration_summary_without_statistics_is_empty() -> None:
    df = pd.DataFrame({"trial_id": ["a"], "status": ["ok"], "method": ["frozen"], "seed": [0]})
    assert interpret_configurations(df, {}).empty
