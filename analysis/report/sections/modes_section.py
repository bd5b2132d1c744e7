"""The report's "Modes" section: one frozen base, many target modes (the paper's thesis, RQ3 and RQ4).

Three parts, each from its own module: the limits map (`analysis.per_mode.limits`: gain over Frozen and
retention against the target angle), the units each mode's TauGate adapter keeps on and their
overlap, and the intervention that silences a mode's own units against a random control
(`analysis.per_mode.interventions`, computed from the study's saved foundations and adapters).

A study that trains TauGate at several budgets (dense, and at a sparsity target) has one unit analysis and one
bank per budget (`analyse_study_modes`, `study.pipeline.mode_banks`): the section then sets the budgets side by
side (one comparison table, the Jaccard matrices and the interventions in one figure each) and gives each budget
its own unit sets, intervention and compact subnetworks. A study with one budget renders as it always did.

Beside each exact compact subnetwork (the units a mode never opens dropped) the bank records the one forced to a
unit budget (`study.pipeline.mode_banks.FORCED_KEEP` of each hidden layer, the units firing most often): the
section shows what reaching that budget costs, test digits predicted otherwise and accuracy against the dense
hard-gated model, per budget. A bank built before that has no `forced` entry: its cells read "-".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis.aggregate.stats import CORRECTION
from analysis.figures import mode_plots
from analysis.per_mode import limits as limits_module
from analysis.per_mode.interventions import CAUSAL_P
from analysis.report.sections.bank_tables import (
    bank_table,
    compact_cells,
    compact_reports,
    forced_rule,
    forced_summary,
    id_suffix,
    mean_range,
)
from analysis.report.sections.blocks import FigureEntry, Table, fmt, plus_minus
from analysis.table.study_modes import DEFAULT_ANGLES, degrees

NOT_A_MODES_STUDY = (
    "This study specialises to one target angle. A modes study gives `target_angle` a list (and `eval_angles` for "
    "modes the foundation never saw); `configs/modes.yaml` is one."
)


def foundation_angles(metadata: Mapping[str, Any]) -> list[float]:
    """The foundation's mixture: the spec's `angles` when the report's metadata holds the spec."""
    spec = metadata.get("spec")
    angles = spec.get("angles") if isinstance(spec, Mapping) else None
    return [float(a) for a in angles] if isinstance(angles, list) and angles else list(DEFAULT_ANGLES)


