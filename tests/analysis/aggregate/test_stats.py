"""Seed statistics and paired comparisons, against numbers worked out by hand; selection reads validation only."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis.aggregate.stats import (
    COMPARISON_COLUMNS,
    SelectionError,
    best_configuration,
    holm,
    paired_comparisons,
    paired_effect,
    representatives,
    seed_statistics,
)
from analysis.table.results import config_columns, configuration_ids, configuration_labels

NAN = math.nan


def trial(method: str, seed: int, acc_45: float, status: str = "ok", **config: float) -> dict:
    row = {
        "trial_id": f"{method}-{config}-{seed}",
        "status": status,
        "error": "boom" if status == "error" else NAN,
        "method": method,
        "seed": seed,
        "gate_sharpness": NAN,
        "sparsity_weight": NAN,
        "lora_rank": NAN,
        "trainable_params": {"frozen": 0, "taugate": 512, "lora": 10448, "bitfit": 266}[method],
        "acc_45": acc_45 if status == "ok" else NAN,
        "acc_0": 0.8 if status == "ok" else NAN,
        # validation: close to test, same ranking (tests of disagreement build their own tables)
        "val_acc_45": acc_45 - 0.001 if status == "ok" else NAN,
        "val_acc_0": 0.8 - 0.001 if status == "ok" else NAN,
    }
    return row | config


def small_table() -> pd.DataFrame:
    return pd.DataFrame([
        trial("taugate", 0, 0.8, gate_sharpness=10.0, sparsity_weight=0.0),
        trial("taugate", 1, 0.9, gate_sharpness=10.0, sparsity_weight=0.0),
        trial("taugate", 2, 1.0, gate_sharpness=10.0, sparsity_weight=0.0),
        trial("taugate", 3, NAN, status="diverged", gate_sharpness=10.0, sparsity_weight=0.0),
        trial("frozen", 0, 0.7),
        trial("frozen", 1, 0.7),
        trial("lora", 0, NAN, status="error", lora_rank=8.0),
    ])  # fmt: skip


def row_of(stats: pd.DataFrame, label: str) -> pd.Series:
    match = stats[stats["label"] == label]
    assert len(match) == 1, f"{label}: {stats['label'].tolist()}"
    return match.iloc[0]


def test_config_columns_are_everything_but_identity_outcome_and_metrics() -> None:
    assert config_columns(small_table()) == ["method", "gate_sharpness", "sparsity_weight", "lora_rank"]
    new_metrics = {"val_high_activation_ratio": 0.3, "strong_activation_ratio": 0.1, "val_acc_45_hard": 0.8}
    assert config_columns(small_table().assign(**new_metrics, epochs=5, lr_scale=1.0)) == [
        "method", "gate_sharpness", "sparsity_weight", "lora_rank", "epochs", "lr_scale",
    ]  # fmt: skip


def test_nan_config_values_group_together_and_are_not_dropped() -> None:
    ids = configuration_ids(small_table())
    frozen = small_table()["method"] == "frozen"
    assert ids[frozen].nunique() == 1  # NaN == NaN for grouping
    assert ids.nunique() == 3
    assert ids.notna().all()


def test_labels_name_only_the_knobs_that_vary_within_a_method() -> None:
    configs = pd.DataFrame({
        "method": ["taugate", "taugate", "frozen", "lora"],
        "gate_sharpness": [1.0, 10.0, NAN, NAN],
        "sparsity_weight": [0.0, 0.0, NAN, NAN],
        "lora_rank": [NAN, NAN, NAN, 8.0],
    })  # fmt: skip
    assert configuration_labels(configs).tolist() == ["taugate s=1", "taugate s=10", "frozen", "lora"]


def test_seed_statistics_by_hand() -> None:
    stats = seed_statistics(small_table(), ["acc_45"])
    taugate = row_of(stats, "taugate")
    # 0.8, 0.9, 1.0 -> mean 0.9, sample std 0.1, CI = t(0.975, 2) * 0.1 / sqrt(3); the diverged seed is not counted
    assert taugate["acc_45_mean"] == pytest.approx(0.9)
    assert taugate["acc_45_std"] == pytest.approx(0.1)
    assert taugate["acc_45_n"] == 3
    assert taugate["acc_45_ci95"] == pytest.approx(4.302652729911275 * 0.1 / math.sqrt(3))
    assert (taugate["n_trials"], taugate["n_ok"]) == (4, 3)
    assert taugate["gate_sharpness"] == 10.0

    frozen = row_of(stats, "frozen")  # two identical values: no spread
    assert (frozen["acc_45_mean"], frozen["acc_45_std"], frozen["acc_45_n"]) == (pytest.approx(0.7), 0.0, 2)
    assert frozen["acc_45_ci95"] == 0.0
    assert math.isnan(frozen["gate_sharpness"])


def test_a_configuration_whose_trials_all_failed_is_listed_without_values() -> None:
    lora = row_of(seed_statistics(small_table(), ["acc_45"]), "lora")
    assert (lora["n_trials"], lora["n_ok"], lora["acc_45_n"]) == (1, 0, 0)
    assert math.isnan(lora["acc_45_mean"]) and math.isnan(lora["acc_45_std"]) and math.isnan(lora["acc_45_ci95"])


def test_one_seed_has_a_mean_but_no_spread() -> None:
    stats = seed_statistics(small_table().iloc[[0]], ["acc_45"])
    assert stats.loc[0, "acc_45_mean"] == pytest.approx(0.8)
    assert math.isnan(stats.loc[0, "acc_45_std"]) and math.isnan(stats.loc[0, "acc_45_ci95"])


def test_metrics_default_to_every_metric_column_and_rows_follow_the_method_order() -> None:
    stats = seed_statistics(small_table())
    for metric in ("acc_45", "acc_0", "trainable_params"):
        assert {f"{metric}_{s}" for s in ("mean", "std", "n", "ci95")} <= set(stats.columns)
    assert stats["method"].tolist() == ["frozen", "taugate", "lora"]


def test_best_configuration_and_preferred_settings() -> None:
    stats = pd.DataFrame({
        "method": ["lora", "lora", "lora", "taugate"],
        "lora_rank": [4.0, 8.0, 16.0, NAN],
        "label": ["r4", "r8", "r16", "taugate"],
        "config_id": [0, 1, 2, 3],
        "val_acc_45_mean": [0.86, 0.85, 0.87, 0.84],
    })  # fmt: skip
    assert best_configuration(stats, "lora")["label"] == "r16"
    assert best_configuration(stats, "lora", prefer={"lora_rank": 8})["label"] == "r8"
    assert best_configuration(stats, "lora", prefer={"lora_rank": 2})["label"] == "r16"  # no match: best overall
    assert best_configuration(stats, "full") is None
    assert representatives(stats)["label"].to_dict() == {"lora": "r8", "taugate": "taugate"}


def paired_table() -> pd.DataFrame:
    reference = [0.80, 0.82, 0.84, 0.86]
    gaps = [0.01, 0.02, 0.03, 0.02]  # frozen is worse by these
    rows = [trial("taugate", s, a, gate_sharpness=10.0) for s, a in enumerate(reference)]
    rows += [trial("taugate", s, a - 0.05, gate_sharpness=1.0) for s, a in enumerate(reference)]  # weaker setting
    rows += [trial("taugate", 4, NAN, status="diverged", gate_sharpness=10.0)]
    rows += [trial("frozen", s, a - g) for s, (a, g) in enumerate(zip(reference, gaps, strict=True))]
    rows += [trial("frozen", 4, 0.5)]  # no reference on seed 4: not a pair
    rows += [trial("bitfit", 2, 0.9)]  # one pair only
    rows += [trial("lora", 7, 0.9, lora_rank=8.0)]  # no pair at all
    return pd.DataFrame(rows)


def test_paired_comparison_with_known_differences() -> None:
    table = paired_comparisons(paired_table(), reference="taugate", metric="acc_45")
    assert list(table.columns) == list(COMPARISON_COLUMNS)
    assert set(table["reference"]) == {"taugate s=10"}  # the better of the two TauGate settings
    frozen = row_of(table, "frozen")
    diffs = np.array([-0.01, -0.02, -0.03, -0.02])
    sd = math.sqrt((0.01**2 + 0 + 0.01**2 + 0) / 3)
    t = diffs.mean() / (sd / 2)
    half = scipy_stats.t.ppf(0.975, 3) * sd / 2
    assert frozen["n_pairs"] == 4
    assert frozen["mean_diff"] == pytest.approx(-0.02)
    assert (frozen["ci_low"], frozen["ci_high"]) == (pytest.approx(-0.02 - half), pytest.approx(-0.02 + half))
    assert frozen["p_value"] == pytest.approx(2 * scipy_stats.t.sf(abs(t), 3))
    assert frozen["significant"]  # p ~ 0.016
    assert frozen["reference_mean"] == pytest.approx(0.83) and frozen["mean"] == pytest.approx(0.81)


def test_holm_matches_the_textbook_example() -> None:
    # Holm (1979) as Wikipedia's "Holm-Bonferroni method" example works it: four hypotheses, alpha 0.05;
    # sorted 0.005, 0.01, 0.03, 0.04 are multiplied by 4, 3, 2, 1 (0.02, 0.03, 0.06, 0.04), then made
    # monotone (0.04 -> 0.06): H4 and H1 are rejected, H3 and H2 are not
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert list(adjusted < 0.05) == [True, False, False, True]


def test_holm_never_lowers_a_p_keeps_the_order_of_the_raw_ps_and_caps_at_one() -> None:
    rng = np.random.default_rng(7)
    for size in (1, 2, 5, 13):
        raw = rng.uniform(0, 0.3, size) ** 2
        adjusted = holm(raw)
        assert (adjusted >= raw).all() and (adjusted <= 1).all()
        order = np.argsort(raw)
        assert (np.diff(adjusted[order]) >= 0).all()  # a smaller raw p never gets a larger corrected one
        assert adjusted[order[0]] == pytest.approx(min(1.0, size * raw[order[0]]))  # Bonferroni for the smallest
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_holm_leaves_tests_that_could_not_run_out_of_the_family() -> None:
    adjusted = holm([0.01, math.nan, 0.04])
    assert math.isnan(adjusted[1]) and adjusted[[0, 2]] == pytest.approx([0.02, 0.04])  # m = 2, not 3
    assert np.isnan(holm([math.nan])).all() and len(holm([])) == 0


def test_paired_effect_by_hand() -> None:
    effect = paired_effect([0.1, 0.3, 0.2])
    std = 0.1
    half = scipy_stats.t.ppf(0.975, 2) * std / math.sqrt(3)
    assert (effect["n"], effect["mean"], effect["std"]) == (3, pytest.approx(0.2), pytest.approx(std))
    assert (effect["ci_low"], effect["ci_high"]) == (pytest.approx(0.2 - half), pytest.approx(0.2 + half))
    assert effect["d_z"] == pytest.approx(2.0) and effect["t"] == pytest.approx(2.0 * math.sqrt(3))
    assert effect["p_one_sided"] == pytest.approx(
        scipy_stats.ttest_1samp([0.1, 0.3, 0.2], 0, alternative="greater").pvalue
    )
    assert math.isnan(paired_effect([0.2])["p_one_sided"])
    assert paired_effect([0.1, 0.1])["p_one_sided"] == 0.0 and paired_effect([-0.1, -0.1])["p_one_sided"] == 1.0


def test_a_significance_table_is_one_family_corrected_by_holm() -> None:
    table = paired_comparisons(paired_table(), reference="taugate", metric="acc_45")
    tested = table[table["p_value"].notna()]
    assert len(tested) >= 2  # a family to correct
    assert tested["p_holm"].to_numpy(float) == pytest.approx(holm(tested["p_value"].to_numpy(float)))
    assert (tested["p_holm"] >= tested["p_value"]).all()
    assert list(table["significant"]) == [bool(p < 0.05) for p in table["p_holm"].fillna(1.0)]
    frozen = row_of(table, "frozen")
    diffs = np.array([-0.01, -0.02, -0.03, -0.02])
    assert frozen["d_z"] == pytest.approx(diffs.mean() / diffs.std(ddof=1))
    assert table[table["p_value"].isna()]["p_holm"].isna().all()


def test_the_reference_methods_other_settings_are_compared_too() -> None:
    weaker = row_of(paired_comparisons(paired_table()), "taugate s=1")
    assert weaker["mean_diff"] == pytest.approx(-0.05)
    assert weaker["n_pairs"] == 4


def test_fewer_than_two_pairs_give_no_test_and_no_error() -> None:
    table = paired_comparisons(paired_table())
    bitfit, lora = row_of(table, "bitfit"), row_of(table, "lora")
    assert bitfit["n_pairs"] == 1 and bitfit["mean_diff"] == pytest.approx(0.9 - 0.84)
    assert lora["n_pairs"] == 0 and math.isnan(lora["mean_diff"])
    for row in (bitfit, lora):
        assert math.isnan(row["p_value"]) and math.isnan(row["ci_low"]) and not row["significant"]


def test_identical_pairs_are_not_significant() -> None:
    rows = [trial("taugate", s, 0.8) for s in range(3)] + [trial("frozen", s, 0.8) for s in range(3)]
    frozen = row_of(paired_comparisons(pd.DataFrame(rows)), "frozen")
    assert frozen["mean_diff"] == 0 and not frozen["significant"]


def test_reference_selection_can_use_another_metric() -> None:
    df = paired_table()
    df.loc[df["gate_sharpness"] == 1.0, "val_acc_0"] = 0.95  # the weaker s=1 setting retains best
    by_retention = paired_comparisons(df, metric="acc_0")  # chosen on val_acc_0, the validation twin
    by_target = paired_comparisons(df, metric="acc_0", select_by="val_acc_45")
    assert set(by_retention["reference"]) == {"taugate s=1"}
    assert set(by_target["reference"]) == {"taugate s=10"}


def test_absent_reference_gives_an_empty_table() -> None:
    df = paired_table()
    assert paired_comparisons(df[df["method"] != "taugate"]).empty
    assert paired_comparisons(df, metric="acc_90").empty
    assert list(paired_comparisons(df, reference="full").columns) == list(COMPARISON_COLUMNS)


def test_infinite_values_are_left_out_like_nan() -> None:
    df = small_table().assign(final_loss=[0.5, 0.7, math.inf, math.nan, 0.1, 0.1, math.nan])
    taugate = row_of(seed_statistics(df, ["final_loss"]), "taugate")
    assert taugate["final_loss_n"] == 2 and taugate["final_loss_mean"] == pytest.approx(0.6)


def disagreeing_table() -> pd.DataFrame:
    """Two TauGate settings and two LoRA ranks whose test and validation rankings disagree."""
    rows = []
    for seed in range(3):
        for s, test, val in ((1.0, 0.90, 0.80), (10.0, 0.80, 0.90)):
            rows.append(trial("taugate", seed, test, gate_sharpness=s) | {"val_acc_45": val + 0.001 * seed})
        for rank, test, val in ((4.0, 0.95, 0.85), (16.0, 0.85, 0.95)):
            rows.append(trial("lora", seed, test, lora_rank=rank) | {"val_acc_45": val})
    return pd.DataFrame(rows)


def choices(df: pd.DataFrame) -> dict[str, object]:
    """Every selection stats.py makes, by configuration label."""
    stats = seed_statistics(df)
    comparison = paired_comparisons(df, metric="acc_45") if "acc_45" in df.columns else None
    return {
        "best taugate": best_configuration(stats, "taugate")["label"],
        "representatives": representatives(stats, prefer={})["label"].to_dict(),
        "paired reference": None if comparison is None else set(comparison["reference"]),
    }


def test_selection_follows_validation_when_test_disagrees() -> None:
    chosen = choices(disagreeing_table())
    assert chosen == {
        "best taugate": "taugate s=10",
        "representatives": {"taugate": "taugate s=10", "lora": "lora r=16"},
        "paired reference": {"taugate s=10"},
    }


TEST_METRICS = ["acc_45", "acc_0", "high_activation_ratio", "active_ratio", "trainable_params"]


def test_selection_reads_no_test_metric() -> None:
    df = disagreeing_table().assign(high_activation_ratio=0.3, active_ratio=0.4)
    expected = choices(df)
    without = choices(df.drop(columns=TEST_METRICS))
    assert {k: v for k, v in without.items() if k != "paired reference"} == {
        k: v for k, v in expected.items() if k != "paired reference"
    }
    rng = np.random.default_rng(0)
    shuffled = df.assign(**{c: rng.permutation(df[c].to_numpy()) for c in TEST_METRICS})
    assert choices(shuffled) == expected


def test_a_test_metric_is_refused_as_a_selection_criterion() -> None:
    stats = seed_statistics(disagreeing_table())
    for select in (lambda: best_configuration(stats, "taugate", "acc_45"), lambda: representatives(stats, "acc_45"),
                   lambda: paired_comparisons(disagreeing_table(), select_by="acc_45")):  # fmt: skip
        with pytest.raises(SelectionError, match="validation metrics only"):
            select()


def test_an_old_table_without_validation_metrics_has_no_representative() -> None:
    old = disagreeing_table().drop(columns=["val_acc_45", "val_acc_0"])
    stats = seed_statistics(old)
    assert best_configuration(stats, "taugate") is None
    assert representatives(stats).empty
    assert paired_comparisons(old, metric="acc_45").empty
