"""Sections over every configuration at the study's angles: Pareto front tables, the
all-configurations table and the paired significance tables.

"±" is a 95% Student-t half-width over seeds in these tables (the headers say so); the paper,
fidelity, sparsity and interpretability tables show the seed std instead, also said in their headers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from analysis.aggregate.pareto import Objective
from analysis.aggregate.stats import paired_comparisons
from analysis.report.sections.blocks import CI, Table, fmt, mean_ci
from analysis.table.study_modes import StudyModes, degrees


def front_table(name: str, front: pd.DataFrame, objectives: Sequence[Objective]) -> Table:
    """A front's configurations, members first and highlighted; objectives as mean ± 95% CI."""
    headers = [o.label if o.metric == "trainable_params" else f"{o.label} ({CI})" for o in objectives]
    table = Table(f"front-table-{name}", ["configuration", *headers, "on front"])
    for _, row in front.sort_values("on_front", ascending=False, kind="stable").iterrows():
        cells = [
            fmt(row.get("trainable_params_mean"), 0) if o.metric == "trainable_params" else mean_ci(row, o.metric)
            for o in objectives
        ]
        table.add([row["label"], *cells, "yes" if row["on_front"] else ""], highlight=row["on_front"])
    return table


def statistics_table(stats: pd.DataFrame, modes: StudyModes) -> Table:
    """Every configuration: seeds, parameters, and both modes' accuracies, ratios and time as mean ± 95% CI."""
    target, retention = degrees(modes.target), degrees(modes.retention)
    columns = [
        (modes.target_metric, f"acc {target}"), (modes.retention_metric, f"acc {retention}"),
        (f"{modes.target_metric}_hard", f"acc {target} hard"),
        ("high_activation_ratio", "high-act. ratio"), ("active_ratio", "active ratio"),
        ("train_seconds", "train s"),
    ]  # fmt: skip
    headers = [f"{name} ({CI})" for _, name in columns]
    table = Table("seed-statistics-table", ["configuration", "seeds ok / trials", "params", *headers])
    for _, row in stats.iterrows():
        params = row.get("trainable_params_mean")
        table.add([
            row["label"], f"{row['n_ok']} / {row['n_trials']}", fmt(params, 0),
            *(mean_ci(row, metric, 2 if metric == "train_seconds" else 3) for metric, _ in columns),
        ])  # fmt: skip
    return table


def significance_table(df: pd.DataFrame, metric: str, modes: StudyModes) -> dict[str, Any]:
    """Every configuration against the TauGate representative (chosen on the target's validation accuracy)."""
    # one reference for every metric: the TauGate configuration that represents TauGate elsewhere
    comparisons = paired_comparisons(df, reference="taugate", metric=metric, select_by=modes.selection_metric)
    reference = comparisons["reference"].iloc[0] if len(comparisons) else None
    table = Table(
        f"significance-table-{metric.replace('_', '-')}",
        [
            "configuration",
            "pairs",
            "mean",
            "reference mean",
            "difference [95% CI]",
            "d_z",
            "p (paired t, raw)",
            "p (Holm-corrected)",
            "significant (Holm p < 0.05)",
        ],
    )
    for _, row in comparisons.iterrows():
        interval = "" if math.isnan(row["ci_low"]) else f" [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
        table.add(
            [
                row["label"], row["n_pairs"], fmt(row["mean"]), fmt(row["reference_mean"]),
                f"{row['mean_diff']:+.3f}{interval}" if not math.isnan(row["mean_diff"]) else "-",
                "-" if math.isnan(row["d_z"]) else f"{row['d_z']:+.2f}",
                "-" if math.isnan(row["p_value"]) else f"{row['p_value']:.3g}",
                "-" if math.isnan(row["p_holm"]) else f"{row['p_holm']:.3g}",
                "yes" if row["significant"] else "no",
            ],
            highlight=row["significant"],
        )  # fmt: skip
    return {"metric": metric, "reference": reference, "table": table}
