"""The paper's table (PAPER.md) and our results beside it."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PaperRow:
    method: str
    label: str
    trainable_params: int
    acc_0: tuple[float, float]  # mean, std over seeds
    acc_45: tuple[float, float]
    high_activation_ratio: float | None = None


PAPER_TABLE = (
    PaperRow("frozen", "Frozen (no adapt)", 0, (0.832, 0.017), (0.833, 0.016)),
    PaperRow("bitfit", "BitFit (bias-only)", 266, (0.851, 0.005), (0.852, 0.009)),
    PaperRow("taugate", "TauGate", 512, (0.850, 0.006), (0.850, 0.010), 0.28),
    PaperRow("lora", "LoRA (r=8)", 10448, (0.855, 0.006), (0.864, 0.005)),
    PaperRow("full", "Full FT", 118282, (0.783, 0.007), (0.887, 0.005)),
)
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
