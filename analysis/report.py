"""The study report: `report.html` (opens offline), `report.md` and `results.csv` in one folder.

Everything the reader needs sits beside the HTML: figures are PNG files under `figures/`
referenced by relative paths, styles are inline, nothing loads from a network, so the folder
can be zipped, attached to an MLflow run or opened from a cluster's shared disk as is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from analysis import plots
from analysis.interpret import RETENTION_MODE, TARGET_MODE, interpret_configurations
from analysis.paper import COMPARISON_COLUMNS, PAPER_TABLE, comparison_rows
from analysis.pareto import FRONTS, pareto_sets
from analysis.protocols import within_protocol
from analysis.results import config_columns, configuration_ids, failed_rows, format_value, is_missing, ok_rows
from analysis.sections.common import FigureEntry, Table, fmt, mean_ci
from analysis.sections.fidelity import PREDICTION, Calibration, Setting, budget_figure, fidelity_section, report_setting
from analysis.sections.sparsity import sparsity_section
from analysis.stats import (
    RETENTION_ANGLE,
    TARGET_ANGLE,
    best_configuration,
    paired_comparisons,
    representatives,
    seed_statistics,
)
from analysis.verdicts import check_claims
from trainables.config import accuracy_name

TEMPLATES = Path(__file__).parent / "templates"
FIGURES = "figures"
FRONT_TITLES = {
    "accuracy_vs_params": "Target accuracy vs trainable parameters",
    "accuracy_vs_sparsity": "Target accuracy vs activation sparsity",
    "accuracy_vs_retention": "Target accuracy vs retention of the original mode",
    "accuracy_params_sparsity": "Target accuracy, parameters and sparsity (3 objectives)",
}


def write_report(
    df: pd.DataFrame,
    out_dir: Path | str,
    metadata: Mapping[str, Any] | None = None,
    gate_stats: Mapping[str, Mapping[str, Any]] | None = None,
    optuna_study: Any = None,
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write `report.html`, `report.md`, `results.csv` and `figures/*.png` into `out_dir`.

    `df` is the results table (one row per trial, see `analysis.results`), `metadata` any
    JSON-able facts about the run (spec, versions, git commit, hardware, wall time), shown as
    given, `gate_stats` each trial's `gate_stats.json` keyed by trial id, `optuna_study` an
    `optuna.Study` for the importance figure. `calibration` declares the study a calibration
    against a reference: keys `reference` (shipped name or YAML path, default "paper"),
    `held_out` (methods kept out of the fit, default ["taugate"]: their rows are predictions),
    `sparsity_target` (a high-activation ratio to choose lambda for, or None) and
    `sparsity_tolerance` (default 0.05). Without it the paper is the reference, and a study with
    several protocols is still reported under the one chosen on validation with TauGate held out.
    Returns the paths by name: "html", "markdown", "csv", "figures" (the folder) and
    "figure:<id>" for every figure written.
    """
    if not (TEMPLATES / "report.html").is_file():
        raise FileNotFoundError(
            f"report templates missing from {TEMPLATES}: the installed package lacks its data files "
            "(pyproject.toml needs [tool.setuptools.package-data] analysis = ['templates/*'])"
        )
    out = Path(out_dir)
    (out / FIGURES).mkdir(parents=True, exist_ok=True)
    setting = Calibration.from_mapping(calibration)
    context = build_context(df, out, dict(metadata or {}), dict(gate_stats or {}), optuna_study, setting)
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    paths = {"html": out / "report.html", "markdown": out / "report.md", "csv": out / "results.csv"}
    paths["html"].write_text(env.get_template("report.html").render(context), encoding="utf-8")
    paths["markdown"].write_text(env.get_template("report.md").render(context), encoding="utf-8")
    df.to_csv(paths["csv"], index=False)
    figures = {f"figure:{f.id}": out / f.path for f in context["all_figures"] if f.path}
    return {**paths, "figures": out / FIGURES, **figures}


