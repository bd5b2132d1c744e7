"""Early stopping, the spec half: the spec's `scheduler` block and what it may read (study.tune.early_stopping
makes it a Ray Tune trial scheduler: ASHA, median stopping).

Trials report after every specialisation epoch (`training_iteration` = epoch), so a scheduler
compares trials epoch by epoch and stops the weak ones early. A stopped trial is its own status
(`stopped`, with its last epoch's metrics and the epoch it stopped at; the driver writes it to
the ledger, see `record_stopped`), never a failure.

What a scheduler may read is what every epoch reports: `val_acc` (the target mode's validation
accuracy, the trial's `val_acc_<target>`), `val_acc_<target>[_hard]` by name, or `loss` (the
epoch's training loss). Never a test metric.

Fused grid groups train unrelated configurations in one Tune trial, so stopping one member would
stop them all: the spec refuses a scheduler with `fuse` > 1. An Optuna trial is one
configuration on every seed, so a scheduler stops the configuration, on its seed mean; Optuna
then gets that configuration's last epoch value as its value (Ray's OptunaSearch), so the search
takes a single objective that every epoch reports.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trainables import registry
from trainables.config import accuracy_name

EPOCH_METRICS = ("val_acc", "loss")  # besides val_acc_<target>[_hard]


class SchedulerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["none", "asha", "median"] = "none"
    metric: str = Field("val_acc", description="an epoch metric: val_acc, loss or val_acc_<target>[_hard]")
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it may be stopped")
    reduction_factor: float = Field(3, gt=1, description="asha: keep 1 / reduction_factor of trials per rung")
    max_epochs: int | None = Field(None, ge=1, description="asha: the longest trial; default the study's")
    min_samples_required: int = Field(3, ge=1, description="median: trials needed to compute a median")


def epoch_metrics(spec: Any) -> list[str]:
    """The metrics every epoch of every trial reports (what a scheduler or, with one, Optuna may read);
    `spec` is a `StudySpec` (not imported: the StudySpec module imports this one)."""
    names = list(EPOCH_METRICS)
    if len(spec.target_angles) == 1:
        target = spec.target_angles[0]
        names.append(accuracy_name(target, validation=True))
        if all(m in registry.gated_methods() for m in spec.methods):
            names.append(accuracy_name(target, hard=True, validation=True))
    return names


def check_scheduler(spec: Any) -> None:
    """Refuse, naming the field, what a scheduler cannot work with."""
    scheduler = spec.scheduler
    if scheduler.kind == "none":
        return
    if spec.fuse > 1:
        raise ValueError(
            f"scheduler: {scheduler.kind} stops single trials, but fuse: {spec.fuse} trains unrelated configurations "
            "together in one Tune trial (stopping one would stop them all); set fuse: 1 with a scheduler"
        )
    allowed = epoch_metrics(spec)
    if scheduler.metric not in allowed:
        raise ValueError(f"scheduler.metric: {scheduler.metric!r} is not reported every epoch; choose one of "
                         f"{', '.join(allowed)} (validation only: a scheduler selects)")  # fmt: skip
    if (scheduler.metric == "loss") != (scheduler.mode == "min"):
        wanted = "min" if scheduler.metric == "loss" else "max"
        raise ValueError(f"scheduler.mode: {scheduler.metric} is {wanted}imised; set mode: {wanted}")
    if scheduler.kind == "asha" and scheduler.max_epochs is not None and scheduler.grace_period > scheduler.max_epochs:
        raise ValueError(f"scheduler.grace_period: {scheduler.grace_period} is more than max_epochs "
                         f"{scheduler.max_epochs}")  # fmt: skip
    objectives = spec.search.objectives or []
    if spec.search.kind == "optuna" and (len(objectives) != 1 or objectives[0].metric not in allowed):
        # Tune hands Optuna every epoch's result and a stopped trial's last one as its value: a
        # multi-objective or end-only objective would leave stopped trials without values
        raise ValueError(
            "search.objectives: with a scheduler, an Optuna search takes one objective that every epoch reports "
            f"(one of {', '.join(allowed)}); a stopped trial's value is its last epoch's"
        )
