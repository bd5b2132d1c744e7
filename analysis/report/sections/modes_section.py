"""The report's "Modes" section: one frozen base, many target modes (the paper's thesis, RQ3 and RQ4).

Three parts, each from its own module: the limits map (`analysis.per_mode.limits`: gain over Frozen and
retention against the target angle), the units each mode's TauGate adapter keeps on and their
overlap, and the intervention that silences a mode's own units against a random control
(`analysis.per_mode.interventions`, computed from the study's saved foundations and adapters).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from analysis.figures import mode_plots
from analysis.per_mode import limits as limits_module
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
    section |= units_part(mode_analysis, figure)
    section["bank_table"] = bank_table(banks)
    return section


def bank_table(banks: Sequence[Mapping[str, Any]]) -> Table | None:
    """Each bank's compact per-mode subnetworks beside the dense hard-gated model (None: no bank)."""
    if not banks:
        return None
    table = Table(
        "modes-bank-table",
        ["foundation (seed)", "mode", "units kept per layer", "parameters compact / dense",
         "multiply-adds ratio", "test digits predicted otherwise", "test acc dense / compact"],
    )  # fmt: skip
    for bank in banks:
        for mode in bank["modes"]:
            report = mode.get("compact")
            if not report:
                where = f"{bank['foundation_id']} ({bank['seed']})"
                table.add([where, mode["name"], "not compacted", "-", "-", "-", "-"])
                continue
            kept = ", ".join(f"{k}/{n}" for k, n in zip(report["kept"], report["units"], strict=True))
            table.add([
                f"{bank['foundation_id']} ({bank['seed']})", mode["name"], kept,
                f"{report['compact']['parameters']:,} / {report['dense']['parameters']:,}",
                f"{report['mac_ratio']:.3f}",
                f"{report['differ']} of {report['digits']} "
                f"({report['differ_dropped_fired']} where a dropped unit fired)",
                f"{report['accuracy_dense']:.3f} / {report['accuracy_compact']:.3f}",
            ])  # fmt: skip
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


def units_part(mode_analysis: Any, figure: Callable[..., FigureEntry]) -> dict[str, Any]:
    """Neurons per mode and the intervention (`analysis.per_mode.mode_analysis.ModeAnalysis`), or why not."""
    if mode_analysis is None:
        return {"units": None, "units_why": "no foundation has TauGate adapters of two or more target modes"}
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
            "modes-jaccard",
            f"Overlap (Jaccard) of the units each mode keeps on, mean over {seeds} seed(s)",
            lambda path: mode_plots.plot_jaccard(analysis.jaccard_mean, path),
            "no unit sets",
        ),  # fmt: skip
        "jaccard_table": jaccard_table(analysis),
        "core_figure": figure(
            "modes-core-by-gap",
            "Shared core against the angle between two modes",
            lambda path: mode_plots.plot_core_by_gap(analysis.core_by_gap, path),
            "no pair of modes",
        ),  # fmt: skip
        "core_table": core_table(analysis),
        "intervention_definition": (
            f"For each mode, its attributed units (the {parameters['attributed_fraction']:.0%} of hidden units of its "
            f"set it uses most beyond the other modes: rate on its digits minus the mean rate of the other modes, "
            f"positive only) are silenced (hard-gated activation forced to 0) and the hard-gated test accuracy is "
            f"measured on the mode itself and on every other mode (each under its own adapter), against a control "
            f"silencing as many units drawn at random from the mode's other active units ({parameters['draws']} "
            f"draws). Rule: {parameters['causal_rule']}."
        ),
        "intervention_figure": figure(
            "modes-intervention",
            "Own-mode accuracy drop: attributed units vs a random control of the same size",
            lambda path: mode_plots.plot_intervention(analysis.summary, path),
            "no mode has attributed units",
        ),  # fmt: skip
        "intervention_table": intervention_table(analysis),
        "findings": findings(analysis),
        "notes": [note for note in analysis.notes if "skipped" in note],
    }
    return {"units": units, "units_why": ""}


def jaccard_table(analysis: Any) -> Table:
    matrix, std = analysis.jaccard_mean, analysis.jaccard_std
    table = Table("modes-jaccard-table", ["mode", *(degrees(a) for a in matrix.columns)])
    for angle in matrix.index:
        table.add([degrees(angle), *(plus_minus(matrix.loc[angle, b], std.loc[angle, b], 2) for b in matrix.columns)])
    return table


def core_table(analysis: Any) -> Table:
    table = Table("modes-core-table", ["angle between modes", "mode pairs (all seeds)", "Jaccard mean (min-max)",
                                       "shared units mean (min-max)"])  # fmt: skip
    for _, row in analysis.core_by_gap.iterrows():
        table.add([degrees(row["gap"]), int(row["pairs"]),
                   f"{row['jaccard_mean']:.3f} ({row['jaccard_min']:.3f}-{row['jaccard_max']:.3f})",
                   f"{row['core_mean']:.1f} ({row['core_min']:.0f}-{row['core_max']:.0f})"])  # fmt: skip
    return table


def intervention_table(analysis: Any) -> Table:
    counts = analysis.unit_counts.groupby("mode")[["active", "specific", "attributed", "common_core"]].mean()
    table = Table(
        "modes-intervention-table",
        ["silenced mode", "units in its set", "exclusive units", "units silenced", "own drop, attributed (mean ± std)",
         "own drop, random control (mean ± std)", "drop on the other modes (attributed)", "causal?"],
    )  # fmt: skip
    for _, row in analysis.summary.iterrows():
        count = counts.loc[row["silenced"]] if row["silenced"] in counts.index else None
        table.add(
            [degrees(row["silenced"]), fmt(count["active"], 1) if count is not None else "-",
             fmt(count["specific"], 1) if count is not None else "-", fmt(row["n_units"], 1),
             plus_minus(row["own_drop_specific_mean"], row["own_drop_specific_std"]),
             plus_minus(row["own_drop_random_mean"], row["own_drop_random_std"]),
             fmt(row["other_drop_specific_mean"]), row["causal"]],
            highlight=row["causal_holds"] is True,
        )  # fmt: skip
    return table


def findings(analysis: Any) -> list[str]:
    """What the numbers support, each with its rule."""
    lines = []
    summary = analysis.summary
    holds = [a for a, h in zip(summary["silenced"], summary["causal_holds"], strict=True) if h is True]
    fails = [a for a, h in zip(summary["silenced"], summary["causal_holds"], strict=True) if h is False]
    untested = [a for a, h in zip(summary["silenced"], summary["causal_holds"], strict=True) if h is None]
    lines.append(
        f"Attributed units carry their mode (silencing them costs the mode more than a random control) at "
        f"{len(holds)} of {len(summary)} modes: {_listing(holds) or 'none'}"
        + (f"; not at {_listing(fails)}" if fails else "")
        + (f"; not testable at {_listing(untested)}" if untested else "")
        + f" ({analysis.parameters['causal_rule']})."
    )
    exclusive = analysis.unit_counts["specific"]
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
