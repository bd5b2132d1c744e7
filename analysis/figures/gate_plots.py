"""Figures of one trial's gates and of the search: neuron firing rates by mode, Optuna's importances."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


# Objectives a parameter can change only through the model's shape: the method and its shape fields
# (the registry's `fuse_fields`, such as LoRA's rank), never gate sharpness or sparsity weight.
SHAPE_OBJECTIVES = ("trainable_params",)


def shape_params() -> frozenset[str]:
    """The parameters a trial's trainable-parameter count depends on: its method and the shape fields
    of the registered methods (what `study.spec.plan.trainable_count` counts from)."""
    from trainables import registry

    return frozenset({"method"}).union(*(registry.get(name).fuse_fields for name in registry.names()))


@dataclass(frozen=True)
class ImportancePanel:
    metric: str  # the objective's name
    importances: dict[str, float]  # parameter -> normalised importance, most important first
    configurations: int  # distinct configurations assessed (a configuration drawn twice counts once)
    restricted: bool  # only the parameters that can change the objective were assessed

    @property
    def title(self) -> str:
        scope = "\nover the parameters that can change it" if self.restricted else ""
        return f"{self.metric} ({self.configurations} configurations){scope}"


def param_importances(study: Any, metric_names: Sequence[str] | None = None) -> list[ImportancePanel]:
    """Optuna's importances per objective, named by the study's metric names (else `metric_names`,
    else "objective i"). Each distinct configuration counts once (a repeated draw carries the same
    values and would weigh it twice), and an objective in `SHAPE_OBJECTIVES` is assessed only over
    `shape_params`. Objectives Optuna cannot assess (too few configurations) have no panel."""
    import optuna

    names = list(study.metric_names or [])
    if len(names) != len(study.directions):  # a study stored without names: the spec's, else numbered
        given = list(metric_names or [])
        names = (
            given if len(given) == len(study.directions) else [f"objective {i}" for i in range(len(study.directions))]
        )
    distinct: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        distinct.setdefault(json.dumps(trial.params, sort_keys=True, default=str), trial)
    if len(distinct) < 2:
        return []
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        view = optuna.create_study(directions=study.directions)
        view.add_trials(list(distinct.values()))
    finally:
        optuna.logging.set_verbosity(verbosity)
    searched = sorted({name for trial in distinct.values() for name in trial.params})
    panels = []
    for index, (name, direction) in enumerate(zip(names, study.directions, strict=True)):
        restricted = name in SHAPE_OBJECTIVES
        params = [p for p in searched if p in shape_params()] if restricted else searched
        if not params:
            continue
        # PED-ANOVA ranks parameters by what reaches *low* target values: negate maximised objectives
        sign = -1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's experimental-feature notices
                importances = optuna.importance.get_param_importances(
                    view, params=params, target=lambda trial, i=index, sign=sign: sign * trial.values[i]
                )
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError):
            continue  # Optuna refuses when the completed trials cannot separate parameters
        if importances and all(math.isfinite(v) for v in importances.values()):
            panels.append(ImportancePanel(name, dict(importances), len(distinct), restricted))
    return panels


def plot_param_importances(study: Any, path: Path, metric_names: Sequence[str] | None = None) -> Path | None:
    """Optuna hyperparameter importances (`param_importances`), one panel per objective, titled by
    the objective's name. Skipped when Optuna cannot assess any (too few completed configurations,
    or no varied parameter)."""
    panels = param_importances(study, metric_names)
    if not panels:
        return None
    height = max(2.5, 0.35 * max(len(p.importances) for p in panels) + 1.2)
    fig = Figure(figsize=(4.8 * len(panels), height), layout="constrained")
    for index, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        params = list(panel.importances)[::-1]
        ax.barh(params, [panel.importances[p] for p in params], color=_PALETTE[index % len(_PALETTE)])
        ax.set_xlabel("importance (normalised)")
        ax.set_title(panel.title, fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle("Optuna hyperparameter importances, per objective", fontsize=10)
    return _save(fig, path)
