"""The paper's table (analysis/references/paper.yaml) and our results beside it.

The numbers come from the shipped reference `references/paper.yaml` (`analysis.paper.reference.PAPER`),
the same table `analysis.reproduction.fidelity` and `analysis.reproduction.verdicts` compare with.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analysis.paper.reference import PAPER, Reference
from analysis.table.study_modes import degrees
from trainables.config import accuracy_name


@dataclass(frozen=True)
class PaperRow:
    method: str
    label: str
    trainable_params: int
    acc_0: tuple[float, float]  # mean, std over seeds at the reference's original angle (the paper's 0)
    acc_45: tuple[float, float]  # and at its target angle (the paper's 45)
    high_activation_ratio: float | None = None


def paper_rows(reference: Reference) -> tuple[PaperRow, ...]:
    """The rows of a reference holding the paper's columns (acc_0, acc_45, parameter counts)."""

    def mean_std(method: str, metric: str) -> tuple[float, float]:
        cell = reference.cell(method, metric)
        if cell is None:
            raise ValueError(f"reference {reference.name}: {method} has no {metric}")
        return cell.mean, cell.std if cell.std is not None else 0.0

    retention, target = accuracy_name(reference.retention_angle), accuracy_name(reference.target_angle)
    rows = []
    for method, row in reference.methods.items():
        ratio = reference.cell(method, "high_activation_ratio")
        rows.append(PaperRow(
            method, row.label, row.trainable_params or 0, mean_std(method, retention), mean_std(method, target),
            ratio.mean if ratio else None,
        ))  # fmt: skip
    return tuple(rows)


PAPER_TABLE = paper_rows(PAPER)
PAPER_METHODS = tuple(row.method for row in PAPER_TABLE)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(results: list[dict[str, Any]], metric: str, method: str) -> tuple[float, float, int] | None:
    values = [r[metric] for r in results if r.get("method") == method and r.get("status") == "ok" and metric in r]
    if not values:
        return None
    mean, std = mean_std(values)
    return mean, std, len(values)


# "±" is the sample std over seeds, in ours and in the paper's numbers alike: the headers say so
_RETENTION, _TARGET = degrees(PAPER.retention_angle), degrees(PAPER.target_angle)
COMPARISON_COLUMNS = (
    "method",
    "params (ours)",
    f"acc {_RETENTION} ours (mean ± std)",
    f"acc {_RETENTION} paper (mean ± std)",
    f"acc {_TARGET} ours (mean ± std)",
    f"acc {_TARGET} paper (mean ± std)",
    "high-act ours (mean)",
    "paper",
)


def _cell(stat: tuple[float, float] | tuple[float, float, int] | None) -> str:
    return "-" if stat is None else f"{stat[0]:.3f} ± {stat[1]:.3f}"


def comparison_rows(results: list[dict[str, Any]], labels: Mapping[str, str] | None = None) -> list[tuple[str, ...]]:
    """Our seed means beside the paper's, one row per paper method (cells as text); `labels`
    replaces a method's row label (to name our settings where they are not the paper's)."""
    rows = []
    for row in PAPER_TABLE:
        params = summarise(results, "trainable_params", row.method)
        ratio = summarise(results, "high_activation_ratio", row.method)
        rows.append((
            (labels or {}).get(row.method, row.label),
            f"{params[0]:.0f}" if params else "-",
            _cell(summarise(results, accuracy_name(PAPER.retention_angle), row.method)), _cell(row.acc_0),
            _cell(summarise(results, accuracy_name(PAPER.target_angle), row.method)), _cell(row.acc_45),
            f"{ratio[0]:.2f}" if ratio else "-",
            f"{row.high_activation_ratio:.2f}" if row.high_activation_ratio is not None else "-",
        ))  # fmt: skip
    return rows
