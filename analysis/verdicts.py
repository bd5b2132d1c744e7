"""The paper's claims (PAPER.md, "Claims") checked against this study's seed means.

Each method is represented by one configuration (`analysis.stats.representatives`: the best
by mean target accuracy, LoRA at the paper's rank 8 when the study has it). A claim is
"not testable" when the study lacks a method or metric it needs, never silently passed.
The checks are on means, as the paper's table is; the significance table beside them says
which gaps the seeds can resolve.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from analysis.stats import representatives

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable with this study"

RETENTION_TOLERANCE = 0.02  # accuracy on the original mode TauGate may lose and still "keep" it
PARAMETER_RATIO = (10.0, 40.0)  # what "~20x the parameters" accepts (the paper's is 10448/512 = 20.4)
SPARSITY_CEILING = 0.5  # "a minority of units strongly active"


@dataclass(frozen=True)
class Verdict:
    """One claim, the test applied to it, the outcome and the numbers behind it."""

    claim: str
    check: str
    verdict: str
    evidence: str


class _Missing(Exception):
    """A method or metric the check needs is absent from the study."""


class _Means:
    """Seed means of the representative configurations, raising `_Missing` for absent ones."""

    def __init__(self, stats: pd.DataFrame) -> None:
        self.chosen = representatives(stats) if not stats.empty else pd.DataFrame()

    def __call__(self, method: str, metric: str) -> float:
        if method not in self.chosen.index:
            raise _Missing(f"no finished {method} trials")
        value = self.chosen.loc[method].get(f"{metric}_mean", math.nan)
        if value is None or not math.isfinite(float(value)):
            raise _Missing(f"no {metric} for {method}")
        return float(value)

    def describe(self, method: str, metric: str) -> str:
        row = self.chosen.loc[method]
        std = row.get(f"{metric}_std", math.nan)
        spread = f" ± {float(std):.3f}" if std is not None and math.isfinite(float(std)) else ""
        return f"{row['label']} {metric} = {float(row[f'{metric}_mean']):.3f}{spread} (n={int(row[f'{metric}_n'])})"


def _taugate_beats_frozen(means: _Means) -> tuple[bool, str]:
    gain = means("taugate", "acc_45") - means("frozen", "acc_45")
    evidence = f"{means.describe('taugate', 'acc_45')}; {means.describe('frozen', 'acc_45')}; gain {gain:+.3f}"
    return gain > 0, evidence


def _taugate_retains(means: _Means) -> tuple[bool, str]:
    change = means("taugate", "acc_0") - means("frozen", "acc_0")
    evidence = f"{means.describe('taugate', 'acc_0')}; {means.describe('frozen', 'acc_0')}; change {change:+.3f}"
    return change >= -RETENTION_TOLERANCE, evidence


def _lora_buys_accuracy_with_parameters(means: _Means) -> tuple[bool, str]:
    gain = means("lora", "acc_45") - means("taugate", "acc_45")
    taugate_params = means("taugate", "trainable_params")
    ratio = means("lora", "trainable_params") / taugate_params if taugate_params else math.inf
    evidence = (
        f"{means.describe('lora', 'acc_45')}; {means.describe('taugate', 'acc_45')}; "
        f"gain {gain:+.3f} for {ratio:.1f}x the parameters"
    )
    return gain >= 0 and PARAMETER_RATIO[0] <= ratio <= PARAMETER_RATIO[1], evidence


def _full_wins_target_but_forgets(means: _Means) -> tuple[bool, str]:
    full = means("full", "acc_45")
    others = {m: means.chosen.loc[m, "acc_45_mean"] for m in means.chosen.index if m != "full"}
    others = {m: float(v) for m, v in others.items() if v is not None and math.isfinite(float(v))}
    if not others:
        raise _Missing("no other method to compare full fine-tuning with")
    runner_up = max(others, key=others.get)
    forgetting = means("full", "acc_0") - means("frozen", "acc_0")
    evidence = (
        f"{means.describe('full', 'acc_45')} vs best other {runner_up} {others[runner_up]:.3f}; "
        f"{means.describe('full', 'acc_0')} vs {means.describe('frozen', 'acc_0')} ({forgetting:+.3f})"
    )
    return full > others[runner_up] and forgetting < 0, evidence


def _taugate_partially_sparse(means: _Means) -> tuple[bool, str]:
    ratio = means("taugate", "high_activation_ratio")
    return 0 < ratio < SPARSITY_CEILING, f"{means.describe('taugate', 'high_activation_ratio')} (paper: 0.28)"


CLAIMS: tuple[tuple[str, str, Callable[[_Means], tuple[bool, str]]], ...] = (
    (
        "TauGate improves the rotated mode over the frozen base",
        "TauGate acc_45 > Frozen acc_45",
        _taugate_beats_frozen,
    ),
    (
        "TauGate keeps the original mode",
        f"TauGate acc_0 >= Frozen acc_0 - {RETENTION_TOLERANCE} (a gain is not a loss of retention)",
        _taugate_retains,
    ),
    (
        "LoRA buys a little more accuracy with ~20x the parameters",
        f"LoRA acc_45 >= TauGate acc_45 with {PARAMETER_RATIO[0]:g}-{PARAMETER_RATIO[1]:g}x its parameters",
        _lora_buys_accuracy_with_parameters,
    ),
    (
        "Full fine-tuning wins the target mode but forgets the original",
        "Full FT has the highest acc_45 of all methods and acc_0 < Frozen acc_0",
        _full_wins_target_but_forgets,
    ),
    (
        "TauGate shows partial activation sparsity (ratio 0.28)",
        f"0 < TauGate high_activation_ratio < {SPARSITY_CEILING}",
        _taugate_partially_sparse,
    ),
)


def check_claims(stats: pd.DataFrame) -> list[Verdict]:
    """A verdict per paper claim, from a `seed_statistics` table (all configurations)."""
    means = _Means(stats)
    verdicts = []
    for claim, check, test in CLAIMS:
        try:
            holds, evidence = test(means)
        except _Missing as missing:
            verdicts.append(Verdict(claim, check, NOT_TESTABLE, str(missing)))
            continue
        verdicts.append(Verdict(claim, check, REPRODUCED if holds else NOT_REPRODUCED, evidence))
    return verdicts
