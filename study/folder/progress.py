"""One place decides how far a study got: finished (ok or diverged), failed, still to run.

The CLI summary, `taugate status` and the MLflow parent run all read `study_progress`, and the
report reads the same sources (the ledger and the plan, `analysis.table.load.load_tune`), so the
service never tells two stories. "failed" means a trial that raised (its Tune trial errored and
it never reached the ledger) or, in an Optuna study, a configuration Optuna marked FAIL; a trial
that has not run yet is "remaining", never "failed".

An Optuna study's trials are its configurations' seed runs: a configuration Optuna drew twice is
one configuration (`study.folder.optuna_db.draw_counts`), so the counts match the ledger, the
results table and MLflow's runs; `draws` and `repeated_draws` say how Optuna's draws went.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study.folder.filenames import OPTUNA_DB, PLAN_FILE
from study.folder.storage import TrialLedger
from study.folder.validate import read_plan
from study.spec.study_spec import StudySpec

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Progress:
    planned: int
    finished: int  # in the ledger: ok, diverged or stopped (by an early-stopping scheduler)
    diverged: int
    failed: int
    remaining: int
    stopped: int = 0
    draws: int | None = None  # an Optuna study's finished draws (complete or failed), repeats included
    repeated_draws: int = 0  # an Optuna study's draws of a configuration it had drawn before

    def as_dict(self) -> dict[str, int]:
        counts = asdict(self)
        if self.draws is None:  # a grid study: every trial is planned, nothing is drawn
            del counts["draws"], counts["repeated_draws"]
        return counts

    def draws_note(self) -> str:
        """What an Optuna study's draws came to, for a summary line ("" when nothing was drawn twice)."""
        if not self.repeated_draws:
            return ""
        return (
            f"{self.repeated_draws} of Optuna's {self.draws} draws repeated an earlier configuration, "
            "counted once and answered from its results"
        )


def study_progress(
    study_dir: Path, spec: StudySpec, study: dict[str, Any], table: pd.DataFrame | None = None
) -> Progress:
    """The study's counts, from its folder (ledger, plan, Tune's error files, the Optuna study);
    `table` is the study's `analysis.table.load.load_tune` table when the caller has it already."""
    ledger = TrialLedger(Path(study_dir)).all_finished()
    if spec.search.kind == "optuna":
        from study.folder.optuna_db import draw_counts

        draws, seeds = draw_counts(Path(study_dir) / OPTUNA_DB, study["optuna_study_name"]), len(spec.seeds)
        # a repeated draw adds no trial: planned are the configurations drawn plus the draws to come
        remaining = max(0, spec.search.num_samples - draws.drawn) * seeds
        finished, failed = draws.configurations * seeds, draws.failed * seeds
        diverged = sum(m.get("status") == "diverged" for m in ledger.values())
        stopped = sum(m.get("status") == "stopped" for m in ledger.values())
        return Progress(finished + failed + remaining, finished, diverged, failed, remaining, stopped,
                        draws.drawn, draws.repeated)  # fmt: skip
    plan_file = Path(study_dir) / PLAN_FILE
    planned_keys = set(read_plan(Path(study_dir))) if plan_file.is_file() else set(ledger)
    planned = max(len(planned_keys), int(study.get("trials_planned", 0)))
    done = {key: m for key, m in ledger.items() if key in planned_keys}
    diverged = sum(m.get("status") == "diverged" for m in done.values())
    stopped = sum(m.get("status") == "stopped" for m in done.values())
    failed = _failed_grid_trials(Path(study_dir), table)
    return Progress(planned, len(done), diverged, failed, max(0, planned - len(done) - failed), stopped)


def _failed_grid_trials(study_dir: Path, table: pd.DataFrame | None) -> int:
    """Planned trials whose Tune trial errored and that never reached the ledger."""
    if table is None:
        from analysis.table.load import load_tune

        table = load_tune(study_dir)
    return int((table["status"] == "error").sum()) if "status" in table.columns else 0
