"""What every report figure is drawn with: the Agg canvas, the dpi, the palette and a colour per method.

A figure is a `matplotlib.figure.Figure` saved through the Agg canvas directly, never pyplot.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.table.results import METHOD_ORDER, format_value

DPI = 110
_PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974")


def method_colour(method: str) -> str:
    """A fixed colour per method, so a method looks the same in every figure."""
    index = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER) + sum(map(ord, method))
    return _PALETTE[index % len(_PALETTE)]


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _values(table: pd.DataFrame, column: str) -> np.ndarray:
    if column not in table.columns:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)


def _params_axis(ax: Axes, params: np.ndarray) -> None:
    """Symlog keeps the frozen base (0 parameters) on an otherwise logarithmic axis; the linear
    part ends at the decade below the smallest adapter, so no empty decades waste the width."""
    positive = params[np.isfinite(params) & (params > 0)]
    threshold = 10.0 ** math.floor(math.log10(positive.min())) if len(positive) else 1.0
    ax.set_xscale("symlog", linthresh=threshold, linscale=0.4)
    ax.set_xlabel("trainable parameters (log scale, 0 = frozen)")


def lambda_axis(ax, values: np.ndarray) -> None:
    """An x axis of sparsity weights: symlog, so lambda = 0 stays on it, ticked at the values swept."""
    values = np.unique(values)
    positive = values[values > 0]
    ax.set_xscale("symlog", linthresh=float(positive.min()) if len(positive) else 1.0)
    ax.set_xticks(values, [format_value(v) for v in values])
