"""Which hidden units each mode uses, and how those sets overlap between modes.

Input: per mode m, the firing rates of every hidden unit `[layer][unit]` on mode m's digits under
mode m's own adapter (`trainables.engine.evaluation.gate_statistics(...).rate`: the fraction of digits on
which the unit's hard-gated activation is non-zero). Rates are measured on VALIDATION digits: the
sets chosen here are what the interventions later test on test digits (select on validation,
report on test). A unit is named `(layer, index)`.

Defaults (module constants, all overridable):
- `UNIT_THRESHOLD` = 0.5: a unit belongs to mode m's set when it fires on at least half of m's
  digits (the report's interpretability section uses the same "active"). Measured on the shipped
  modes study, a threshold of 0.1 puts ~233 of 256 units in every set (Jaccard ~0.99 between any
  two modes: it only says that most units fire on some digits); at 0.5 the overlap falls with the
  angle between the modes (0.95 at 15 degrees, 0.80 at 90), which is what the sets are for.
- `EXCLUSIVE_ON` = 0.5, `EXCLUSIVE_OFF` = 0.1: a unit is *exclusive* to m when it fires on at least
  half of m's digits and on less than 10% of every other mode's digits. On dense modes (13 angles
  15 degrees apart) no unit is: neighbours share their units. The report counts them anyway.
- `ATTRIBUTED_FRACTION` = 0.05: the units *attributed* to m, which the intervention silences, are
  the 5% of hidden units (of m's set) that m uses most beyond the other modes: the highest
  `rate_m(u) - mean over other modes e of rate_e(u)`, each under its own adapter, kept only where
  that score is positive. A fixed count makes modes comparable and the random control sized alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

Unit = tuple[int, int]  # (hidden layer, unit index)
Rates = Mapping[float, Sequence[Sequence[float]]]  # mode angle -> [layer][unit] firing rate
UnitSets = Mapping[float, frozenset[Unit]]

UNIT_THRESHOLD = 0.5
EXCLUSIVE_ON = 0.5
EXCLUSIVE_OFF = 0.1
ATTRIBUTED_FRACTION = 0.05
EMPTY_JACCARD = 1.0  # two empty sets are identical sets: similarity 1 (scipy's jaccard distance is 0 there)
GAP_COLUMNS = ("gap", "pairs", "jaccard_mean", "jaccard_min", "jaccard_max", "core_mean", "core_min", "core_max")


def _check_fraction(name: str, value: float, allow_zero: bool = False) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= 1):
        raise ValueError(f"{name}: {value} is not a fraction of digits in {'[0' if allow_zero else '(0'}, 1]")


def check_thresholds(threshold: float, on: float, off: float) -> None:
    """Refuse thresholds that are not fractions of digits, or an `off` above `on` (a unit could then
    be exclusive to two modes), before any work starts."""
    _check_fraction("threshold", threshold)
    _check_fraction("on", on)
    _check_fraction("off", off)
    if off > on:
        raise ValueError(f"off ({off}) must not exceed on ({on}): a unit could then be exclusive to two modes")


def _shape(rates: Rates) -> list[int]:
    """The layer widths shared by every mode's rates (modes of one foundation have one shape)."""
    shapes = {angle: [len(layer) for layer in layers] for angle, layers in rates.items()}
    distinct = {tuple(s) for s in shapes.values()}
    if len(distinct) > 1:
        raise ValueError(f"rates: modes have different layer widths {shapes}")
    return list(next(iter(distinct), ()))


def _units_where(layers: Sequence[Sequence[float]], keep) -> frozenset[Unit]:
    return frozenset((depth, i) for depth, layer in enumerate(layers) for i, rate in enumerate(layer) if keep(rate))


def unit_sets(rates: Rates, threshold: float = UNIT_THRESHOLD) -> dict[float, frozenset[Unit]]:
    """Per mode, the units that fire on at least `threshold` of its digits (0 < threshold <= 1:
    a unit that never fires is never in a set)."""
    _check_fraction("threshold", threshold)
    _shape(rates)
    return {angle: _units_where(layers, lambda rate: rate >= threshold) for angle, layers in rates.items()}


def exclusive_units(rates: Rates, on: float = EXCLUSIVE_ON, off: float = EXCLUSIVE_OFF) -> dict[float, frozenset[Unit]]:
    """Per mode m, the units that fire on >= `on` of m's digits (under m's adapter) and on < `off`
    of every other mode's digits (under that mode's adapter).

    `off` <= `on` is required, which makes the sets disjoint across modes. With a single mode the
    "every other mode" condition holds vacuously: every unit at or above `on` is exclusive.
    """
    check_thresholds(UNIT_THRESHOLD, on, off)
    _shape(rates)
    arrays = {angle: [np.asarray(layer, dtype=float) for layer in layers] for angle, layers in rates.items()}
    exclusive = {}
    for angle, layers in arrays.items():
        others = [other for a, other in arrays.items() if a != angle]
        units = set()
        for depth, layer in enumerate(layers):
            keep = layer >= on
            for other in others:
                keep &= other[depth] < off
            units.update((depth, int(i)) for i in np.flatnonzero(keep))
        exclusive[angle] = frozenset(units)
    return exclusive


