"""Attribution by intervention (RQ3): do the units attributed to a mode carry that mode?

For one foundation, each target mode's own TauGate adapter names the units it uses (`unit_sets`
on validation digits), its exclusive units (`exclusive_units`: only it keeps them on; counted) and
its attributed units (`attributed_units`: the fixed share of the hidden units it uses most beyond
the other modes, the ones silenced here). Silencing a mode's attributed units and measuring the
accuracy drop on TEST digits, beside a random control of the same number of units the mode also uses, turns the
firing-rate description into a causal claim or not (correlation is not attribution). The modes'
tests are one family: their p-values are Holm-corrected together, and each is reported beside
its effect size and CI (`summarise`).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor, nn

from analysis.aggregate.stats import CORRECTION, holm, paired_effect
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
ATTRIBUTED, RANDOM = "attributed", "random"
DRAWS = 5
CAUSAL_P = 0.05
MIN_SEEDS = 2  # a t-test needs a spread; DESIGN asks for 5 seeds (configs/modes.yaml ships them)
CAUSAL_RULE = (
    "the attributed units carry their mode when silencing them costs the mode more accuracy than silencing as "
    "many random active units (mean over draws), paired by seed: one-sided paired t-test on the per-seed "
    f"differences (attributed drop - random drop), {CORRECTION}-corrected over the silenced modes (one family), "
    f"corrected p < {CAUSAL_P:g}; effect size: the mean difference with its 95% Student-t CI and Cohen's d_z "
    f"(mean / std of the differences); needs >= {MIN_SEEDS} seeds with attributed units"
)
TRIALS_DIR, CONFIG_FILE, METRICS_FILE, FOUNDATIONS_DIR = "trials", "config.json", "metrics.json", "foundations"


def _draw_generator(seed: int, angle: float) -> np.random.Generator:
    """One stream per (seed, silenced mode): a mode's draws do not depend on which other modes exist."""
    return np.random.default_rng([seed, zlib.crc32(angle_key(angle).encode())])


def _control_pool(attributed: frozenset[Unit], active: frozenset[Unit]) -> tuple[list[Unit], str]:
    """The units a random control draws from, and a note when it had to widen the pool."""
    others = sorted(active - attributed)
    if len(others) >= len(attributed):
        return others, ""
    widened = sorted(active | attributed)
    return widened, (
        f"only {len(others)} other active units for {len(attributed)} attributed ones: "
        "control drawn from every unit active for the mode (attributed ones included)"
    )


def intervene(
    models: dict[float, nn.Module],
    test: dict[float, tuple[Tensor, Tensor]],
    attributed: dict[float, frozenset[Unit]],
    active: dict[float, frozenset[Unit]],
    draws: int = DRAWS,
    seed: int = 0,
) -> pd.DataFrame:
    """Silence each mode's attributed units and measure hard-gated accuracy on every mode's test
    digits (each mode under its own adapter, the same units silenced), beside `draws` random
    controls of the same size drawn from the silenced mode's other active units.

    One row per (silenced, evaluated, control, draw); `units` are the (layer, unit) pairs silenced,
    `drop` = acc_before - acc_after; `control` is "attributed" or "random". A mode
    without attributed units gets one row per control and evaluated mode with n_units 0 and NaN
    accuracies after the intervention: there is nothing to silence, so nothing is measured.
    """
    if draws < 1:
        raise ValueError(f"draws: {draws} (needs at least 1)")
    modes = sorted(models)
    before = {angle: hard_accuracy(models[angle], *test[angle]) for angle in modes}
    rows: list[dict[str, Any]] = []

    planned: list[tuple[float, str, int, list[Unit], str]] = []  # (silenced mode, control, draw, units, note)
    for angle in modes:
        chosen = sorted(attributed.get(angle, frozenset()))
        if not chosen:
            none = "no unit attributed to this mode: nothing silenced"
            planned += [(angle, ATTRIBUTED, 0, [], none), (angle, RANDOM, 0, [], none)]
            continue
        planned.append((angle, ATTRIBUTED, 0, chosen, ""))
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
    rows.sort(key=lambda row: (modes.index(row["silenced"]), row["control"] != ATTRIBUTED, row["draw"],
                               modes.index(row["evaluated"])))  # fmt: skip
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS))


