"""The spec's `search:` block: grid or Optuna, the objectives, and the ranges Optuna draws from."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from study.spec.fields import Strict
from trainables import registry

# Objectives select, so they read validation metrics (plus the accuracy-free ones); test metrics
# are only reported. `val_acc_<angle>[_hard]` names are checked against the study's angles.
PLAIN_OBJECTIVES = ("trainable_params", "val_sparsity", "final_loss")


class Objective(Strict):
    metric: str
    mode: Literal["max", "min"]


class Range(Strict):
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError("low must be < high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


def default_ranges(optional: bool = False) -> dict[str, Range]:
    """Every registered method's searched dimensions with the method's default range (the first method
    naming a dimension gives its range); `optional` adds the ranges searched only when a spec names
    them (TauGate's budget)."""
    ranges: dict[str, Range] = {}
    for name in registry.names():
        for axis, r in registry.get(name).search.items():
            if optional or not r.optional:
                ranges.setdefault(axis, Range(low=r.low, high=r.high, log=r.log))
    return ranges


class SearchSpec(Strict):
    kind: Literal["grid", "optuna"] = "grid"
    num_samples: int = Field(
        20, gt=0, description="optuna: number of draws (Optuna trials); a configuration drawn again counts once"
    )
    objectives: list[Objective] | None = Field(
        None, min_length=1, description="default: validation accuracy on the target mode, maximised"
    )
    ranges: dict[str, Range] = Field(
        default_factory=lambda: default_ranges(),
        description="Optuna's range per searched dimension (default: each method's own, from the method registry)",
    )
    study_name: str | None = Field(None, description="optuna study name; default: the study's name + a timestamp")

    @field_validator("ranges")
    @classmethod
    def _ranges_the_trials_accept(cls, ranges: dict[str, Range]) -> dict[str, Range]:
        # each suggested value must pass the trial contract: s > 0, lambda >= 0, an integer rank >= 1
        lowest = {"gate_sharpness": (lambda low: low > 0, "low must be > 0 (gate sharpness s > 0)"),
                  "sparsity_weight": (lambda low: low >= 0, "low must be >= 0 (sparsity weight lambda >= 0)"),
                  "lora_rank": (lambda low: low >= 1, "low must be >= 1 (a LoRA rank is an integer >= 1)"),
                  "tau_lr_multiplier": (lambda low: low > 0, "low must be > 0 (a learning-rate multiplier)"),
                  "lr_scale": (lambda low: low > 0, "low must be > 0 (a learning-rate multiplier)"),
                  "epochs": (lambda low: low >= 0, "low must be >= 0 (epochs)")}  # fmt: skip
        for axis, r in ranges.items():
            if axis == "sparsity_target" and not (r.low > 0 and r.high < 1):
                raise ValueError(f"{axis}: a requested ratio lies in (0, 1): low > 0 and high < 1")
        searchable = default_ranges(optional=True)
        for axis, r in ranges.items():
            if axis not in searchable:
                raise ValueError(f"{axis}: not a searched dimension (searched: {', '.join(searchable)})")
            ok, message = lowest.get(axis, (lambda low: True, ""))
            if not ok(r.low):
                raise ValueError(f"{axis}: {message}")
        return {**default_ranges(), **ranges}
