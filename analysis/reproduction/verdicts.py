"""The paper's claims (analysis/references/paper.yaml and its claims) checked against this study, strictly.

Each method is represented by one configuration, chosen on validation accuracy
(`analysis.aggregate.stats.representatives`, LoRA at the reference's rank 8 when the study has it); the
verdicts read its test metrics. A claim is a baseline-relative difference between two method
means, ours against the reference's:
- `reproduced`: the claim's direction holds for ours AND |ours - reference| <= the equivalence margin;
- `direction only`: the direction holds, the size does not;
- `not reproduced`: the direction fails;
- `not testable`: a method or metric it needs is missing (never silently passed).
Equivalence margin = 2 * sqrt(sigma_ours^2 + sigma_ref^2): twice the spread of a difference of
single runs (`analysis.reproduction.spread`), where each side's sigma is that of a single-run
difference of two methods, sqrt(sigma_a^2 + sigma_b^2) from its table's seed stds (a missing std
counts as 0, which only narrows the margin). It is not a standard error of means: beside it, each
rule states the standard error of the gap between the two tables' mean differences,
sqrt(sigma_a^2/n_a + sigma_b^2/n_b) per side, with our seeds as n and the reference's n assumed
(`spread.ASSUMED_REFERENCE_N`; the paper does not give it). Every verdict carries its rule and its
numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.aggregate.stats import representatives
from analysis.paper.reference import Reference, reference_mismatch
from analysis.reproduction.fidelity import as_reference
from analysis.reproduction.spread import (
    ASSUMED_REFERENCE_N,
    MARGIN_FACTOR,
    MARGIN_FORMULA,
    MARGIN_MEANING,
    MARGIN_NAME,
    SE_FORMULA,
    SE_MEANING,
    reference_n_note,
    single_run_spread,
    standard_error,
)
from analysis.table.protocols import single_protocol
from analysis.table.study_modes import StudyModes, study_modes
from trainables.config import accuracy_name

REPRODUCED = "reproduced"
DIRECTION_ONLY = "direction only"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable"
VERDICTS = (REPRODUCED, DIRECTION_ONLY, NOT_REPRODUCED, NOT_TESTABLE)

PARAMETER_RATIO = (10.0, 40.0)  # what "~20x the parameters" accepts (the paper's is 10448/512 = 20.4)
SPARSITY_CEILING = 0.5  # "a minority of units strongly active"
SPARSITY_TOLERANCE = 0.05  # a ratio within reference +- this reproduces the paper's 0.28
RATIO = "high_activation_ratio"


@dataclass(frozen=True)
class Verdict:
    """One claim, the rule applied (numbers compared and tolerance), the outcome, the numbers,
    and whether it involves a method held out of a calibration (then it is a prediction)."""

    claim: str
    rule: str
    verdict: str
    numbers: str
    prediction: bool = False


class _Missing(Exception):
    """A method or metric the check needs is absent from the study or the reference."""


@dataclass(frozen=True)
class Difference:
    """A difference of two method means, ours and the reference's: the single-run spread of each
    (`sigma`, see `analysis.reproduction.spread`) and the standard error of each mean difference (`se`)."""

    text: str  # "TauGate - Frozen acc_45"
    ours: float
    ours_sigma: float
    reference: float
    reference_sigma: float
    numbers: str
    ours_se: float = math.nan
    reference_se: float = math.nan
    ours_n: str = "?"  # our seeds per method ("5", or "5 and 4")
    reference_n: int = ASSUMED_REFERENCE_N

    @property
    def tolerance(self) -> float:
        """The equivalence margin: 2 × the spread of a difference of single runs."""
        return MARGIN_FACTOR * single_run_spread(self.ours_sigma, self.reference_sigma)

    @property
    def standard_error(self) -> float:
        """The standard error of the gap between the two mean differences (reference n assumed)."""
        return math.hypot(self.ours_se, self.reference_se)

    def judge(self, direction: str) -> str:
        if not _holds(self.ours, direction):
            return NOT_REPRODUCED
        return REPRODUCED if abs(self.ours - self.reference) <= self.tolerance else DIRECTION_ONLY

    def rule(self, direction: str) -> str:
        return (
            f"{self.text} {direction} 0, and |ours - reference| <= {MARGIN_NAME} {MARGIN_FORMULA} = "
            f"{self.tolerance:.3f} ({MARGIN_MEANING}; σ of a method difference = sqrt(σ_a² + σ_b²)); beside it, "
            f"the {SE_MEANING}, {SE_FORMULA} per side = {self.standard_error:.3f} (n_ours = {self.ours_n} seeds, "
            f"{reference_n_note(self.reference_n)})"
        )

    def describe(self) -> str:
        gap = self.ours - self.reference
        se = self.standard_error
        in_se = f" = {gap / se:+.1f} SE of the means" if math.isfinite(se) and se > 0 else ""
        return (
            f"ours {self.ours:+.3f} (σ {self.ours_sigma:.3f}), reference {self.reference:+.3f} "
            f"(σ {self.reference_sigma:.3f}), gap {gap:+.3f}{in_se}; {self.numbers}"
        )


def _holds(value: float, direction: str) -> bool:
    return {">": value > 0, ">=": value >= 0, "<": value < 0}[direction]


class _Means:
    """Our representatives' seed statistics and the reference's cells, raising `_Missing`."""

    def __init__(self, chosen: pd.DataFrame, reference: Reference, why_empty: str) -> None:
        self.chosen, self.reference, self.why_empty = chosen, reference, why_empty

    def ours(self, method: str, metric: str) -> tuple[float, float]:
        """(mean, std) of our representative; a std undefined for one seed counts as 0."""
        if method not in self.chosen.index:
            raise _Missing(self.why_empty or f"no finished {method} trials")
        row = self.chosen.loc[method]
        mean, std = row.get(f"{metric}_mean", math.nan), row.get(f"{metric}_std", math.nan)
        if mean is None or not math.isfinite(float(mean)):
            raise _Missing(f"no {metric} for {method}")
        return float(mean), float(std) if std is not None and math.isfinite(float(std)) else 0.0

    def ref(self, method: str, metric: str) -> tuple[float, float]:
        cell = self.reference.cell(method, metric)
        if cell is None:
            raise _Missing(f"the reference {self.reference.name} has no {metric} for {method}")
        return cell.mean, cell.std or 0.0

    def n(self, method: str, metric: str) -> int:
        """Our representative's seeds behind `metric` (0 when unknown)."""
        value = self.chosen.loc[method].get(f"{metric}_n", 0)
        return int(value) if value is not None and math.isfinite(float(value)) else 0

    def describe(self, method: str, metric: str) -> str:
        row = self.chosen.loc[method]
        mean, std = self.ours(method, metric)
        return f"{row['label']} {metric} = {mean:.3f} ± {std:.3f} (mean ± std, n={int(row[f'{metric}_n'])})"

    def difference(self, a: str, b: str, metric: str) -> Difference:
        """Our method difference a - b beside the reference's, with both scales of `analysis.reproduction.spread`."""
        (oa, sa), (ob, sb) = self.ours(a, metric), self.ours(b, metric)
        (ra, qa), (rb, qb) = self.ref(a, metric), self.ref(b, metric)
        na, nb = self.n(a, metric), self.n(b, metric)
        return Difference(
            f"{self.name(a)} - {self.name(b)} {metric}", oa - ob, single_run_spread(sa, sb), ra - rb,
            single_run_spread(qa, qb), f"{self.describe(a, metric)}; {self.describe(b, metric)}",
            ours_se=standard_error([(sa, na), (sb, nb)]),
            reference_se=standard_error([(qa, ASSUMED_REFERENCE_N), (qb, ASSUMED_REFERENCE_N)]),
            ours_n=str(na) if na == nb else f"{na} and {nb}",
        )  # fmt: skip

    def name(self, method: str) -> str:
        """The reference's label of the method, naming our settings where they differ ("LoRA (ours r=4; paper r=8)")."""
        if method not in self.reference.methods:
            return method
        ours = self.chosen.loc[method] if method in self.chosen.index else None
        return self.reference.label_for(method, ours)


