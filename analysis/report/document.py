"""The study report: `report.html` (opens offline), `report.md` and `results.csv` in one folder.

Everything the reader needs sits beside the HTML: figures are PNG files under `figures/`
referenced by relative paths, styles are inline, nothing loads from a network, so the folder
can be zipped, attached to an MLflow run or opened from a cluster's shared disk as is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from analysis.report.context import FIGURES, build_context
from analysis.report.sections.fidelity_section import Calibration

TEMPLATES = Path(__file__).parents[1] / "templates"


def write_report(
    df: pd.DataFrame,
    out_dir: Path | str,
    metadata: Mapping[str, Any] | None = None,
    gate_stats: Mapping[str, Mapping[str, Any]] | None = None,
    optuna_study: Any = None,
    calibration: Mapping[str, Any] | None = None,
    mode_analysis: Any = None,
    banks: Sequence[Mapping[str, Any]] = (),
    histories: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> dict[str, Path]:
    """Write `report.html`, `report.md`, `results.csv` and `figures/*.png` into `out_dir`.

    `df` is the results table (one row per trial, see `analysis.table.results`), `metadata` any
    JSON-able facts about the run (spec, versions, git commit, hardware, wall time), shown as
    given, `gate_stats` each trial's `gate_stats.json` keyed by trial id, `optuna_study` an
    `optuna.Study` for the importance figure. `calibration` declares the study a calibration
    against a reference: keys `reference` (shipped name or YAML path, default "paper"),
    `held_out` (methods kept out of the fit, default ["taugate"]: their rows are predictions),
    `sparsity_target` (a high-activation ratio to choose lambda for, or None) and
    `sparsity_tolerance` (default 0.05). Without it the paper is the reference, and a study with
    several protocols is still reported under the one chosen on validation with TauGate held out.
    `mode_analysis` is `analysis.per_mode.mode_analysis.analyse_study_modes`'s result for a modes study (per-mode
    unit sets and interventions, computed from the study's saved adapters); `banks` the mode banks built
    from it (`study.pipeline.mode_banks.bank_summaries`: per bank its modes' compact subnetworks). `histories` each
    trial's per-epoch reports keyed by trial id (`analysis.table.load.load_histories`) for the learning curves;
    the spec's `scheduler` block in `metadata["spec"]` (or a stopped trial) adds the scheduler's savings.
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
    context = build_context(
        df, out, dict(metadata or {}), dict(gate_stats or {}), optuna_study, setting, mode_analysis, banks, histories
    )
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
