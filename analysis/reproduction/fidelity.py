"""Fidelity to a reference table: how far our numbers are from the paper's (or a user's), per
cell and as one score per protocol, and the choices a calibration makes from those scores.

A cell is one (method, accuracy metric) of the reference, for every method but the baseline.
Each method is represented by its best configuration on validation within a protocol
(`analysis.aggregate.stats.representatives`). Per cell:
- `abs_diff` = |ours - reference|;
- `relative_diff` = (ours_m - ours_baseline) - (ref_m - ref_baseline): the gap in what the method
  adds over the baseline, which a shift of the whole table (a different data subset) leaves alone;
- `z` = (ours - reference) / sqrt(std_ours^2 + std_ref^2), from each table's seed std: the gap in
  units of the spread of a difference of single runs (`analysis.reproduction.spread`; it does not
  shrink with more seeds, so it is a scale, not a test);
- `z_means` = (ours - reference) / sqrt(std_ours^2/n + std_ref^2/n_ref): the gap in standard errors
  of the difference of the two means, with our seeds as n and the reference's `reference_n`
  assumed (`spread.ASSUMED_REFERENCE_N`: the paper does not give it).
The score of a protocol is the mean |relative_diff| over the cells (8 for the paper: four
methods x acc_0, acc_45); undefined when a cell is missing, since fewer cells would score lower.

The score on test metrics is reported; the score on validation metrics (ours read from
`val_acc_*`, compared with the reference's cells) is the one a calibration chooses by.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.aggregate.stats import representatives
from analysis.paper.reference import Reference, load_reference, reference_mismatch
from analysis.reproduction.spread import ASSUMED_REFERENCE_N, single_run_spread, standard_error
from analysis.table.protocols import Protocol, protocols, single_protocol, validation_view, within_protocol
from analysis.table.results import config_columns, protocol_columns
from analysis.table.study_modes import StudyModes, study_modes
from trainables.config import validation_name

CELL_COLUMNS = (
    "method", "label", "metric", "column", "configuration", "n", "ours_mean", "ours_std",
    "reference_mean", "reference_std", "reference_n", "abs_diff", "relative_diff", "z", "z_means",
)  # fmt: skip
RATIO_METRIC = "val_high_activation_ratio"
RATIO_TOLERANCE = 0.05


def as_reference(reference: Reference | str | Path) -> Reference:
    """A `Reference`, loading it when given a shipped name or a path."""
    return reference if isinstance(reference, Reference) else load_reference(reference)


def fidelity_cells(
    stats: pd.DataFrame,
    reference: Reference | str | Path,
    *,
    validation: bool,
    methods: Iterable[str] | None = None,
    protocol: Protocol | None = None,
    target: float | None = None,
) -> pd.DataFrame:
    """One row per (method, accuracy metric) of the reference (`CELL_COLUMNS`, see the module
    docstring), for `methods` (default: every non-baseline method of the reference) on a
    `seed_statistics` table of one protocol (`protocol` picks it from a table holding several).
    `validation` reads our `val_acc_*` instead of `acc_*`. A method absent from the study keeps
    its row with NaN for ours. A study whose target (`target`, by default its own) or original
    angle is not the reference's has no cells (`analysis.paper.reference.reference_mismatch`): the
    reference's accuracies are not its."""
    reference = as_reference(reference)
    modes = study_modes(stats)
    if target is not None:
        modes = StudyModes(float(target), modes.retention, modes.notes)
    if reference_mismatch(reference, modes):
        return pd.DataFrame(columns=list(CELL_COLUMNS))
    target = modes.target
    _, stats = single_protocol(stats, protocol)
    chosen = representatives(stats, prefer=reference.settings(), target=target) if not stats.empty else pd.DataFrame()
    rows = []
    for method in _cell_methods(reference, methods):
        for metric in reference.accuracy_metrics():
            if reference.cell(method, metric) is not None:
                rows.append(_cell(chosen, reference, method, metric, validation))
    return pd.DataFrame(rows, columns=list(CELL_COLUMNS))


def _cell_methods(reference: Reference, methods: Iterable[str] | None) -> list[str]:
    wanted = list(reference.methods) if methods is None else list(methods)
    unknown = [m for m in wanted if m not in reference.methods]
    if unknown:
        raise ValueError(f"reference {reference.name} has no method {', '.join(unknown)}")
    return [m for m in wanted if m != reference.baseline]


def _cell(chosen: pd.DataFrame, reference: Reference, method: str, metric: str, validation: bool) -> dict[str, Any]:
    column = validation_name(metric) if validation else metric
    ref, ref_base = reference.cell(method, metric), reference.cell(reference.baseline, metric)
    ours_mean, ours_std, n = _ours(chosen, method, column)
    base_mean = _ours(chosen, reference.baseline, column)[0]
    ref_std = ref.std if ref.std is not None else 0.0
    spread = single_run_spread(ours_std, ref_std)
    se = standard_error([(ours_std, n), (ref_std, ASSUMED_REFERENCE_N)])
    return {
        "method": method,
        "label": reference.methods[method].label,
        "metric": metric,
        "column": column,
        "configuration": chosen.loc[method, "label"] if method in chosen.index else None,
        "n": n,
        "ours_mean": ours_mean,
        "ours_std": ours_std,
        "reference_mean": ref.mean,
        "reference_std": ref.std,
        "reference_n": ASSUMED_REFERENCE_N,
        "abs_diff": abs(ours_mean - ref.mean),
        "relative_diff": (ours_mean - base_mean) - (ref.mean - ref_base.mean) if ref_base else math.nan,
        "z": (ours_mean - ref.mean) / spread if spread > 0 else math.nan,
        "z_means": (ours_mean - ref.mean) / se if se > 0 else math.nan,
    }