# A check returns (rule, verdict, numbers) and names the methods it involves.
Check = Callable[[_Means], tuple[str, str, str]]


def _difference_claim(a: str, b: str, angle: float, direction: str) -> Check:
    def check(means: _Means) -> tuple[str, str, str]:
        diff = means.difference(a, b, accuracy_name(angle))
        return diff.rule(direction), diff.judge(direction), diff.describe()

    return check


def _lora_buys_accuracy_with_parameters(angle: float) -> Check:
    return lambda means: _lora_check(means, accuracy_name(angle))


def _lora_check(means: _Means, metric: str) -> tuple[str, str, str]:
    diff = means.difference("lora", "taugate", metric)
    lora, taugate = means.ours("lora", "trainable_params")[0], means.ours("taugate", "trainable_params")[0]
    ratio = lora / taugate if taugate else math.inf
    expected = {m: means.reference.methods[m].trainable_params for m in ("lora", "taugate")}
    exact = all(count is None or count == ours for count, ours in zip(expected.values(), (lora, taugate), strict=True))
    low, high = PARAMETER_RATIO
    if diff.judge(">") == NOT_REPRODUCED or not low <= ratio <= high:
        verdict = NOT_REPRODUCED
    else:
        verdict = REPRODUCED if diff.judge(">") == REPRODUCED and exact else DIRECTION_ONLY
    rule = (
        f"{diff.rule('>')}; and LoRA/TauGate parameters within {low:g}-{high:g}x "
        f"(reproduced also needs the reference's exact counts)"
    )
    counts = f"parameters {lora:.0f} / {taugate:.0f} = {ratio:.1f}x"
    counts += f" (reference {expected['lora']} / {expected['taugate']})"
    return rule, verdict, f"{diff.describe()}; {counts}"