def modes_section(
    df: pd.DataFrame,
    metadata: Mapping[str, Any],
    mode_analysis: Any,
    figure: Callable[..., FigureEntry],
    banks: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The section's tables, figures and stated findings (`available` False with `why` otherwise)."""
    mixture = foundation_angles(metadata)
    limits = limits_module.limits_map(df, mixture)
    if limits is None:
        return {"available": False, "why": NOT_A_MODES_STUDY}
    section: dict[str, Any] = {
        "available": True,
        "why": "",
        "mixture": ", ".join(degrees(a) for a in mixture),
        "tolerance": limits.tolerance,
        "limits_table": limits_table(limits),
        "limits_figure": figure(
            "modes-limits",
            "Limits map: gain over Frozen and retention against the target angle",
            lambda path: mode_plots.plot_limits(limits, path),
            "needs a method besides Frozen at two or more target angles",
        ),
        "verdict": limits.verdict,
        "notes": list(limits.notes),
    }
    analyses = _analyses(mode_analysis)
    labels = list(dict.fromkeys([a.label for a in analyses] + [b.get("budget_label", "") for b in banks]))
    if len(labels) <= 1:
        section |= units_part(analyses[0] if analyses else None, figure)
        section["bank_table"] = bank_table(banks)
        section["forced"] = forced_summary(compact_reports(banks)) if banks else ""
        section["budgets"] = []
        return section
    section |= {"units": None, "units_why": "", "bank_table": None, "forced": ""}
    section |= budgets_part(analyses, banks, labels, figure)
    return section


def _analyses(mode_analysis: Any) -> list[Any]:
    """`analyse_study_modes`'s per-budget list (one `ModeAnalysis` also reads)."""
    if mode_analysis is None:
        return []
    return list(mode_analysis) if isinstance(mode_analysis, list | tuple) else [mode_analysis]


def budgets_part(
    analyses: Sequence[Any], banks: Sequence[Mapping[str, Any]], labels: Sequence[str],
    figure: Callable[..., FigureEntry],
) -> dict[str, Any]:  # fmt: skip
    """TauGate's budgets side by side: one comparison table, the Jaccard matrices and the intervention
    drops as one figure each, then each budget's own unit analysis and compact subnetworks."""
    by_label = {a.label: a for a in analyses}
    banks_of = {label: [b for b in banks if b.get("budget_label", "") == label] for label in labels}
    descriptions = {a.label: a.description for a in analyses}
    for bank in banks:
        descriptions.setdefault(bank.get("budget_label", ""), bank.get("budget_description", ""))
    parts = []
    for label in labels:
        units = units_part(by_label.get(label), figure, label)
        parts.append({
            "label": label, "description": descriptions.get(label, ""), **units,
            "bank_table": bank_table(banks_of[label], label, latency=True),
            "forced": forced_summary(compact_reports(banks_of[label])) if banks_of[label] else "",
        })  # fmt: skip
    matrices = {label: by_label[label].jaccard_mean for label in labels if label in by_label}
    summaries = {label: by_label[label].summary for label in labels if label in by_label}
    return {
        "budgets": parts,
        "budget_definition": (
            "TauGate at each budget the study trained (the fields that differ: "
            + "; ".join(f"{label}: {descriptions.get(label) or label}" for label in labels)
            + "). Per budget, each (seed, target) is represented by its trial with the best hard-gated validation "
            "accuracy among that budget's trials only; ratios are validation high-activation ratios (hard gate on, "
            "the chosen adapters' own target digits), accuracies and the compact checks are on test. Compact: the "
            "units a mode's hard gate never opens on its training digits are dropped; test digits predicted "
            "otherwise are counted against the dense hard-gated model with the same adapter. Latency: compact over "
            "dense seconds per forward pass, median over modes of a short in-process reading taken when the bank "
            "was built (benchmarks/bank_switching.py measures longer). Forced: " + forced_rule(banks) + "; its rows "
            "give what reaching that unit budget costs against the same dense hard-gated model."
        ),
        "budget_table": budget_table(labels, by_label, banks_of, descriptions),
        "budget_jaccard_figure": figure(
            "modes-jaccard-budgets",
            "Overlap (Jaccard) of the units each mode keeps on, per budget, mean over seeds",
            lambda path: mode_plots.plot_jaccard_budgets(matrices, path),
            "no budget has unit sets",
        ),
        "budget_intervention_figure": figure(
            "modes-intervention-budgets",
            "Own-mode accuracy drop: attributed units vs a random control of the same size, per budget "
            f"(star: {CORRECTION}-corrected p < {CAUSAL_P:g} within the budget)",
            lambda path: mode_plots.plot_intervention_budgets(summaries, path),
            "no budget has a mode with attributed units",
        ),
    }


def _off_diagonal(matrix: pd.DataFrame) -> list[float]:
    values = matrix.to_numpy(dtype=float)
    size = len(values)
    return [values[i, j] for i in range(size) for j in range(size) if i != j and np.isfinite(values[i, j])]


def _column(name: str, analysis: Any) -> list[float]:
    return analysis.chosen[name].tolist() if name in getattr(analysis, "chosen", pd.DataFrame()) else []


def analysis_cells(analysis: Any) -> dict[str, str]:
    """One budget's unit analysis as the comparison table's cells, by row name."""
    summary = analysis.summary
    return {
        "validation high-activation ratio of the chosen adapters: mean (min-max) over modes and seeds":
            mean_range(_column("val_high_activation_ratio", analysis), 3),
        "hard-gated test accuracy on the target: mean (min-max) over modes and seeds":
            mean_range(_column("acc_hard", analysis), 3),
        "units in a mode's set (on for >= half its validation digits): mean (min-max)":
            mean_range(analysis.unit_counts["active"].tolist(), 1),
        "Jaccard between two modes' sets: mean (min-max) over mode pairs, each the mean over seeds":
            mean_range(_off_diagonal(analysis.jaccard_mean), 2),
        "units exclusive to one mode, summed over (mode, seed) pairs":
            f"{int(analysis.unit_counts['exclusive'].sum())} over {len(analysis.unit_counts)} pairs",
        f"attributed units carry their mode (own drop > random control, {CORRECTION}-corrected p < {CAUSAL_P:g})":
            f"{sum(h is True for h in summary['causal_holds'])} of {len(summary)} modes",
        "own-mode drop silencing the attributed units / a random control: mean over modes":
            f"{summary['own_drop_attributed_mean'].mean():.3f} / {summary['own_drop_random_mean'].mean():.3f}",
    }  # fmt: skip


def budget_table(
    labels: Sequence[str], analyses: Mapping[str, Any], banks: Mapping[str, Sequence[Mapping[str, Any]]],
    descriptions: Mapping[str, str],
) -> Table:  # fmt: skip
    """One row per quantity, one column per budget: the numbers the section sets side by side ("-": the
    budget has no unit analysis, or no compacted bank)."""
    columns = []
    for label in labels:
        cells = {"budget": descriptions.get(label) or label}
        if label in analyses:
            cells |= analysis_cells(analyses[label])
        if reports := compact_reports(banks.get(label, ())):
            cells |= compact_cells(reports)
        columns.append(cells)
    names = list(dict.fromkeys(name for cells in columns for name in cells))
    table = Table("modes-budget-table", ["quantity", *labels])
    for name in names:
        table.add([name, *(cells.get(name, "-") for cells in columns)])
    return table


def limits_table(limits: limits_module.LimitsMap) -> Table:
    table = Table(
        "modes-limits-table",
        ["target", "method (chosen on validation)", "n seeds", "target acc (mean ± std)",
         "gain over Frozen (mean ± std)", "95% CI half-width", "trainable params",
         "retention Δ vs Frozen (mean ± std)"],
    )  # fmt: skip
    for _, row in limits.table.iterrows():
        table.add(
            [degrees(row["target"]), row["label"], int(row["n"]), plus_minus(row["acc_mean"], row["acc_std"]),
             plus_minus(row["gain_mean"], row["gain_std"]), fmt(row["gain_ci95"]), fmt(row["params"], 0),
             plus_minus(row["retention_mean"], row["retention_std"])],
            highlight=row["method"] == "taugate",
        )  # fmt: skip
    return table


def units_part(mode_analysis: Any, figure: Callable[..., FigureEntry], label: str = "") -> dict[str, Any]:
    """Neurons per mode and the intervention (`analysis.per_mode.mode_analysis.ModeAnalysis`), or why not;
    `label` (a budget's) suffixes the figure and table ids."""
    if mode_analysis is None:
        where = f" at budget {label}" if label else ""
        return {"units": None, "units_why": f"no foundation has TauGate adapters of two or more target modes{where}"}
    suffix = id_suffix(label)
    analysis = mode_analysis
    parameters = analysis.parameters
    seeds = len(analysis.foundations)
    units = {
        "definition": (
            f"Each target mode's own {analysis.method} adapter, on its own validation digits: a unit is in the mode's "
            f"set when its hard-gated activation is non-zero on at least {parameters['threshold']:g} of them; "
            f"exclusive to the mode when it fires on at least {parameters['on']:g} of the mode's digits and under "
            f"{parameters['off']:g} of every other mode's (each under its own adapter). Jaccard: overlap of two "
            f"modes' sets, mean over {seeds} seed(s) (unit identities differ between seeds: each seed is one "
            f"foundation). Per target, the adapter is the trial with the best hard-gated validation accuracy."
        ),
        "jaccard_figure": figure(
            "modes-jaccard" + suffix,
            f"Overlap (Jaccard) of the units each mode keeps on, mean over {seeds} seed(s)",
            lambda path: mode_plots.plot_jaccard(analysis.jaccard_mean, path),
            "no unit sets",
        ),  # fmt: skip
        "jaccard_table": jaccard_table(analysis, suffix),
        "core_figure": figure(
            "modes-core-by-gap" + suffix,
            "Shared core against the angle between two modes",
            lambda path: mode_plots.plot_core_by_gap(analysis.core_by_gap, path),
            "no pair of modes",
        ),  # fmt: skip
        "core_table": core_table(analysis, suffix),
        "intervention_definition": (
            f"For each mode, its attributed units (the {parameters['attributed_fraction']:.0%} of hidden units of its "
            f"set it uses most beyond the other modes: rate on its digits minus the mean rate of the other modes, "
            f"positive only) are silenced (hard-gated activation forced to 0) and the hard-gated test accuracy is "
            f"measured on the mode itself and on every other mode (each under its own adapter), against a control "
            f"silencing as many units drawn at random from the mode's other active units ({parameters['draws']} "
            f"draws). Rule: {parameters['causal_rule']}. The table gives each mode's raw and corrected p beside its "
            f"effect size; the figure's error bars are seed stds, its stars the modes whose corrected p < {CAUSAL_P:g}."
        ),
        "intervention_figure": figure(
            "modes-intervention" + suffix,
            "Own-mode accuracy drop: attributed units vs a random control of the same size "
            f"(star: {CORRECTION}-corrected p < {CAUSAL_P:g})",
            lambda path: mode_plots.plot_intervention(analysis.summary, path),
            "no mode has attributed units",
        ),  # fmt: skip
        "intervention_table": intervention_table(analysis, suffix),
        "findings": findings(analysis),
        "notes": [note for note in analysis.notes if "skipped" in note],
    }
    return {"units": units, "units_why": ""}


def jaccard_table(analysis: Any, suffix: str = "") -> Table:
    matrix, std = analysis.jaccard_mean, analysis.jaccard_std
    table = Table("modes-jaccard-table" + suffix, ["mode", *(degrees(a) for a in matrix.columns)])
    for angle in matrix.index:
        table.add([degrees(angle), *(plus_minus(matrix.loc[angle, b], std.loc[angle, b], 2) for b in matrix.columns)])
    return table


def core_table(analysis: Any, suffix: str = "") -> Table:
    table = Table("modes-core-table" + suffix, ["angle between modes", "mode pairs (all seeds)",
                                                "Jaccard mean (min-max)", "shared units mean (min-max)"])  # fmt: skip
    for _, row in analysis.core_by_gap.iterrows():
        table.add([degrees(row["gap"]), int(row["pairs"]),
                   f"{row['jaccard_mean']:.3f} ({row['jaccard_min']:.3f}-{row['jaccard_max']:.3f})",
                   f"{row['core_mean']:.1f} ({row['core_min']:.0f}-{row['core_max']:.0f})"])  # fmt: skip
    return table


INTERVENTION_HEADER = (
    "silenced mode", "units in its set", "exclusive units", "units silenced (attributed)", "n seeds",
    "own drop, attributed (mean ± std)", "own drop, random control (mean ± std)",
    "difference attributed - random [95% CI]", "d_z", "p (one-sided, raw)", f"p ({CORRECTION}-corrected)",
    "drop on the other modes (attributed)", "causal?",
)  # fmt: skip


def intervention_table(analysis: Any, suffix: str = "") -> Table:
    """One row per silenced mode: its unit counts, both drops, the paired difference with its CI and d_z,
    the raw and corrected p beside each other, and the verdict (bold where it holds)."""
    counts = analysis.unit_counts.groupby("mode")[["active", "exclusive", "attributed", "common_core"]].mean()
    table = Table("modes-intervention-table" + suffix, list(INTERVENTION_HEADER))
    for _, row in analysis.summary.iterrows():
        count = counts.loc[row["silenced"]] if row["silenced"] in counts.index else None
        table.add(
            [degrees(row["silenced"]), fmt(count["active"], 1) if count is not None else "-",
             fmt(count["exclusive"], 1) if count is not None else "-", fmt(row["n_units"], 1),
             str(int(row["n_seeds"])),
             plus_minus(row["own_drop_attributed_mean"], row["own_drop_attributed_std"]),
             plus_minus(row["own_drop_random_mean"], row["own_drop_random_std"]),
             _with_ci(row["difference_mean"], row["difference_ci_low"], row["difference_ci_high"]),
             fmt(row["d_z"], 2), _p(row["p"]), _p(row["p_holm"]),
             fmt(row["other_drop_attributed_mean"]), row["causal"]],
            highlight=row["causal_holds"] is True,
        )  # fmt: skip
    return table


def _with_ci(mean: float, low: float, high: float) -> str:
    if not np.isfinite(mean):
        return "-"
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]" if np.isfinite(low) and np.isfinite(high) else f"{mean:+.3f}"


