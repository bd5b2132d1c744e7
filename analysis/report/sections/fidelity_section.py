"""The report's calibration settings, the protocol it reports on, and "Fidelity to the reference".

The protocol a report shows its representatives under is the study's only one, or, for a study
with several, the one `analysis.reproduction.fidelity.choose_protocol` picks on validation metrics from the
reference's methods minus the held-out ones. The held-out methods' rows are then predictions
(nothing about them was fitted) and are labelled so wherever they appear.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis.aggregate.stats import representatives
from analysis.figures import calibration_plots
from analysis.paper.reference import Reference, load_reference, reference_mismatch
from analysis.report.sections.blocks import FigureEntry, FigureMaker, Table, fmt, plus_minus
from analysis.reproduction.fidelity import (
    ProtocolChoice,
    choose_by_ratio,
    choose_protocol,
    fidelity_cells,
    protocol_scores,
    score,
)
from analysis.reproduction.spread import MARGIN_NAME, SE_MEANING, reference_n_note
from analysis.table.protocols import Protocol, describe, protocols, within_protocol
from analysis.table.results import is_missing, protocol_columns
from analysis.table.study_modes import StudyModes, study_modes

PREDICTION = "prediction (held out of the fit)"
FITTED = "fitted"
SCORE_DEFINITION = (
    "score = mean over the cells of |(ours_m - ours_baseline) - (ref_m - ref_baseline)|, each cell a "
    "(method, accuracy) of the reference other than the baseline; z (single runs) = (ours - ref) / "
    "sqrt(std_ours² + std_ref²), the gap in units of the spread of a difference of single runs (each table's "
    f"seed std; the verdicts' {MARGIN_NAME} is 2 of these units); z (means) = (ours - ref) / "
    f"sqrt(std_ours²/n_ours + std_ref²/n_ref), the gap in units of the {SE_MEANING}, with n_ours our seeds and "
    f"{reference_n_note()}"
)


@dataclass(frozen=True)
class Calibration:
    """`write_report`'s `calibration` dict: the reference, the methods held out of the fit, and
    an optional target for the activation ratio. `declared` is False for the defaults."""

    reference: str = "paper"
    held_out: tuple[str, ...] = ("taugate",)
    sparsity_target: float | None = None
    sparsity_tolerance: float = 0.05
    declared: bool = False

    @classmethod
    def from_mapping(cls, calibration: Mapping[str, Any] | None) -> Calibration:
        if calibration is None:
            return cls()
        unknown = set(calibration) - {"reference", "held_out", "sparsity_target", "sparsity_tolerance"}
        if unknown:
            raise ValueError(f"calibration: unknown key {', '.join(sorted(unknown))}")
        given = dict(calibration)
        if "held_out" in given:
            given["held_out"] = tuple(given["held_out"] or ())
        return cls(**{k: v for k, v in given.items() if v is not None or k == "sparsity_target"}, declared=True)


@dataclass
class Setting:
    """The protocol the report shows (None: none could be chosen), its statistics rows, how it
    was chosen, and whether held-out methods are predictions (a fit happened)."""

    reference: Reference
    calibration: Calibration
    protocol: Protocol | None
    stats: pd.DataFrame
    fitted: bool
    choice: ProtocolChoice | None = None
    why: str = ""
    roles: dict[str, str] = field(default_factory=dict)
    modes: StudyModes = field(default_factory=lambda: study_modes(pd.DataFrame()))
    # why the reference's numbers do not apply (its angles are not the study's); empty when they do
    mismatch: str = ""

    def representatives(self) -> pd.DataFrame:
        """Each method's representative under the report's protocol, chosen on validation at the study's target."""
        if self.stats.empty:
            return pd.DataFrame()
        return representatives(self.stats, prefer=self.reference.settings(), target=self.modes.target)

    def label(self, method: str, chosen: pd.DataFrame) -> str:
        """The reference's label of `method`, naming our representative's settings where they differ."""
        return self.reference.label_for(method, chosen.loc[method] if method in chosen.index else None)

    def role(self, method: str) -> str:
        return self.roles.get(method, "")

    @property
    def held_out(self) -> list[str]:
        """The methods whose rows are predictions: the held-out ones, once a fit happened."""
        return list(self.calibration.held_out) if self.fitted else []