def _full_wins_target(angle: float) -> Check:
    return lambda means: _full_check(means, accuracy_name(angle))


def _full_check(means: _Means, metric: str) -> tuple[str, str, str]:
    """Full minus the best other method on the target mode, among methods both tables have."""
    others = [m for m in means.reference.methods if m != "full" and m in means.chosen.index]
    ours = {m: means.ours(m, metric)[0] for m in others if _has(means, m, metric)}
    if not ours:
        raise _Missing("no other method to compare full fine-tuning with")
    ours_best = max(ours, key=ours.get)
    ref_best = max(ours, key=lambda m: means.ref(m, metric)[0])
    ours_diff = means.difference("full", ours_best, metric)
    ref_diff = means.difference("full", ref_best, metric)
    numbers = (f"{means.describe('full', metric)}; best other: ours {means.describe(ours_best, metric)}, "
               f"reference {means.name(ref_best)} {means.ref(ref_best, metric)[0]:.3f}")  # fmt: skip
    diff = Difference(
        f"Full FT - best other {metric}", ours_diff.ours, ours_diff.ours_sigma, ref_diff.reference,
        ref_diff.reference_sigma, numbers, ours_se=ours_diff.ours_se, reference_se=ref_diff.reference_se,
        ours_n=ours_diff.ours_n,
    )  # fmt: skip
    return diff.rule(">"), diff.judge(">"), diff.describe()


def _has(means: _Means, method: str, metric: str) -> bool:
    try:
        means.ours(method, metric)
        means.ref(method, metric)
    except _Missing:
        return False
    return True


