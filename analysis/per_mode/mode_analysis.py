"""The per-mode unit analysis of a whole study (RQ3): per budget and foundation, each target mode's
representative adapter, its unit sets and overlaps, and the interventions of `analysis.per_mode.interventions`.

A study that runs TauGate at several budgets (dense, and at a sparsity target: `analysis.table.load.BUDGET_FIELDS`)
gets one analysis per budget, each choosing its modes' adapters among that budget's trials only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from analysis.per_mode.interventions import CAUSAL_RULE, DRAWS, FOUNDATIONS_DIR, intervene, summarise
from analysis.per_mode.mode_units import (
    ATTRIBUTED_FRACTION,
    EXCLUSIVE_OFF,
    EXCLUSIVE_ON,
    UNIT_THRESHOLD,
    Unit,
    attributed_units,
    check_thresholds,
    common_core,
    exclusive_units,
    jaccard_matrix,
    pair_overlaps,
    summarise_gaps,
    unit_sets,
)
from analysis.table.load import (
    LedgerTrial,
    budget_labels,
    budget_of,
    choose_per_mode,
    describe_budget,
    ledger_trials,
    ordered_budgets,
)
from analysis.table.results import OK
from trainables.config import accuracy_name, parse_config
from trainables.data import load_modes
from trainables.engine.evaluation import gate_statistics
from trainables.formats.checkpoints import load_adapter, load_foundation


@dataclass
class FoundationModes:
    """The per-mode unit analysis of one foundation (one seed)."""

    seed: int
    foundation: str  # TrialConfig.foundation_id(): the foundation file's name
    trials: dict[float, str]  # target mode -> the trial (folder name) whose adapter represents it
    rates: dict[float, list[list[float]]]  # validation firing rates, each mode under its own adapter
    sets: dict[float, frozenset[Unit]]
    exclusive: dict[float, frozenset[Unit]]  # only this mode keeps them on (`exclusive_units`)
    attributed: dict[float, frozenset[Unit]]  # used most beyond the other modes: the units silenced
    common_core: frozenset[Unit]  # units every mode uses
    jaccard: pd.DataFrame
    pairs: pd.DataFrame  # `pair_overlaps` rows
    interventions: pd.DataFrame  # `intervene` rows tagged with seed and foundation
    chosen: dict[float, dict[str, Any]] = field(default_factory=dict)  # mode -> the chosen trial's metrics


@dataclass
class ModeAnalysis:
    """A study's per-mode unit sets and interventions at one budget, per foundation and over seeds."""

    method: str
    parameters: dict[str, Any]  # threshold, on, off, draws, the causal rule, the selection metric
    foundations: list[FoundationModes]
    jaccard_mean: pd.DataFrame  # over seeds (modes a seed lacks are left out of its mean)
    jaccard_std: pd.DataFrame  # sample std over seeds (NaN with one seed)
    jaccard_n: pd.DataFrame  # seeds behind each cell
    unit_counts: pd.DataFrame  # per seed and mode: trial, active units, exclusive units, the all-mode core
    core_by_gap: pd.DataFrame  # every seed's mode pairs grouped by angular gap
    interventions: pd.DataFrame  # every seed's intervention rows
    summary: pd.DataFrame  # `summarise` of those rows
    notes: list[str] = field(default_factory=list)  # skipped trials and foundations, trials chosen per mode
    budget: dict[str, Any] = field(default_factory=dict)  # the trials' `BUDGET_FIELDS` values
    label: str = ""  # the budget's short label among the study's budgets ("" when the study has one)
    description: str = ""  # the budget in words: the fields that differ between the study's budgets
    chosen: pd.DataFrame = field(default_factory=pd.DataFrame)  # per seed and mode: the chosen trial's metrics


def _finished_trials(study_dir: Path, method: str, notes: list[str]) -> list[LedgerTrial]:
    """Trials of `method` that finished well (`status: ok`); unreadable entries are noted and skipped."""
    trials, unreadable = ledger_trials(study_dir)
    notes.extend(unreadable)
    return [t for t in trials if t.metrics.get("status") == OK and t.config.method == method]


def _representatives(trials: list[LedgerTrial], notes: list[str], where: str) -> dict[float, LedgerTrial]:
    """Per target mode, the trial chosen on validation (`analysis.table.load.choose_per_mode`); `trials`
    share one budget."""
    chosen: dict[float, LedgerTrial] = {}
    for choice in sorted(choose_per_mode(trials), key=lambda c: c.angle):
        for key in choice.skipped:
            notes.append(f"{where}: trial {key} skipped for mode {choice.angle:g}, no {choice.metric}")
        if choice.trial is not None:
            chosen[choice.angle] = choice.trial
            notes.append(f"{where}: mode {choice.angle:g} is trial {choice.trial.key} ({choice.metric} = "
                         f"{choice.value:.4f}, best of {len(choice.candidates)})")  # fmt: skip
    return chosen


