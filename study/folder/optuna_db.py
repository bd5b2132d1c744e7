"""A study's Optuna storage (`<study>/optuna.db`): its URL and how many trials it holds by state.

`optuna-dashboard sqlite:///<study>/optuna.db` opens it; a resumed study continues it.
"""

from __future__ import annotations

from pathlib import Path

import optuna


def storage_url(db_path: Path) -> str:
    return f"sqlite:///{Path(db_path).resolve()}"


def count_trials(db_path: Path, study_name: str, state: optuna.trial.TrialState | None) -> int:
    """Trials of the persisted Optuna study in `state` (None: every trial)."""
    if not Path(db_path).is_file():
        return 0
    try:
        study = optuna.load_study(study_name=study_name, storage=storage_url(db_path))
    except KeyError:
        return 0
    return sum(state is None or t.state == state for t in study.trials)


def completed_trials(db_path: Path, study_name: str) -> int:
    return count_trials(db_path, study_name, optuna.trial.TrialState.COMPLETE)


def failed_trials(db_path: Path, study_name: str) -> int:
    return count_trials(db_path, study_name, optuna.trial.TrialState.FAIL)
