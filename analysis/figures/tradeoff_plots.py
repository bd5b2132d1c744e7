"""Trade-off figures over configurations: Pareto fronts, sensitivity to one hyperparameter, LoRA rank,
accuracy against trainable parameters (conventions: `analysis.figures.canvas`).

Figures are built on `matplotlib.figure.Figure` with the Agg canvas directly, never through
pyplot: no global backend switch, no open-figure registry to leak, safe in a Ray worker or a
notebook. Every function returns the written path, or None when the study lacks the data the
figure needs (a smoke study with two seeds and no sweep): a missing figure is not an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from analysis.aggregate.pareto import PARAMETERS, Objective, with_sparsity
from analysis.figures.canvas import _PALETTE, _params_axis, _save, _values, method_colour
from analysis.table.results import METHOD_ORDER, SYMBOLS, config_columns, format_value, is_missing
from analysis.table.study_modes import StudyModes, study_modes


def plot_pareto(front: pd.DataFrame, objectives: Sequence[Objective], path: Path, title: str = "") -> Path | None:
    """A front from `analysis.aggregate.pareto.pareto_sets`: every configuration with its seed std as
    error bars, front members ringed and joined. The first objective is the y axis; with three
    objectives the third is the point colour."""
    y_obj, x_obj = objectives[0], objectives[1]
    x, y = _values(front, f"{x_obj.metric}_mean"), _values(front, f"{y_obj.metric}_mean")
    colour_obj = objectives[2] if len(objectives) > 2 else None
    c = _values(front, f"{colour_obj.metric}_mean") if colour_obj else np.zeros(len(front))
    finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(c)
    if finite.sum() < 2:
        return None
    rows = front[finite]
    x, y, c = x[finite], y[finite], c[finite]
    on_front = rows["on_front"].to_numpy(dtype=bool)
    x_err, y_err = _values(rows, f"{x_obj.metric}_std"), _values(rows, f"{y_obj.metric}_std")

    fig = Figure(figsize=(7.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    colours = [method_colour(m) for m in rows["method"]]
    ax.errorbar(x, y, xerr=np.nan_to_num(x_err), yerr=np.nan_to_num(y_err), fmt="none", ecolor="#999", lw=0.8, zorder=1)
    if colour_obj:
        points = ax.scatter(x, y, c=c, cmap="viridis", s=45, zorder=2)
        fig.colorbar(points, ax=ax, label=colour_obj.label)
    else:
        ax.scatter(x, y, c=colours, s=45, zorder=2)
    ax.scatter(x[on_front], y[on_front], s=160, facecolors="none", edgecolors="black", lw=1.5, zorder=3)
    if not colour_obj:  # with a third objective the front is not a curve in this projection
        order = np.argsort(x[on_front])
        ax.plot(x[on_front][order], y[on_front][order], color="black", lw=0.8, ls="--", zorder=2)
    for xi, yi, label in zip(x[on_front], y[on_front], rows["label"][on_front], strict=True):
        ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(6, 4), fontsize=7)
    if x_obj == PARAMETERS:
        _params_axis(ax, x)
    else:
        ax.set_xlabel(x_obj.label + (" (higher is better)" if x_obj.maximise else " (lower is better)"))
    ax.set_ylabel(y_obj.label)
    if not colour_obj:
        _method_legend(ax, rows["method"], extra_front=True)
    ax.set_title(title or " vs ".join(o.label for o in objectives), fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _method_legend(ax: Axes, methods: pd.Series, extra_front: bool = False) -> None:
    handles = [ax.scatter([], [], color=method_colour(m), s=30, label=m) for m in METHOD_ORDER if m in set(methods)] + [
        ax.scatter([], [], color=method_colour(m), s=30, label=m) for m in sorted(set(methods) - set(METHOD_ORDER))
    ]
    if extra_front:
        handles.append(ax.scatter([], [], s=120, facecolors="none", edgecolors="black", label="on the front"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _series(rows: pd.DataFrame, parameter: str) -> list[tuple[str, pd.DataFrame]]:
    """Lines of a sensitivity plot: configurations that differ only in `parameter`.

    A knob that the parameter determines (LoRA's alpha set equal to the rank) moves with it
    and does not split lines; a knob swept independently does."""
    if rows.empty:
        return []
    others = [c for c in config_columns(rows) if c != parameter]
    text = rows[others].map(format_value) if others else pd.DataFrame(index=rows.index)
    tied = [c for c in others if (text.groupby(rows[parameter])[c].nunique() <= 1).all()]
    others = [c for c in others if c not in tied or c == "method"]
    varying = [c for c in others if text[c].nunique() > 1 and c != "method"]
    key = text[others].agg("|".join, axis=1) if others else pd.Series("", index=rows.index)
    lines = []
    for _, line in rows.groupby(key, sort=False):
        first = line.iloc[0]
        knobs = [f"{SYMBOLS.get(c, c)}={format_value(first[c])}" for c in varying if not is_missing(first[c])]
        name = " ".join([str(first.get("method", "")), *knobs]).strip()
        lines.append((name, line.sort_values(parameter)))
    return lines


def _band(ax: Axes, line: pd.DataFrame, parameter: str, metric: str, colour: str, style: str, name: str) -> bool:
    x, mean, ci = _values(line, parameter), _values(line, f"{metric}_mean"), _values(line, f"{metric}_ci95")
    keep = np.isfinite(x) & np.isfinite(mean)
    if keep.sum() < 2:
        return False
    ax.plot(x[keep], mean[keep], style, color=colour, marker="o", ms=3.5, label=name)
    has_ci = keep & np.isfinite(ci)
    if has_ci.sum() >= 2:
        ax.fill_between(x[has_ci], (mean - ci)[has_ci], (mean + ci)[has_ci], color=colour, alpha=0.15, lw=0)
    return True


SPARSITY_PANEL = ("sparsity", "sparsity (1 - high-activation ratio)")


def accuracy_panels(modes: StudyModes) -> tuple[tuple[str, str], tuple[str, str]]:
    """(metric, axis label) of the target and original modes' accuracies at the study's angles."""
    return (
        (modes.target_metric, f"accuracy, {modes.target_label}"),
        (modes.retention_metric, f"accuracy, {modes.retention_label}"),
    )


def plot_sensitivity(
    stats: pd.DataFrame,
    parameter: str,
    path: Path,
    xscale: str = "log",
    panels: Sequence[tuple[str, str]] | None = None,
) -> Path | None:
    """Seed means of each metric in `panels` (default: both modes' accuracies at the study's
    angles, and sparsity) against one swept knob, a line per setting of the other knobs, with
    95% CI bands (Student t over seeds). `xscale`: "log", "symlog" (when 0 is swept, e.g.
    lambda) or "log2". Skipped unless some line has two values of `parameter`."""
    if parameter not in stats.columns:
        return None
    if panels is None:
        panels = (*accuracy_panels(study_modes(stats)), SPARSITY_PANEL)
    table = with_sparsity(stats)
    rows = table[pd.to_numeric(table[parameter], errors="coerce").notna()]
    lines = [(name, line) for name, line in _series(rows, parameter) if line[parameter].nunique() >= 2]
    if not lines:
        return None
    fig = Figure(figsize=(4.3 * len(panels), 4.0), layout="constrained")
    drawn = 0
    for index, (metric, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        for number, (name, line) in enumerate(lines):
            drawn += _band(ax, line, parameter, metric, _PALETTE[number % len(_PALETTE)], "-", name)
        values = np.unique(pd.to_numeric(rows[parameter]).to_numpy(float))
        if xscale == "symlog":
            positive = values[values > 0]
            ax.set_xscale("symlog", linthresh=float(positive.min()) if len(positive) else 1.0)
        else:
            ax.set_xscale("log", base=2 if xscale == "log2" else 10)
        # ticks at the swept values, written as the spec writes them (1, 3, 10, 30; not 10^0.5)
        ax.set_xticks(values, [format_value(v) for v in values])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(f"{parameter} ({SYMBOLS.get(parameter, parameter)})")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines and index == 0:
            ax.legend(fontsize=7)
    if not drawn:
        return None
    fig.suptitle(f"Sensitivity to {parameter} (mean over seeds, 95% CI bands)", fontsize=10)
    return _save(fig, path)


def plot_lora_rank(stats: pd.DataFrame, path: Path, modes: StudyModes | None = None) -> Path | None:
    """LoRA accuracy against its rank (log2 axis): what each doubling of adapter size buys."""
    lora = stats[stats["method"] == "lora"] if "method" in stats.columns else stats.iloc[0:0]
    panels = accuracy_panels(modes or study_modes(stats))
    return plot_sensitivity(lora, "lora_rank", path, xscale="log2", panels=panels)


def plot_accuracy_vs_params(stats: pd.DataFrame, path: Path, modes: StudyModes | None = None) -> Path | None:
    """Every configuration of every method: accuracy on both modes (the study's, by default)
    against trainable parameters (log scale), error bars = seed std. The efficiency picture of RQ2."""
    x = _values(stats, "trainable_params_mean")
    panels = accuracy_panels(modes or study_modes(stats))
    if (np.isfinite(x) & np.isfinite(_values(stats, f"{panels[0][0]}_mean"))).sum() < 2:
        return None
    fig = Figure(figsize=(10.5, 4.2), layout="constrained")
    for index, (metric, label) in enumerate(panels):
        ax = fig.add_subplot(1, 2, index + 1)
        y, err = _values(stats, f"{metric}_mean"), _values(stats, f"{metric}_std")
        keep = np.isfinite(x) & np.isfinite(y)
        for method in pd.unique(stats["method"][keep]):
            sel = keep & (stats["method"] == method).to_numpy()
            ax.errorbar(
                x[sel], y[sel], yerr=np.nan_to_num(err[sel]), fmt="o", color=method_colour(method),
                ms=5, capsize=2, lw=0.8, label=method,
            )  # fmt: skip
        _params_axis(ax, x)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Accuracy against trainable parameters (mean ± seed std)", fontsize=10)
    return _save(fig, path)
