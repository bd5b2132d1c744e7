"""What every report section builds with: rendered tables, figure entries, number formatting."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Table:
    """A rendered table: text cells, and which rows to highlight (front members, significant)."""

    id: str
    columns: Sequence[str]
    rows: list[list[str]] = field(default_factory=list)
    highlight: list[bool] = field(default_factory=list)

    def add(self, cells: Sequence[Any], highlight: bool = False) -> None:
        self.rows.append([str(c) for c in cells])
        self.highlight.append(bool(highlight))


@dataclass
class FigureEntry:
    """A figure of the report, or the reason it is absent (the study lacks its data)."""

    id: str
    title: str
    path: str | None  # relative to the report folder
    missing: str = ""


# What "±" means in a table: every header (or cell) that shows one names it with these.
STD = "mean ± std"  # the sample std over seeds
CI = "mean ± 95% CI"  # the Student-t 95% half-width over seeds

# figure(id, title, draw(path) -> written path or None, reason when not drawn) -> FigureEntry
FigureMaker = Callable[[str, str, Callable[[Path], Path | None], str], FigureEntry]


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell; missing values are "-"."""
    if value is None or (isinstance(value, float | np.floating) and not math.isfinite(float(value))):
        return "-"
    if isinstance(value, float | np.floating) and float(value).is_integer() and abs(value) >= 100:
        return f"{float(value):.0f}"
    return f"{float(value):.{digits}f}" if isinstance(value, float | np.floating) else str(value)


def mean_ci(row: Mapping[str, Any], metric: str, digits: int = 3) -> str:
    """ "mean ± CI half-width" (just the mean when the CI is undefined, "-" when no value)."""
    return mean_spread(row, metric, "ci95", digits)


def mean_std(row: Mapping[str, Any], metric: str, digits: int = 3) -> str:
    """ "mean ± seed std" (just the mean when the std is undefined, "-" when no value)."""
    return mean_spread(row, metric, "std", digits)


def mean_spread(row: Mapping[str, Any], metric: str, spread: str, digits: int = 3) -> str:
    mean, half = row.get(f"{metric}_mean"), row.get(f"{metric}_{spread}")
    if mean is None or not math.isfinite(float(mean)):
        return "-"
    if half is None or not math.isfinite(float(half)):
        return f"{float(mean):.{digits}f}"
    return f"{float(mean):.{digits}f} ± {float(half):.{digits}f}"


def plus_minus(mean: float | None, std: float | None, digits: int = 3) -> str:
    """ "0.850 ± 0.010" from two numbers ("-" without a mean, no spread without a std)."""
    if mean is None or not math.isfinite(float(mean)):
        return "-"
    if std is None or not math.isfinite(float(std)):
        return f"{float(mean):.{digits}f}"
    return f"{float(mean):.{digits}f} ± {float(std):.{digits}f}"
