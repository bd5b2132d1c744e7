"""Pareto fronts: the mask is the set of non-dominated points, checked against the definition."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.aggregate.pareto import FRONT_NAMES, pareto_mask, pareto_sets, with_sparsity


def dominated_brute_force(values: list[list[float]], maximise: list[bool]) -> list[bool]:
    """On the front: no NaN and no other NaN-free point >= in every objective and > in one."""

    def better_or_equal(a: float, b: float, up: bool) -> bool:
        return a >= b if up else a <= b

    def strictly_better(a: float, b: float, up: bool) -> bool:
        return a > b if up else a < b

    front = []
    for i, p in enumerate(values):
        if any(math.isnan(v) for v in p):
            front.append(False)
            continue
        dominated = False
        for j, q in enumerate(values):
            if i == j or any(math.isnan(v) for v in q):
                continue
            if all(better_or_equal(qk, pk, up) for qk, pk, up in zip(q, p, maximise, strict=True)) and any(
                strictly_better(qk, pk, up) for qk, pk, up in zip(q, p, maximise, strict=True)
            ):
                dominated = True
                break
        front.append(not dominated)
    return front


# Small integer grids make ties and exact duplicates frequent; NaN appears in some cells.
cell = st.one_of(st.integers(0, 4).map(float), st.just(math.nan))


@st.composite
def point_sets(draw: st.DrawFn) -> tuple[list[list[float]], list[bool]]:
    k = draw(st.integers(1, 3))
    points = draw(st.lists(st.lists(cell, min_size=k, max_size=k), min_size=0, max_size=25))
    if points and draw(st.booleans()):
        points.append(list(draw(st.sampled_from(points))))  # an exact duplicate
    maximise = draw(st.lists(st.booleans(), min_size=k, max_size=k))
    return points, maximise


@settings(max_examples=300, deadline=None)
@given(point_sets())
def test_mask_equals_brute_force_definition(case: tuple[list[list[float]], list[bool]]) -> None:
    points, maximise = case
    values = np.array(points, dtype=float).reshape(len(points), len(maximise))
    assert pareto_mask(values, maximise).tolist() == dominated_brute_force(points, maximise)


def test_mask_equals_brute_force_on_seeded_continuous_points() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        values = rng.normal(size=(60, 3))
        values[rng.random(60) < 0.1, rng.integers(0, 3)] = np.nan
        maximise = [True, False, True]
        assert pareto_mask(values, maximise).tolist() == dominated_brute_force(values.tolist(), maximise)


def test_exact_duplicates_both_stay_on_the_front() -> None:
    values = np.array([[0.9, 100.0], [0.9, 100.0], [0.8, 200.0]])
    assert pareto_mask(values, [True, False]).tolist() == [True, True, False]


def test_tie_in_one_objective_is_decided_by_the_other() -> None:
    # same accuracy, fewer parameters wins; same parameters, higher accuracy wins
    values = np.array([[0.85, 512.0], [0.85, 266.0], [0.80, 266.0]])
    assert pareto_mask(values, [True, False]).tolist() == [False, True, False]


def test_direction_of_each_objective_matters() -> None:
    values = np.array([[1.0, 1.0], [2.0, 2.0]])
    assert pareto_mask(values, [True, True]).tolist() == [False, True]
    assert pareto_mask(values, [False, False]).tolist() == [True, False]
    assert pareto_mask(values, [True, False]).tolist() == [True, True]


def test_nan_rows_are_never_on_the_front_and_dominate_nothing() -> None:
    values = np.array([[np.nan, 0.0], [0.5, 10.0], [0.4, 20.0]])
    assert pareto_mask(values, [True, False]).tolist() == [False, True, False]
    # a NaN row that would dominate everything if its NaN were ignored
    values = np.array([[1.0, np.nan], [0.5, 10.0]])
    assert pareto_mask(values, [True, False]).tolist() == [False, True]


def test_empty_input_and_bad_shapes() -> None:
    assert pareto_mask(np.empty((0, 2)), [True, False]).tolist() == []
    with pytest.raises(ValueError, match="objectives"):
        pareto_mask(np.ones((3, 2)), [True])
    with pytest.raises(ValueError, match="2-D"):
        pareto_mask(np.ones(3), [True])


def stats_table() -> pd.DataFrame:
    """A hand-made seed-statistics table: three methods, one gated."""
    return pd.DataFrame({
        "method": ["frozen", "taugate", "lora"],
        "label": ["frozen", "taugate", "lora"],
        "acc_45_mean": [0.83, 0.85, 0.86],
        "acc_0_mean": [0.83, 0.85, 0.84],
        "trainable_params_mean": [0.0, 512.0, 10448.0],
        "high_activation_ratio_mean": [np.nan, 0.28, np.nan],
        "high_activation_ratio_std": [np.nan, 0.02, np.nan],
        "active_ratio_mean": [0.45, 0.25, 0.40],
        "active_ratio_std": [0.01, 0.02, 0.03],
    })  # fmt: skip


def test_sparsity_is_gate_based_for_gated_methods_and_relu_based_otherwise() -> None:
    table = with_sparsity(stats_table())
    assert table["sparsity_mean"].tolist() == pytest.approx([0.55, 0.72, 0.60])
    assert table["sparsity_source"].tolist() == ["active_ratio", "high_activation_ratio", "active_ratio"]
    assert table["sparsity_std"].tolist() == pytest.approx([0.01, 0.02, 0.03])


def test_named_fronts_on_seed_means() -> None:
    fronts = pareto_sets(stats_table())
    assert list(fronts) == list(FRONT_NAMES)
    members = {name: front.loc[front["on_front"], "label"].tolist() for name, front in fronts.items()}
    # every method trades accuracy for parameters: all three on the front
    assert members["accuracy_vs_params"] == ["frozen", "taugate", "lora"]
    # taugate is the sparsest, lora the most accurate; frozen is beaten by both
    assert members["accuracy_vs_sparsity"] == ["taugate", "lora"]
    # lora: best target, taugate: best retention
    assert members["accuracy_vs_retention"] == ["taugate", "lora"]
    assert members["accuracy_params_sparsity"] == ["frozen", "taugate", "lora"]


def test_configurations_without_results_are_kept_off_the_front() -> None:
    table = pd.concat([stats_table(), pd.DataFrame({"method": ["full"], "label": ["full"]})], ignore_index=True)
    for front in pareto_sets(table).values():
        assert len(front) == 4
        assert not front.loc[3, "on_front"]