def _p(value: float) -> str:
    return f"{value:.3g}" if np.isfinite(value) else "-"


def findings(analysis: Any) -> list[str]:
    """What the numbers support, each with its rule."""
    lines = []
    summary = analysis.summary
    holds = [a for a, h in zip(summary["silenced"], summary["causal_holds"], strict=True) if h is True]
    fails = [a for a, h in zip(summary["silenced"], summary["causal_holds"], strict=True) if h is False]
    untested = [a for a, h in zip(summary["silenced"], summary["causal_holds"], strict=True) if h is None]
    lines.append(
        f"Attributed units carry their mode (silencing them costs the mode more than a random control, "
        f"{CORRECTION}-corrected over the {len(summary)} modes) at {len(holds)} of {len(summary)} modes: "
        f"{_listing(holds) or 'none'}"
        + (f"; not at {_listing(fails)}" if fails else "")
        + (f"; not testable at {_listing(untested)}" if untested else "")
        + f" ({analysis.parameters['causal_rule']})."
    )
    exclusive = analysis.unit_counts["exclusive"]
    lines.append(
        f"Units exclusive to one mode: {int(exclusive.sum())} over {len(analysis.unit_counts)} (mode, seed) pairs"
        + (" — neighbouring modes share their units, so no unit belongs to one mode alone."
           if exclusive.sum() == 0 else ".")
    )  # fmt: skip
    gaps = analysis.core_by_gap.sort_values("gap")
    if len(gaps) >= 2:
        first, last = gaps.iloc[0], gaps.iloc[-1]
        lowest = gaps.loc[gaps["jaccard_mean"].idxmin()]
        trend = "shrinks" if lowest["jaccard_mean"] < first["jaccard_mean"] else "does not shrink"
        lines.append(
            f"The shared core {trend} as modes rotate apart: Jaccard {first['jaccard_mean']:.2f} "
            f"({first['core_mean']:.0f} shared units) for modes {degrees(first['gap'])} apart, lowest "
            f"{lowest['jaccard_mean']:.2f} ({lowest['core_mean']:.0f}) at {degrees(lowest['gap'])} apart, "
            f"{last['jaccard_mean']:.2f} ({last['core_mean']:.0f}) at {degrees(last['gap'])} apart."
        )
    return lines


def _listing(values: Sequence[float]) -> str:
    return ", ".join(degrees(v) for v in values)
