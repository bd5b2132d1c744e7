"""What TauGate's budget does to lambda: saturation under a small budget, requested ratios met by
dual ascent, and dual ascent's front against a fixed-lambda sweep's.

Adam bounds each step of tau by about its learning rate, so over a specialisation tau can move at
most about lr x steps (`tau_step_budget`); once tau uses that budget, a larger lambda cannot close
more gates: lambda *saturates*. Every function reads `analysis.aggregate.sparsity_front.
gated_configurations` rows (one per configuration, seed means and Student-t 95% half-widths).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.aggregate.sparsity_front import DUAL, LAMBDA, RATIO, SWEEP, TARGET, numeric_column

SATURATION_DROP = 0.03  # a last lambda step lowering the validation ratio by less than this has saturated
SATURATION_SHARE = 0.5  # ... while tau's mean displacement uses at least this share of its step budget
TARGET_TOLERANCE = 0.03  # a requested ratio is met when the landed validation ratio (seed mean) is within it
SATURATION_RULE = (
    f"λ saturates under a budget when raising λ from its second-largest to its largest value lowers the "
    f"validation ratio by less than {SATURATION_DROP:g} while tau's mean displacement is at least "
    f"{SATURATION_SHARE:g} x its step budget (tau's lr x optimiser steps, Adam's bound on how far tau can move)"
)
TARGET_RULE = f"met: |landed validation ratio (seed mean) - requested| <= {TARGET_TOLERANCE:g}"
MATCH_WINDOW = 0.05  # a dual-ascent point is compared with a lambda point at most this far in validation ratio
DOMINANCE_RULE = (
    "each dual-ascent configuration is compared with the fixed-λ configuration of the same budget nearest in "
    f"validation ratio, when one lies within ±{MATCH_WINDOW:g} (else it is not compared: the sweep has no point "
    "there); the study gives both the same number of trials; a side is better on an axis when the difference of "
    "means exceeds the combined 95% half-width sqrt(h_a² + h_b²) (lower validation ratio, higher test accuracy on "
    "the target); a point dominates its partner when it is better on one axis and worse on none; a front "
    "dominates when it dominates at least one pair and the other front none"
)


def saturation(rows: pd.DataFrame) -> pd.DataFrame:
    """Per budget, over its fixed-lambda configurations (two lambdas at least): the lambda range,
    the validation ratio at the smallest and largest lambda, the last lambda step's drop, tau's mean
    displacement and step budget at the largest lambda, their quotient `share` and `saturated`
    (`SATURATION_RULE`)."""
    out = []
    sweep = rows[rows["source"] == SWEEP] if "source" in rows.columns else rows.iloc[0:0]
    for budget, line in sweep.groupby("budget", sort=False):
        line = line[numeric_column(line, LAMBDA).notna()].sort_values(LAMBDA, kind="stable")
        if line[LAMBDA].nunique() < 2:
            continue
        low, high, before = line.iloc[0], line.iloc[-1], line.iloc[-2]
        ratio = f"{RATIO}_mean"
        displacement = float(high.get("tau_displacement_mean", math.nan))
        step_budget = float(high.get("tau_step_budget_mean", math.nan))
        share = displacement / step_budget if step_budget and math.isfinite(step_budget) else math.nan
        drop = float(before[ratio] - high[ratio])
        out.append({
            "budget": budget, "lambdas": int(line[LAMBDA].nunique()),
            "lambda_min": float(low[LAMBDA]), "lambda_max": float(high[LAMBDA]),
            "ratio_at_min": float(low[ratio]), "ratio_at_min_ci95": float(low.get(f"{RATIO}_ci95", math.nan)),
            "ratio_at_max": float(high[ratio]), "ratio_at_max_ci95": float(high.get(f"{RATIO}_ci95", math.nan)),
            "last_drop": drop, "displacement": displacement, "step_budget": step_budget, "share": share,
            "saturated": bool(drop < SATURATION_DROP and math.isfinite(share) and share >= SATURATION_SHARE),
        })  # fmt: skip
    return pd.DataFrame(out)


def target_outcomes(rows: pd.DataFrame, tolerance: float = TARGET_TOLERANCE) -> pd.DataFrame:
    """Per dual-ascent configuration: its budget, label, requested ratio, landed validation ratio
    (mean, 95% half-width, n), the gap and `met` (`TARGET_RULE`), and lambda's final value."""
    dual = rows[rows["source"] == DUAL] if "source" in rows.columns else rows.iloc[0:0]
    out = []
    for _, row in dual.iterrows():
        landed = float(row[f"{RATIO}_mean"])
        out.append({
            "budget": row["budget"], "label": row["label"], "requested": float(row[TARGET]),
            "landed": landed, "landed_ci95": float(row.get(f"{RATIO}_ci95", math.nan)),
            "n": int(row.get(f"{RATIO}_n", 0)), "gap": landed - float(row[TARGET]),
            "met": bool(abs(landed - float(row[TARGET])) <= tolerance),
            "lambda_final": float(row.get("sparsity_weight_final_mean", math.nan)),
            "lambda_final_ci95": float(row.get("sparsity_weight_final_ci95", math.nan)),
        })  # fmt: skip
    return pd.DataFrame(out)


