"""Figures of the modes study: overlap of the modes' unit sets (`analysis.per_mode.interventions`), the
shared core against the angle between modes, the intervention drops and the limits map.

Built like `analysis.figures.canvas` says: a `Figure` on the Agg canvas, never pyplot; each function returns the
written path, or None when there is nothing to draw.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.aggregate.stats import CORRECTION
from analysis.figures.canvas import _PALETTE, _save, method_colour
from analysis.per_mode.interventions import CAUSAL_P
from analysis.per_mode.limits import BASELINE, LimitsMap
from analysis.table.results import METHOD_ORDER

ATTRIBUTED_COLOUR, RANDOM_COLOUR = _PALETTE[3], _PALETTE[7]
SURVIVES_LABEL = f"{CORRECTION}-corrected p < {CAUSAL_P:g} (attributed drop > random)"


def _degrees(angle: float) -> str:
    return f"{float(angle):g}°"


def plot_jaccard(matrix: pd.DataFrame, path: Path, title: str = "") -> Path | None:
    """The modes' unit-set overlap (Jaccard) as a heatmap with each value written in its cell."""
    if matrix is None or matrix.empty:
        return None
    values = matrix.to_numpy(dtype=float)
    size = 1.6 + 0.7 * len(matrix)
    fig = Figure(figsize=(size + 1.2, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
    labels = [_degrees(a) for a in matrix.index]
    ax.set_xticks(range(len(matrix.columns)), [_degrees(a) for a in matrix.columns])
    ax.set_yticks(range(len(matrix.index)), labels)
    for (row, column), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if value > 0.6 else "white")  # fmt: skip
    ax.set_xlabel("mode (its own adapter)")
    ax.set_ylabel("mode (its own adapter)")
    fig.colorbar(image, ax=ax, label="Jaccard overlap of unit sets", shrink=0.8)
    ax.set_title(title or "Units shared between modes", fontsize=10)
    return _save(fig, path)


def plot_core_by_gap(table: pd.DataFrame, path: Path, title: str = "") -> Path | None:
    """Jaccard overlap (mean, with the min-max range) and shared-core size against the angle between
    two modes: does the core shrink as the modes rotate apart?"""
    if table is None or table.empty:
        return None
    gap = table["gap"].to_numpy(dtype=float)
    fig = Figure(figsize=(7.5, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    mean = table["jaccard_mean"].to_numpy(dtype=float)
    spread = [mean - table["jaccard_min"].to_numpy(dtype=float), table["jaccard_max"].to_numpy(dtype=float) - mean]
    left.errorbar(gap, mean, yerr=spread, marker="o", capsize=3, color=_PALETTE[0])
    left.set_ylim(0, 1.05)
    left.set_ylabel("Jaccard overlap (mean, min-max)")
    core = table["core_mean"].to_numpy(dtype=float)
    core_spread = [core - table["core_min"].to_numpy(dtype=float), table["core_max"].to_numpy(dtype=float) - core]
    right.errorbar(gap, core, yerr=core_spread, marker="s", capsize=3, color=_PALETTE[2])
    right.set_ylim(bottom=0)
    right.set_ylabel("shared core (units both modes use)")
    for ax in (left, right):
        ax.set_xlabel("angle between the two modes (degrees)")
        ax.grid(alpha=0.3)
    fig.suptitle(title or "Shared units against the angle between modes", fontsize=10)
    return _save(fig, path)


def survives_correction(rows: pd.DataFrame) -> np.ndarray:
    """Per row of an intervention summary, whether its test survives the correction: the
    `CORRECTION`-corrected p (`p_holm`) below `CAUSAL_P`. A summary without `p_holm` marks nothing."""
    if "p_holm" not in rows.columns:
        return np.zeros(len(rows), dtype=bool)
    corrected = rows["p_holm"].to_numpy(dtype=float)
    return np.isfinite(corrected) & (corrected < CAUSAL_P)


def _measured(summary: pd.DataFrame | None) -> pd.DataFrame:
    """The summary's modes whose attributed units were measured (the others have nothing to draw)."""
    if summary is None or summary.empty or "own_drop_attributed_mean" not in summary.columns:
        return pd.DataFrame()
    return summary[np.isfinite(summary["own_drop_attributed_mean"].to_numpy(dtype=float))]


def plot_intervention(summary: pd.DataFrame, path: Path, title: str = "") -> Path | None:
    """Per mode, the accuracy drop on the mode itself from silencing its attributed units beside the
    random control of the same size (mean, seed std as error bars; none with one seed), a star above
    each mode whose test survives the multiple-comparison correction (`survives_correction`). Modes
    whose attributed units were never measured are left out."""
    figure = intervention_figure(summary, title)
    return _save(figure, path) if figure is not None else None


def intervention_figure(summary: pd.DataFrame, title: str = "") -> Figure | None:
    """`plot_intervention`'s figure, unsaved (None: nothing to draw)."""
    rows = _measured(summary)
    if rows.empty:
        return None
    position = np.arange(len(rows))
    width = 0.38
    fig = Figure(figsize=(1.8 + 1.1 * len(rows), 3.8), layout="constrained")
    ax = fig.add_subplot()
    _intervention_bars(ax, rows, position, width, capsize=3)
    ticks = [
        f"{_degrees(angle)}\n{units:.3g} units\n{seeds} seed{'s' if seeds != 1 else ''}"
        for angle, units, seeds in zip(rows["silenced"], rows["n_units"], rows["own_drop_attributed_n"], strict=True)
    ]  # mean units over every seed; the bars average the seeds that had any
    ax.set_xticks(position, ticks)
    ax.set_xlabel("silenced mode (drop measured on its own test digits)")
    ax.set_ylabel("accuracy drop, hard gates (mean ± seed std)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "Do the units attributed to a mode carry it?", fontsize=10)
    return fig


def plot_limits(limits: LimitsMap, path: Path) -> Path | None:
    """Gain over Frozen on the target mode (left) and retention of the foundation's modes (right)
    against the target angle: one line per method, bands of ± one seed std."""
    table = limits.table
    methods = [m for m in METHOD_ORDER if m in set(table["method"]) and m != BASELINE]
    methods += sorted(set(table["method"]) - set(methods) - {BASELINE})
    if not methods:
        return None
    fig = Figure(figsize=(11, 4.2))
    gain_axis, retention_axis = fig.subplots(1, 2)
    for method in methods:
        rows = table[table["method"] == method].sort_values("target")
        params = rows["params"].median()
        label = f"{method} ({params:,.0f} params)" if math.isfinite(params) else method
        for axis, column in ((gain_axis, "gain"), (retention_axis, "retention")):
            x = rows["target"].to_numpy(float)
            mean = rows[f"{column}_mean"].to_numpy(float)
            std = np.nan_to_num(rows[f"{column}_std"].to_numpy(float))
            colour = method_colour(method)
            axis.plot(x, mean, marker="o", color=colour, label=label)
            axis.fill_between(x, mean - std, mean + std, color=colour, alpha=0.15, linewidth=0)
    for axis in (gain_axis, retention_axis):
        axis.axhline(0, color="#888", linewidth=0.8)
        for angle in limits.foundation_angles:
            axis.axvline(angle, color="#bbb", linestyle=":", linewidth=1)
        axis.set_xlabel("target angle (degrees; dotted: the foundation's modes)")
        axis.grid(alpha=0.3)
    gain_axis.set_ylabel("gain over Frozen, target mode (test acc)")
    gain_axis.set_title("Specialisation gain vs target angle")
    retention_axis.set_ylabel("Δ acc vs Frozen, the foundation's other modes")
    retention_axis.set_title("Retention of the foundation's own modes")
    gain_axis.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_jaccard_budgets(matrices: dict[str, pd.DataFrame], path: Path) -> Path | None:
    """The modes' unit-set overlap at each budget, one heatmap per budget side by side on one colour scale."""
    matrices = {label: m for label, m in matrices.items() if m is not None and not m.empty}
    if not matrices:
        return None
    size = 1.6 + 0.45 * max(len(m) for m in matrices.values())
    fig = Figure(figsize=(size * len(matrices) + 1.2, size), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(matrices), squeeze=False)[0])
    image = None
    for ax, (label, matrix) in zip(axes, matrices.items(), strict=True):
        values = matrix.to_numpy(dtype=float)
        image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(matrix.columns)), [_degrees(a) for a in matrix.columns], rotation=90, fontsize=7)
        ax.set_yticks(range(len(matrix.index)), [_degrees(a) for a in matrix.index], fontsize=7)
        if len(matrix) <= 8:
            for (row, column), value in np.ndenumerate(values):
                if np.isfinite(value):
                    ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if value > 0.6 else "white")  # fmt: skip
        off = values[~np.eye(len(values), dtype=bool)]
        off = off[np.isfinite(off)]
        span = f"off-diagonal {off.min():.2f}-{off.max():.2f}" if len(off) else ""
        ax.set_title(f"{label}\n{span}", fontsize=9)
    fig.colorbar(image, ax=list(axes), label="Jaccard overlap of unit sets", shrink=0.8)
    fig.suptitle("Units shared between modes, per budget (mean over seeds)", fontsize=10)
    return _save(fig, path)


