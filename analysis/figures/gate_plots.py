"""Figures of one trial's gates and of the search: neuron firing rates by mode, Optuna's importances."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from analysis.figures.canvas import _PALETTE, _save
from analysis.per_mode.interpret import mode_keys


def plot_gate_heatmaps(
    gate_stats: Mapping[str, Any],
    path: Path,
    title: str = "",
    modes: tuple[str, str] | None = None,
) -> Path | None:
    """Firing rate of every hidden neuron by mode, and by digit class within each mode, for
    one trial; `modes` are the (original, target) mode keys, by default the trial's first two
    in angle order. Neurons are sorted by (target - original) rate, so mode-specific neurons
    gather at the two ends of each layer."""
    available = gate_stats.get("modes", {}) if gate_stats else {}
    if modes is None:
        keys = list(mode_keys(gate_stats or {}))
        if len(keys) < 2:
            return None
        modes = (keys[0], keys[1])
    if not all(m in available and available[m].get("rate") for m in modes):
        return None
    layers = len(available[modes[0]]["rate"])
    has_classes = all(available[m].get("rate_by_class") for m in modes)
    rows = 1 + (len(modes) if has_classes else 0)
    fig = Figure(figsize=(5.5 * layers, 1.3 + 2.2 * rows), layout="constrained")
    axes = fig.subplots(rows, layers, squeeze=False, height_ratios=[0.45] + [1.0] * (rows - 1))
    image = None
    for layer in range(layers):
        by_mode = np.array([available[m]["rate"][layer] for m in modes], dtype=float)
        # target-minus-original rate in coarse bins, then busiest first: shared and silent neurons
        # form blocks between the two mode-specific ends instead of interleaving on noise
        difference, busy = by_mode[1] - by_mode[0], by_mode.mean(axis=0)
        order = np.lexsort((-busy, np.round(difference * 4) / 4))
        image = axes[0, layer].imshow(by_mode[:, order], aspect="auto", vmin=0, vmax=1, cmap="viridis")
        axes[0, layer].set_yticks(range(len(modes)), [f"{_angle(m)}°" for m in modes])
        axes[0, layer].set_title(f"layer {layer}: firing rate by mode", fontsize=9)
        for row, mode in enumerate(modes if has_classes else (), start=1):
            by_class = np.array(available[mode]["rate_by_class"][layer], dtype=float)
            axes[row, layer].imshow(by_class[:, order], aspect="auto", vmin=0, vmax=1, cmap="viridis")
            axes[row, layer].set_yticks(range(by_class.shape[0]))
            axes[row, layer].set_ylabel("digit class", fontsize=8)
            axes[row, layer].set_title(f"layer {layer}: by class at {_angle(mode)}°", fontsize=9)
        axes[-1, layer].set_xlabel("neuron (sorted by rate difference between the modes, then by rate)")
    fig.colorbar(image, ax=axes, label="firing rate (fraction of test digits)", shrink=0.8)
    fig.suptitle(title or "Which neurons fire in each mode", fontsize=10)
    return _save(fig, path)


def _angle(key: str) -> str:
    return key.replace("m", "-").replace("p", ".")


def plot_param_importances(study: Any, path: Path) -> Path | None:
    """Optuna hyperparameter importances, one panel per objective (`target=` picks each
    objective of a multi-objective study). Skipped when Optuna cannot assess any (too few
    completed trials, or no varied parameter)."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        return None
    names = list(study.metric_names or []) or [f"objective {i}" for i in range(len(study.directions))]
    panels = []
    for index, (name, direction) in enumerate(zip(names, study.directions, strict=True)):
        # PED-ANOVA ranks parameters by what reaches *low* target values: negate maximised objectives
        sign = -1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's experimental-feature notices
                importances = optuna.importance.get_param_importances(
                    study, target=lambda trial, i=index, sign=sign: sign * trial.values[i]
                )
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError):
            continue  # Optuna refuses when the completed trials cannot separate parameters
        if importances and all(math.isfinite(v) for v in importances.values()):
            panels.append((name, importances))
    if not panels:
        return None
    height = max(2.5, 0.35 * max(len(p[1]) for p in panels) + 1.2)
    fig = Figure(figsize=(4.8 * len(panels), height), layout="constrained")
    for index, (name, importances) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        params = list(importances)[::-1]
        ax.barh(params, [importances[p] for p in params], color=_PALETTE[index % len(_PALETTE)])
        ax.set_xlabel("importance (normalised)")
        ax.set_title(f"{name} ({len(complete)} trials)", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle("Optuna hyperparameter importances", fontsize=10)
    return _save(fig, path)
