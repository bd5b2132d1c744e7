"""The report's "Modes" section: one frozen base, many target modes (the paper's thesis, RQ3 and RQ4).

Three parts, each from its own module: the limits map (`analysis.limits`: gain over Frozen and
retention against the target angle), the units each mode's TauGate adapter keeps on and their
overlap, and the intervention that silences a mode's own units against a random control
(`analysis.interventions`, computed from the study's saved foundations and adapters).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from analysis import limits as limits_module
from analysis.modes import DEFAULT_ANGLES, degrees
from analysis.sections.common import FigureEntry, Table, fmt, plus_minus

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
            lambda path: limits_module.plot_limits(limits, path),
            "needs a method besides Frozen at two or more target angles",
        ),
        "verdict": limits.verdict,
        "notes": list(limits.notes),
    }
    section |= units_part(mode_analysis, figure)
    return section


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
    """Neurons per mode and the intervention: filled in from `analysis.interventions`."""
    return {"units": None, "units_why": "no TauGate adapters of two or more target modes on one foundation"}


def _listing(values: Sequence[float]) -> str:
    return ", ".join(degrees(v) for v in values)