def _ours(chosen: pd.DataFrame, method: str, column: str) -> tuple[float, float, int]:
    """(mean, std, n) of a representative's metric; NaN and 0 when the method or metric is absent."""
    if method not in chosen.index or f"{column}_mean" not in chosen.columns:
        return math.nan, math.nan, 0
    row = chosen.loc[method]
    return float(row[f"{column}_mean"]), float(row[f"{column}_std"]), int(row[f"{column}_n"])


def score(cells: pd.DataFrame) -> float:
    """Mean |baseline-relative gap| over the cells; NaN when any cell is missing or there are none."""
    gaps = cells["relative_diff"].astype(float)
    return float(gaps.abs().mean()) if len(gaps) and gaps.notna().all() else math.nan


def protocol_scores(
    stats: pd.DataFrame,
    reference: Reference | str | Path,
    *,
    validation: bool,
    methods: Iterable[str] | None = None,
    target: float | None = None,
) -> pd.DataFrame:
    """One row per protocol of the table: its fields, `score` (see `score`), `cells` and
    `missing` (cells without our number), each method's representative chosen within it."""
    methods = None if methods is None else list(methods)
    rows = []
    for protocol in protocols(stats):
        cells = fidelity_cells(
            within_protocol(stats, protocol), reference, validation=validation, methods=methods, target=target
        )
        missing = int(cells["relative_diff"].isna().sum())
        rows.append(protocol | {"score": score(cells), "cells": len(cells), "missing": missing})
    return pd.DataFrame(rows, columns=[*protocol_columns(stats), "score", "cells", "missing"])


@dataclass(frozen=True)
class ProtocolChoice:
    """The protocol a calibration chose (None when no protocol has every fitted cell), the
    validation ranking it was chosen from (best first), and which methods were fitted."""

    protocol: Protocol | None
    ranking: pd.DataFrame
    fitted: list[str]
    held_out: list[str] = field(default_factory=list)


def choose_protocol(
    stats: pd.DataFrame,
    reference: Reference | str | Path,
    *,
    held_out: Sequence[str],
    target: float | None = None,
) -> ProtocolChoice:
    """The protocol with the lowest validation score over the reference's methods minus
    `held_out` (ties: the first in protocol order, the smallest settings).

    It reads a copy of the table without the held-out methods' rows and without any column
    derived from a test metric, so neither can sway the choice: the held-out rows stay a
    prediction, and test metrics stay reported only.
    """
    reference = as_reference(reference)
    held_out = list(held_out)
    if reference.baseline in held_out:
        raise ValueError(f"the baseline {reference.baseline!r} cannot be held out: every cell is relative to it")
    fitted = [m for m in reference.methods if m != reference.baseline and m not in held_out]
    visible = stats[~stats["method"].isin(held_out)] if "method" in stats.columns else stats
    ranking = protocol_scores(validation_view(visible), reference, validation=True, methods=fitted, target=target)
    ranking = ranking.sort_values("score", na_position="last", kind="stable").reset_index(drop=True)
    chosen = len(ranking) and np.isfinite(ranking["score"].iloc[0])
    protocol = protocols(ranking.iloc[[0]])[0] if chosen else None
    return ProtocolChoice(protocol, ranking, fitted, held_out)


@dataclass(frozen=True)
class RatioChoice:
    """The configuration whose validation high-activation ratio is closest to a target."""

    configuration: pd.Series | None  # its row of the statistics table (config columns, label, ratio)
    ratio: float  # seed mean of val_high_activation_ratio
    std: float
    gap: float  # |ratio - target|
    within: bool  # gap <= tolerance: else the target is out of reach under this protocol
    target: float
    tolerance: float
    candidates: pd.DataFrame  # every configuration considered, with its ratio


def choose_by_ratio(
    stats: pd.DataFrame,
    method: str,
    *,
    target: float,
    protocol: Protocol | None = None,
    tolerance: float = RATIO_TOLERANCE,
) -> RatioChoice:
    """The configuration of `method` (e.g. its lambda) whose mean `val_high_activation_ratio`
    is closest to `target` (ties: the smaller sparsity weight), within one protocol. It reads
    the config columns and that ratio only; `within` says whether the closest is within
    `tolerance`, so a report can say the target is out of reach."""
    _, rows = single_protocol(stats, protocol)
    rows = rows[rows["method"] == method] if "method" in rows.columns else rows.iloc[0:0]
    ratio = [f"{RATIO_METRIC}_{s}" for s in ("mean", "std", "n") if f"{RATIO_METRIC}_{s}" in rows.columns]
    keep = [c for c in (*config_columns(rows), "label", "config_id") if c in rows.columns]
    candidates = rows[keep + ratio].copy()
    if f"{RATIO_METRIC}_mean" not in candidates.columns:
        candidates[f"{RATIO_METRIC}_mean"] = np.nan
    candidates = candidates[candidates[f"{RATIO_METRIC}_mean"].notna()]
    candidates["gap"] = (candidates[f"{RATIO_METRIC}_mean"].astype(float) - target).abs()
    order = ["gap", "sparsity_weight"] if "sparsity_weight" in candidates.columns else ["gap"]
    candidates = candidates.sort_values(order, kind="stable").reset_index(drop=True)
    if candidates.empty:
        return RatioChoice(None, math.nan, math.nan, math.nan, False, target, tolerance, candidates)
    best = candidates.iloc[0]
    std = float(best.get(f"{RATIO_METRIC}_std", math.nan))
    return RatioChoice(
        best, float(best[f"{RATIO_METRIC}_mean"]), std, float(best["gap"]), bool(best["gap"] <= tolerance),
        target, tolerance, candidates,
    )  # fmt: skip
