"""Pareto fronts: which configurations no other configuration beats on every objective at once.

PEFT is a trade-off (accuracy against parameters, sparsity, retention), so "the best method"
is a set, not a point. Fronts are computed on seed means (`analysis.aggregate.stats.seed_statistics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.table.study_modes import StudyModes, study_modes


def pareto_mask(values: np.ndarray, maximise: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of `values` (n points x k objectives).

    A point is dominated iff another point is at least as good in every objective (after
    orienting each by `maximise`) and strictly better in one. Exact duplicates therefore do not
    dominate each other, so both stay. A row with a NaN is never on the front and dominates
    nothing (its position is unknown).
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D (points x objectives), got shape {values.shape}")
    if len(maximise) != values.shape[1]:
        raise ValueError(f"maximise has {len(maximise)} entries for {values.shape[1]} objectives")
    valid = ~np.isnan(values).any(axis=1)
    oriented = values[valid] * np.where(np.asarray(maximise, dtype=bool), 1.0, -1.0)
    on_front = np.ones(len(oriented), dtype=bool)
    # Row by row keeps memory at O(n k) rather than the O(n^2 k) of one broadcast.
    for i, point in enumerate(oriented):
        at_least = (oriented >= point).all(axis=1)
        better = (oriented > point).any(axis=1)
        on_front[i] = not (at_least & better).any()
    mask = np.zeros(len(values), dtype=bool)
    mask[valid] = on_front
    return mask


@dataclass(frozen=True)
class Objective:
    """One axis of a front: a seed-mean column of the statistics table and its direction."""

    metric: str  # metric name; the front reads `<metric>_mean` and the plot `<metric>_std`
    maximise: bool
    label: str


PARAMETERS = Objective("trainable_params", False, "trainable parameters")
SPARSITY = Objective("sparsity", True, "sparsity (1 - high-activation ratio)")
FRONT_NAMES = ("accuracy_vs_params", "accuracy_vs_sparsity", "accuracy_vs_retention", "accuracy_params_sparsity")


def accuracy_objective(modes: StudyModes) -> Objective:
    """Accuracy on the study's target mode (`acc_30` for a study targeting 30 degrees)."""
    return Objective(modes.target_metric, True, f"accuracy, {modes.target_label}")


def retention_objective(modes: StudyModes) -> Objective:
    return Objective(modes.retention_metric, True, f"accuracy, {modes.retention_label}")


def fronts(modes: StudyModes) -> dict[str, tuple[Objective, ...]]:
    """The named fronts (`FRONT_NAMES`) at the study's angles: its objectives, y axis first."""
    accuracy, retention = accuracy_objective(modes), retention_objective(modes)
    return dict(zip(FRONT_NAMES, (
        (accuracy, PARAMETERS), (accuracy, SPARSITY), (accuracy, retention), (accuracy, PARAMETERS, SPARSITY),
    ), strict=True))  # fmt: skip


def with_sparsity(stats: pd.DataFrame) -> pd.DataFrame:
    """Add `sparsity_mean`/`_std`/`_ci95` and `sparsity_source` to a seed-statistics table.

    Sparsity is 1 - high_activation_ratio (the share of hidden units whose hard gate is off,
    the paper's measure) for gated methods. Ungated methods have no gate, so their sparsity is
    1 - active_ratio (the share of units whose ReLU is off): the closest comparable quantity,
    but note it measures the base network's own ReLU sparsity, not a learned gate.
    """
    out = stats.copy()
    gated = _column(out, "high_activation_ratio_mean").notna()
    out["sparsity_source"] = np.where(gated, "high_activation_ratio", "active_ratio")
    for suffix in ("mean", "std", "ci95"):
        ratio = _column(out, f"high_activation_ratio_{suffix}").where(gated, _column(out, f"active_ratio_{suffix}"))
        out[f"sparsity_{suffix}"] = 1.0 - ratio if suffix == "mean" else ratio
    return out


def _column(stats: pd.DataFrame, name: str) -> pd.Series:
    return stats[name].astype(float) if name in stats.columns else pd.Series(np.nan, index=stats.index)


def pareto_sets(stats: pd.DataFrame, modes: StudyModes | None = None) -> dict[str, pd.DataFrame]:
    """The named fronts (`fronts`, at `modes`, by default the study's own) on seed means: per
    front, the statistics table (with sparsity columns, see `with_sparsity`) and an `on_front`
    column. Configurations lacking an objective (e.g. all trials failed) are kept with
    `on_front=False`."""
    table = with_sparsity(stats)
    sets = {}
    for name, objectives in fronts(modes or study_modes(stats)).items():
        values = np.column_stack([_column(table, f"{o.metric}_mean").to_numpy() for o in objectives])
        sets[name] = table.assign(on_front=pareto_mask(values, [o.maximise for o in objectives]))
    return sets