def report_setting(stats: pd.DataFrame, calibration: Calibration, modes: StudyModes | None = None) -> Setting:
    """Which protocol the report is about, and why (see the module docstring), at the study's
    angles (`modes`, by default read from `stats`); with a sparsity target, each held-out method
    is represented by its configuration whose validation ratio is closest to the target
    (`choose_by_ratio`), never by its accuracies."""
    setting = _protocol_setting(stats, calibration, modes or study_modes(stats))
    if calibration.sparsity_target is None or setting.stats.empty:
        return setting
    methods = dict(setting.reference.methods)
    for method in calibration.held_out:
        if method not in methods:
            continue
        choice = choose_by_ratio(setting.stats, method, target=float(calibration.sparsity_target),
                                 protocol=setting.protocol, tolerance=calibration.sparsity_tolerance)  # fmt: skip
        if choice.configuration is not None:
            axes = {axis: choice.configuration[axis] for axis in RATIO_AXES if axis in choice.configuration.index}
            settings = methods[method].settings | {k: v for k, v in axes.items() if not is_missing(v)}
            methods[method] = methods[method].model_copy(update={"settings": settings})
    setting.reference = setting.reference.model_copy(update={"methods": methods})
    return setting


# the configuration values a ratio-chosen representative is pinned to (a gated method's own axes and budget)
RATIO_AXES = ("gate_sharpness", "sparsity_weight", "tau_lr_multiplier", "sparsity_target", "method_lr_scale",
              "method_epochs")  # fmt: skip


def _protocol_setting(stats: pd.DataFrame, calibration: Calibration, modes: StudyModes) -> Setting:
    reference = load_reference(calibration.reference)
    mismatch = reference_mismatch(reference, modes)
    present = protocols(stats)
    several = len(present) > 1
    fitted = (calibration.declared or several) and not mismatch
    roles = {}
    if fitted:
        roles = {m: PREDICTION if m in calibration.held_out else FITTED for m in reference.methods}
        roles.pop(reference.baseline, None)
    at = {"modes": modes, "mismatch": mismatch}
    if not several:
        why = f"The study ran one protocol ({describe(present[0])})."
        return Setting(reference, calibration, present[0], stats, fitted, why=why, roles=roles, **at)
    if mismatch:
        why = f"No protocol of {len(present)} could be chosen: the choice reads fidelity to the reference. {mismatch}"
        return Setting(reference, calibration, None, stats.iloc[0:0], fitted, None, why, roles, **at)
    choice = choose_protocol(stats, reference, held_out=calibration.held_out, target=modes.target)
    fit = ", ".join(choice.fitted) or "no method"
    if choice.protocol is None:
        why = (
            f"No protocol of {len(present)} could be chosen: none has a validation score over {fit} "
            f"(selection needs validation metrics, {modes.selection_metric}; rerun the study)."
        )
        return Setting(reference, calibration, None, stats.iloc[0:0], fitted, choice, why, roles, **at)
    why = (
        f"Chosen from {len(present)} protocols: {describe(choice.protocol)}, the lowest validation score "
        f"({fmt(choice.ranking['score'].iloc[0])}) over {fit}; held out of the fit: "
        f"{', '.join(choice.held_out) or 'none'}."
    )
    return Setting(reference, calibration, choice.protocol, within_protocol(stats, choice.protocol), fitted, choice,
                   why, roles, **at)  # fmt: skip


def fidelity_section(all_stats: pd.DataFrame, setting: Setting, figure: FigureMaker) -> dict[str, Any]:
    """Per-cell table and scores on test metrics under the report's protocol, and, for several
    protocols, the score of each (validation: used for the choice; test: reported) with a figure.
    Nothing is compared when the reference's angles are not the study's (`setting.mismatch` says so)."""
    applies = not setting.stats.empty and not setting.mismatch
    cells = None
    if applies:
        cells = fidelity_cells(setting.stats, setting.reference, validation=False, target=setting.modes.target)
    table = cells_table(cells, setting)
    scores: list[tuple[str, str]] = []
    if cells is not None:
        scores.append(("every cell", fmt(score(cells))))
        if setting.fitted:
            for role, name in ((FITTED, "fitted methods"), (PREDICTION, "held-out methods (prediction)")):
                mine = cells[cells["method"].map(setting.role) == role]
                scores.append((name, fmt(score(mine)) if len(mine) else "-"))
    grid = _grid_scores(all_stats, setting) if setting.choice is not None else pd.DataFrame()
    heatmap = figure(
        "fidelity-grid",
        "Validation fidelity score over the protocol grid (fitted methods)",
        lambda path: calibration_plots.plot_protocol_scores(grid, path, "validation score") if len(grid) else None,
        "the study runs one protocol",
    )
    return {
        "reference": setting.reference,
        "why": setting.why,
        "table": table,
        "scores": scores,
        "definition": SCORE_DEFINITION,
        "grid_table": _grid_table(grid, setting),
        "figure": heatmap,
        "held_out": setting.held_out,
        "mismatch": setting.mismatch,
    }


