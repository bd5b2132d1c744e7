"""Learning curves and an early-stopping scheduler's savings, from each trial's per-epoch history.

A trial that reports after every epoch leaves `<study>/trials/<key>/history.json`
(`analysis.table.load.load_histories`): per epoch (1-based) its mean training loss, its accuracy on the
validation digits of its target mode (`val_acc`) and the seconds since its training started. These
functions turn the histories and the results table into tables: one row per (trial, epoch), one per
(configuration, epoch) with the seed mean and min-max band, one per configuration (final and best
epoch), and the trial-epochs a scheduler spent against the full grid's.

Every accuracy here is a validation accuracy: a curve, a "best epoch" and a scheduler's stopping
decision read validation digits only (select on validation, report on test).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.table.results import (
    METHOD_ORDER,
    OK,
    STOPPED,
    config_columns,
    configuration_ids,
    configuration_labels,
    is_metric,
    is_validation_metric,
    sort_configurations,
)

EPOCH_FIELDS = ("loss", "val_acc", "seconds")
ERROR = "error"  # the loader's row for a trial that failed before it reached the ledger
SAVINGS_COUNTS = ("trials", "stopped", "spent", "planned")
SCHEDULER_NAMES = {"asha": "ASHA (asynchronous successive halving)", "median": "median stopping"}
SCHEDULER_KNOBS = {"asha": ("grace_period", "reduction_factor", "max_epochs"),
                   "median": ("grace_period", "min_samples_required")}  # fmt: skip


def _number(value: Any) -> float:
    """A finite float, else NaN (a null loss of a diverged epoch, a missing field, text)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def method_rank(method: str) -> tuple[int, str]:
    """Methods in `METHOD_ORDER`, unknown ones after them by name."""
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), str(method))


