"""Seed aggregation and paired significance tests.

Seeds are the study's replicates, so a configuration is summarised by the mean over its seeds
with a Student-t confidence interval (few seeds: the normal interval would be too narrow).
Trials with the same seed share a foundation, so two configurations are compared *paired by
seed*: the foundation's luck cancels in each difference, which is what makes a 0.01 accuracy
gap detectable with five seeds.

A family of tests (every configuration against one reference, every mode's intervention) is corrected
for multiple comparisons with Holm's step-down method (`holm`), which controls the family-wise error
rate without assuming independent tests; each p is reported beside its effect size and CI
(`paired_effect`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from analysis.paper.reference import PAPER
from analysis.table.results import (
    config_columns,
    configuration_ids,
    configuration_labels,
    is_validation_metric,
    metric_columns,
    ok_rows,
    sort_configurations,
)
from analysis.table.study_modes import study_modes
from trainables.config import accuracy_name, validation_name
from trainables.errors import TauGateError

CONFIDENCE = 0.95
ALPHA = 0.05
CORRECTION = "Holm"  # the multiple-comparison correction every family of tests here uses (`holm`)
# The paper's table reports LoRA at rank 8: when a study sweeps the rank, that is the LoRA to
# set beside the paper and to judge its claims with (the reference's `settings`).
PAPER_SETTINGS: Mapping[str, Mapping[str, Any]] = PAPER.settings()


class SelectionError(TauGateError, ValueError):
    """A selection was asked to read a test metric: choices read validation metrics only."""


def selection_metric(metric: str | None, target: float | None = None, table: pd.DataFrame | None = None) -> str:
    """The metric a choice reads: `metric` if it is a validation metric, by default the target
    mode's validation accuracy (`val_acc_30` for a study targeting 30 degrees; `target`, else
    the study's own, `analysis.table.study_modes.study_modes(table)`). A test metric is refused, never used:
    test metrics are only reported (select on validation, report on test)."""
    if not metric and target is None:
        target = study_modes(table if table is not None else pd.DataFrame()).target
    metric = metric or accuracy_name(target, validation=True)
    if not is_validation_metric(metric):
        raise SelectionError(f"selection reads validation metrics only; {metric!r} is not one (e.g. val_acc_45)")
    return metric


def t_half_width(std: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the Student-t interval for a mean of `n` values (NaN when n < 2)."""
    if n < 2 or not math.isfinite(std):
        return math.nan
    return float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))


