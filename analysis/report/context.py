"""Everything the report's templates show, computed once from the results table (figures are
written on the way): the sections in order, the paper table, the failed trials and the metadata.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.aggregate.pareto import fronts as front_objectives
from analysis.aggregate.pareto import pareto_sets
from analysis.aggregate.stats import seed_statistics
from analysis.figures import gate_plots, tradeoff_plots
from analysis.paper.paper_table import COMPARISON_COLUMNS, PAPER_TABLE, comparison_rows
from analysis.paper.reference import PAPER, reference_mismatch
from analysis.report.sections.blocks import FigureEntry, Table
from analysis.report.sections.configurations import front_table, significance_table, statistics_table
from analysis.report.sections.curves_section import curves_section
from analysis.report.sections.fidelity_section import (
    PREDICTION,
    Calibration,
    Setting,
    budget_figure,
    fidelity_section,
    report_setting,
)
from analysis.report.sections.interpretability import interpretability_section
from analysis.report.sections.modes_section import modes_section
from analysis.report.sections.sparsity import sparsity_section
from analysis.report.sections.sparsity_front_section import sparsity_front_section
from analysis.reproduction.verdicts import check_claims
from analysis.table.protocols import within_protocol
from analysis.table.results import (
    config_columns,
    configuration_ids,
    failed_rows,
    format_value,
    is_missing,
    ok_rows,
    stopped_rows,
)
from analysis.table.study_modes import StudyModes, degrees, study_modes

FIGURES = "figures"
FRONT_TITLES = {
    "accuracy_vs_params": "Target accuracy vs trainable parameters",
    "accuracy_vs_sparsity": "Target accuracy vs activation sparsity",
    "accuracy_vs_retention": "Target accuracy vs retention of the original mode",
    "accuracy_params_sparsity": "Target accuracy, parameters and sparsity (3 objectives)",
}


def objective_names(metadata: Mapping[str, Any]) -> list[str]:
    """The study spec's Optuna objectives, which name the importance panels of a study stored
    without metric names (one run before Optuna studies carried them)."""
    spec = metadata.get("spec")
    search = spec.get("search") if isinstance(spec, dict) else None
    objectives = search.get("objectives") if isinstance(search, dict) else None
    return [str(o.get("metric")) for o in objectives or [] if isinstance(o, dict)]


def build_context(
    df: pd.DataFrame,
    out: Path,
    metadata: dict[str, Any],
    gate_stats: dict[str, Any],
    optuna_study: Any,
    calibration: Calibration,
    mode_analysis: Any = None,
    banks: Sequence[Mapping[str, Any]] = (),
    histories: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Everything the templates show, computed once (figures are written on the way).

    Every section is at the study's angles (`analysis.table.study_modes.study_modes`: its target and
    original modes, read from the table). Representatives (paper table, verdicts, fidelity,
    sparsity, significance, heatmaps) are chosen on validation metrics of the target mode within
    the report's protocol (`report_setting`); Pareto fronts, sensitivity and the
    all-configurations table describe every configuration on test metrics. A modes study (several
    target angles) is analysed at its primary target in those sections (`StudyModes.analysed`);
    its modes section covers every target."""
    modes = study_modes(df)
    analysed = modes.analysed(df)
    stats = seed_statistics(analysed)
    setting = report_setting(stats, calibration, modes)
    chosen = setting.representatives()
    protocol_df = within_protocol(analysed, setting.protocol) if setting.protocol is not None else df.iloc[0:0]
    figures: list[FigureEntry] = []

    def figure(fid: str, title: str, draw: Callable[[Path], Path | None], missing: str) -> FigureEntry:
        target = out / FIGURES / f"{fid}.png"
        target.unlink(missing_ok=True)  # a figure skipped now must not survive from an earlier report here
        written = draw(target)
        entry = FigureEntry(fid, title, f"{FIGURES}/{fid}.png" if written else None, "" if written else missing)
        figures.append(entry)
        return entry

    fronts, objectives = [], front_objectives(modes)
    for name, front in (pareto_sets(stats, modes) if not stats.empty else {}).items():
        entry = figure(
            f"pareto-{name}",
            FRONT_TITLES[name],
            lambda path, front=front, name=name: tradeoff_plots.plot_pareto(
                front, objectives[name], path, FRONT_TITLES[name]
            ),
            "needs at least two configurations with finished trials",
        )
        fronts.append({"name": name, "figure": entry, "table": front_table(name, front, objectives[name])})
    panels = (*tradeoff_plots.accuracy_panels(modes), tradeoff_plots.SPARSITY_PANEL)

    sensitivity = [
        figure(
            "sensitivity-gate-sharpness",
            "Accuracy and sparsity vs gate sharpness s",
            lambda path: tradeoff_plots.plot_sensitivity(stats, "gate_sharpness", path, xscale="log", panels=panels),
            "the study does not sweep gate_sharpness (needs two values of s for one gated method)",
        ),
        figure(
            "sensitivity-sparsity-weight",
            "Accuracy and sparsity vs sparsity weight λ",
            lambda path: tradeoff_plots.plot_sensitivity(
                stats, "sparsity_weight", path, xscale="symlog", panels=panels
            ),
            "the study does not sweep sparsity_weight (needs two values of λ for one gated method)",
        ),
        figure(
            "lora-rank",
            "LoRA accuracy vs rank",
            lambda path: tradeoff_plots.plot_lora_rank(stats, path, modes),
            "the study does not sweep the LoRA rank",
        ),
    ]
    efficiency = figure(
        "accuracy-vs-params",
        "Accuracy vs trainable parameters, every method",
        lambda path: tradeoff_plots.plot_accuracy_vs_params(stats, path, modes),
        "needs at least two configurations with finished trials",
    )
    fidelity = fidelity_section(stats, setting, figure)
    sparsity = sparsity_section(setting, figure)
    sparsity_front = sparsity_front_section(setting, figure)
    budget = budget_figure(stats, setting, figure)
    interpretability = interpretability_section(analysed, stats, setting, gate_stats, figure)
    modes_part = modes_section(df, metadata, mode_analysis, figure, banks)
    curves = curves_section(df, histories or {}, metadata, figure)
    importances = figure(
        "optuna-importances",
        "Optuna hyperparameter importances",
        lambda path: (
            gate_plots.plot_param_importances(optuna_study, path, objective_names(metadata))
            if optuna_study is not None
            else None
        ),
        "no Optuna study was given" if optuna_study is None else "too few completed Optuna trials to assess",
    )

    failed = failed_rows(df)
    return {
        "title": str(metadata.get("title", "TauGate ablation study report")),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "summary": {
            "trials": len(df),
            "ok": len(ok_rows(df)),
            "failed": len(failed),
            "stopped": len(stopped_rows(df)),
            "configurations": len(stats),
            "methods": ", ".join(map(str, stats["method"].unique())) if "method" in stats else "",
            "seeds": int(df["seed"].nunique()) if "seed" in df else 0,
            "modes": f"target mode {degrees(modes.target)}, original mode {degrees(modes.retention)}",
            "wall_seconds": metadata.get("wall time (s)"),  # the trials' run, Ray's start included
            "machine": (metadata.get("environment") or {}).get("machine"),
            "created": str(metadata.get("created", ""))[:16].replace("T", " "),
        },
        "modes_scope": modes.scope,
        "selection_note": selection_note(stats, modes),
        "paper_mismatch": reference_mismatch(PAPER, modes),
        "paper_table": paper_table(analysed, chosen, setting, modes),
        "fidelity": fidelity,
        "sparsity": sparsity,
        "sparsity_front": sparsity_front,
        "budget": budget,
        "verdicts": check_claims(
            setting.stats, setting.reference, setting.held_out, target=modes.target, original=modes.retention
        ),  # fmt: skip
        "fronts": fronts,
        "efficiency": efficiency,
        "sensitivity": sensitivity,
        "statistics_table": statistics_table(stats, modes),
        "significance": [
            significance_table(protocol_df, modes.target_metric, modes),
            significance_table(protocol_df, modes.retention_metric, modes),
        ],
        "interpretability": interpretability,
        "modes": modes_part,
        "curves": curves,
        "importances": importances,
        "failed_table": failed_table(failed, config_columns(df)),
        "metadata": metadata_rows({**metadata, "modes (read from the results table)": modes.describe()}),
        "all_figures": figures,
    }


