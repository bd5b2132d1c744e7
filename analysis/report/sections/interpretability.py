"""The report's "Interpretability" section: which neurons the study's original and target modes use."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from analysis.aggregate.stats import best_configuration
from analysis.figures import gate_plots
from analysis.per_mode.interpret import interpret_configurations
from analysis.report.sections.blocks import STD, FigureEntry, Table
from analysis.report.sections.fidelity_section import Setting
from analysis.table.results import config_columns, configuration_ids, ok_rows
from analysis.table.study_modes import degrees


def interpretability_section(
    df: pd.DataFrame,
    stats: pd.DataFrame,
    setting: Setting,
    gate_stats: dict[str, Any],
    figure: Callable[..., FigureEntry],
) -> dict[str, Any]:
    """Heatmaps of one TauGate trial (the best configuration on validation of the target mode,
    lowest seed with statistics) and the mode-exclusive neuron counts and Jaccard overlap of
    every configuration with statistics, for the study's original and target modes."""
    modes = setting.modes
    a, b = modes.keys  # gate-statistics keys of the original and target modes
    reported = setting.stats
    best = best_configuration(reported, "taugate", target=modes.target) if not reported.empty else None
    trial, trial_note = None, ""
    if best is not None and gate_stats:
        ids = configuration_ids(df, config_columns(df))
        members = ok_rows(df[ids == int(best["config_id"])]).sort_values("seed")
        for _, row in members.iterrows():
            if str(row["trial_id"]) in {str(k) for k in gate_stats}:
                trial = {str(k): v for k, v in gate_stats.items()}[str(row["trial_id"])]
                trial_note = f"{best['label']}, seed {row['seed']} (trial {row['trial_id']})"
                break
    heatmap = figure(
        "gate-heatmaps",
        f"TauGate firing rates by mode and class: {trial_note}" if trial_note else "TauGate firing rates",
        lambda path: (
            gate_plots.plot_gate_heatmaps(trial, path, title=f"Firing rates, {trial_note}", modes=(a, b))
            if trial
            else None
        ),
        "no gate statistics for a finished TauGate trial",
    )
    summary = interpret_configurations(df, gate_stats, a, b) if gate_stats else pd.DataFrame()
    at_a, at_b = degrees(modes.retention), degrees(modes.target)
    table = Table(
        "interpretability-table",
        ["configuration", "trials", f"active at {at_a} ({STD})", f"active at {at_b} ({STD})",
         f"exclusive to {at_a} ({STD})", f"exclusive to {at_b} ({STD})", f"Jaccard (active sets; {STD})"],
    )  # fmt: skip
    if not summary.empty:
        labelled = summary.merge(stats[["config_id", "label"]], on="config_id", how="left")
        order = {cid: i for i, cid in enumerate(stats["config_id"])}
        labelled = labelled.sort_values("config_id", key=lambda s: s.map(order))
        for _, row in labelled.iterrows():

            def cell(name: str, digits: int = 1, row: pd.Series = row) -> str:
                std = row[f"{name}_std"]
                spread = "" if math.isnan(std) else f" ± {std:.{digits}f}"
                return f"{row[f'{name}_mean']:.{digits}f}{spread}"

            table.add([
                row["label"], row["n"], cell(f"active_{a}"), cell(f"active_{b}"),
                cell(f"exclusive_{a}"), cell(f"exclusive_{b}"), cell("jaccard", 2),
            ], highlight=str(row["label"]).startswith("taugate"))  # fmt: skip
    return {"figure": heatmap, "table": table, "modes": (at_a, at_b)}
