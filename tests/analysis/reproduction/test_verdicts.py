"""The paper's claims, strictly: reproduced needs direction and size, each verdict states its rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.aggregate.stats import seed_statistics
from analysis.reproduction.spread import ASSUMED_REFERENCE_N
from analysis.reproduction.verdicts import DIRECTION_ONLY, NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, check_claims

PARAMS = {"frozen": 0, "bitfit": 266, "taugate": 512, "lora": 10448, "full": 118282}
# (acc_0, acc_45, high_activation_ratio): the paper's table
PAPER = {
    "frozen": (0.832, 0.833, math.nan),
    "bitfit": (0.851, 0.852, math.nan),
    "taugate": (0.850, 0.850, 0.28),
    "lora": (0.855, 0.864, math.nan),
    "full": (0.783, 0.887, math.nan),
}
# claim order of analysis.reproduction.verdicts.claims
BEATS, KEEPS, LORA_BUYS, FULL_WINS, FULL_FORGETS, SPARSE, BITFIT_KEEPS, LORA_KEEPS = range(8)


def study(numbers: dict[str, tuple[float, float, float]], seeds: int = 3, params: dict | None = None) -> pd.DataFrame:
    rows = []
    for method, (acc_0, acc_45, ratio) in numbers.items():
        for seed in range(seeds):
            jitter = 0.001 * (seed - 1)  # symmetric: the mean is the given number, the std 0.001
            rows.append({
                "trial_id": f"{method}{seed}", "status": "ok", "method": method, "seed": seed,
                "lora_rank": 8.0 if method == "lora" else math.nan,
                "trainable_params": (params or PARAMS)[method], "acc_0": acc_0 + jitter, "acc_45": acc_45 + jitter,
                "val_acc_45": acc_45 + jitter, "high_activation_ratio": ratio,
            })  # fmt: skip
    return pd.DataFrame(rows)


def verdicts(numbers: dict[str, tuple[float, float, float]], **options) -> list[str]:
    return [v.verdict for v in check_claims(seed_statistics(study(numbers, **options)))]


def test_the_papers_own_numbers_reproduce_every_claim() -> None:
    results = check_claims(seed_statistics(study(PAPER)))
    assert [v.verdict for v in results] == [REPRODUCED] * 8
    assert all(v.claim and v.rule and v.numbers for v in results)
    assert "20.4x" in results[LORA_BUYS].numbers
    # the rule states the tolerance: TauGate - Frozen acc_45, 2 * sqrt(sigma_ours^2 + sigma_ref^2)
    sigma_ours = math.hypot(0.001, 0.001)
    sigma_ref = math.hypot(0.010, 0.016)
    assert f"= {2 * math.hypot(sigma_ours, sigma_ref):.3f}" in results[BEATS].rule
    assert "+0.017" in results[BEATS].numbers


def test_the_rule_names_its_margin_and_gives_the_standard_error_of_the_means_with_each_n() -> None:
    results = check_claims(seed_statistics(study(PAPER, seeds=5)))
    rule = results[BEATS].rule
    # the tolerance is an equivalence margin on single runs, named as such
    assert "equivalence margin 2·sqrt(σ_ours² + σ_ref²)" in rule
    assert "2 × the spread of a difference of single runs" in rule
    # beside it, the standard error of the difference of means, with our n and the reference's assumed n
    std = np.std([0.001 * (s - 1) for s in range(5)], ddof=1)
    se_ours = math.sqrt(2 * std**2 / 5)
    se_ref = math.sqrt((0.010**2 + 0.016**2) / ASSUMED_REFERENCE_N)
    assert f"sqrt(σ_ours²/n_ours + σ_ref²/n_ref) per side = {math.hypot(se_ours, se_ref):.3f}" in rule
    assert "n_ours = 5 seeds" in rule and f"n_ref = {ASSUMED_REFERENCE_N} assumed" in rule
    assert "σ of a difference of two means" not in rule  # the old, wrong label
    assert " SE of the means" in results[BEATS].numbers
    # the margin is wider than two standard errors of the means: it is not a test of the means
    margin = 2 * math.hypot(math.hypot(std, std), math.hypot(0.010, 0.016))
    assert margin > 2 * math.hypot(se_ours, se_ref)


def test_sign_fails_is_not_reproduced() -> None:
    assert verdicts(PAPER | {"taugate": (0.850, 0.830, 0.28)})[BEATS] == NOT_REPRODUCED
    assert verdicts(PAPER | {"lora": (0.855, 0.840, math.nan)})[LORA_BUYS] == NOT_REPRODUCED
    assert verdicts(PAPER | {"full": (0.783, 0.860, math.nan)})[FULL_WINS] == NOT_REPRODUCED  # lora wins the target
    assert verdicts(PAPER | {"full": (0.840, 0.887, math.nan)})[FULL_FORGETS] == NOT_REPRODUCED  # no forgetting
    assert verdicts(PAPER | {"bitfit": (0.820, 0.852, math.nan)})[BITFIT_KEEPS] == NOT_REPRODUCED


def test_right_sign_wrong_size_is_direction_only() -> None:
    # gain 0.117 against the paper's 0.017; tolerance 2 * sqrt(0.0014^2 + 0.0189^2) = 0.038
    assert verdicts(PAPER | {"taugate": (0.850, 0.950, 0.28)})[BEATS] == DIRECTION_ONLY
    # forgetting 0.30 against the paper's 0.049
    assert verdicts(PAPER | {"full": (0.532, 0.887, math.nan)})[FULL_FORGETS] == DIRECTION_ONLY
    # a retention loss is no longer tolerated: any loss fails the sign
    assert verdicts(PAPER | {"taugate": (0.831, 0.850, 0.28)})[KEEPS] == NOT_REPRODUCED


def test_the_issues_example_is_not_reproduced() -> None:
    """LoRA's retention off by 0.32 and a TauGate ratio of 0.39 against 0.28 must not pass."""
    results = verdicts(PAPER | {"lora": (0.532, 0.864, math.nan), "taugate": (0.850, 0.850, 0.39)})
    assert results[LORA_KEEPS] == NOT_REPRODUCED
    assert results[SPARSE] == DIRECTION_ONLY