def selection_note(stats: pd.DataFrame, modes: StudyModes) -> str:
    """Empty when the study has validation metrics; else why nothing can be chosen (an old study)."""
    selection = modes.selection_metric
    if stats.empty or f"{selection}_mean" in stats.columns:
        return ""
    return (
        f"This study has no validation metrics ({selection}): each method's representative is chosen on validation "
        "only, never on the test digits it is reported on, so it is undefined here. Selection needs validation "
        "metrics: rerun the study."
    )


def paper_table(df: pd.DataFrame, chosen: pd.DataFrame, setting: Setting, modes: StudyModes) -> Table:
    """`analysis.paper.paper_table.comparison_rows` on each method's representative configuration (chosen
    on validation; a sweep of twenty TauGate settings would otherwise be averaged into one
    meaningless row). A method held out of a calibration is labelled a prediction; a row whose
    settings are not ours names both ("LoRA (ours r=4; paper r=8)"). No rows when the paper's
    angles are not the study's (the report says why)."""
    table = Table("paper-table", [*COMPARISON_COLUMNS, "our configuration (n seeds)"])
    if reference_mismatch(PAPER, modes):
        return table
    ids = configuration_ids(df, config_columns(df)) if not df.empty else pd.Series(dtype=int)
    keep = ids.isin(chosen["config_id"].astype(int)) if not chosen.empty else pd.Series(False, index=df.index)
    records = [
        {k: v for k, v in record.items() if not is_missing(v)} for record in ok_rows(df[keep]).to_dict("records")
    ]
    labels = {method: PAPER.label_for(method, chosen.loc[method]) for method in PAPER.methods if method in chosen.index}
    for paper_row, cells in zip(PAPER_TABLE, comparison_rows(records, labels), strict=True):
        ours = chosen.loc[paper_row.method] if paper_row.method in chosen.index else None
        n = f"{modes.target_metric}_n"
        if ours is not None:
            where = f"{ours['label']} (n={int(ours[n])})"
        elif "method" in df.columns and paper_row.method in set(df["method"]):
            where = "no representative (chosen on validation only; see above)"
        else:
            where = "not in this study"
        role = setting.role(paper_row.method)
        table.add([*cells, f"{where}; {role}" if role == PREDICTION else where], highlight=role == PREDICTION)
    return table