def _taugate_partially_sparse(means: _Means) -> tuple[str, str, str]:
    ours, std = means.ours("taugate", RATIO)
    reference = means.ref("taugate", RATIO)[0]
    if abs(ours - reference) <= SPARSITY_TOLERANCE:
        verdict = REPRODUCED
    else:
        verdict = DIRECTION_ONLY if 0 < ours < SPARSITY_CEILING else NOT_REPRODUCED
    rule = (
        f"TauGate {RATIO} (hard gate on, z > tau) within {reference:.2f} ± {SPARSITY_TOLERANCE} (tolerance); "
        f"0 < ratio < {SPARSITY_CEILING} but outside: direction only"
    )
    return rule, verdict, f"{means.describe('taugate', RATIO)}; reference {reference:.2f}"


def claims(baseline: str, target: float, original: float) -> tuple[tuple[str, tuple[str, ...], Check], ...]:
    """(claim, methods involved, check) per claim of the paper, against `baseline`, with
    `target` the specialised mode and `original` the mode whose retention is checked."""
    return (
        ("TauGate improves the rotated mode over the frozen base", ("taugate", baseline),
         _difference_claim("taugate", baseline, target, ">")),
        ("TauGate keeps the original mode", ("taugate", baseline),
         _difference_claim("taugate", baseline, original, ">=")),
        ("LoRA buys a little more accuracy with ~20x the parameters", ("lora", "taugate"),
         _lora_buys_accuracy_with_parameters(target)),
        ("Full fine-tuning wins the target mode", ("full",), _full_wins_target(target)),
        ("Full fine-tuning forgets some of the original mode", ("full", baseline),
         _difference_claim("full", baseline, original, "<")),
        ("TauGate shows partial activation sparsity (ratio 0.28)", ("taugate",), _taugate_partially_sparse),
        ("BitFit keeps the original mode", ("bitfit", baseline),
         _difference_claim("bitfit", baseline, original, ">=")),
        ("LoRA keeps the original mode", ("lora", baseline), _difference_claim("lora", baseline, original, ">=")),
    )  # fmt: skip


def check_claims(
    stats: pd.DataFrame,
    reference: Reference | str | Path = "paper",
    held_out: Sequence[str] = (),
    protocol: Mapping[str, Any] | None = None,
    target: float | None = None,
    original: float | None = None,
) -> list[Verdict]:
    """A verdict per claim (`claims`), from a `seed_statistics` table of one protocol
    (`protocol` picks one from a table holding several), at the study's target and original
    angles (`analysis.table.study_modes.study_modes`, or `target`/`original`). Claims involving a
    `held_out` method are marked as predictions. Representatives are chosen on validation; a
    table without validation metrics has none, and every claim is then not testable, saying
    why. So is every claim of a reference whose angles are not the study's."""
    reference = as_reference(reference)
    found = study_modes(stats)
    modes = StudyModes(found.target if target is None else float(target),
                       found.retention if original is None else float(original))  # fmt: skip
    target, original = modes.target, modes.retention
    chosen, why_empty = pd.DataFrame(), "no finished trials"
    if mismatch := reference_mismatch(reference, modes, brief=True):
        return [Verdict(claim, "needs the reference's angles", NOT_TESTABLE, mismatch, any(m in held_out for m in ms))
                for claim, ms, _ in claims(reference.baseline, target, original)]  # fmt: skip
    if not stats.empty:
        _, stats = single_protocol(stats, protocol)
        chosen = representatives(stats, prefer=reference.settings(), target=target)
        selection = accuracy_name(target, validation=True)
        if f"{selection}_mean" not in stats.columns:
            why_empty = f"no representative: selection needs validation metrics ({selection}); rerun the study"
    means = _Means(chosen, reference, why_empty if chosen.empty else "")
    verdicts = []
    for claim, methods, check in claims(reference.baseline, target, original):
        prediction = any(m in held_out for m in methods)
        try:
            rule, verdict, numbers = check(means)
        except _Missing as missing:
            verdicts.append(Verdict(claim, "needs " + ", ".join(methods), NOT_TESTABLE, str(missing), prediction))
            continue
        verdicts.append(Verdict(claim, rule, verdict, numbers, prediction))
    return verdicts