def seed_statistics(
    df: pd.DataFrame, metrics: Sequence[str] | None = None, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per configuration: `<metric>_mean`, `_std` (sample, ddof=1), `_n` and `_ci95`
    (Student-t 95% half-width) over the seeds whose status is "ok"; NaN and infinite values
    (a metric a method does not have, a loss that blew up) are left out of that metric's `_n`.

    Every configuration of `df` gets a row, also one whose trials all failed (its means are NaN
    and `n_ok` is 0), so a report can say it was tried. Other columns: the config columns,
    `config_id` (see `configuration_ids`), `label`, `n_trials`, `n_ok`.
    `metrics` defaults to every metric column present; `columns` to `config_columns(df)`.
    """
    columns = list(config_columns(df) if columns is None else columns)
    metrics = list(metric_columns(df) if metrics is None else metrics)
    ids = configuration_ids(df, columns)
    ok_ids = ids[ok_rows(df).index]
    rows = []
    for config_id, members in df.groupby(ids, sort=True):
        row: dict[str, Any] = {c: members[c].iloc[0] for c in columns}
        ok = df.loc[ok_ids.index[ok_ids == config_id]]
        row |= {"config_id": int(config_id), "n_trials": len(members), "n_ok": len(ok)}
        for metric in metrics:
            values = pd.to_numeric(ok[metric], errors="coerce") if metric in ok else pd.Series(dtype=float)
            values = values[np.isfinite(values.astype(float))]  # NaN and an infinite loss carry no mean
            n = len(values)
            std = float(values.std(ddof=1)) if n > 1 else math.nan
            row |= {
                f"{metric}_mean": float(values.mean()) if n else math.nan,
                f"{metric}_std": std,
                f"{metric}_n": n,
                f"{metric}_ci95": t_half_width(std, n),
            }
        rows.append(row)
    result = pd.DataFrame(rows)
    if result.empty:
        return result
    result.insert(len(columns), "label", configuration_labels(result, columns))
    return sort_configurations(result)


def best_configuration(
    stats: pd.DataFrame,
    method: str,
    metric: str | None = None,
    prefer: Mapping[str, Any] | None = None,
    target: float | None = None,
) -> pd.Series | None:
    """The configuration of `method` with the highest seed mean of the validation `metric`
    (default: validation accuracy on the `target` mode, by default the study's, `val_acc_45`
    for a study targeting 45 degrees).

    With several configurations (a sweep over s or lambda) one must stand for the method; the
    best on validation is "what the method reaches" without the optimistic bias of picking on
    the test digits it is then reported on. `prefer` narrows the choice to matching settings
    first (e.g. LoRA rank 8) when any match. None when the table has no such validation metric
    (an old study): selection never falls back to test metrics.
    """
    mean = f"{selection_metric(metric, target, stats)}_mean"
    if "method" not in stats.columns or mean not in stats.columns:
        return None
    candidates = stats[(stats["method"] == method) & stats[mean].notna()]
    if prefer:
        matching = candidates
        for column, value in prefer.items():
            if column in matching.columns:
                matching = matching[matching[column] == value]
        if not matching.empty:
            candidates = matching
    if candidates.empty:
        return None
    return candidates.loc[candidates[mean].idxmax()]


def representatives(
    stats: pd.DataFrame,
    metric: str | None = None,
    prefer: Mapping[str, Mapping[str, Any]] = PAPER_SETTINGS,
    target: float | None = None,
) -> pd.DataFrame:
    """One configuration per method (see `best_configuration`), indexed by method; empty when
    the table has no validation metric to choose by."""
    metric = selection_metric(metric, target, stats)
    chosen = {}
    for method in stats["method"].unique() if "method" in stats.columns else []:
        best = best_configuration(stats, method, metric, prefer.get(method))
        if best is not None:
            chosen[method] = best
    return pd.DataFrame(chosen).T if chosen else pd.DataFrame()


COMPARISON_COLUMNS = (
    "label",
    "method",
    "config_id",
    "reference",
    "n_pairs",
    "mean",
    "reference_mean",
    "mean_diff",
    "ci_low",
    "ci_high",
    "d_z",
    "p_value",
    "p_holm",
    "significant",
)


def paired_comparisons(
    df: pd.DataFrame,
    reference: str = "taugate",
    metric: str | None = None,
    alpha: float = ALPHA,
    select_by: str | None = None,
) -> pd.DataFrame:
    """Every other configuration against the reference method, paired by seed, on `metric`
    (default: the study's target-mode accuracy, `analysis.table.study_modes.study_modes`).

    The reference is the reference method's best configuration by seed mean of the validation
    metric `select_by` (default: the validation twin of `metric`; see `best_configuration`), so
    comparing retention (`acc_0`) against the configuration chosen for target accuracy is
    `metric="acc_0", select_by="val_acc_45"`. A table without that validation metric (an old
    study) has no reference, hence an empty table: never a reference chosen on test. Every other
    configuration (of any method, including the reference
    method's other settings) is compared with it on the seeds both have finished. Columns
    (`COMPARISON_COLUMNS`): `mean_diff` is configuration minus reference, `ci_low`/`ci_high` its
    Student-t 95% interval, `d_z` Cohen's d_z (mean difference / std of the differences),
    `p_value` the two-sided paired t-test, `p_holm` that p Holm-corrected over the table's
    comparisons (one family: every configuration against the one reference, on one metric), and
    `significant` is p_holm < alpha. Fewer than two pairs give NaN interval and p-values (left
    out of the family) and `significant=False`, never an error. An absent reference gives an
    empty table.
    """
    columns = config_columns(df)
    metric = metric or study_modes(df).target_metric
    select_by = selection_metric(select_by or validation_name(metric))
    if metric not in df.columns or select_by not in df.columns:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    stats = seed_statistics(df, list(dict.fromkeys([metric, select_by])), columns)
    chosen = best_configuration(stats, reference, select_by) if not stats.empty else None
    if chosen is None:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))

    ids = configuration_ids(df, columns)
    ok = ok_rows(df)
    ok = ok[pd.to_numeric(ok[metric], errors="coerce").notna()]
    # Several trials of one configuration on one seed (a rerun) count once, as their mean.
    by_seed = ok.assign(_config=ids[ok.index]).groupby(["_config", "seed"])[metric].mean()
    reference_values = by_seed.xs(int(chosen["config_id"]), level="_config")

    rows = []
    for _, other in stats[stats["config_id"] != chosen["config_id"]].iterrows():
        values = (
            by_seed.xs(int(other["config_id"]), level="_config")
            if int(other["config_id"]) in by_seed.index.get_level_values("_config")
            else pd.Series(dtype=float)
        )
        pairs = pd.concat([values.rename("other"), reference_values.rename("reference")], axis=1, join="inner")
        rows.append({
            "label": other["label"],
            "method": other.get("method"),
            "config_id": int(other["config_id"]),
            "reference": chosen["label"],
            **paired_test(pairs["other"].to_numpy(float), pairs["reference"].to_numpy(float), alpha),
        })  # fmt: skip
    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    if len(table):
        table["p_holm"] = holm(table["p_value"].to_numpy(dtype=float))
        table["significant"] = [bool(p < alpha) if math.isfinite(p) else False for p in table["p_holm"]]
    return table


def paired_test(values: np.ndarray, reference: np.ndarray, alpha: float = ALPHA) -> dict[str, Any]:
    """Mean difference `values - reference`, its Student-t 95% interval, Cohen's d_z and the
    paired t-test (two-sided; `significant` here is the uncorrected p < alpha, `p_holm` is left
    to the family: `paired_comparisons`)."""
    n = len(values)
    diff = values - reference
    result: dict[str, Any] = {
        "n_pairs": n,
        "mean": float(values.mean()) if n else math.nan,
        "reference_mean": float(reference.mean()) if n else math.nan,
        "mean_diff": float(diff.mean()) if n else math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "d_z": math.nan,
        "p_value": math.nan,
        "p_holm": math.nan,
        "significant": False,
    }
    if n < 2:
        return result
    std = float(diff.std(ddof=1))
    half = t_half_width(std, n)
    with warnings.catch_warnings():  # identical pairs make t undefined: scipy warns and gives NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(scipy_stats.ttest_rel(values, reference).pvalue)
    result |= {
        "ci_low": result["mean_diff"] - half,
        "ci_high": result["mean_diff"] + half,
        "d_z": result["mean_diff"] / std if std > 0 else math.nan,
        "p_value": p_value,
        "significant": bool(p_value < alpha) if math.isfinite(p_value) else False,
    }
    return result


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down correction (Holm 1979) of one family of p-values, in their order.

    With the m finite p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of the
    i-th is max over j <= i of min(1, (m - j + 1) * p_(j)): the smallest is multiplied by m, the
    next by m - 1, and so on, each kept at least as large as the one before (monotone in the raw
    p), never above 1. A hypothesis is rejected at level alpha when its adjusted p < alpha, which
    controls the family-wise error rate for any dependence between the tests. NaN entries (a test
    that could not be run) are not counted in m and stay NaN.
    """
    raw = np.asarray(p_values, dtype=float)
    adjusted = np.full(raw.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(raw))
    m = len(finite)
    if not m:
        return adjusted
    order = finite[np.argsort(raw[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * raw[order])
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


EFFECT_COLUMNS = ("n", "mean", "std", "ci_low", "ci_high", "d_z", "t", "p_one_sided")


def paired_effect(differences: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> dict[str, float]:
    """Effect size of per-seed paired differences and a one-sided test of "mean > 0": `n`, `mean`,
    `std` (ddof=1), the Student-t `confidence` interval of the mean (`ci_low`, `ci_high`), Cohen's
    d_z = mean / std, the t statistic with n - 1 degrees of freedom and its one-sided p (upper tail).

    Fewer than two differences give NaN for everything but `n` and `mean`. Identical differences
    (std 0) have no t distribution: their interval is the point itself, d_z and t are +-inf (NaN
    at a mean of 0) and p is 0 when the mean is positive, else 1 (no evidence of an increase)."""
    values = np.asarray(differences, dtype=float)
    values = values[np.isfinite(values)]
    n = len(values)
    result = dict.fromkeys(EFFECT_COLUMNS, math.nan) | {"n": n, "mean": float(values.mean()) if n else math.nan}
    if n < 2:
        return result
    mean, std = result["mean"], float(values.std(ddof=1))
    if std == 0:
        ratio = math.copysign(math.inf, mean) if mean else math.nan
        return result | {"std": 0.0, "ci_low": mean, "ci_high": mean, "d_z": ratio, "t": ratio,
                         "p_one_sided": 0.0 if mean > 0 else 1.0}  # fmt: skip
    half = t_half_width(std, n, confidence)
    t = mean / (std / math.sqrt(n))
    return result | {"std": std, "ci_low": mean - half, "ci_high": mean + half, "d_z": mean / std, "t": t,
                     "p_one_sided": float(scipy_stats.t.sf(t, n - 1))}  # fmt: skip