def _configurations(df: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    """The results table's configuration id per row, and one row per configuration (config columns,
    `config_id`, `label`) in the report's order: the configurations of `analysis.table.results`."""
    columns = config_columns(df)
    ids = configuration_ids(df, columns)
    configs = df[columns].assign(config_id=ids).drop_duplicates("config_id")
    configs = sort_configurations(configs.reset_index(drop=True))
    configs["label"] = configuration_labels(configs, columns)
    return ids, configs


def epoch_rows(df: pd.DataFrame, histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> pd.DataFrame:
    """One row per (trial, epoch) of every trial of `df` with a history: `trial_id`, `status`,
    `config_id`, `label`, `method`, `epoch`, `loss`, `val_acc`, `seconds` (NaN where an epoch lacks
    one). Trials without a history are skipped; so are entries without an epoch number."""
    columns = ["trial_id", "status", "config_id", "label", "method", "epoch", *EPOCH_FIELDS]
    if df.empty or "trial_id" not in df.columns or not histories:
        return pd.DataFrame(columns=columns)
    ids, configs = _configurations(df)
    labels = configs.set_index("config_id")["label"]
    rows = []
    for index, trial in df.iterrows():
        history = histories.get(str(trial["trial_id"]))
        if not history:
            continue
        for entry in history:
            epoch = _number(entry.get("epoch"))
            if math.isnan(epoch):
                continue
            rows.append({
                "trial_id": trial["trial_id"], "status": trial.get("status", OK), "config_id": int(ids[index]),
                "label": labels[int(ids[index])], "method": str(trial.get("method", "all")), "epoch": int(epoch),
                **{name: _number(entry.get(name)) for name in EPOCH_FIELDS},
            })  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def epoch_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (configuration, epoch) the validation accuracy over the trials (seeds) that reached that
    epoch: `val_acc_mean`, `val_acc_min`, `val_acc_max` (the band), `val_acc_std` (sample, NaN for one
    seed) and `val_acc_n`. A seed stopped early leaves the later epochs to the seeds that ran on."""
    columns = ["config_id", "label", "method", "epoch", "val_acc_mean", "val_acc_min", "val_acc_max",
               "val_acc_std", "val_acc_n"]  # fmt: skip
    values = rows.dropna(subset=["val_acc"]) if not rows.empty else rows
    if values.empty:
        return pd.DataFrame(columns=columns)
    grouped = values.groupby(["config_id", "epoch"], sort=True)
    curves = grouped["val_acc"].agg(["mean", "min", "max", "std", "count"])
    curves.columns = ["val_acc_mean", "val_acc_min", "val_acc_max", "val_acc_std", "val_acc_n"]
    names = grouped[["label", "method"]].first()
    return names.join(curves).reset_index()[columns]


def curve_summary(df: pd.DataFrame, curves: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration with a curve, in the report's order: `label`, `method`, `trials` (with
    a history), `last_epoch` (the curve's), `planned_epochs` (the config's `epochs`, NaN when the table
    lacks it), the final epoch's `final_mean`/`final_min`/`final_max`/`final_n`, and `best_epoch` (the
    highest seed mean; the first on ties) with `best_mean`."""
    columns = ["config_id", "label", "method", "trials", "last_epoch", "planned_epochs", "final_mean",
               "final_min", "final_max", "final_n", "best_epoch", "best_mean"]  # fmt: skip
    if curves.empty:
        return pd.DataFrame(columns=columns)
    ids, configs = _configurations(df)
    planned = (
        pd.to_numeric(df["epochs"], errors="coerce").groupby(ids).max()
        if "epochs" in df.columns
        else pd.Series(dtype=float)
    )
    summary = []
    for config_id in configs["config_id"]:
        curve = curves[curves["config_id"] == config_id].sort_values("epoch")
        if curve.empty:
            continue
        final, best = curve.iloc[-1], curve.loc[curve["val_acc_mean"].idxmax()]
        summary.append({
            "config_id": int(config_id), "label": final["label"], "method": final["method"],
            "trials": int(rows.loc[rows["config_id"] == config_id, "trial_id"].nunique()),
            "last_epoch": int(final["epoch"]), "planned_epochs": float(planned.get(config_id, math.nan)),
            "final_mean": float(final["val_acc_mean"]), "final_min": float(final["val_acc_min"]),
            "final_max": float(final["val_acc_max"]), "final_n": int(final["val_acc_n"]),
            "best_epoch": int(best["epoch"]), "best_mean": float(best["val_acc_mean"]),
        })  # fmt: skip
    return pd.DataFrame(summary, columns=columns)


def best_per_method(summary: pd.DataFrame, limit: int) -> dict[str, pd.DataFrame]:
    """Per method (in `METHOD_ORDER`), its at most `limit` configurations with the highest final mean
    validation accuracy (ties: the report's order), for a figure that stays readable."""
    methods = sorted(summary["method"].unique(), key=method_rank)
    return {m: summary[summary["method"] == m].sort_values("final_mean", ascending=False, kind="stable").head(limit)
            for m in methods}  # fmt: skip


@dataclass
class Savings:
    """The trial-epochs the study spent against the full grid's (every trial for its planned epochs).

    `per_method` has one row per method: `trials`, `stopped`, `spent`, `planned`. `stops` counts the
    stopped trials by the epoch they were stopped at. `notes` says which trials are left out and why."""

    scheduler: str
    spent: int
    planned: int
    stopped: int
    per_method: pd.DataFrame
    stops: dict[int, int]
    notes: list[str] = field(default_factory=list)

    @property
    def saving(self) -> float:
        """The share of the full grid's trial-epochs not spent (NaN without a planned epoch)."""
        return 1.0 - self.spent / self.planned if self.planned else math.nan


def scheduler_of(spec: Any) -> dict[str, Any] | None:
    """The spec's `scheduler` block (a mapping, as `spec.yaml` holds it), None when it names none."""
    block = spec.get("scheduler") if isinstance(spec, Mapping) else None
    if not isinstance(block, Mapping) or str(block.get("kind", "none")).lower() in ("none", ""):
        return None
    return dict(block)


def describe_scheduler(scheduler: Mapping[str, Any] | None, stopped: int) -> str:
    """The scheduler as the spec sets it ("ASHA ... on val_acc (max), grace period 1, ...")."""
    if scheduler is None:
        return f"the spec names no scheduler, yet {stopped} trial(s) are recorded as stopped"
    kind = str(scheduler.get("kind"))
    names = SCHEDULER_KNOBS.get(kind, SCHEDULER_KNOBS["asha"])
    knobs = [f"{name.replace('_', ' ')} {scheduler[name]}" for name in names if scheduler.get(name) is not None]
    metric = f"on {scheduler.get('metric', 'val_acc')} ({scheduler.get('mode', 'max')})"
    return ", ".join([f"{SCHEDULER_NAMES.get(kind, kind)} {metric}", *knobs])


def epochs_run(trial: Mapping[str, Any], history: Sequence[Mapping[str, Any]] | None, planned: float) -> float:
    """The epochs a trial ran: its history's last epoch, else a stopped trial's `stopped_at_epoch`, else
    (an ok or diverged trial without a history) its planned epochs; NaN when none is known."""
    epochs = [_number(e.get("epoch")) for e in history or ()]
    epochs = [e for e in epochs if not math.isnan(e)]
    if epochs:
        return max(epochs)
    if trial.get("status") == STOPPED:
        return _number(trial.get("stopped_at_epoch"))
    return planned


def scheduler_savings(
    df: pd.DataFrame, histories: Mapping[str, Sequence[Mapping[str, Any]]], scheduler: Mapping[str, Any] | None
) -> Savings | None:
    """The savings of the study's scheduler; None when the spec names none and no trial was stopped.

    Spent: per trial the epochs it ran (`epochs_run`); full grid: per trial its planned `epochs`.
    Failed trials (`error` rows) are left out of both: how far they ran is unknown."""
    status = df["status"] if "status" in df.columns else pd.Series(OK, index=df.index)
    stopped_mask = status == STOPPED
    if scheduler is None and not stopped_mask.any():
        return None
    notes = []
    planned = pd.to_numeric(df["epochs"], errors="coerce") if "epochs" in df.columns else pd.Series(np.nan, df.index)
    errors = int((status == ERROR).sum())
    if errors:
        notes.append(f"{errors} failed trial(s) left out of both sums: how many epochs they ran is unknown.")
    unplanned = (status != ERROR) & planned.isna()
    if unplanned.any():
        notes.append(f"{int(unplanned.sum())} trial(s) left out: the results table has no planned epochs for them.")
    keys = df["trial_id"].astype(str) if "trial_id" in df.columns else pd.Series("", index=df.index)
    diverged_guess = (status == "diverged") & keys.map(lambda key: not histories.get(key))
    if diverged_guess.any():
        notes.append(f"{int(diverged_guess.sum())} diverged trial(s) without a history count their planned epochs "
                     "as spent (no saving is claimed for them).")  # fmt: skip
    per_method: dict[str, dict[str, int]] = {}
    stops: dict[int, int] = {}
    unknown_stops = 0
    for index, trial in df[(status != ERROR) & ~unplanned].iterrows():
        spent = epochs_run(trial, histories.get(keys[index]), float(planned[index]))
        known = not math.isnan(spent)
        if not known:  # a stopped trial that says neither its history nor its epoch
            spent, unknown_stops = float(planned[index]), unknown_stops + 1
        counts = per_method.setdefault(str(trial.get("method", "all")), dict.fromkeys(SAVINGS_COUNTS, 0))
        counts["trials"] += 1
        counts["spent"] += int(spent)
        counts["planned"] += int(planned[index])
        if trial.get("status") == STOPPED:
            counts["stopped"] += 1
            at = _number(trial.get("stopped_at_epoch"))
            at = spent if math.isnan(at) and known else at  # else: not in the histogram (the note says so)
            if not math.isnan(at):
                stops[int(at)] = stops.get(int(at), 0) + 1
    if unknown_stops:
        notes.append(f"{unknown_stops} stopped trial(s) record neither a history nor stopped_at_epoch: counted as "
                     "spending their planned epochs, and left out of the stopped-at histogram.")  # fmt: skip
    metric = str((scheduler or {}).get("metric", "val_acc"))
    if is_metric(metric) and not is_validation_metric(metric):  # the spec refuses it; an old or edited one may not
        notes.append(f"The scheduler reads {metric!r}, a test metric: its stopping decisions looked at the digits "
                     "the report is measured on.")  # fmt: skip
    order = sorted(per_method, key=method_rank)
    table = pd.DataFrame([{"method": m, **per_method[m]} for m in order], columns=["method", *SAVINGS_COUNTS])
    return Savings(
        scheduler=describe_scheduler(scheduler, int(stopped_mask.sum())),
        spent=int(table["spent"].sum()), planned=int(table["planned"].sum()), stopped=int(stopped_mask.sum()),
        per_method=table, stops=dict(sorted(stops.items())), notes=notes,
    )  # fmt: skip
