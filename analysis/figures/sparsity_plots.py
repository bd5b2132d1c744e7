"""Figures of TauGate's sparsity front (`analysis.aggregate.sparsity_front`): accuracy of both modes
against the validation ratio per budget with the knee marked and the ungated methods as bands,
and lambda's saturation (ratio against lambda; tau's displacement against its step budget).
Same conventions as `analysis.figures.canvas`: Agg canvas, no pyplot, None when the data is lacking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from analysis.aggregate.sparsity_front import DUAL, LAMBDA, RATIO, REFERENCE_METHODS, SWEEP, SparsityFront
from analysis.figures.canvas import _PALETTE, _save, _values, lambda_axis, method_colour

MARKERS = {SWEEP: "o", DUAL: "^"}
# budgets get colours no reference method wears, so a band is never mistaken for a budget
BUDGET_COLOURS = tuple(c for c in _PALETTE if c not in {method_colour(m) for m in REFERENCE_METHODS})


def _budget_colours(budgets: list[str]) -> dict[str, str]:
    return {budget: BUDGET_COLOURS[i % len(BUDGET_COLOURS)] for i, budget in enumerate(budgets)}


def plot_sparsity_front(front: SparsityFront, path: Path) -> Path | None:
    """Test accuracy on the target and the original mode (a panel each) against the validation
    ratio, mean ± 95% CI bars on both axes, a colour per budget, circles for fixed λ and triangles
    for dual ascent; the knee ringed; Frozen, BitFit and LoRA as lines with their 95% CI bands."""
    rows = front.table
    if len(rows) < 2:
        return None
    modes = front.modes
    fig = Figure(figsize=(11.0, 4.4), layout="constrained")
    colours = _budget_colours(front.budgets)
    for index, (metric, label) in enumerate(((modes.target_metric, modes.target_label),
                                             (modes.retention_metric, modes.retention_label))):  # fmt: skip
        ax = fig.add_subplot(1, 2, index + 1)
        _references(ax, front.references, metric)
        for (budget, source), points in rows.groupby(["budget", "source"], sort=False):
            x, y = _values(points, f"{RATIO}_mean"), _values(points, f"{metric}_mean")
            xerr, yerr = _values(points, f"{RATIO}_ci95"), _values(points, f"{metric}_ci95")
            ax.errorbar(x, y, xerr=np.nan_to_num(xerr), yerr=np.nan_to_num(yerr), fmt=MARKERS[source], ms=5,
                        color=colours[budget], capsize=2, lw=0.8, label=f"{budget} ({source})")  # fmt: skip
            order = np.argsort(x)
            ax.plot(x[order], y[order], "-", color=colours[budget], lw=0.6, alpha=0.5)
        if front.knee is not None:
            kx, ky = float(front.knee[f"{RATIO}_mean"]), float(front.knee.get(f"{metric}_mean", np.nan))
            ax.plot([kx], [ky], "o", ms=14, mfc="none", mec="black", mew=1.5, label="knee (chosen on validation)")
        ax.axvline(0.28, color="black", lw=0.8, ls=":", label="paper's ratio 0.28")
        ax.set_xlabel("validation high-activation ratio (hard gate on)")
        ax.set_ylabel(f"test accuracy, {label}")
        ax.grid(alpha=0.3)
        if index == 1:
            ax.legend(fontsize=6.5, loc="best")
    fig.suptitle("TauGate across its budget: accuracy against sparsity (mean ± 95% CI over seeds)", fontsize=10)
    return _save(fig, path)


def _references(ax: Axes, references: pd.DataFrame, metric: str) -> None:
    for method, row in references.iterrows():
        mean, half = row.get(f"{metric}_mean", np.nan), row.get(f"{metric}_ci95", np.nan)
        if not np.isfinite(float(mean)):
            continue
        colour = method_colour(str(method))
        ax.axhline(float(mean), color=colour, lw=1.0, ls="--", label=f"{row['label']} (no gates)")
        if np.isfinite(float(half)):
            ax.axhspan(float(mean) - float(half), float(mean) + float(half), color=colour, alpha=0.12, lw=0)


def plot_lambda_saturation(rows: pd.DataFrame, path: Path) -> Path | None:
    """Left: validation ratio against λ, a line per budget (fixed-λ configurations, mean ± 95% CI;
    symlog x so λ = 0 stays on the axis). Right: tau's mean displacement against its step budget
    (tau's lr x optimiser steps) per configuration, with the line displacement = budget (Adam's
    bound). Needs one budget with two values of λ."""
    sweep = rows[(rows["source"] == SWEEP) & np.isfinite(_values(rows, LAMBDA))] if len(rows) else rows
    lines = [(b, line.sort_values(LAMBDA)) for b, line in sweep.groupby("budget", sort=False)
             if line[LAMBDA].nunique() >= 2]  # fmt: skip
    if not lines:
        return None
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    colours = _budget_colours(list(dict.fromkeys(rows["budget"])))
    for budget, line in lines:
        x, mean, half = _values(line, LAMBDA), _values(line, f"{RATIO}_mean"), _values(line, f"{RATIO}_ci95")
        ax.errorbar(x, mean, yerr=np.nan_to_num(half), fmt="-o", ms=3.5, capsize=2, color=colours[budget],
                    label=budget)  # fmt: skip
    lambda_axis(ax, _values(sweep, LAMBDA))
    ax.set_xlabel("sparsity weight λ (fixed)")
    ax.set_ylabel("validation high-activation ratio")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="budget", title_fontsize=7)
    ax.set_title("Ratio against λ per budget (mean ± 95% CI)", fontsize=9)

    ax = fig.add_subplot(1, 2, 2)
    step, moved = _values(rows, "tau_step_budget_mean"), _values(rows, "tau_displacement_mean")
    keep = np.isfinite(step) & np.isfinite(moved)
    for budget, points in rows[keep].groupby("budget", sort=False):
        ax.scatter(_values(points, "tau_step_budget_mean"), _values(points, "tau_displacement_mean"), s=18,
                   color=colours[budget], marker="o", label=budget)  # fmt: skip
    if keep.any() and (step[keep] > 0).all():
        bound = np.geomspace(float(step[keep].min()), float(step[keep].max()), 50)
        ax.plot(bound, bound, ":", color="black", lw=0.9, label="displacement = step budget (Adam's bound)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow decade would label every minor tick
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_xticks(sorted({float(v) for v in step[keep]}))
        if (moved[keep] > 0).all():
            ax.set_yscale("log")
        else:  # some tau moved down (gates opening): symlog keeps 0 and the negative side on the axis
            size = np.abs(moved[keep])
            small = size[size > 0].min() if (size > 0).any() else 1.0
            ax.set_yscale("symlog", linthresh=10.0 ** np.floor(np.log10(small)))
        ax.legend(fontsize=7)
    ax.set_xlabel("tau's step budget (tau's lr x optimiser steps, log)")
    ax.set_ylabel("tau's mean displacement (tau - tau₀; > 0 closes gates)")
    ax.grid(alpha=0.3)
    ax.set_title("How far tau moved against how far it could", fontsize=9)
    return _save(fig, path)