def build_context(
    df: pd.DataFrame,
    out: Path,
    metadata: dict[str, Any],
    gate_stats: dict[str, Any],
    optuna_study: Any,
    calibration: Calibration,
) -> dict[str, Any]:
    """Everything the templates show, computed once (figures are written on the way).

    Representatives (paper table, verdicts, fidelity, sparsity, significance, heatmaps) are
    chosen on validation metrics within the report's protocol (`report_setting`); Pareto fronts,
    sensitivity and the all-configurations table describe every configuration on test metrics."""
    stats = seed_statistics(df)
    setting = report_setting(stats, calibration)
    chosen = representatives(setting.stats, prefer=setting.reference.settings())
    protocol_df = within_protocol(df, setting.protocol) if setting.protocol is not None else df.iloc[0:0]
    figures: list[FigureEntry] = []

    def figure(fid: str, title: str, draw: Callable[[Path], Path | None], missing: str) -> FigureEntry:
        target = out / FIGURES / f"{fid}.png"
        target.unlink(missing_ok=True)  # a figure skipped now must not survive from an earlier report here
        written = draw(target)
        entry = FigureEntry(fid, title, f"{FIGURES}/{fid}.png" if written else None, "" if written else missing)
        figures.append(entry)
        return entry

    fronts = []
    for name, front in (pareto_sets(stats) if not stats.empty else {}).items():
        entry = figure(
            f"pareto-{name}",
            FRONT_TITLES[name],
            lambda path, front=front, name=name: plots.plot_pareto(front, FRONTS[name], path, FRONT_TITLES[name]),
            "needs at least two configurations with finished trials",
        )
        fronts.append({"name": name, "figure": entry, "table": front_table(name, front)})

    sensitivity = [
        figure(
            "sensitivity-gate-sharpness",
            "Accuracy and sparsity vs gate sharpness s",
            lambda path: plots.plot_sensitivity(stats, "gate_sharpness", path, xscale="log"),
            "the study does not sweep gate_sharpness (needs two values of s for one gated method)",
        ),
        figure(
            "sensitivity-sparsity-weight",
            "Accuracy and sparsity vs sparsity weight λ",
            lambda path: plots.plot_sensitivity(stats, "sparsity_weight", path, xscale="symlog"),
            "the study does not sweep sparsity_weight (needs two values of λ for one gated method)",
        ),
        figure(
            "lora-rank",
            "LoRA accuracy vs rank",
            lambda path: plots.plot_lora_rank(stats, path),
            "the study does not sweep the LoRA rank",
        ),
    ]
    efficiency = figure(
        "accuracy-vs-params",
        "Accuracy vs trainable parameters, every method",
        lambda path: plots.plot_accuracy_vs_params(stats, path),
        "needs at least two configurations with finished trials",
    )
    fidelity = fidelity_section(stats, setting, figure)
    sparsity = sparsity_section(setting, figure)
    budget = budget_figure(stats, setting, figure, accuracy_name(RETENTION_ANGLE))
    interpretability = interpretability_section(df, stats, setting.stats, gate_stats, figure)
    importances = figure(
        "optuna-importances",
        "Optuna hyperparameter importances",
        lambda path: plots.plot_param_importances(optuna_study, path) if optuna_study is not None else None,
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
            "configurations": len(stats),
            "methods": ", ".join(map(str, stats["method"].unique())) if "method" in stats else "",
            "seeds": int(df["seed"].nunique()) if "seed" in df else 0,
        },
        "selection_note": selection_note(stats),
        "paper_table": paper_table(df, chosen, setting),
        "fidelity": fidelity,
        "sparsity": sparsity,
        "budget": budget,
        "verdicts": check_claims(setting.stats, setting.reference, setting.held_out),
        "fronts": fronts,
        "efficiency": efficiency,
        "sensitivity": sensitivity,
        "statistics_table": statistics_table(stats),
        "significance": [
            significance_table(protocol_df, accuracy_name(TARGET_ANGLE)),
            significance_table(protocol_df, accuracy_name(RETENTION_ANGLE)),
        ],
        "interpretability": interpretability,
        "importances": importances,
        "failed_table": failed_table(failed, config_columns(df)),
        "metadata": metadata_rows(metadata),
        "all_figures": figures,
    }


