"""A study's Optuna storage (`<study>/optuna.db`): its URL and how many trials it holds by state.

`optuna-dashboard sqlite:///<study>/optuna.db` opens it; a resumed study continues it.

Optuna may draw one configuration twice; every draw stays an Optuna trial, but the study counts
configurations (`draw_counts`): a configuration drawn twice is one configuration, one set of seed
runs in the ledger, the results table and MLflow. A repeat is marked with the user attribute
`repeat_of` (the number of the trial whose results answered it).

A draw that never ran to its end is PRUNED and marked with the user attribute `not_run`: one asked
ahead for a worker that the study ended (or was interrupted) before needing, one whose Tune trial
the interrupted study stopped, or one a killed driver left RUNNING (pruned when the study resumes).
Like every pruned trial it is no draw in `draw_counts`, and no RUNNING trial is left to be taken
for one still being evaluated (Optuna's constant liar avoids the points of RUNNING trials).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

REPEAT_OF = "repeat_of"  # user attribute of an Optuna trial that drew an earlier trial's configuration
NOT_RUN = "not_run"  # user attribute of a pruned draw that never ran to its end: why ("asked ahead", ...)
ASKED_AHEAD, INTERRUPTED, STALE = "asked ahead", "interrupted", "left running by an ended driver"


def storage_url(db_path: Path) -> str:
    return f"sqlite:///{Path(db_path).resolve()}"


def configuration_of(params: dict[str, Any]) -> str:
    """A draw's configuration as one comparable value (its parameters; the rest of a trial's config
    is the same for every draw)."""
    return json.dumps(params, sort_keys=True, default=str)


def _trials(db_path: Path, study_name: str) -> list[optuna.trial.FrozenTrial]:
    if not Path(db_path).is_file():
        return []
    try:
        study = optuna.load_study(study_name=study_name, storage=storage_url(db_path))
    except KeyError:
        return []
    return study.get_trials(deepcopy=False)


def count_trials(db_path: Path, study_name: str, state: optuna.trial.TrialState | None) -> int:
    """Trials (draws) of the persisted Optuna study in `state` (None: every trial)."""
    return sum(state is None or t.state == state for t in _trials(db_path, study_name))


def completed_trials(db_path: Path, study_name: str) -> int:
    return count_trials(db_path, study_name, optuna.trial.TrialState.COMPLETE)


@dataclass(frozen=True)
class DrawCounts:
    """An Optuna study's finished draws, counted as configurations."""

    drawn: int  # finished draws: complete or failed Optuna trials, repeats included
    configurations: int  # distinct configurations with a complete draw
    failed: int  # distinct configurations none of whose draws completed
    repeated: int  # finished draws of a configuration drawn before (answered, or failed, once more)


def prune_not_run(study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial, why: str) -> None:
    """Tell Optuna that a RUNNING draw will never finish: PRUNED (no draw in `draw_counts`), `not_run` saying why."""
    study._storage.set_trial_user_attr(trial._trial_id, NOT_RUN, why)  # a FrozenTrial has no setter of its own
    study.tell(trial.number, state=optuna.trial.TrialState.PRUNED)


def prune_stale(study: optuna.Study) -> int:
    """Prune the draws an earlier driver of this study left RUNNING (one driver per study folder, so none
    of them is running now: study.folder.lock); how many."""
    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in stale:
        prune_not_run(study, trial, STALE)
    return len(stale)


def draw_counts(db_path: Path, study_name: str) -> DrawCounts:
    finished = [
        t for t in _trials(db_path, study_name) if t.state.is_finished() and t.state != optuna.trial.TrialState.PRUNED
    ]
    complete = {configuration_of(t.params) for t in finished if t.state == optuna.trial.TrialState.COMPLETE}
    failed = {configuration_of(t.params) for t in finished if t.state == optuna.trial.TrialState.FAIL} - complete
    return DrawCounts(len(finished), len(complete), len(failed), len(finished) - len(complete) - len(failed))