def failed_table(failed: pd.DataFrame, columns: Sequence[str]) -> Table:
    table = Table("failed-trials-table", ["trial", "status", "configuration", "seed", "error"])
    for _, row in failed.iterrows():
        config = ", ".join(f"{c}={format_value(row[c])}" for c in columns if c in row and not is_missing(row[c]))
        table.add(
            [row.get("trial_id", "-"), row.get("status", "-"), config, format_value(row.get("seed", "-")), _why(row)]
        )
    return table


def _why(row: pd.Series) -> str:
    """The error message, or for a run without one (diverged) what is known about it."""
    if not is_missing(row.get("error")) and str(row.get("error")).strip():
        return str(row["error"])
    facts = [f"{name.replace('_', ' ')} {format_value(row[name])}" for name in ("diverged_at_step", "final_loss")
             if name in row and not is_missing(row[name])]  # fmt: skip
    return f"{row.get('status', 'failed')}" + (f" ({', '.join(facts)})" if facts else " (no error message)")


def metadata_rows(metadata: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(key, text, is_block) per metadata entry; nested values are shown as indented JSON."""
    rows = []
    for key, value in metadata.items():
        if isinstance(value, Mapping | list | tuple):
            rows.append((str(key), json.dumps(value, indent=2, default=str), True))
        else:
            rows.append((str(key), str(value), False))
    return rows
