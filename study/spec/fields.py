"""What every spec model shares: strict fields (no unknown keys, no NaN), 64-bit integers, and the
check of a grid axis's values."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


def _each(values: list | None, ok, message: str) -> list | None:
    """A grid axis's values, unless one fails `ok` (then `message`)."""
    if values and not all(ok(v) for v in values):
        raise ValueError(message)
    return values


# Integers go to torch (tensor sizes, seeds), JSON and the pandas results table, all 64-bit signed:
# torch.manual_seed takes up to 2**64 - 1, but a seed of 2**63 or more turns the table's seed column
# into uint64, or float64 beside a missing value, where neighbouring seeds merge.
INT_LIMIT = 2**63


def _within_int64(values: Any) -> bool:
    items = values if isinstance(values, list) else [values]
    return all(-INT_LIMIT <= v < INT_LIMIT for v in items if isinstance(v, int) and not isinstance(v, bool))


class Strict(BaseModel):
    # NaN/infinity pass `gt`/`ge` checks unnoticed and break a trial later (an angle's metric name, a rate)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _fits_64_bits(cls, value: Any) -> Any:
        if not _within_int64(value):
            raise ValueError("must be < 2**63 (a 64-bit signed integer: torch, JSON tables and pandas hold no more)")
        return value
