"""The limits map (the paper's RQ4): how far from the foundation's own modes each method still helps.

A modes study specialises one frozen foundation per seed to several target angles. For each
target and method, the method's representative configuration (the best seed mean of validation
accuracy on that target: selection never reads test digits) is set against Frozen on the same
seeds: its gain over Frozen on the target mode (test digits, paired by seed), its trainable
parameters and its retention of the foundation's own modes (accuracy on each mixture angle other
than the target, minus Frozen's, paired by seed). The verdict states its rules and reads only
these numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.aggregate.stats import representatives, seed_statistics, t_half_width
from analysis.table.results import config_columns, configuration_ids, ok_rows
from analysis.table.study_modes import TARGET_COLUMN, degrees
from trainables.config import accuracy_name

LORA_TOLERANCE = 0.02  # "TauGate stays within 0.02 accuracy of LoRA's gain over Frozen"
SMALL_SHARE = 0.1  # a method recovering under a tenth of full fine-tuning's gain barely helps there
BASELINE = "frozen"
COLUMNS = (
    "target", "method", "label", "n", "acc_mean", "acc_std", "gain_mean", "gain_std", "gain_ci95",
    "params", "retention_mean", "retention_std", "gain_by_seed",
)  # fmt: skip


@dataclass
class LimitsMap:
    """One row per (target angle, method) with `COLUMNS`; `foundation_angles` the mixture the
    retention is measured on; `verdict` the stated findings, each with its rule and numbers."""

    table: pd.DataFrame
    foundation_angles: list[float]
    tolerance: float = LORA_TOLERANCE
    verdict: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def target_angles(df: pd.DataFrame) -> list[float]:
    if TARGET_COLUMN not in df.columns:
        return []
    return sorted({float(v) for v in pd.to_numeric(df[TARGET_COLUMN], errors="coerce").dropna()})


def limits_map(
    df: pd.DataFrame, foundation_angles: Sequence[float], tolerance: float = LORA_TOLERANCE
) -> LimitsMap | None:
    """The map of a results table with at least two target angles (None otherwise)."""
    targets = target_angles(df)
    if len(targets) < 2:
        return None
    rows, notes = [], []
    for target in targets:
        at_target = ok_rows(df[pd.to_numeric(df[TARGET_COLUMN], errors="coerce") == target])
        if at_target.empty:
            continue
        per_seed, labels = _representative_seeds(at_target, target)
        if BASELINE not in per_seed:
            notes.append(f"{degrees(target)}: no finished Frozen trial, so no gain over Frozen")
            continue
        frozen = per_seed[BASELINE]
        for method, trials in per_seed.items():
            rows.append(_row(target, method, labels[method], trials, frozen, foundation_angles))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    result = LimitsMap(table, [float(a) for a in foundation_angles], tolerance, notes=notes)
    result.verdict = verdict(result)
    return result


def _representative_seeds(at_target: pd.DataFrame, target: float) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """Per method, the trials (indexed by seed) of its configuration chosen on validation at `target`."""
    stats = seed_statistics(at_target)
    chosen = representatives(stats, target=target)
    ids = configuration_ids(at_target, config_columns(at_target))
    per_seed, labels = {}, {}
    for method in chosen.index if not chosen.empty else []:
        members = at_target[ids == int(chosen.loc[method, "config_id"])]
        per_seed[method] = members.drop_duplicates("seed").set_index("seed")
        labels[method] = str(chosen.loc[method, "label"])
    return per_seed, labels


def _row(
    target: float, method: str, label: str, trials: pd.DataFrame, frozen: pd.DataFrame, foundation: Sequence[float]
) -> dict:
    metric = accuracy_name(target)
    seeds = trials.index.intersection(frozen.index)
    accuracy = pd.to_numeric(trials.loc[seeds, metric], errors="coerce")
    gain = accuracy - pd.to_numeric(frozen.loc[seeds, metric], errors="coerce")
    kept = [a for a in foundation if a != target and accuracy_name(a) in trials.columns]
    if kept:  # per seed: the mean over the foundation's other modes of (method - Frozen)
        deltas = [
            pd.to_numeric(trials.loc[seeds, accuracy_name(a)], errors="coerce")
            - pd.to_numeric(frozen.loc[seeds, accuracy_name(a)], errors="coerce")
            for a in kept
        ]
        retention = pd.concat(deltas, axis=1).mean(axis=1)
    else:
        retention = pd.Series(dtype=float)
    params = pd.to_numeric(trials.get("trainable_params", pd.Series(dtype=float)), errors="coerce").median()
    return {
        "target": target, "method": method, "label": label, "n": int(gain.notna().sum()),
        "acc_mean": accuracy.mean(), "acc_std": _std(accuracy),
        "gain_mean": gain.mean(), "gain_std": _std(gain),
        "gain_ci95": t_half_width(_std(gain), int(gain.notna().sum())),
        "params": params, "retention_mean": retention.mean() if len(retention) else math.nan,
        "retention_std": _std(retention), "gain_by_seed": gain.dropna().to_dict(),
    }  # fmt: skip


def _std(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def paired_gap(limits: LimitsMap, target: float, ahead: str = "lora", behind: str = "taugate") -> float:
    """`ahead`'s gain over Frozen minus `behind`'s at one target (seed means; NaN when either is absent)."""
    table = limits.table
    at = table[table["target"] == target].set_index("method")
    if ahead not in at.index or behind not in at.index:
        return math.nan
    return float(at.loc[ahead, "gain_mean"] - at.loc[behind, "gain_mean"])


def helps(row: pd.Series) -> bool | None:
    """Whether a method helps at a target: its gain's 95% interval lies above 0 (None with < 2 seeds)."""
    if row["n"] < 2 or not math.isfinite(row["gain_ci95"]):
        return None
    return bool(row["gain_mean"] - row["gain_ci95"] > 0)


