"""The report's "Learning curves" section: each configuration's validation accuracy per epoch (from
the trials' histories), and with an early-stopping scheduler the trial-epochs it saved.

The section is left out of a study that has neither a history nor a scheduler (an older study: its
trials reported once, at the end).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.aggregate.curves import (
    Savings,
    best_per_method,
    curve_summary,
    epoch_curves,
    epoch_rows,
    scheduler_of,
    scheduler_savings,
)
from analysis.figures.canvas import _PALETTE, _save
from analysis.report.sections.blocks import FigureMaker, Table, fmt

TOP_PER_METHOD = 4  # curves per method panel: more than this and the lines are unreadable
BAND = "min-max over seeds"
NO_HISTORY = (
    "No trial of this study recorded a per-epoch history (trials/<key>/history.json): its trials reported once, "
    "at the end, so there are no learning curves."
)


def curves_section(
    df: pd.DataFrame,
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    metadata: Mapping[str, Any],
    figure: FigureMaker,
) -> dict[str, Any]:
    """The section's context: `shown` False for a study without histories or a scheduler; else `available`
    (curves drawn) with `figure`, `table`, `band`, `shown_note`, or `why` not, and `scheduler` (None
    without one) with its `text`, `table`, `stops_table` and `notes`."""
    rows = epoch_rows(df, histories)
    savings = scheduler_savings(df, histories, scheduler_of(metadata.get("spec")))
    if rows.empty and savings is None:
        return {"shown": False}
    section: dict[str, Any] = {"shown": True, "available": False, "why": NO_HISTORY, "band": BAND,
                               "scheduler": scheduler_part(savings) if savings is not None else None}  # fmt: skip
    curves = epoch_curves(rows)
    if curves.empty:
        if not rows.empty:
            section["why"] = "The trials' histories hold no validation accuracy (val_acc) to draw."
        return section
    summary = curve_summary(df, curves, rows)
    drawn = best_per_method(summary, TOP_PER_METHOD)
    shown_ids = {int(i) for rows_ in drawn.values() for i in rows_["config_id"]}
    crowded = [f"{method} ({len(summary[summary['method'] == method])})" for method in drawn
               if (summary["method"] == method).sum() > TOP_PER_METHOD]  # fmt: skip
    section |= {
        "available": True,
        "why": "",
        "trials": int(rows["trial_id"].nunique()),
        "figure": figure(
            "learning-curves",
            f"Validation accuracy (target mode) per epoch: seed mean, band {BAND}",
            lambda path: plot_learning_curves(curves, drawn, path),
            "no configuration has a validation accuracy at any epoch",
        ),
        "table": curves_table(summary, shown_ids if crowded else set()),
        "shown_note": (
            f"Each panel draws at most {TOP_PER_METHOD} configurations of its method, those with the highest final "
            f"mean validation accuracy; the table lists every configuration (highlighted: drawn). More than "
            f"{TOP_PER_METHOD} here: {', '.join(crowded)}."
            if crowded
            else "Every configuration with a history is drawn."
        ),
    }
    return section


def curves_table(summary: pd.DataFrame, shown: set[int]) -> Table:
    """Per configuration: trials with a history, epochs run of planned, the final epoch's mean
    validation accuracy with its band and n, and the epoch of the best mean; `shown` highlighted."""
    table = Table("curves-table", ["configuration", "trials with history", "epochs run / planned",
                                   f"final val_acc (mean [{BAND}], n)", "best epoch (mean val_acc)"])  # fmt: skip
    for _, row in summary.iterrows():
        planned = row["planned_epochs"]
        epochs = f"{row['last_epoch']} / {int(planned) if math.isfinite(planned) else '-'}"
        final = f"{fmt(row['final_mean'])} [{fmt(row['final_min'])}, {fmt(row['final_max'])}], n={row['final_n']}"
        best = f"{row['best_epoch']} ({fmt(row['best_mean'])})"
        table.add([row["label"], row["trials"], epochs, final, best], highlight=int(row["config_id"]) in shown)
    return table


def scheduler_part(savings: Savings) -> dict[str, Any]:
    """The savings sentence, the per-method table (total row highlighted) and the stops histogram."""
    table = Table("scheduler-savings-table", ["method", "trials", "stopped", "trial-epochs spent",
                                              "trial-epochs of the full grid", "saving"])  # fmt: skip
    for _, row in savings.per_method.iterrows():
        table.add([row["method"], row["trials"], row["stopped"], row["spent"], row["planned"],
                   percent(row["spent"], row["planned"])])  # fmt: skip
    totals = savings.per_method[["trials", "stopped"]].sum()
    table.add(["all", int(totals["trials"]), int(totals["stopped"]), savings.spent, savings.planned,
               percent(savings.spent, savings.planned)], highlight=True)  # fmt: skip
    stops = Table("scheduler-stops-table", ["stopped at epoch", "trials"])
    for epoch, count in savings.stops.items():
        stops.add([epoch, count])
    text = (
        f"Scheduler: {savings.scheduler}. The study ran {savings.spent} trial-epochs of the full grid's "
        f"{savings.planned} (every trial for its planned epochs): a saving of "
        f"{percent(savings.spent, savings.planned)}. Trials stopped early: {savings.stopped}."
    )
    return {"text": text, "table": table, "stops_table": stops, "notes": list(savings.notes)}


def percent(spent: float, planned: float) -> str:
    """The saving 1 - spent / planned as a percentage ("-" without a plan)."""
    return f"{100.0 * (1.0 - spent / planned):.1f}%" if planned else "-"


def plot_learning_curves(curves: pd.DataFrame, drawn: Mapping[str, pd.DataFrame], path: Path) -> Path | None:
    """One panel per method: each drawn configuration's seed-mean validation accuracy per epoch, with
    its min-max band over seeds. None when no configuration has a point."""
    panels = [(method, configs) for method, configs in drawn.items() if not configs.empty]
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(4.4 * columns, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, sharey=True, squeeze=False).ravel()  # one y scale: methods compare
    for ax, (method, configs) in zip(axes, panels, strict=False):
        for number, (_, config) in enumerate(configs.iterrows()):
            curve = curves[curves["config_id"] == config["config_id"]].sort_values("epoch")
            colour = _PALETTE[number % len(_PALETTE)]
            x = curve["epoch"].to_numpy(float)
            ax.plot(x, curve["val_acc_mean"].to_numpy(float), color=colour, marker="o", ms=3, lw=1.2,
                    label=config["label"])  # fmt: skip
            ax.fill_between(x, curve["val_acc_min"].to_numpy(float), curve["val_acc_max"].to_numpy(float),
                            color=colour, alpha=0.15, lw=0)  # fmt: skip
        total = curves.loc[curves["method"] == method, "config_id"].nunique()
        ax.set_title(method if total == len(configs) else f"{method} (best {len(configs)} of {total})", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (target mode)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_tick_params(labelleft=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return _save(fig, path)
