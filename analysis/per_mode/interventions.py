"""Attribution by intervention (RQ3): do the units attributed to a mode carry that mode?

For one foundation, each target mode's own TauGate adapter names the units it uses (`unit_sets`
on validation digits), the units only it uses (`specific_units`, counted) and the units it uses
most beyond the other modes (`attributed_units`: a fixed share of the hidden units, the ones
silenced here). Silencing a mode's attributed units and measuring the accuracy drop on TEST
digits, beside a random control of the same number of units the mode also uses, turns the
firing-rate description into a causal claim or not (correlation is not attribution).
In the rows and the summary, control "specific" names the attributed units.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from torch import Tensor, nn

from analysis.per_mode.mode_units import (
    Unit,
    by_layer,
)
from trainables.config import angle_key
from trainables.engine.silence import hard_accuracy, silenced_accuracies

ROW_COLUMNS = (
    "silenced",
    "evaluated",
    "control",
    "draw",
    "n_units",
    "units",
    "acc_before",
    "acc_after",
    "drop",
    "note",
)
SPECIFIC, RANDOM = "specific", "random"
DRAWS = 5
CAUSAL_P = 0.05
CAUSAL_RULE = (
    "causal when the own-mode accuracy drop from silencing the attributed units exceeds the random control's "
    "(mean over draws), paired by seed: one-sided paired t-test on the per-seed differences, p < "
    f"{CAUSAL_P:g}; needs >= 2 seeds with attributed units"
)
TRIALS_DIR, CONFIG_FILE, METRICS_FILE, FOUNDATIONS_DIR = "trials", "config.json", "metrics.json", "foundations"


def _draw_generator(seed: int, angle: float) -> np.random.Generator:
    """One stream per (seed, silenced mode): a mode's draws do not depend on which other modes exist."""
    return np.random.default_rng([seed, zlib.crc32(angle_key(angle).encode())])


def _control_pool(specific: frozenset[Unit], active: frozenset[Unit]) -> tuple[list[Unit], str]:
    """The units a random control draws from, and a note when it had to widen the pool."""
    others = sorted(active - specific)
    if len(others) >= len(specific):
        return others, ""
    widened = sorted(active | specific)
    return widened, (
        f"only {len(others)} non-specific active units for {len(specific)} specific ones: "
        "control drawn from every unit active for the mode (specific ones included)"
    )


def intervene(
    models: dict[float, nn.Module],
    test: dict[float, tuple[Tensor, Tensor]],
    specific: dict[float, frozenset[Unit]],
    active: dict[float, frozenset[Unit]],
    draws: int = DRAWS,
    seed: int = 0,
) -> pd.DataFrame:
    """Silence each mode's specific units and measure hard-gated accuracy on every mode's test
    digits (each mode under its own adapter, the same units silenced), beside `draws` random
    controls of the same size drawn from the silenced mode's other active units.

    One row per (silenced, evaluated, control, draw); `units` are the (layer, unit) pairs silenced,
    `drop` = acc_before - acc_after. A mode
    without specific units gets one row per control and evaluated mode with n_units 0 and NaN
    accuracies after the intervention: there is nothing to silence, so nothing is measured.
    """
    if draws < 1:
        raise ValueError(f"draws: {draws} (needs at least 1)")
    modes = sorted(models)
    before = {angle: hard_accuracy(models[angle], *test[angle]) for angle in modes}
    rows: list[dict[str, Any]] = []

    planned: list[tuple[float, str, int, list[Unit], str]] = []  # (silenced mode, control, draw, units, note)
    for angle in modes:
        chosen = sorted(specific.get(angle, frozenset()))
        if not chosen:
            none = "no unit specific to this mode: nothing silenced"
            planned += [(angle, SPECIFIC, 0, [], none), (angle, RANDOM, 0, [], none)]
            continue
        planned.append((angle, SPECIFIC, 0, chosen, ""))
        pool, note = _control_pool(frozenset(chosen), active.get(angle, frozenset()))
        generator = _draw_generator(seed, angle)
        for draw in range(draws):
            picked = generator.choice(len(pool), size=len(chosen), replace=False)
            planned.append((angle, RANDOM, draw, [pool[i] for i in sorted(picked)], note))
    measured = [entry for entry in planned if entry[3]]
    for evaluated in modes:  # every silencing of one mode's model in one batched pass
        after = iter(silenced_accuracies(models[evaluated], *test[evaluated],
                                         [by_layer(frozenset(units)) for *_, units, _ in measured]))  # fmt: skip
        for silenced_mode, control, draw, units, note in planned:
            value = next(after) if units else math.nan
            rows.append({
                "silenced": silenced_mode, "evaluated": evaluated, "control": control, "draw": draw,
                "n_units": len(units), "units": tuple(units), "acc_before": before[evaluated], "acc_after": value,
                "drop": before[evaluated] - value, "note": note,
            })  # fmt: skip
    rows.sort(key=lambda row: (modes.index(row["silenced"]), row["control"] != SPECIFIC, row["draw"],
                               modes.index(row["evaluated"])))  # fmt: skip
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS))


