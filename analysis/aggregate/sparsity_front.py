"""TauGate's sparsity front: its configurations across the budget that moves its gates, and the knee.

A TauGate configuration is a point (validation high-activation ratio, accuracy). Its *budget* is
what bounds how far tau can move (`BUDGET_COLUMNS`: tau's lr multiplier, a per-method lr scale or
epochs, the gate sharpness); lambda (`sparsity_weight`) or a requested ratio (`sparsity_target`)
chooses where on that budget's curve it lands. Everything is read from a `seed_statistics` table
(one row per configuration, seed means with Student-t 95% half-widths, `_ci95`).

The front and the knee are chosen on validation only (validation ratio against validation accuracy
of the target mode); test accuracies of both modes are only reported beside them. Frozen, BitFit and
LoRA have no gates: they stand beside the front as reference levels (their representatives, chosen
on validation accuracy as everywhere in the report).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.aggregate.pareto import pareto_mask
from analysis.aggregate.stats import PAPER_SETTINGS, representatives
from analysis.table.results import SYMBOLS, format_value, is_missing
from analysis.table.study_modes import StudyModes, study_modes

METHOD = "taugate"
RATIO = "val_high_activation_ratio"  # what every choice here reads; `high_activation_ratio` is its test twin
BUDGET_COLUMNS = ("tau_lr_multiplier", "method_lr_scale", "method_epochs", "gate_sharpness")
LAMBDA, TARGET = "sparsity_weight", "sparsity_target"
REFERENCE_METHODS = ("frozen", "bitfit", "lora")
DUAL, SWEEP = "dual ascent", "λ sweep"
# The front is shown when the study records TauGate's budget and its configurations span this much ratio.
MIN_SPAN = 0.1
KNEE_TOLERANCE = 0.01  # validation accuracy the knee may give up against the front's most accurate point
KNEE_RULE = (
    "knee (validation only): on the front of TauGate configurations that no other beats on both validation "
    "ratio (lower) and validation accuracy of the target mode (higher), the sparsest one whose validation "
    f"accuracy (seed mean) is within {KNEE_TOLERANCE:g} of the front's most accurate; sparser than it, accuracy "
    "falls faster than the ratio; none when the front has fewer than 3 configurations"
)


def budget_columns(table: pd.DataFrame) -> list[str]:
    """The budget columns (`BUDGET_COLUMNS`) the table has."""
    return [c for c in BUDGET_COLUMNS if c in table.columns]


def budget_label(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    """ "×τ=25 s=10" (a NaN column, such as no per-method epochs, is left out)."""
    knobs = [f"{SYMBOLS.get(c, c)}={format_value(row[c])}" for c in columns if not is_missing(row.get(c))]
    return " ".join(knobs) or "the study's protocol"


def gated_configurations(stats: pd.DataFrame, method: str = METHOD) -> pd.DataFrame:
    """`method`'s configurations with a validation ratio, plus `budget` (its label, see
    `budget_label`) and `source` (`DUAL` when it requested a ratio, else `SWEEP`: lambda fixed)."""
    if "method" not in stats.columns or f"{RATIO}_mean" not in stats.columns:
        return stats.iloc[0:0].assign(budget=pd.Series(dtype=object), source=pd.Series(dtype=object))
    rows = stats[(stats["method"] == method) & numeric_column(stats, f"{RATIO}_mean").notna()].copy()
    columns = budget_columns(rows)
    rows["budget"] = [budget_label(row, columns) for _, row in rows.iterrows()]
    requested = numeric_column(rows, TARGET).notna()
    rows["source"] = np.where(requested, DUAL, SWEEP)
    # budgets in the order of their values (x5 before x25), then by ratio
    return rows.sort_values([*columns, f"{RATIO}_mean"], kind="stable", na_position="first").reset_index(drop=True)


def has_sparsity_front(stats: pd.DataFrame, method: str = METHOD, span: float = MIN_SPAN) -> bool:
    """True when the table records TauGate's budget (`tau_lr_multiplier`; an older study has no such
    column) and `method` has at least 3 configurations whose validation ratios span at least `span`: only
    then is there a front."""
    if "tau_lr_multiplier" not in stats.columns:
        return False
    ratios = numeric_column(gated_configurations(stats, method), f"{RATIO}_mean").dropna()
    return len(ratios) >= 3 and float(ratios.max() - ratios.min()) >= span


def knee_index(ratio: Sequence[float], accuracy: Sequence[float], tolerance: float = KNEE_TOLERANCE) -> int | None:
    """Position of the knee of the (ratio, accuracy) points (see `KNEE_RULE`), or None."""
    ratio, accuracy = np.asarray(ratio, dtype=float), np.asarray(accuracy, dtype=float)
    front = np.flatnonzero(pareto_mask(np.column_stack([ratio, accuracy]), [False, True]))
    if len(front) < 3:
        return None
    close = front[accuracy[front] >= accuracy[front].max() - tolerance]
    return int(close[np.argmin(ratio[close])])


@dataclass(frozen=True)
class SparsityFront:
    """TauGate's configurations (`table`: `gated_configurations` plus `on_front` and `knee`), the
    knee's row (None: `knee_why` says why), the reference methods' representatives and the modes."""

    table: pd.DataFrame
    knee: pd.Series | None
    knee_why: str
    references: pd.DataFrame
    modes: StudyModes

    @property
    def budgets(self) -> list[str]:
        return list(dict.fromkeys(self.table["budget"]))


def sparsity_front(
    stats: pd.DataFrame,
    modes: StudyModes | None = None,
    prefer: Mapping[str, Mapping[str, Any]] = PAPER_SETTINGS,
    method: str = METHOD,
) -> SparsityFront:
    """The front of `method` on a `seed_statistics` table of one protocol, at the study's modes
    (`modes`, by default read from `stats`). `on_front` and the knee read the validation ratio and
    the target's validation accuracy only. References: Frozen, BitFit and LoRA's representatives
    (`analysis.aggregate.stats.representatives`, LoRA at the reference rank `prefer` names)."""
    modes = modes or study_modes(stats)
    rows = gated_configurations(stats, method)
    accuracy = numeric_column(rows, f"{modes.selection_metric}_mean").to_numpy()
    ratio = numeric_column(rows, f"{RATIO}_mean").to_numpy()
    rows["on_front"] = pareto_mask(np.column_stack([ratio, accuracy]), [False, True]) if len(rows) else []
    index = knee_index(ratio, accuracy) if len(rows) else None
    rows["knee"] = [i == index for i in range(len(rows))]
    knee, why = (rows.iloc[index], "") if index is not None else (None, _why_no_knee(rows))
    chosen = representatives(stats, prefer=prefer, target=modes.target) if not stats.empty else pd.DataFrame()
    references = chosen.loc[[m for m in REFERENCE_METHODS if m in chosen.index]] if len(chosen) else chosen
    return SparsityFront(rows, knee, why, references, modes)


def _why_no_knee(rows: pd.DataFrame) -> str:
    return "the validation front has fewer than 3 configurations"


def numeric_column(table: pd.DataFrame, name: str) -> pd.Series:
    """`table[name]` as floats (NaN where absent or not a number)."""
    if name not in table.columns:
        return pd.Series(np.nan, index=table.index, dtype=float)
    return pd.to_numeric(table[name], errors="coerce").astype(float)
