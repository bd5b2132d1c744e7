"""Neuron-level reading of the hard-gated subnetwork (RQ3): which neurons each mode uses.

Input is a trial's gate statistics (`gate_stats.json`, written by `trainables.engine.trial`):
`{"method": ..., "modes": {"0": {"rate": [[layer 0 rates], [layer 1 rates]], ...}, "45": ...}}`
(one key per evaluated angle, `trainables.config.angle_key`) where a rate is the fraction of a
mode's test digits on which the neuron fires. The two modes compared are the study's original
and target modes (`analysis.table.study_modes.study_modes`). A neuron is
named `(layer, index)`. Neuron identities only mean something within one foundation, so
interpretations are computed per trial and only their summaries are averaged over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis.table.results import config_columns, configuration_ids, ok_rows
from analysis.table.study_modes import study_modes

ACTIVE = 0.5  # fires on at least half of a mode's digits
SILENT = 0.1  # fires on at most a tenth

Neuron = tuple[int, int]  # (layer, index)
GateStats = Mapping[str, Any]


def rates(gate_stats: GateStats, mode: str) -> list[np.ndarray]:
    """Per-layer firing rates of one mode (KeyError naming the available modes if absent)."""
    modes = gate_stats["modes"]
    if mode not in modes:
        raise KeyError(f"mode {mode!r} not in gate statistics (modes: {', '.join(modes)})")
    return [np.asarray(layer, dtype=float) for layer in modes[mode]["rate"]]


def active_set(gate_stats: GateStats, mode: str, threshold: float = ACTIVE) -> set[Neuron]:
    """Neurons that fire on at least `threshold` of the mode's digits."""
    return {
        (layer, int(index))
        for layer, rate in enumerate(rates(gate_stats, mode))
        for index in np.flatnonzero(rate >= threshold)
    }


def mode_exclusive_neurons(
    gate_stats: GateStats, mode: str, other: str, active: float = ACTIVE, silent: float = SILENT
) -> set[Neuron]:
    """Neurons used by `mode` and not by `other`: rate >= `active` in `mode`, <= `silent` in `other`.

    The gap between the two thresholds keeps neurons that merely fire a bit less in the other
    mode out of the count: a mode-exclusive neuron is one the other mode essentially switches off.
    """
    here, there = rates(gate_stats, mode), rates(gate_stats, other)
    return {
        (layer, int(index))
        for layer, (a, b) in enumerate(zip(here, there, strict=True))
        for index in np.flatnonzero((a >= active) & (b <= silent))
    }


def jaccard(a: set[Any], b: set[Any]) -> float:
    """|a & b| / |a | b|; two empty sets are identical, so 1.0."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def mode_overlap(gate_stats: GateStats, mode: str, other: str, threshold: float = ACTIVE) -> float:
    """Jaccard overlap of the two modes' active sets: 1 = the same subnetwork, 0 = disjoint."""
    return jaccard(active_set(gate_stats, mode, threshold), active_set(gate_stats, other, threshold))


def interpret_trial(
    gate_stats: GateStats,
    mode: str,
    other: str,
    active: float = ACTIVE,
    silent: float = SILENT,
) -> dict[str, float]:
    """The per-trial numbers the report shows for two modes (the original `mode`, the target
    `other`): active-set sizes, mode-exclusive counts, Jaccard."""
    return {
        f"active_{mode}": len(active_set(gate_stats, mode, active)),
        f"active_{other}": len(active_set(gate_stats, other, active)),
        f"exclusive_{mode}": len(mode_exclusive_neurons(gate_stats, mode, other, active, silent)),
        f"exclusive_{other}": len(mode_exclusive_neurons(gate_stats, other, mode, active, silent)),
        "jaccard": mode_overlap(gate_stats, mode, other, active),
    }


def interpret_configurations(
    df: pd.DataFrame,
    gate_stats: Mapping[str, GateStats],
    mode: str | None = None,
    other: str | None = None,
    active: float = ACTIVE,
    silent: float = SILENT,
) -> pd.DataFrame:
    """Per configuration: mean and sample std over seeds of `interpret_trial`'s numbers, by
    default for the study's original and target modes (`analysis.table.study_modes.study_modes(df)`).

    Uses the ok trials that have gate statistics holding both modes (keys of `gate_stats` are
    trial ids, compared as strings). Columns: `config_id` (as in `seed_statistics`), `n`, and
    `<quantity>_mean` / `<quantity>_std`. Empty when no trial qualifies.
    """
    default_mode, default_other = study_modes(df).keys
    mode, other = mode or default_mode, other or default_other
    stats_by_id = {str(k): v for k, v in gate_stats.items()}
    ids = configuration_ids(df, config_columns(df))
    records = []
    for index, row in ok_rows(df).iterrows():
        trial = stats_by_id.get(str(row.get("trial_id")))
        if not trial or not {mode, other} <= set(trial.get("modes", {})):
            continue
        records.append({"config_id": int(ids[index]), **interpret_trial(trial, mode, other, active, silent)})
    if not records:
        return pd.DataFrame()
    per_trial = pd.DataFrame(records)
    grouped = per_trial.groupby("config_id")
    summary = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    summary.insert(0, "n", grouped.size())
    return summary.reset_index()


def mode_keys(gate_stats: GateStats) -> Sequence[str]:
    """Modes present in a trial's gate statistics, in angle order ("m30" is -30)."""

    def angle(key: str) -> float:
        try:
            return float(key.replace("m", "-").replace("p", "."))
        except ValueError:
            return math.inf

    return sorted(gate_stats.get("modes", {}), key=angle)
