"""The results table: which columns describe a configuration, and how configurations are named.

A study's results are one row per trial. Seeds of the same configuration are replicates, so
every aggregate in this package groups by the *configuration columns* (every config column
except `seed`). Config columns a method does not use hold NaN (LoRA rank for TauGate), and NaN
must group as a value of its own, hence `dropna=False` everywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from trainables.config import PROTOCOL_FIELDS, VALIDATION_PREFIX

# Columns that are neither configuration nor metric: identity and outcome of a trial.
# `diverged_at_step` and `stopped_at_epoch` (an early-stopping scheduler's) say where a trial ended.
OUTCOME_COLUMNS = ("diverged_at_step", "stopped_at_epoch")
BOOKKEEPING_COLUMNS = ("trial_id", "run_name", "seed", "status", "error", *OUTCOME_COLUMNS)
METRIC_COLUMNS = (
    "trainable_params",
    "high_activation_ratio",
    "active_ratio",
    "strong_activation_ratio",
    "mean_gate",
    "final_loss",
    "train_seconds",
    # TauGate's budget readings: how far tau moved, how far Adam could move it, lambda at the end
    "tau_displacement",
    "tau_step_budget",
    "sparsity_weight_final",
)
# Columns the analysis adds to per-configuration tables (seed statistics, fronts).
DERIVED_COLUMNS = ("label", "config_id", "n_trials", "n_ok", "sparsity_source", "on_front")
DERIVED_SUFFIXES = ("_mean", "_std", "_n", "_ci95")
_ACCURACY = re.compile(r"^acc_[0-9mp]+(_hard)?$")
# Short names for labels and axes (the paper's symbols).
SYMBOLS = {
    "gate_sharpness": "s",
    "sparsity_weight": "λ",
    "lora_rank": "r",
    "lora_alpha": "α",
    "tau_lr_multiplier": "×τ",
    "sparsity_target": "r*",
}
OK = "ok"
# Stopped by an early-stopping scheduler (ASHA, median stopping): it ran fewer epochs than planned, so
# like a diverged trial it carries no accuracies to summarise; unlike one, it is not a failure.
STOPPED = "stopped"
# The order methods are listed in: from no adaptation to full fine-tuning (the paper's table).
METHOD_ORDER = ("frozen", "bitfit", "taugate", "gain_only", "threshold_only", "lora", "full")


def is_metric(column: str) -> bool:
    """Metric columns: the fixed names of the trial contract plus one `acc_<mode>` per mode,
    each also under the validation prefix (`val_acc_45`, `val_high_activation_ratio`)."""
    name = str(column).removeprefix(VALIDATION_PREFIX)
    return name in METRIC_COLUMNS or bool(_ACCURACY.match(name))


def is_validation_metric(column: str) -> bool:
    """A metric measured on the validation split: the only kind a selection may read."""
    return str(column).startswith(VALIDATION_PREFIX) and is_metric(column)


def is_accuracy(metric: str) -> bool:
    """`acc_<mode>` or `acc_<mode>_hard`, test or validation."""
    return bool(_ACCURACY.match(str(metric).removeprefix(VALIDATION_PREFIX)))


def protocol_columns(table: pd.DataFrame) -> list[str]:
    """The protocol fields (`trainables.config.PROTOCOL_FIELDS`) the table has; old studies have none."""
    return [c for c in PROTOCOL_FIELDS if c in table.columns]


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns present in `df`, in table order."""
    return [c for c in df.columns if is_metric(c)]


def config_columns(df: pd.DataFrame) -> list[str]:
    """Configuration columns: everything that is neither bookkeeping nor a metric (nor, in a
    per-configuration table, a column the analysis derived).

    Keeping this a rule rather than a list means a study that sweeps a new knob (say `lr`)
    is grouped correctly without touching the analysis.
    """
    columns = [
        c
        for c in df.columns
        if c not in BOOKKEEPING_COLUMNS
        and c not in DERIVED_COLUMNS
        and not is_metric(c)
        and not str(c).endswith(DERIVED_SUFFIXES)
    ]
    return sorted(columns, key=lambda c: c != "method")  # method first: it is what readers scan for


def sort_configurations(table: pd.DataFrame) -> pd.DataFrame:
    """Rows in `METHOD_ORDER` (unknown methods last, by name), then by their config values."""
    if "method" not in table.columns or table.empty:
        return table
    rank = table["method"].map(lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), str(m)))
    others = [c for c in config_columns(table) if c != "method" and pd.api.types.is_numeric_dtype(table[c])]
    order = table.assign(_rank=rank).sort_values(["_rank", *others], na_position="first", kind="stable")
    return order.drop(columns="_rank").reset_index(drop=True)


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Trials that finished (diverged, stopped and errored trials carry no accuracies to summarise)."""
    return df[df["status"] == OK] if "status" in df.columns else df


def failed_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Every trial that diverged or errored, for the report's failure list (a stopped trial is not one)."""
    return df[~df["status"].isin((OK, STOPPED))] if "status" in df.columns else df.iloc[0:0]


def stopped_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Trials an early-stopping scheduler stopped (`stopped_at_epoch` says when)."""
    return df[df["status"] == STOPPED] if "status" in df.columns else df.iloc[0:0]


def hashable_configs(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Config columns with list or dict values (e.g. `hidden: [128, 128]`) as their repr, so they group."""
    out = df.copy()
    for column in columns:
        if out[column].map(lambda v: isinstance(v, list | dict)).any():
            out[column] = out[column].map(lambda v: repr(v) if isinstance(v, list | dict) else v)
    return out


def configuration_ids(df: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.Series:
    """An integer id per row naming its configuration (NaN is a value: `dropna=False`).

    Ids follow the sorted order of the config values, so the same table always gets the same ids;
    joining on one integer avoids comparing NaN-holding key tuples (NaN != NaN)."""
    columns = list(config_columns(df) if columns is None else columns)
    if not columns:  # a table without config columns is a single configuration
        return pd.Series(0, index=df.index, dtype=int)
    ids = hashable_configs(df, columns).groupby(columns, dropna=False, sort=True).ngroup()
    return ids.astype(int)


def is_missing(value: Any) -> bool:
    """NaN/None test that also accepts strings and tuples (where `pd.isna` would broadcast)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_value(value: Any) -> str:
    """Compact text for a config value in labels (10.0 -> "10", 0.001 -> "0.001")."""
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def configuration_labels(configs: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.Series:
    """A short readable name per configuration row: the method plus the knobs that vary
    between that method's configurations (a single TauGate configuration is just "taugate")."""
    columns = [c for c in (config_columns(configs) if columns is None else columns) if c != "method"]
    columns = [c for c in columns if c in configs.columns]
    labels = {}
    methods = configs["method"] if "method" in configs.columns else pd.Series("all", index=configs.index)
    for method in methods.unique():
        rows = configs[methods == method]
        varying = [c for c in columns if rows[c].map(format_value).nunique(dropna=False) > 1]
        for index, row in rows.iterrows():
            knobs = [f"{SYMBOLS.get(c, c)}={format_value(row[c])}" for c in varying if not is_missing(row[c])]
            labels[index] = " ".join([str(method), *knobs])
    return pd.Series(labels, index=configs.index, dtype=object)