CELL_HEADER = ("method", "metric", "our configuration (n)", "ours (mean ± std)", "reference (mean ± std)",
               "|ours - ref|", "baseline-relative gap", "z (single runs)", "z (means, n_ref assumed)",
               "role")  # fmt: skip


def cells_table(cells: pd.DataFrame | None, setting: Setting) -> Table:
    """The fidelity cells as text; held-out methods' rows say they are predictions."""
    table = Table("fidelity-table", CELL_HEADER)
    chosen = setting.representatives() if cells is not None else pd.DataFrame()
    for _, cell in cells.iterrows() if cells is not None else ():
        role = setting.role(cell["method"])
        ours = "not in this study" if cell["configuration"] is None else f"{cell['configuration']} (n={cell['n']})"
        table.add(
            [
                setting.label(cell["method"], chosen), cell["metric"], ours,
                plus_minus(cell["ours_mean"], cell["ours_std"]),
                plus_minus(cell["reference_mean"], cell["reference_std"]), fmt(cell["abs_diff"]),
                _signed(cell["relative_diff"]), _signed(cell["z"], 2), _signed(cell["z_means"], 2), role,
            ],
            highlight=role == PREDICTION,
        )  # fmt: skip
    return table


def _signed(value: float, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(float(value)) else f"{float(value):+.{digits}f}"


def _grid_scores(stats: pd.DataFrame, setting: Setting) -> pd.DataFrame:
    """Per protocol: the validation score the choice read, and the test scores (fitted, every method)."""
    assert setting.choice is not None
    columns = protocol_columns(stats)
    validation = setting.choice.ranking.rename(columns={"score": "validation score"})[[*columns, "validation score"]]
    fitted = protocol_scores(stats, setting.reference, validation=False, methods=setting.choice.fitted)
    every = protocol_scores(stats, setting.reference, validation=False)
    table = validation.merge(fitted[[*columns, "score"]].rename(columns={"score": "test score (fitted)"}), on=columns)
    return table.merge(every[[*columns, "score"]].rename(columns={"score": "test score (every method)"}), on=columns)


def _grid_table(grid: pd.DataFrame, setting: Setting) -> Table:
    columns = ["validation score", "test score (fitted)", "test score (every method)"]
    table = Table("fidelity-protocols-table", ["protocol", *columns, "chosen"])
    for _, row in grid.iterrows():
        protocol = {c: row[c] for c in protocol_columns(grid)}
        chosen = setting.protocol is not None and protocols(pd.DataFrame([protocol]))[0] == setting.protocol
        table.add([describe(protocol), *(fmt(row[c]) for c in columns), "yes" if chosen else ""], highlight=chosen)
    return table


def protocol_representatives(stats: pd.DataFrame, reference: Reference, target: float) -> pd.DataFrame:
    """Each method's representative within each protocol (chosen on validation), with the protocol
    fields: the rows of the retention-against-budget figure."""
    frames = []
    for protocol in protocols(stats):
        chosen = representatives(within_protocol(stats, protocol), prefer=reference.settings(), target=target)
        if not chosen.empty:
            frames.append(chosen.assign(**protocol))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def budget_figure(stats: pd.DataFrame, setting: Setting, figure: FigureMaker) -> FigureEntry:
    """Original-mode accuracy of each method's representative (chosen at the study's target) against the budget."""
    target, retention = setting.modes.target, setting.modes.retention_metric
    rows = protocol_representatives(stats, setting.reference, target) if not stats.empty else pd.DataFrame()
    return figure(
        "retention-vs-budget",
        "Retention vs specialisation budget (epochs x lr_scale)",
        lambda path: calibration_plots.plot_retention_vs_budget(rows, path, retention) if len(rows) else None,
        "the study does not vary epochs or lr_scale",
    )
