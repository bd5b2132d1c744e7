"""The paper's claims as checks: each verdict follows from the seed means, absent data is "not testable"."""

from __future__ import annotations

import math

import pandas as pd

from analysis.stats import seed_statistics
from analysis.verdicts import NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, check_claims

PARAMS = {"frozen": 0, "bitfit": 266, "taugate": 512, "lora": 10448, "full": 118282}
# (acc_0, acc_45, high_activation_ratio): the paper's table
PAPER = {
    "frozen": (0.832, 0.833, math.nan),
    "bitfit": (0.851, 0.852, math.nan),
    "taugate": (0.850, 0.850, 0.28),
    "lora": (0.855, 0.864, math.nan),
    "full": (0.783, 0.887, math.nan),
}


def study(numbers: dict[str, tuple[float, float, float]], seeds: int = 3) -> pd.DataFrame:
    rows = []
    for method, (acc_0, acc_45, ratio) in numbers.items():
        for seed in range(seeds):
            jitter = 0.001 * (seed - 1)  # symmetric: the mean is the given number
            rows.append({
                "trial_id": f"{method}{seed}", "status": "ok", "method": method, "seed": seed,
                "lora_rank": 8.0 if method == "lora" else math.nan,
                "trainable_params": PARAMS[method], "acc_0": acc_0 + jitter, "acc_45": acc_45 + jitter,
                "high_activation_ratio": ratio,
            })  # fmt: skip
    return pd.DataFrame(rows)


def verdicts(numbers: dict[str, tuple[float, float, float]]) -> list[str]:
    return [v.verdict for v in check_claims(seed_statistics(study(numbers)))]


def test_the_papers_own_numbers_reproduce_every_claim() -> None:
    results = check_claims(seed_statistics(study(PAPER)))
    assert [v.verdict for v in results] == [REPRODUCED] * 5
    assert all(v.claim and v.check and v.evidence for v in results)
    assert "20.4x" in results[2].evidence


def test_taugate_no_better_than_frozen() -> None:
    assert verdicts(PAPER | {"taugate": (0.850, 0.830, 0.28)})[0] == NOT_REPRODUCED


def test_retention_tolerates_a_small_loss_and_any_gain() -> None:
    frozen_acc_0 = PAPER["frozen"][0]
    assert verdicts(PAPER | {"taugate": (frozen_acc_0 - 0.015, 0.85, 0.28)})[1] == REPRODUCED
    assert verdicts(PAPER | {"taugate": (frozen_acc_0 + 0.03, 0.85, 0.28)})[1] == REPRODUCED
    assert verdicts(PAPER | {"taugate": (frozen_acc_0 - 0.03, 0.85, 0.28)})[1] == NOT_REPRODUCED


def test_lora_below_taugate() -> None:
    assert verdicts(PAPER | {"lora": (0.855, 0.840, math.nan)})[2] == NOT_REPRODUCED


def test_full_fine_tuning_must_win_and_forget() -> None:
    assert verdicts(PAPER | {"full": (0.783, 0.860, math.nan)})[3] == NOT_REPRODUCED  # lora wins the target
    assert verdicts(PAPER | {"full": (0.840, 0.887, math.nan)})[3] == NOT_REPRODUCED  # no forgetting


def test_sparsity_must_be_partial() -> None:
    assert verdicts(PAPER | {"taugate": (0.85, 0.85, 0.7)})[4] == NOT_REPRODUCED
    assert verdicts(PAPER | {"taugate": (0.85, 0.85, 0.0)})[4] == NOT_REPRODUCED


def test_claims_needing_an_absent_method_or_metric_are_not_testable() -> None:
    without_lora = {m: v for m, v in PAPER.items() if m != "lora"}
    assert verdicts(without_lora) == [REPRODUCED, REPRODUCED, NOT_TESTABLE, REPRODUCED, REPRODUCED]
    assert verdicts(PAPER | {"taugate": (0.85, 0.85, math.nan)})[4] == NOT_TESTABLE
    assert verdicts({"taugate": PAPER["taugate"]})[:4] == [NOT_TESTABLE] * 4


def test_failed_trials_make_a_method_absent_not_a_crash() -> None:
    df = study(PAPER)
    failed = df["method"] == "full"
    df.loc[failed, "status"] = "error"
    df.loc[failed, ["acc_0", "acc_45"]] = math.nan
    result = check_claims(seed_statistics(df))
    assert result[3].verdict == NOT_TESTABLE and "full" in result[3].evidence
    assert check_claims(pd.DataFrame()) and all(v.verdict == NOT_TESTABLE for v in check_claims(pd.DataFrame()))