def verdict(limits: LimitsMap, method: str = "taugate", rival: str = "lora") -> list[str]:
    """Up to which angle `method` stays within the tolerance of `rival`'s gain, and where it stops helping."""
    table = limits.table
    ours = table[table["method"] == method].sort_values("target")
    if ours.empty:
        return [f"No {method} trials: nothing to conclude about it."]
    lines = []
    if (table["method"] == rival).any():
        gaps = [(t, paired_gap(limits, t, rival, method)) for t in ours["target"]]
        gaps = [(t, g) for t, g in gaps if math.isfinite(g)]
        within = [t for t, g in gaps if g <= limits.tolerance]
        outside = [(t, g) for t, g in gaps if g > limits.tolerance]
        rule = f"rule: {rival}'s gain over Frozen minus {method}'s (seed means) <= {limits.tolerance:g}"
        if not outside:
            lines.append(f"{method} stays within {limits.tolerance:g} of {rival} at every target angle studied "
                         f"({', '.join(degrees(t) for t, _ in gaps)}); {rule}.")  # fmt: skip
        else:
            first, gap = outside[0]
            upto = [t for t in within if t < first]
            lead = f"up to {degrees(upto[-1])}" if upto else "at no target below that"
            lines.append(
                f"{method} stays within {limits.tolerance:g} of {rival} {lead}; from {degrees(first)} {rival} leads "
                f"by {gap:.3f} (targets outside the tolerance: "
                f"{', '.join(f'{degrees(t)} ({g:.3f})' for t, g in outside)}); {rule}."
            )
    lines += _share_of_full(limits, ours, method)
    verdicts = [(row["target"], helps(row), row) for _, row in ours.iterrows()]
    helped = [t for t, h, _ in verdicts if h]
    not_helped = [t for t, h, _ in verdicts if h is False]
    rule = "rule: helps where the 95% t-interval of its paired gain over Frozen lies above 0"
    if all(h is None for _, h, _ in verdicts):
        lines.append(f"Where {method} helps is not testable: fewer than two seeds per target ({rule}).")
        return lines
    stops = None
    for t, h, _ in reversed(verdicts):  # the smallest target from which it helps at no larger target
        if h:
            break
        stops = t
    cells = "; ".join(f"{degrees(t)} {r['gain_mean']:+.3f} ± {r['gain_ci95']:.3f}" for t, _, r in verdicts)
    text = (f"{method} helps at {', '.join(map(degrees, helped)) or 'no target'}"
            f"{'; not at ' + ', '.join(map(degrees, not_helped)) if not_helped else ''}.")  # fmt: skip
    if not not_helped:
        text += " It helps at every target studied."
    elif stops is not None and helped:
        text += f" It stops helping from {degrees(stops)} on."
    lines.append(f"{text} Gain over Frozen (mean ± 95% CI): {cells}; {rule}.")
    return lines


def _share_of_full(limits: LimitsMap, ours: pd.DataFrame, method: str, ceiling: str = "full") -> list[str]:
    """How much of what full fine-tuning gains `method` recovers, per target: where the frozen base
    lacks the features a mode needs, only changing the weights recovers them (RQ4)."""
    table = limits.table
    full = table[table["method"] == ceiling].set_index("target")
    shares = [(t, g / full.loc[t, "gain_mean"]) for t, g in zip(ours["target"], ours["gain_mean"], strict=True)
              if t in full.index and full.loc[t, "gain_mean"] > 0]  # fmt: skip
    if not shares:
        return []
    low = [t for t, share in shares if share < SMALL_SHARE]
    cells = "; ".join(f"{degrees(t)} {share:.0%}" for t, share in shares)
    by_seed = ours.set_index("target")["gain_by_seed"]
    spreads = []  # the same share seed by seed (paired), its sample std: the spread beside each mean
    for t, _ in shares:
        ceiling_gains = full.loc[t, "gain_by_seed"]
        per_seed = [g / ceiling_gains[s] for s, g in by_seed[t].items() if ceiling_gains.get(s, 0) > 0]
        spreads.append(f"{degrees(t)} {np.std(per_seed, ddof=1):.0%}" if len(per_seed) > 1 else f"{degrees(t)} -")
    where = (f"below {SMALL_SHARE:.0%} at {', '.join(map(degrees, low))}" if low
             else f"at least {SMALL_SHARE:.0%} at every target")  # fmt: skip
    return [f"Share of {ceiling} fine-tuning's gain over Frozen that {method} recovers (seed means): {cells}; "
            f"{where} (rule: the share is below {SMALL_SHARE:.0%}); seed std of the per-seed share: "
            f"{'; '.join(spreads)}. Read: where the share falls, the gain "
            f"needs changed weights, features the frozen base lacks."]  # fmt: skip
