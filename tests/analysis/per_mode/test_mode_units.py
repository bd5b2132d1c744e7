"""Unit sets per mode and their overlaps, on hand-made firing rates with hand-computed answers."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.per_mode.mode_units import (
    EMPTY_JACCARD,
    EXCLUSIVE_OFF,
    EXCLUSIVE_ON,
    GAP_COLUMNS,
    UNIT_THRESHOLD,
    angular_gap,
    attributed_units,
    by_layer,
    common_core,
    core_by_gap,
    exclusive_units,
    jaccard,
    jaccard_matrix,
    pair_overlaps,
    summarise_gaps,
    unit_sets,
)

# [layer][unit] firing rates of three modes, each under its own adapter; 350 and 0 are 10 degrees
# apart, 350 and 10 are 20 apart (the gap wraps around the circle).
RATES = {
    0.0: [[0.9, 0.6, 0.05, 0.0], [0.2, 0.0]],
    10.0: [[0.0, 0.7, 0.5, 0.1], [0.3, 0.4]],
    350.0: [[0.09, 0.1, 0.0, 0.0], [0.55, 0.2]],
}
SETS = {  # at threshold 0.1 (a rate of exactly 0.1 is in, 0.09 is out)
    0.0: frozenset({(0, 0), (0, 1), (1, 0)}),
    10.0: frozenset({(0, 1), (0, 2), (0, 3), (1, 0), (1, 1)}),
    350.0: frozenset({(0, 1), (1, 0), (1, 1)}),
}


def test_defaults_make_exclusive_units_fire_broadly_on_their_mode_and_rarely_elsewhere():
    assert UNIT_THRESHOLD == 0.5 and EXCLUSIVE_ON == UNIT_THRESHOLD and EXCLUSIVE_OFF == 0.1


def test_attributed_units_are_the_ones_a_mode_uses_most_beyond_the_others():
    rates = {  # 6 units in two layers; fraction 1/3 -> 2 units per mode
        0.0: [[0.9, 0.8, 0.6], [0.5, 0.2, 0.9]],
        45.0: [[0.1, 0.8, 0.6], [0.5, 0.9, 0.9]],
        90.0: [[0.1, 0.7, 0.9], [0.5, 0.9, 0.1]],
    }
    attributed = attributed_units(rates, fraction=1 / 3, threshold=0.5)
    # 0: scores (0,0) 0.8, (0,1) 0.05, (1,2) 0.4 -> the two highest
    assert attributed[0.0] == {(0, 0), (1, 2)}
    # 45: (1,1) 0.35, (1,2) 0.4, (0,1) 0.05 (all in its set) -> (1,2), (1,1)
    assert attributed[45.0] == {(1, 2), (1, 1)}
    # 90: (0,2) 0.3, (1,1) 0.35; (0,1) -0.1 and (1,2) below the threshold are never attributed
    assert attributed[90.0] == {(0, 2), (1, 1)}
    assert attributed_units({0.0: [[0.9]]}) == {0.0: frozenset()}  # nothing to contrast with
    flat = {0.0: [[0.6, 0.6]], 45.0: [[0.6, 0.6]]}
    assert attributed_units(flat, fraction=0.5) == {0.0: frozenset(), 45.0: frozenset()}  # no positive score


def test_unit_sets_keep_units_firing_on_at_least_the_threshold():
    assert unit_sets(RATES, threshold=0.1) == SETS
    assert unit_sets(RATES, threshold=0.5) == {
        0.0: frozenset({(0, 0), (0, 1)}),
        10.0: frozenset({(0, 1), (0, 2)}),
        350.0: frozenset({(1, 0)}),
    }


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_a_threshold_outside_0_1_is_refused(threshold):
    with pytest.raises(ValueError, match="threshold"):
        unit_sets(RATES, threshold)


def test_modes_of_different_widths_are_refused():
    with pytest.raises(ValueError, match="widths"):
        unit_sets({0.0: [[0.5, 0.5]], 45.0: [[0.5]]}, 0.1)


def test_jaccard_matrix_by_hand():
    matrix = jaccard_matrix(SETS)
    expected = pd.DataFrame(
        [[1, 1 / 3, 1 / 2], [1 / 3, 1, 3 / 5], [1 / 2, 3 / 5, 1]],
        index=[0.0, 10.0, 350.0],
        columns=[0.0, 10.0, 350.0],
    )
    pd.testing.assert_frame_equal(matrix, expected, check_names=False, check_dtype=False)


def test_two_empty_sets_are_the_same_set():
    assert EMPTY_JACCARD == 1.0
    assert jaccard(frozenset(), frozenset()) == 1.0
    assert jaccard(frozenset(), frozenset({(0, 1)})) == 0.0
    matrix = jaccard_matrix({0.0: frozenset(), 45.0: frozenset(), 90.0: frozenset({(0, 0)})})
    assert matrix.loc[0.0, 45.0] == 1.0 and matrix.loc[0.0, 90.0] == 0.0
    assert (matrix.to_numpy().diagonal() == 1.0).all()


def test_exclusive_units_fire_broadly_for_one_mode_and_rarely_for_every_other():
    # 0: unit (0,0) fires on 0.9 and on 0.0 / 0.09 elsewhere; (0,1) is used by mode 10 too.
    # 10: (0,2) at exactly `on` counts; others fire on 0.05 and 0.0 of their digits.
    # 350: its only broad unit (1,0) fires on 0.2 / 0.3 of the others' digits: none specific.
    assert exclusive_units(RATES, on=0.5, off=0.1) == {
        0.0: frozenset({(0, 0)}),
        10.0: frozenset({(0, 2)}),
        350.0: frozenset(),
    }
    # a looser `off` lets (1,0) through for 350 (others at 0.2 and 0.3 < 0.35)
    assert exclusive_units(RATES, on=0.5, off=0.35)[350.0] == frozenset({(1, 0)})


def test_exclusive_units_of_a_single_mode_are_its_broad_units():
    assert exclusive_units({45.0: [[0.6, 0.4]]}) == {45.0: frozenset({(0, 0)})}


def test_an_off_above_on_is_refused_since_a_unit_could_be_specific_to_two_modes():
    with pytest.raises(ValueError, match="off"):
        exclusive_units(RATES, on=0.3, off=0.4)


@pytest.mark.parametrize(
    ("a", "b", "gap"), [(350, 10, 20), (10, 350, 20), (0, 180, 180), (-30, 30, 60), (720, 0, 0), (0, 270, 90)]
)
def test_angular_gap_wraps_around_the_circle(a, b, gap):
    assert angular_gap(a, b) == gap


def test_pair_overlaps_by_hand():
    pairs = pair_overlaps(SETS)
    assert pairs[["mode_a", "mode_b", "gap", "core", "union"]].values.tolist() == [
        [0.0, 10.0, 10.0, 2, 6],
        [0.0, 350.0, 10.0, 2, 4],
        [10.0, 350.0, 20.0, 3, 5],
    ]
    assert pairs["jaccard"].tolist() == pytest.approx([1 / 3, 1 / 2, 3 / 5])


def test_core_by_gap_groups_pairs_by_the_angle_between_the_modes():
    table = core_by_gap(SETS)
    assert list(table.columns) == list(GAP_COLUMNS)
    at_10, at_20 = table.iloc[0], table.iloc[1]
    assert (at_10["gap"], at_10["pairs"]) == (10.0, 2)
    assert at_10["jaccard_mean"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert (at_10["jaccard_min"], at_10["jaccard_max"]) == pytest.approx((1 / 3, 1 / 2))
    assert (at_10["core_mean"], at_10["core_min"], at_10["core_max"]) == (2, 2, 2)
    assert (at_20["gap"], at_20["pairs"], at_20["jaccard_mean"], at_20["core_mean"]) == (20.0, 1, 0.6, 3)


def test_summarise_gaps_pools_the_pairs_of_several_seeds():
    other_seed = {0.0: frozenset({(0, 0)}), 10.0: frozenset({(0, 0), (0, 1)})}  # gap 10: J 1/2, core 1
    pairs = pd.concat([pair_overlaps(SETS).assign(seed=0), pair_overlaps(other_seed).assign(seed=1)])
    at_10 = summarise_gaps(pairs).set_index("gap").loc[10.0]
    assert at_10["pairs"] == 3
    assert at_10["jaccard_mean"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert (at_10["core_min"], at_10["core_max"]) == (1, 2)


def test_no_pairs_give_an_empty_table_with_the_columns():
    table = core_by_gap({45.0: frozenset({(0, 0)})})
    assert table.empty and list(table.columns) == list(GAP_COLUMNS)


def test_common_core_is_what_every_mode_uses():
    assert common_core(SETS) == frozenset({(0, 1), (1, 0)})
    assert common_core({}) == frozenset()


def test_by_layer_groups_units_for_silencing():
    assert by_layer(frozenset({(1, 3), (0, 2), (1, 0)})) == {0: [2], 1: [0, 3]}