def _verdict(differences: np.ndarray) -> tuple[bool | None, str]:
    """The causal rule (`CAUSAL_RULE`) on per-seed differences: specific drop minus random drop."""
    n = len(differences)
    if n < 2:
        return None, f"not testable: {n} seed(s) with attributed units (needs >= 2)"
    mean, std = float(differences.mean()), float(differences.std(ddof=1))
    if std == 0:
        holds = bool(mean > 0)
        return holds, f"{'holds' if holds else 'does not hold'}: difference {mean:+.3f} in every seed (n={n})"
    t = mean / (std / math.sqrt(n))
    p = float(stats.t.sf(t, df=n - 1))
    holds = bool(p < CAUSAL_P)
    relation = "<" if holds else ">="
    return holds, (
        f"{'holds' if holds else 'does not hold'}: difference {mean:+.3f} +- {std:.3f} (n={n}), "
        f"paired t({n - 1}) = {t:.2f}, one-sided p = {p:.3g} {relation} {CAUSAL_P:g}"
    )


def summarise(rows_by_seed: pd.DataFrame) -> pd.DataFrame:
    """Per silenced mode, over seeds (a seed = one foundation; rows carry `seed`, and `foundation`
    when known): n_units (mean), own-mode drop of the specific units (mean, std, n seeds), of the
    random control (mean over draws, then mean and std over seeds), the specific units' mean drop
    on the other modes, and `causal` stating `CAUSAL_RULE`'s outcome (`causal_holds`: True,
    False, or None when not testable). Seeds without specific units count in n_units only."""
    rows = rows_by_seed.copy()
    replicate = [c for c in ("seed", "foundation") if c in rows.columns]
    if not replicate:
        rows, replicate = rows.assign(seed=0), ["seed"]
    own = rows[rows["silenced"] == rows["evaluated"]]
    summary = []
    for angle, mode_rows in own.groupby("silenced", sort=True):
        specific = mode_rows[mode_rows["control"] == SPECIFIC].groupby(replicate)["drop"].mean()
        random = mode_rows[mode_rows["control"] == RANDOM].groupby(replicate)["drop"].mean()
        n_units = mode_rows[mode_rows["control"] == SPECIFIC].groupby(replicate)["n_units"].first()
        paired = pd.concat({"specific": specific, "random": random}, axis=1).dropna()
        others = rows[(rows["silenced"] == angle) & (rows["evaluated"] != angle) & (rows["control"] == SPECIFIC)]
        other_drop = others.groupby(replicate)["drop"].mean().dropna()
        holds, verdict = _verdict((paired["specific"] - paired["random"]).to_numpy())
        summary.append({
            "silenced": angle, "seeds": len(n_units), "n_units": float(n_units.mean()),
            "own_drop_specific_mean": specific.mean(), "own_drop_specific_std": specific.std(ddof=1),
            "own_drop_specific_n": int(specific.count()),
            "own_drop_random_mean": random.mean(), "own_drop_random_std": random.std(ddof=1),
            "other_drop_specific_mean": other_drop.mean() if len(other_drop) else math.nan,
            "causal_holds": holds, "causal": verdict,
        })  # fmt: skip
    table = pd.DataFrame(summary)
    # True, False or None (not testable), never numpy bools
    return table.astype({"causal_holds": object}) if len(table) else table