def test_sparsity_bands() -> None:
    assert verdicts(PAPER | {"taugate": (0.85, 0.85, 0.31)})[SPARSE] == REPRODUCED
    assert verdicts(PAPER | {"taugate": (0.85, 0.85, 0.12)})[SPARSE] == DIRECTION_ONLY
    assert verdicts(PAPER | {"taugate": (0.85, 0.85, 0.7)})[SPARSE] == NOT_REPRODUCED
    assert verdicts(PAPER | {"taugate": (0.85, 0.85, 0.0)})[SPARSE] == NOT_REPRODUCED


def test_parameter_ratio_and_exact_counts() -> None:
    assert verdicts(PAPER, params=PARAMS | {"lora": 1000})[LORA_BUYS] == NOT_REPRODUCED  # 2x, not ~20x
    assert verdicts(PAPER, params=PARAMS | {"lora": 10000})[LORA_BUYS] == DIRECTION_ONLY  # ~20x, not the counts


def test_claims_needing_an_absent_method_or_metric_are_not_testable() -> None:
    without_lora = verdicts({m: v for m, v in PAPER.items() if m != "lora"})
    assert [i for i, v in enumerate(without_lora) if v == NOT_TESTABLE] == [LORA_BUYS, LORA_KEEPS]
    assert verdicts(PAPER | {"taugate": (0.85, 0.85, math.nan)})[SPARSE] == NOT_TESTABLE
    alone = verdicts({"taugate": PAPER["taugate"]})  # nothing to compare with, but its own ratio
    assert [i for i, v in enumerate(alone) if v != NOT_TESTABLE] == [SPARSE]


def test_without_validation_metrics_nothing_is_chosen_and_nothing_tested() -> None:
    old = seed_statistics(study(PAPER).drop(columns=["val_acc_45"]))
    results = check_claims(old)
    assert {v.verdict for v in results} == {NOT_TESTABLE}
    assert "validation" in results[0].numbers and "rerun" in results[0].numbers


def test_representatives_are_chosen_on_validation_and_reported_on_test() -> None:
    df = study(PAPER).assign(sparsity_weight=lambda d: (d["method"] == "taugate").map({True: 0.0, False: math.nan}))
    better_on_test = df[df["method"] == "taugate"].assign(acc_45=0.99, val_acc_45=0.70, sparsity_weight=1.0)
    df = pd.concat([df, better_on_test.assign(trial_id=lambda d: d["trial_id"] + "b")], ignore_index=True)
    result = check_claims(seed_statistics(df))[BEATS]
    assert result.verdict == REPRODUCED and "0.850" in result.numbers  # not the 0.99 of the test-best setting


def test_held_out_methods_make_predictions() -> None:
    results = check_claims(seed_statistics(study(PAPER)), held_out=["taugate"])
    assert [v.prediction for v in results] == [True, True, True, False, False, True, False, False]


def test_failed_trials_make_a_method_absent_not_a_crash() -> None:
    df = study(PAPER)
    failed = df["method"] == "full"
    df.loc[failed, "status"] = "error"
    df.loc[failed, ["acc_0", "acc_45", "val_acc_45"]] = math.nan
    result = check_claims(seed_statistics(df))
    assert result[FULL_WINS].verdict == NOT_TESTABLE and "full" in result[FULL_WINS].numbers
    assert check_claims(pd.DataFrame()) and all(v.verdict == NOT_TESTABLE for v in check_claims(pd.DataFrame()))