def attributed_units(
    rates: Rates, fraction: float = ATTRIBUTED_FRACTION, threshold: float = UNIT_THRESHOLD
) -> dict[float, frozenset[Unit]]:
    """Per mode m, the `round(fraction x hidden units)` units of m's set (rate >= `threshold`) with the
    highest positive score `rate_m(u) - mean_{e != m} rate_e(u)` (ties: lower layer and index
    first). Fewer when fewer units score above 0; with a single mode, nothing to contrast: empty."""
    _check_fraction("fraction", fraction)
    widths = _shape(rates)
    count = max(1, round(fraction * sum(widths)))
    flat = {angle: np.concatenate([np.asarray(layer, dtype=float) for layer in layers]) if widths else np.zeros(0)
            for angle, layers in rates.items()}  # fmt: skip
    names = [(depth, i) for depth, width in enumerate(widths) for i in range(width)]
    attributed = {}
    for angle, own in flat.items():
        others = [rate for a, rate in flat.items() if a != angle]
        if not others:
            attributed[angle] = frozenset()
            continue
        score = own - np.mean(others, axis=0)
        eligible = [i for i in np.argsort(-score, kind="stable") if score[i] > 0 and own[i] >= threshold]
        attributed[angle] = frozenset(names[i] for i in eligible[:count])
    return attributed


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a & b| / |a | b|; two empty sets give `EMPTY_JACCARD` (1: they are the same set)."""
    union = len(a | b)
    return len(a & b) / union if union else EMPTY_JACCARD


def jaccard_matrix(sets: UnitSets) -> pd.DataFrame:
    """Pairwise Jaccard overlap of the modes' unit sets; index and columns are the angles, ascending.
    Symmetric, 1 on the diagonal (also for an empty set, see `EMPTY_JACCARD`)."""
    angles = sorted(sets)
    values = [[jaccard(sets[a], sets[b]) for b in angles] for a in angles]
    return pd.DataFrame(values, index=pd.Index(angles, name="mode"), columns=pd.Index(angles, name="mode"), dtype=float)


def angular_gap(a: float, b: float) -> float:
    """The rotation between two modes, in degrees on the circle: 350 vs 10 is 20, not 340."""
    turn = abs(a - b) % 360
    return min(turn, 360 - turn)


def pair_overlaps(sets: UnitSets) -> pd.DataFrame:
    """One row per unordered pair of modes: mode_a < mode_b, gap, jaccard, core (|a & b|, the units
    both modes use) and union (|a | b|)."""
    rows = [
        {"mode_a": a, "mode_b": b, "gap": angular_gap(a, b), "jaccard": jaccard(sets[a], sets[b]),
         "core": len(sets[a] & sets[b]), "union": len(sets[a] | sets[b])}
        for a, b in itertools.combinations(sorted(sets), 2)
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["mode_a", "mode_b", "gap", "jaccard", "core", "union"])


def summarise_gaps(pairs: pd.DataFrame) -> pd.DataFrame:
    """`pair_overlaps` rows (of one seed or several, concatenated) grouped by the angular gap:
    how the shared core grows or shrinks as the modes move apart. `pairs` counts the mode pairs
    (over every seed given) at that gap."""
    if pairs.empty:
        return pd.DataFrame(columns=list(GAP_COLUMNS))
    grouped = pairs.groupby("gap", sort=True)
    table = pd.DataFrame(
        {
            "pairs": grouped.size(),
            "jaccard_mean": grouped["jaccard"].mean(),
            "jaccard_min": grouped["jaccard"].min(),
            "jaccard_max": grouped["jaccard"].max(),
            "core_mean": grouped["core"].mean(),
            "core_min": grouped["core"].min(),
            "core_max": grouped["core"].max(),
        }
    )
    return table.reset_index()[list(GAP_COLUMNS)]


def core_by_gap(sets: UnitSets) -> pd.DataFrame:
    """The pairwise overlap of one foundation's modes grouped by the angle between them."""
    return summarise_gaps(pair_overlaps(sets))


def common_core(sets: UnitSets) -> frozenset[Unit]:
    """The units every mode uses (empty when there are no modes)."""
    return frozenset.intersection(*sets.values()) if sets else frozenset()


def by_layer(units: frozenset[Unit] | set[Unit]) -> dict[int, list[int]]:
    """`{layer: [unit, ...]}`, the form `trainables.engine.silence.silenced` takes."""
    grouped: dict[int, list[int]] = {}
    for layer, index in sorted(units):
        grouped.setdefault(layer, []).append(index)
    return grouped