SUMMARY_COLUMNS = (
    "silenced", "seeds", "n_units", "own_drop_attributed_mean", "own_drop_attributed_std", "own_drop_attributed_n",
    "own_drop_random_mean", "own_drop_random_std", "other_drop_attributed_mean", "n_seeds", "difference_mean",
    "difference_ci_low", "difference_ci_high", "d_z", "t", "p", "p_holm", "causal_holds", "causal",
)  # fmt: skip


def _verdict(effect: dict[str, float], p_holm: float) -> tuple[bool | None, str]:
    """`CAUSAL_RULE` on one mode's paired effect (`analysis.aggregate.stats.paired_effect` of the per-seed
    differences attributed drop minus random drop) and its Holm-corrected p."""
    n = int(effect["n"])
    if n < MIN_SEEDS:
        return None, f"not testable: {n} seed(s) with attributed units (needs >= {MIN_SEEDS})"
    holds = bool(p_holm < CAUSAL_P)
    return holds, (
        f"{'holds' if holds else 'does not hold'}: {CORRECTION}-corrected p = {p_holm:.3g} "
        f"{'<' if holds else '>='} {CAUSAL_P:g} (raw one-sided p = {effect['p_one_sided']:.3g}, "
        f"paired t({n - 1}) = {effect['t']:.2f}); difference {effect['mean']:+.3f} "
        f"[95% CI {effect['ci_low']:+.3f}, {effect['ci_high']:+.3f}], d_z = {effect['d_z']:.2f}, n = {n} seeds"
    )


def summarise(rows_by_seed: pd.DataFrame) -> pd.DataFrame:
    """Per silenced mode, over seeds (a seed = one foundation; rows carry `seed`, and `foundation`
    when known), `SUMMARY_COLUMNS`: n_units (mean), own-mode drop of the attributed units (mean, std,
    n seeds), of the random control (mean over draws, then mean and std over seeds), the attributed
    units' mean drop on the other modes; the paired difference attributed drop minus random drop
    (`n_seeds` pairs, `difference_mean` with its 95% Student-t CI, Cohen's `d_z`, `t`, the raw one-sided
    `p`), `p_holm` (Holm-corrected over the modes of this summary, one family) and `causal` stating
    `CAUSAL_RULE`'s outcome (`causal_holds`: True, False, or None when not testable, p_holm NaN).
    Seeds without attributed units count in n_units only."""
    rows = rows_by_seed.copy()
    replicate = [c for c in ("seed", "foundation") if c in rows.columns]
    if not replicate:
        rows, replicate = rows.assign(seed=0), ["seed"]
    own = rows[rows["silenced"] == rows["evaluated"]]
    summary, effects = [], []
    for angle, mode_rows in own.groupby("silenced", sort=True):
        attributed = mode_rows[mode_rows["control"] == ATTRIBUTED].groupby(replicate)["drop"].mean()
        random = mode_rows[mode_rows["control"] == RANDOM].groupby(replicate)["drop"].mean()
        n_units = mode_rows[mode_rows["control"] == ATTRIBUTED].groupby(replicate)["n_units"].first()
        paired = pd.concat({"attributed": attributed, "random": random}, axis=1).dropna()
        others = rows[(rows["silenced"] == angle) & (rows["evaluated"] != angle) & (rows["control"] == ATTRIBUTED)]
        other_drop = others.groupby(replicate)["drop"].mean().dropna()
        effect = paired_effect((paired["attributed"] - paired["random"]).to_numpy())
        effects.append(effect)
        summary.append({
            "silenced": angle, "seeds": len(n_units), "n_units": float(n_units.mean()),
            "own_drop_attributed_mean": attributed.mean(), "own_drop_attributed_std": attributed.std(ddof=1),
            "own_drop_attributed_n": int(attributed.count()),
            "own_drop_random_mean": random.mean(), "own_drop_random_std": random.std(ddof=1),
            "other_drop_attributed_mean": other_drop.mean() if len(other_drop) else math.nan,
            "n_seeds": int(effect["n"]), "difference_mean": effect["mean"], "difference_ci_low": effect["ci_low"],
            "difference_ci_high": effect["ci_high"], "d_z": effect["d_z"], "t": effect["t"],
            "p": effect["p_one_sided"] if effect["n"] >= MIN_SEEDS else math.nan,
        })  # fmt: skip
    if not summary:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    corrected = holm([row["p"] for row in summary])
    for row, effect, p_holm in zip(summary, effects, corrected, strict=True):
        row["p_holm"] = float(p_holm)
        row["causal_holds"], row["causal"] = _verdict(effect, float(p_holm))
    # True, False or None (not testable), never numpy bools
    return pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS)).astype({"causal_holds": object})