def selection_note(stats: pd.DataFrame) -> str:
    """Empty when the study has validation metrics; else why nothing can be chosen (an old study)."""
    selection = accuracy_name(TARGET_ANGLE, validation=True)
    if stats.empty or f"{selection}_mean" in stats.columns:
        return ""
    return (
        f"This study has no validation metrics ({selection}): each method's representative is chosen on validation "
        "only, never on the test digits it is reported on, so it is undefined here. Selection needs validation "
        "metrics: rerun the study."
    )


def paper_table(df: pd.DataFrame, chosen: pd.DataFrame, setting: Setting) -> Table:
    """`analysis.paper.comparison_rows` on each method's representative configuration (chosen
    on validation; a sweep of twenty TauGate settings would otherwise be averaged into one
    meaningless row). A method held out of a calibration is labelled a prediction."""
    ids = configuration_ids(df, config_columns(df)) if not df.empty else pd.Series(dtype=int)
    keep = ids.isin(chosen["config_id"].astype(int)) if not chosen.empty else pd.Series(False, index=df.index)
    records = [
        {k: v for k, v in record.items() if not is_missing(v)} for record in ok_rows(df[keep]).to_dict("records")
    ]
    table = Table("paper-table", [*COMPARISON_COLUMNS, "our configuration (n seeds)"])
    for paper_row, cells in zip(PAPER_TABLE, comparison_rows(records), strict=True):
        ours = chosen.loc[paper_row.method] if paper_row.method in chosen.index else None
        n = f"{accuracy_name(TARGET_ANGLE)}_n"
        if ours is not None:
            where = f"{ours['label']} (n={int(ours[n])})"
        elif "method" in df.columns and paper_row.method in set(df["method"]):
            where = "no representative (chosen on validation only; see above)"
        else:
            where = "not in this study"
        role = setting.role(paper_row.method)
        table.add([*cells, f"{where}; {role}" if role == PREDICTION else where], highlight=role == PREDICTION)
    return table


def front_table(name: str, front: pd.DataFrame) -> Table:
    objectives = FRONTS[name]
    table = Table(f"front-table-{name}", ["configuration", *(o.label for o in objectives), "on front"])
    for _, row in front.sort_values("on_front", ascending=False, kind="stable").iterrows():
        cells = [
            fmt(row.get("trainable_params_mean"), 0) if o.metric == "trainable_params" else mean_ci(row, o.metric)
            for o in objectives
        ]
        table.add([row["label"], *cells, "yes" if row["on_front"] else ""], highlight=row["on_front"])
    return table


def statistics_table(stats: pd.DataFrame) -> Table:
    columns = [
        ("acc_45", "acc 45°"), ("acc_0", "acc 0°"), ("acc_45_hard", "acc 45° hard"),
        ("high_activation_ratio", "high-act. ratio"), ("active_ratio", "active ratio"),
        ("train_seconds", "train s"),
    ]  # fmt: skip
    table = Table("seed-statistics-table", ["configuration", "seeds ok / trials", "params", *(c[1] for c in columns)])
    for _, row in stats.iterrows():
        params = row.get("trainable_params_mean")
        table.add([
            row["label"], f"{row['n_ok']} / {row['n_trials']}", fmt(params, 0),
            *(mean_ci(row, metric, 2 if metric == "train_seconds" else 3) for metric, _ in columns),
        ])  # fmt: skip
    return table


