"""Figures of the calibration sections: fidelity over the protocol grid, activation ratio
against lambda, retention against the specialisation budget. Same conventions as
`analysis.figures.canvas`: Agg canvas, no pyplot, None when the study lacks the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from analysis.figures.canvas import _PALETTE, _save, _values, lambda_axis, method_colour
from analysis.figures.tradeoff_plots import _series
from analysis.table.protocols import describe
from analysis.table.results import METHOD_ORDER, format_value

GRID = ("epochs", "lr_scale")  # the axes of a protocol grid; the other protocol fields make panels


def _panels(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) per setting of the protocol fields that are not grid axes."""
    others = [c for c in ("foundation_epochs", "batch_size") if c in table.columns]
    if not others:
        return [("", table)]
    return [(describe(dict(zip(others, key, strict=True))), rows) for key, rows in table.groupby(others, sort=True)]


def plot_protocol_scores(scores: pd.DataFrame, path: Path, column: str = "score") -> Path | None:
    """Heatmap of a fidelity score over epochs x lr_scale, a panel per foundation epochs and batch
    size; lower is closer to the reference. Needs two protocols on the grid."""
    if not set(GRID) <= set(scores.columns) or len(scores) < 2 or not np.isfinite(_values(scores, column)).any():
        return None
    panels = _panels(scores)
    fig = Figure(figsize=(4.6 * len(panels) + 1.0, 3.8), layout="constrained")
    values = _values(scores, column)
    low, high = np.nanmin(values), np.nanmax(values)
    image = None
    for index, (title, rows) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        grid = rows.pivot_table(index="epochs", columns="lr_scale", values=column, aggfunc="min", dropna=False)
        image = ax.imshow(grid.to_numpy(float), origin="lower", cmap="viridis_r", vmin=low, vmax=high, aspect="auto")
        for (row, col), value in np.ndenumerate(grid.to_numpy(float)):
            text = "-" if not np.isfinite(value) else f"{value:.3f}"
            light = np.isfinite(value) and value > (low + high) / 2  # dark cells of viridis_r: white text
            ax.text(col, row, text, ha="center", va="center", fontsize=7, color="white" if light else "black")
        ax.set_xticks(range(grid.shape[1]), [format_value(v) for v in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [format_value(v) for v in grid.index])
        ax.set_xlabel("lr_scale")
        ax.set_ylabel("specialisation epochs")
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=fig.axes, label=f"{column} (lower is closer)")
    fig.suptitle("Fidelity to the reference over the protocol grid", fontsize=10)
    return _save(fig, path)


def plot_ratio_vs_lambda(
    rows: pd.DataFrame, path: Path, target: float | None = None, tolerance: float = 0.0
) -> Path | None:
    """A gated method's activation ratio (hard gate on) against lambda: validation (solid, what
    the choice reads) and test (dashed, reported), mean ± seed std bands; the target band when
    set. Needs one line with two values of lambda."""
    if "sparsity_weight" not in rows.columns:
        return None
    swept = rows[pd.to_numeric(rows["sparsity_weight"], errors="coerce").notna()]
    lines = [(n, line) for n, line in _series(swept, "sparsity_weight") if line["sparsity_weight"].nunique() >= 2]
    if not lines:
        return None
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for number, (name, line) in enumerate(lines):
        colour = _PALETTE[number % len(_PALETTE)]
        x = _values(line, "sparsity_weight")
        for metric, style, split in (("val_high_activation_ratio", "-", "validation"),
                                     ("high_activation_ratio", "--", "test")):  # fmt: skip
            mean, std = _values(line, f"{metric}_mean"), _values(line, f"{metric}_std")
            keep = np.isfinite(mean)
            ax.plot(x[keep], mean[keep], style, color=colour, marker="o", ms=3.5, label=f"{name} ({split})")
            band = keep & np.isfinite(std)
            ax.fill_between(x[band], (mean - std)[band], (mean + std)[band], color=colour, alpha=0.12, lw=0)
    if target is not None:
        ax.axhline(target, color="black", lw=0.8, ls=":", label=f"target {target:g} ± {tolerance:g}")
        ax.axhspan(target - tolerance, target + tolerance, color="black", alpha=0.06, lw=0)
    lambda_axis(ax, _values(swept, "sparsity_weight"))
    ax.set_xlabel("sparsity weight λ")
    ax.set_ylabel("high-activation ratio (hard gate on)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Activation ratio against λ (mean ± seed std)", fontsize=10)
    return _save(fig, path)


def plot_retention_vs_budget(per_protocol: pd.DataFrame, path: Path, metric: str = "acc_0") -> Path | None:
    """`metric` (retention of the original mode) of each method's representative per protocol
    against the budget epochs x lr_scale, mean ± seed std band, a line per method and a panel
    per foundation epochs and batch size. Needs the study to vary epochs or lr_scale."""
    if not set(GRID) <= set(per_protocol.columns) or per_protocol[list(GRID)].drop_duplicates().shape[0] < 2:
        return None
    table = per_protocol.assign(budget=_values(per_protocol, "epochs") * _values(per_protocol, "lr_scale"))
    panels = _panels(table)
    fig = Figure(figsize=(5.2 * len(panels) + 1.2, 4.0), layout="constrained")
    drawn = False
    for index, (title, rows) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        methods = [m for m in METHOD_ORDER if m in set(rows["method"])]
        for method in methods + sorted(set(rows["method"]) - set(methods)):
            line = rows[rows["method"] == method].sort_values(["budget", "epochs"])
            x, mean, std = _values(line, "budget"), _values(line, f"{metric}_mean"), _values(line, f"{metric}_std")
            keep = np.isfinite(x) & np.isfinite(mean)
            if not keep.any():
                continue
            drawn = True
            colour = method_colour(method)
            ax.plot(x[keep], mean[keep], "-", color=colour, marker="o", ms=3.5, label=method)
            band = keep & np.isfinite(std)
            ax.fill_between(x[band], (mean - std)[band], (mean + std)[band], color=colour, alpha=0.15, lw=0)
        ax.set_xscale("log")
        budgets = np.unique(_values(rows, "budget")[np.isfinite(_values(rows, "budget"))])
        ax.set_xticks(budgets, [format_value(v) for v in budgets])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("specialisation budget = epochs x lr_scale (log)")
        ax.set_ylabel(f"{metric} (original mode)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if not drawn:
        return None
    fig.suptitle("Retention against specialisation budget (representatives per protocol, mean ± seed std)", fontsize=10)
    return _save(fig, path)