def plot_intervention_budgets(summaries: dict[str, pd.DataFrame], path: Path) -> Path | None:
    """Per budget (one panel each, one y scale), per mode the own-mode accuracy drop from silencing its
    attributed units beside the random control of the same size (mean, seed std as error bars), a star
    where the mode's test survives the correction (`survives_correction`, within its budget's family)."""
    figure = intervention_budgets_figure(summaries)
    return _save(figure, path) if figure is not None else None


def intervention_budgets_figure(summaries: dict[str, pd.DataFrame]) -> Figure | None:
    """`plot_intervention_budgets`' figure, unsaved (None: nothing to draw)."""
    panels = {label: rows for label, summary in summaries.items() if not (rows := _measured(summary)).empty}
    if not panels:
        return None
    width = 0.38
    most = max(len(rows) for rows in panels.values())
    fig = Figure(figsize=(1.5 + 0.55 * most * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (label, rows) in zip(axes, panels.items(), strict=True):
        position = np.arange(len(rows))
        _intervention_bars(ax, rows, position, width, capsize=2)
        ax.set_xticks(position, [_degrees(a) for a in rows["silenced"]], rotation=90, fontsize=7)
        ax.set_xlabel("silenced mode")
        ax.grid(axis="y", alpha=0.3)
        holds = sum(h is True for h in rows["causal_holds"])
        ax.set_title(f"{label}: carries its mode at {holds} of {len(rows)} ({CORRECTION})", fontsize=9)
    axes[0].set_ylabel("own-mode accuracy drop, hard gates (mean ± seed std)")
    axes[0].legend(fontsize=7)
    return fig


def _intervention_bars(ax, rows, position: np.ndarray, width: float, capsize: int) -> None:
    """Per silenced mode, the own-mode drop of the attributed units beside the random control's (mean ±
    seed std), the zero line, and a star (`SURVIVES_LABEL`, in the legend even when no mode survives)
    above each mode that survives the correction."""
    tops = []
    for offset, kind, colour, label in (
        (-width / 2, "attributed", ATTRIBUTED_COLOUR, "attributed units silenced"),
        (width / 2, "random", RANDOM_COLOUR, "random active units (same number)"),
    ):
        mean = rows[f"own_drop_{kind}_mean"].to_numpy(dtype=float)
        std = np.nan_to_num(rows[f"own_drop_{kind}_std"].to_numpy(dtype=float))
        ax.bar(position + offset, mean, width, yerr=std, capsize=capsize, color=colour, label=label)
        tops.append(np.nan_to_num(mean) + std)
    marked = survives_correction(rows)
    top = np.maximum(*tops)
    lift = 0.05 * max(float(np.max(np.abs(top))), 1e-3)
    ax.plot(position[marked], top[marked] + lift, linestyle="none", marker="*", markersize=10, color="black",
            label=SURVIVES_LABEL, gid="survives-correction")  # fmt: skip
    ax.axhline(0, color="black", linewidth=0.6)