def significance_table(df: pd.DataFrame, metric: str) -> dict[str, Any]:
    # one reference for every metric: the TauGate configuration that represents TauGate elsewhere
    select_by = accuracy_name(TARGET_ANGLE, validation=True)
    comparisons = paired_comparisons(df, reference="taugate", metric=metric, select_by=select_by)
    reference = comparisons["reference"].iloc[0] if len(comparisons) else None
    table = Table(
        f"significance-table-{metric.replace('_', '-')}",
        ["configuration", "pairs", "mean", "reference mean", "difference [95% CI]", "p (paired t)", "significant"],
    )
    for _, row in comparisons.iterrows():
        interval = "" if math.isnan(row["ci_low"]) else f" [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
        table.add(
            [
                row["label"], row["n_pairs"], fmt(row["mean"]), fmt(row["reference_mean"]),
                f"{row['mean_diff']:+.3f}{interval}" if not math.isnan(row["mean_diff"]) else "-",
                "-" if math.isnan(row["p_value"]) else f"{row['p_value']:.3g}",
                "yes" if row["significant"] else "no",
            ],
            highlight=row["significant"],
        )  # fmt: skip
    return {"metric": metric, "reference": reference, "table": table}


def interpretability_section(
    df: pd.DataFrame,
    stats: pd.DataFrame,
    reported: pd.DataFrame,
    gate_stats: dict[str, Any],
    figure: Callable[..., FigureEntry],
) -> dict[str, Any]:
    """Heatmaps of one TauGate trial (the best configuration on validation, lowest seed with
    statistics) and the mode-specific neuron counts and Jaccard overlap of every configuration
    with statistics."""
    best = best_configuration(reported, "taugate") if not reported.empty else None
    trial, trial_note = None, ""
    if best is not None and gate_stats:
        ids = configuration_ids(df, config_columns(df))
        members = ok_rows(df[ids == int(best["config_id"])]).sort_values("seed")
        for _, row in members.iterrows():
            if str(row["trial_id"]) in {str(k) for k in gate_stats}:
                trial = {str(k): v for k, v in gate_stats.items()}[str(row["trial_id"])]
                trial_note = f"{best['label']}, seed {row['seed']} (trial {row['trial_id']})"
                break
    heatmap = figure(
        "gate-heatmaps",
        f"TauGate firing rates by mode and class: {trial_note}" if trial_note else "TauGate firing rates",
        lambda path: plots.plot_gate_heatmaps(trial, path, title=f"Firing rates, {trial_note}") if trial else None,
        "no gate statistics for a finished TauGate trial",
    )
    summary = interpret_configurations(df, gate_stats) if gate_stats else pd.DataFrame()
    a, b = RETENTION_MODE, TARGET_MODE
    table = Table(
        "interpretability-table",
        ["configuration", "trials", f"active at {a}°", f"active at {b}°",
         f"specific to {a}°", f"specific to {b}°", "Jaccard (active sets)"],
    )  # fmt: skip
    if not summary.empty:
        labelled = summary.merge(stats[["config_id", "label"]], on="config_id", how="left")
        order = {cid: i for i, cid in enumerate(stats["config_id"])}
        labelled = labelled.sort_values("config_id", key=lambda s: s.map(order))
        for _, row in labelled.iterrows():

            def cell(name: str, digits: int = 1, row: pd.Series = row) -> str:
                std = row[f"{name}_std"]
                spread = "" if math.isnan(std) else f" ± {std:.{digits}f}"
                return f"{row[f'{name}_mean']:.{digits}f}{spread}"

            table.add([
                row["label"], row["n"], cell(f"active_{a}"), cell(f"active_{b}"),
                cell(f"specific_{a}"), cell(f"specific_{b}"), cell("jaccard", 2),
            ], highlight=str(row["label"]).startswith("taugate"))  # fmt: skip
    return {"figure": heatmap, "table": table, "modes": (a, b)}


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
