"""The report's "Sparsity front" section: TauGate mapped across the budget that moves its gates.

Shown only when the study records TauGate's budget and its configurations span several ratios
(`analysis.aggregate.sparsity_front.has_sparsity_front`); an older study keeps its report as it
was. Under the report's protocol: the front and its knee (chosen on validation), the ungated
methods beside it, lambda's saturation, dual ascent's requested ratios and its front against the
lambda sweep's, and the paper's TauGate claims decided at the paper's sparsity and at the knee.
Every mean has its 95% CI and n beside it; every verdict states its rule.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.aggregate.sparsity_budget import (
    DOMINANCE_RULE,
    SATURATION_RULE,
    TARGET_RULE,
    UNMATCHED,
    compare_dual_sweep,
    saturation,
    target_outcomes,
)
from analysis.aggregate.sparsity_front import KNEE_RULE, LAMBDA, RATIO, TARGET, has_sparsity_front, sparsity_front
from analysis.figures import sparsity_plots
from analysis.report.sections.blocks import CI, FigureMaker, Table, fmt, mean_ci, plus_minus
from analysis.report.sections.fidelity_section import PREDICTION, Setting
from analysis.reproduction.sparse_claims import HOLDS_RULE, SparseClaims, decide_sparse_claims
from analysis.reproduction.verdicts import Verdict
from analysis.table.results import format_value, is_missing
from analysis.table.study_modes import degrees

METHOD = "taugate"


def sparsity_front_section(setting: Setting, figure: FigureMaker) -> dict[str, Any] | None:
    """Everything the section shows, or None when the study has no front to show."""
    stats, modes = setting.stats, setting.modes
    if stats.empty or not has_sparsity_front(stats, METHOD):
        return None
    front = sparsity_front(stats, modes, prefer=setting.reference.settings())
    prediction = setting.role(METHOD) == PREDICTION
    tag = "prediction, " if prediction else ""
    target, original = degrees(modes.target), degrees(modes.retention)
    rows = front.table

    table = Table("sparsity-front-table", [
        "configuration", "budget", "λ (start)", "r* requested", "seeds", f"val ratio ({CI})",
        f"val acc {target} ({CI}; chooses the knee)", f"acc {target} ({tag}{CI})", f"acc {original} ({tag}{CI})",
        f"λ final ({CI})", "on validation front", "knee",
    ])  # fmt: skip
    for _, row in rows.iterrows():
        table.add([
            row["label"], row["budget"], _value(row.get(LAMBDA)), _value(row.get(TARGET)), int(row["n_ok"]),
            mean_ci(row, RATIO), mean_ci(row, modes.selection_metric), mean_ci(row, modes.target_metric),
            mean_ci(row, modes.retention_metric), mean_ci(row, "sparsity_weight_final", 3),
            "yes" if row["on_front"] else "", "knee" if row["knee"] else "",
        ], highlight=bool(row["knee"]))  # fmt: skip
    references = Table(
        "sparsity-references-table",
        ["method (no gates)", "configuration", "seeds", f"acc {target} ({CI})", f"acc {original} ({CI})"],
    )
    for method, row in front.references.iterrows():
        references.add([method, row["label"], int(row["n_ok"]), mean_ci(row, modes.target_metric),
                        mean_ci(row, modes.retention_metric)])  # fmt: skip

    decided = decide_sparse_claims(stats, front.knee, setting.reference, setting.held_out, setting.protocol, modes)
    return {
        "prediction": prediction,
        "budgets": ", ".join(front.budgets),
        "knee_rule": KNEE_RULE,
        "knee": _knee_text(front.knee, front.knee_why, modes, tag),
        "table": table,
        "references": references,
        "front_figure": figure(
            "sparsity-front",
            "TauGate's sparsity front: accuracy of both modes against the validation ratio",
            lambda path: sparsity_plots.plot_sparsity_front(front, path),
            "needs two TauGate configurations",
        ),  # fmt: skip
        "saturation_figure": figure(
            "lambda-saturation",
            "λ's saturation: ratio against λ per budget; tau's displacement against its budget",
            lambda path: sparsity_plots.plot_lambda_saturation(rows, path),
            "no budget sweeps two fixed values of λ",
        ),  # fmt: skip
        "saturation_rule": SATURATION_RULE,
        "saturation": _saturation_table(rows),
        "targets_rule": TARGET_RULE,
        "targets": _targets_table(rows),
        **_dual_sweep(rows, modes.target_metric, target, tag),
        **_claims(decided),
    }


def _knee_text(knee: pd.Series | None, why: str, modes: Any, tag: str) -> str:
    if knee is None:
        return f"No knee: {why}."
    n = int(knee["n_ok"])
    requested = f", r* = {_value(knee[TARGET])}" if pd.notna(knee.get(TARGET)) else ""
    return (
        f"The knee is {knee['label']} (budget {knee['budget']}; λ = {_value(knee.get(LAMBDA))}{requested}; "
        f"n = {n} seeds): validation ratio {mean_ci(knee, RATIO)}, validation accuracy "
        f"{degrees(modes.target)} {mean_ci(knee, modes.selection_metric)}; test accuracy ({tag}{CI}) "
        f"{degrees(modes.target)} {mean_ci(knee, modes.target_metric)}, {degrees(modes.retention)} "
        f"{mean_ci(knee, modes.retention_metric)}; test ratio {mean_ci(knee, 'high_activation_ratio')}."
    )


def _saturation_table(rows: pd.DataFrame) -> Table:
    table = Table("lambda-saturation-table", [
        "budget", "λ values", "λ range", f"val ratio at smallest λ ({CI})", f"val ratio at largest λ ({CI})",
        "last λ step lowers ratio by", "tau displacement / step budget (largest λ)", "λ saturated",
    ])  # fmt: skip
    for _, row in saturation(rows).iterrows():
        table.add([
            row["budget"], row["lambdas"], f"{_value(row['lambda_min'])} to {_value(row['lambda_max'])}",
            plus_minus(row["ratio_at_min"], row["ratio_at_min_ci95"]),
            plus_minus(row["ratio_at_max"], row["ratio_at_max_ci95"]), fmt(row["last_drop"]),
            f"{fmt(row['displacement'], 4)} / {fmt(row['step_budget'], 4)} = {fmt(row['share'], 2)}",
            "yes" if row["saturated"] else "no",
        ], highlight=bool(row["saturated"]))  # fmt: skip
    return table


def _targets_table(rows: pd.DataFrame) -> Table:
    table = Table("sparsity-targets-table", ["configuration", "budget", "requested r*", f"landed val ratio ({CI})",
                                             "seeds", "gap", "met (±0.03)", f"λ final ({CI})"])  # fmt: skip
    for _, row in target_outcomes(rows).iterrows():
        table.add([
            row["label"], row["budget"], fmt(row["requested"], 2), plus_minus(row["landed"], row["landed_ci95"]),
            row["n"], f"{row['gap']:+.3f}", "yes" if row["met"] else "no",
            plus_minus(row["lambda_final"], row["lambda_final_ci95"]),
        ], highlight=not row["met"])  # fmt: skip
    return table


def _dual_sweep(rows: pd.DataFrame, accuracy: str, target: str, tag: str) -> dict[str, Any]:
    result = compare_dual_sweep(rows, accuracy)
    table = Table("dual-vs-sweep-table", [
        "budget", "dual ascent", "λ sweep partner", f"val ratio dual / sweep ({CI})",
        f"acc {target} dual / sweep ({tag}{CI})", "Δ acc [± combined 95%]", "outcome", "trials dual / sweep",
    ])  # fmt: skip
    for _, pair in result.pairs.iterrows():
        if pair["outcome"] == UNMATCHED:
            table.add([pair["budget"], pair["dual"], "-", f"{fmt(pair['dual_ratio'])} / -", "-", "-", pair["outcome"],
                       f"{pair['dual_trials']} / -"])  # fmt: skip
            continue
        table.add([
            pair["budget"], pair["dual"], pair["sweep"],
            f"{plus_minus(pair['dual_ratio'], pair['dual_ratio_ci95'])} / "
            f"{plus_minus(pair['sweep_ratio'], pair['sweep_ratio_ci95'])}",
            f"{plus_minus(pair['dual_accuracy'], pair['dual_accuracy_ci95'])} / "
            f"{plus_minus(pair['sweep_accuracy'], pair['sweep_accuracy_ci95'])}",
            f"{pair['accuracy_diff']:+.3f} ± {fmt(pair['accuracy_half'])}", pair["outcome"],
            f"{pair['dual_trials']} / {pair['sweep_trials']}",
        ])  # fmt: skip
    if result.pairs.empty:
        text = "No budget has both dual-ascent and fixed-λ configurations: the fronts cannot be compared."
    else:
        trials = " and ".join(f"{side} {count}" for side, count in result.trials.items())
        verdict = (
            f"the {result.dominant} front dominates" if result.dominant != "neither" else "neither front dominates"
        )
        compared = int((result.pairs["outcome"] != UNMATCHED).sum())
        text = f"Over {compared} compared pairs (trials in the compared budgets: {trials}), {verdict}."
    return {"dual_rule": DOMINANCE_RULE, "dual_table": table, "dual_text": text}


def _claims(decided: SparseClaims) -> dict[str, Any]:
    knee = decided.knee["label"] if decided.knee is not None else "no knee"
    at_paper = decided.choice.configuration["label"] if decided.choice.within else "none within tolerance"
    table = Table("sparse-claims-table", [
        "claim", f"at ratio 0.28 ({at_paper})", "rule and numbers at 0.28", f"at the knee ({knee})",
        "rule and numbers at the knee", "decision",
    ])  # fmt: skip
    for claim in decided.claims:
        label = claim.claim + (" (prediction: held out of the fit)" if _prediction(claim) else "")
        table.add([label, *_verdict_cells(claim.at_paper), *_verdict_cells(claim.at_knee), claim.sentence])
    return {"claims_choice": decided.choice_text, "claims_rule": HOLDS_RULE, "claims_table": table}


def _prediction(claim: Any) -> bool:
    return any(v is not None and v.prediction for v in (claim.at_paper, claim.at_knee))


def _verdict_cells(verdict: Verdict | None) -> list[str]:
    if verdict is None:
        return ["not judged", "no such configuration"]
    return [verdict.verdict, f"{verdict.rule}; {verdict.numbers}"]


def _value(value: Any) -> str:
    """A config value as a label shows it (10, 0.3), "-" when missing."""
    return "-" if is_missing(value) or pd.isna(value) else format_value(value)