def _analyse_foundation(
    study_dir: Path, chosen: dict[float, LedgerTrial], threshold: float, on: float, off: float, draws: int,
    fraction: float = ATTRIBUTED_FRACTION,
) -> FoundationModes:  # fmt: skip
    base = next(iter(chosen.values())).config
    angles = sorted(chosen)
    data_config = parse_config(base.model_dump() | {"eval_angles": angles, "target_angle": angles[0], "device": "cpu"})
    data = load_modes(data_config, torch.device("cpu"))
    foundation = load_foundation(Path(study_dir, FOUNDATIONS_DIR, f"{base.foundation_id()}.safetensors"), base.hidden)
    models = {angle: load_adapter(foundation, chosen[angle].folder / "adapter").eval() for angle in angles}
    rates = {angle: gate_statistics(models[angle], data[angle], split="val").rate for angle in angles}
    sets, exclusive = unit_sets(rates, threshold), exclusive_units(rates, on, off)
    attributed = attributed_units(rates, fraction, threshold)
    test = {angle: (data[angle].test_x, data[angle].test_y) for angle in angles}
    rows = intervene(models, test, attributed, sets, draws=draws, seed=base.seed)
    rows.insert(0, "foundation", base.foundation_id())
    rows.insert(0, "seed", base.seed)
    return FoundationModes(
        seed=base.seed, foundation=base.foundation_id(), trials={a: chosen[a].key for a in angles}, rates=rates,
        sets=sets, exclusive=exclusive, attributed=attributed, common_core=common_core(sets),
        jaccard=jaccard_matrix(sets), pairs=pair_overlaps(sets), interventions=rows,
        chosen={a: chosen[a].metrics for a in angles},
    )  # fmt: skip


# what the report shows of each chosen trial beside its unit sets (validation: the ratio a budget asked for)
CHOSEN_METRICS = ("val_high_activation_ratio", "high_activation_ratio", "sparsity_weight_final")


def analyse_study_modes(
    study_dir: Path,
    method: str = "taugate",
    threshold: float = UNIT_THRESHOLD,
    on: float = EXCLUSIVE_ON,
    off: float = EXCLUSIVE_OFF,
    draws: int = DRAWS,
    fraction: float = ATTRIBUTED_FRACTION,
) -> list[ModeAnalysis]:
    """Unit sets, overlaps and interventions for every foundation of a study with >= 2 target modes of
    `method`: one `ModeAnalysis` per budget (`analysis.table.load.BUDGET_FIELDS`; dense first), each
    choosing its modes' adapters among its own trials. A study with one budget gives one analysis whose
    `label` is "". Empty when no foundation has two modes at any budget. A missing foundation file or a
    damaged adapter raises `CheckpointError` naming the file."""
    check_thresholds(threshold, on, off)
    if draws < 1:
        raise ValueError(f"draws: {draws} (needs at least 1)")
    notes: list[str] = []
    trials = _finished_trials(study_dir, method, notes)
    budgets = ordered_budgets(budget_of(t.config) for t in trials)
    labels = budget_labels(budgets)
    analyses = []
    for budget in budgets:
        here = [t for t in trials if budget_of(t.config) == budget]
        analysis = _analyse_budget(Path(study_dir), here, method, threshold, on, off, draws, fraction, list(notes),
                                   labels[budget])  # fmt: skip
        if analysis is not None:
            analyses.append(analysis)
            analysis.budget, analysis.label = dict(budget), labels[budget]
            analysis.description = describe_budget(budget, budgets)
    return analyses


def _analyse_budget(
    study_dir: Path, trials: list[LedgerTrial], method: str, threshold: float, on: float, off: float, draws: int,
    fraction: float, notes: list[str], label: str,
) -> ModeAnalysis | None:  # fmt: skip
    by_foundation: dict[str, list[LedgerTrial]] = {}
    for trial in trials:
        by_foundation.setdefault(trial.config.foundation_id(), []).append(trial)
    results = []
    for foundation_id, trials in sorted(by_foundation.items(), key=lambda item: (item[1][0].config.seed, item[0])):
        where = f"foundation {foundation_id} (seed {trials[0].config.seed})" + (f", budget {label}" if label else "")
        chosen = _representatives(trials, notes, where)
        if len(chosen) < 2:
            notes.append(f"{where}: skipped, {len(chosen)} target mode(s) of {method} (needs >= 2)")
            continue
        results.append(_analyse_foundation(study_dir, chosen, threshold, on, off, draws, fraction))
    if not results:
        return None
    matrices = pd.concat([r.jaccard.stack() for r in results], axis=1)
    interventions = pd.concat([r.interventions for r in results], ignore_index=True)
    pairs = pd.concat([r.pairs.assign(seed=r.seed) for r in results], ignore_index=True)
    return ModeAnalysis(
        method=method,
        parameters={"threshold": threshold, "on": on, "off": off, "draws": draws, "causal_rule": CAUSAL_RULE,
                    "attributed_fraction": fraction,
                    "selection": "per target mode, the trial with the best hard-gated validation accuracy on it"},
        foundations=results,
        jaccard_mean=matrices.mean(axis=1).unstack(),
        jaccard_std=matrices.std(axis=1, ddof=1).unstack(),
        jaccard_n=matrices.count(axis=1).unstack(),
        unit_counts=pd.DataFrame(
            {"seed": r.seed, "foundation": r.foundation, "mode": angle, "trial": r.trials[angle],
             "active": len(r.sets[angle]), "exclusive": len(r.exclusive[angle]),
             "attributed": len(r.attributed[angle]), "common_core": len(r.common_core)}
            for r in results for angle in sorted(r.sets)
        ),
        core_by_gap=summarise_gaps(pairs),
        interventions=interventions,
        summary=summarise(interventions),
        notes=notes,
        chosen=pd.DataFrame(
            {"seed": r.seed, "mode": angle, "trial": r.trials[angle],
             **{name: r.chosen[angle].get(name) for name in CHOSEN_METRICS},
             "val_acc_hard": r.chosen[angle].get(accuracy_name(angle, hard=True, validation=True)),
             "acc_hard": r.chosen[angle].get(accuracy_name(angle, hard=True))}
            for r in results for angle in sorted(r.sets)
        ),
    )  # fmt: skip