@dataclass(frozen=True)
class DualVersusSweep:
    """The matched pairs (one row each), which front dominates (`DUAL`, `SWEEP` or "neither"),
    and the trials each front spent in those pairs."""

    pairs: pd.DataFrame
    dominant: str
    trials: dict[str, int]


UNMATCHED = f"not compared: no λ point within ±{MATCH_WINDOW:g}"


def compare_dual_sweep(rows: pd.DataFrame, accuracy: str) -> DualVersusSweep:
    """Dual ascent against the fixed-lambda sweep at an equal number of trials (`DOMINANCE_RULE`),
    on the validation ratio and the test `accuracy` (e.g. `acc_45`; reported, never chosen by:
    the pairing reads validation ratios only)."""
    pairs = []
    for _, line in rows.groupby("budget", sort=False):
        dual = line[line["source"] == DUAL].sort_values(f"{RATIO}_mean", kind="stable")
        free = line[line["source"] == SWEEP]
        for _, point in dual.iterrows():
            gaps = (numeric_column(free, f"{RATIO}_mean") - float(point[f"{RATIO}_mean"])).abs()
            if gaps.empty or not gaps.min() <= MATCH_WINDOW:
                pairs.append({"budget": point["budget"], "dual": point["label"], "sweep": None,
                              "dual_ratio": float(point[f"{RATIO}_mean"]), "outcome": UNMATCHED,
                              "dual_trials": int(point.get("n_ok", 0)), "sweep_trials": 0})  # fmt: skip
                continue
            pairs.append(_pair(point, free.loc[gaps.idxmin()], accuracy))
    table = pd.DataFrame(pairs)
    outcomes = set(table["outcome"]) if len(table) else set()
    dual_wins, sweep_wins = f"{DUAL} dominates" in outcomes, f"{SWEEP} dominates" in outcomes
    dominant = DUAL if dual_wins and not sweep_wins else SWEEP if sweep_wins and not dual_wins else "neither"
    sides = ((DUAL, "dual_trials"), (SWEEP, "sweep_trials"))
    budgets = set(table["budget"]) if len(table) else set()
    counted = rows[rows["budget"].isin(budgets)] if len(table) else rows.iloc[0:0]
    trials = {side: int(counted.loc[counted["source"] == side, "n_ok"].sum()) if len(counted) else 0
              for side, _ in sides}  # fmt: skip
    return DualVersusSweep(table, dominant, trials)


def _pair(dual: pd.Series, sweep: pd.Series, accuracy: str) -> dict[str, object]:
    pair: dict[str, object] = {"budget": dual["budget"], "dual": dual["label"], "sweep": sweep["label"]}
    better = []
    for axis, metric, sign in (("ratio", RATIO, -1.0), ("accuracy", accuracy, 1.0)):
        d, s = (float(r.get(f"{metric}_mean", math.nan)) for r in (dual, sweep))
        hd, hs = (float(r.get(f"{metric}_ci95", math.nan)) for r in (dual, sweep))
        half = math.hypot(hd, hs)
        diff = d - s
        pair |= {f"dual_{axis}": d, f"dual_{axis}_ci95": hd, f"sweep_{axis}": s, f"sweep_{axis}_ci95": hs,
                 f"{axis}_diff": diff, f"{axis}_half": half}  # fmt: skip
        better.append(0 if not math.isfinite(half) or abs(diff) <= half else int(np.sign(diff * sign)))
    if 1 in better and -1 not in better:
        outcome = f"{DUAL} dominates"
    elif -1 in better and 1 not in better:
        outcome = f"{SWEEP} dominates"
    else:
        outcome = "trade-off" if 1 in better else "within CI"
    trials = {f"{side}_trials": int(r.get("n_ok", 0)) for side, r in (("dual", dual), ("sweep", sweep))}
    return pair | trials | {"outcome": outcome}
