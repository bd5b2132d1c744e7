"""The specialisation protocol of a configuration, and the views of a table that choices may read.

A protocol is the values of `trainables.config.PROTOCOL_FIELDS` (foundation epochs, epochs,
lr scale, batch size): study-level settings shared by every method. Most studies run one; a
calibration study runs a grid of them, and each method's representative is then chosen
within a protocol, never across (methods compared under different protocols say nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from analysis.table.results import DERIVED_SUFFIXES, format_value, is_metric, is_validation_metric, protocol_columns

Protocol = dict[str, Any]


def protocols(table: pd.DataFrame) -> list[Protocol]:
    """The distinct protocols of a results or statistics table, in sorted order; a table without
    protocol columns (an old study) is one protocol, `{}`."""
    columns = protocol_columns(table)
    if not columns or table.empty:
        return [{}]
    distinct = table[columns].drop_duplicates().sort_values(columns, kind="stable")
    return [{c: _plain(v) for c, v in row.items()} for row in distinct.to_dict("records")]


def within_protocol(table: pd.DataFrame, protocol: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of `table` run under `protocol` (every row for `{}`)."""
    keep = pd.Series(True, index=table.index)
    for column, value in protocol.items():
        keep &= table[column] == value
    return table[keep]


def single_protocol(table: pd.DataFrame, protocol: Mapping[str, Any] | None = None) -> tuple[Protocol, pd.DataFrame]:
    """(`protocol`, its rows); with `protocol=None` the table must hold one protocol, since
    choosing representatives across protocols would compare methods trained differently."""
    if protocol is not None:
        return dict(protocol), within_protocol(table, protocol)
    present = protocols(table)
    if len(present) > 1:
        raise ValueError(
            f"the table holds {len(present)} protocols ({'; '.join(map(describe, present))}): pass one as protocol="
        )
    return present[0], table


def describe(protocol: Mapping[str, Any]) -> str:
    """`epochs=5, lr_scale=0.3` (or "the study's protocol" for an old table without the fields)."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in protocol.items()) or "the study's protocol"


def validation_view(stats: pd.DataFrame) -> pd.DataFrame:
    """A statistics table without any column derived from a test metric: what a choice may read
    (config columns, labels, counts and `val_*` statistics)."""
    return stats[[c for c in stats.columns if not _derived_from_test_metric(str(c))]]


def _derived_from_test_metric(column: str) -> bool:
    for suffix in DERIVED_SUFFIXES:
        if column.endswith(suffix):
            base = column.removesuffix(suffix)
            return is_metric(base) and not is_validation_metric(base)
    return is_metric(column) and not is_validation_metric(column)


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers, so protocols print and compare plainly."""
    return value.item() if hasattr(value, "item") else value
