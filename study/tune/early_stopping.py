"""Early stopping: the spec's `scheduler` (study.spec.scheduler_spec) as a Ray Tune trial scheduler
(ASHA, median stopping)."""

from __future__ import annotations

from typing import Any

from study.spec.study_spec import StudySpec


def trial_scheduler(spec: StudySpec, longest: int) -> Any:
    """The Ray Tune scheduler of the spec (None: Tune's FIFO, every trial runs to its end).
    `longest` is the study's longest trial in epochs (ASHA's max_t unless the spec sets it)."""
    scheduler = spec.scheduler
    if scheduler.kind == "none":
        return None
    common = {"time_attr": "training_iteration", "metric": scheduler.metric, "mode": scheduler.mode}
    if scheduler.kind == "asha":
        from ray.tune.schedulers import ASHAScheduler

        max_t = max(scheduler.max_epochs or longest, scheduler.grace_period, 1)
        return ASHAScheduler(**common, max_t=max_t, grace_period=scheduler.grace_period,
                             reduction_factor=scheduler.reduction_factor)  # fmt: skip
    from ray.tune.schedulers import MedianStoppingRule

    return MedianStoppingRule(**common, grace_period=scheduler.grace_period,
                              min_samples_required=scheduler.min_samples_required)  # fmt: skip
