"""Run a study on Ray Tune: local Ray by default, or an existing cluster.

Each invocation (`run`, then any `resume`) is one Tune experiment under `<study>/tune/`; the
ledger of finished trials spans them, so a resumed study schedules only what is not done, and a
trial an earlier experiment left unfinished resumes after its newest epoch checkpoint there
(study.tune.epoch_reports). Not `Tuner.restore`: it would bring back the old experiment's trials,
searcher and callbacks whole, while a resume plans again from the ledger (another spec's cap, an
Optuna searcher that continues from its storage, fused groups of only the members left).
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from study import environment  # noqa: F401 - before Ray, Tune and MLflow are imported
from study.cluster.connect import connect, shutdown_local_ray
from study.cluster.ray_patches import use_prestarted_workers
from study.commands import study_command
from study.folder.filenames import OPTUNA_DB, PLAN_FILE, TUNE_DIR
from study.folder.progress import study_progress
from study.folder.storage import TrialLedger
from study.spec.plan import fused_groups, longest_first, planned_trials, run_name, trial_config, trial_key, variants
from study.spec.study_spec import StudySpec
from study.tune.early_stopping import trial_scheduler
from trainables.files import write_json


@dataclass
class StudyOutcome:
    study_dir: Path
    finished: int
    failed: int
    total: int
    seconds: float
    remaining: int = 0
    interrupted: int | None = None  # the stop signal (SIGINT, SIGTERM) when the study was interrupted
    stopped: int = 0  # finished trials an early-stopping scheduler stopped
    draws_note: str = ""  # an Optuna study whose draws repeated a configuration says so (`Progress.draws_note`)


def execute(
    spec: StudySpec, study: dict[str, Any], study_dir: Path, *, address: str | None,
    tracking_uri: str | None, console: Console,
) -> StudyOutcome:  # fmt: skip
    """Run every trial of the study that the ledger does not hold yet."""
    from study.tracking.mlflow_store import open_in_background, resolve_uri, tracking_options

    started = time.monotonic()
    study_dir = study_dir.resolve()
    ledger = TrialLedger(study_dir)
    done = ledger.all_finished()
    uri = resolve_uri(study_dir, tracking_uri or study.get("tracking_uri"))
    open_in_background(uri)  # MLflow opens its store while Ray starts
    objectives: tuple[str, ...] = ()

    tracking = None  # the study's tracking callback, once Tune runs
    units: list[dict[str, Any]] = []  # grid: the Tune trials, single variants or fused groups
    if spec.search.kind == "grid":
        grid = variants(spec)
        write_json(study_dir / PLAN_FILE, planned_trials(spec, grid))
        todo = [v for v in grid if trial_key(trial_config(spec, v)) not in done]
        total = len(grid)
        groups = [{"members": g} for g in fused_groups(spec, todo)] if spec.fuse > 1 else todo
        units = longest_first(spec, groups)
        search_alg, num_samples = None, 1
        longest = max((trial_config(spec, v).epochs for v in grid), default=1)
    else:
        from study.tune.search import optuna_searcher

        objectives = tuple(o.metric for o in spec.search.objectives)
        search_alg, completed = optuna_searcher(spec, study, study_dir / OPTUNA_DB)
        # an Optuna trial is a configuration on every seed: the study's trials are its seeds' runs, the
        # configurations finished so far (one drawn twice counts once) and the draws to come
        todo = [seed for _ in range(max(0, spec.search.num_samples - completed)) for seed in spec.seeds]
        total = study_progress(study_dir, spec, study).finished + len(todo)
        num_samples = len(todo) // len(spec.seeds)
        longest = max((max(method.epochs or [spec.epochs]) for method in spec.methods.values()), default=1)
        if "epochs" in spec.search.ranges:  # a method's own epochs, searched
            longest = max(longest, int(spec.search.ranges["epochs"].high))
    drawing = ""
    if spec.search.kind == "optuna":  # the trials to run are an upper bound: a repeated draw adds none
        drawing = f" ({num_samples} Optuna draws on {len(spec.seeds)} seeds; a configuration drawn again counts once)"
    console.print(f"study {spec.name}: {total} trials, {len(todo)} to run{drawing}, folder {study_dir}",
                  highlight=False)  # fmt: skip

    from study.cluster.interrupt import received
    from study.cluster.interrupt import reinstall as reinstall_signal_handlers

    if todo and received() is None:
        # Ray's start is mostly waiting on its processes: import Tune and our callbacks meanwhile
        importing = threading.Thread(target=importlib.import_module, args=("study.tune.callbacks",), daemon=True)
        importing.start()
        connect(address)
        reinstall_signal_handlers()  # ray.init replaced the SIGTERM handler with its own
        importing.join()
        use_prestarted_workers()
        from ray import tune
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

        from study.tune.callbacks import ProgressCallback, ResumeNotes, SchedulerStops, StopOnSignal, TrackingCallback
        from study.tune.epoch_reports import CHECKPOINTS_KEPT, trim_checkpoints
        from study.tune.trainable import split_config, train_trial

        tracking = TrackingCallback(study_dir, uri, study)
        callbacks = [SchedulerStops(study_dir), JsonLoggerCallback(), CSVLoggerCallback(), tracking, ResumeNotes(),
                     ProgressCallback(total, already_done=total - len(todo), drawn=search_alg is not None)]  # fmt: skip
        param_space = {"base": spec.base_config(), "variant": tune.grid_search(units)} if units else {}
        previous = sorted((study_dir / TUNE_DIR).glob("run-*")) if (study_dir / TUNE_DIR).is_dir() else []
        for earlier in previous:  # one a killed driver left with a checkpoint Tune never registered
            trim_checkpoints(earlier, CHECKPOINTS_KEPT)
        experiment = f"run-{len(previous) + 1}"
        # an unfinished trial resumes from its newest checkpoint in an earlier experiment (epoch_reports)
        trainable = tune.with_parameters(train_trial, study_dir=str(study_dir), objectives=objectives,
                                         checkpoint_after=spec.checkpoint_after_s, experiment=experiment)  # fmt: skip
        resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
        concurrent = spec.max_concurrent_trials
        if search_alg is not None and concurrent is None:  # else Tune asks a searcher for one trial at a time
            from study.tune.search import trial_slots

            concurrent = trial_slots(resources)

        def name(trial) -> str:
            return run_name(split_config(trial.config)[1])

        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=search_alg,
                num_samples=num_samples,
                max_concurrent_trials=concurrent,
                reuse_actors=spec.reuse_actors,
                scheduler=trial_scheduler(spec, longest),
                trial_name_creator=name,
                trial_dirname_creator=lambda trial: f"{name(trial)}_{trial.trial_id}",
            ),  # fmt: skip
            run_config=tune.RunConfig(
                name=experiment,
                storage_path=str(study_dir / TUNE_DIR),
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),  # long trials' epoch checkpoints
                callbacks=callbacks,
                stop=StopOnSignal(),
                verbose=0,
            ),  # fmt: skip
        )
        try:
            tuner.fit()
        finally:
            if search_alg is not None:
                search_alg.close()  # no draw asked ahead, or stopped with the study, is left RUNNING
            shutdown_local_ray(address)  # no Ray process of a local study outlives its driver
            trim_checkpoints(study_dir / TUNE_DIR / experiment, CHECKPOINTS_KEPT)  # an interrupted trial's extra one

    progress = study_progress(study_dir, spec, study)  # the one account of the study's trials
    # planned, not asked for: an Optuna configuration drawn twice is one configuration's seed runs
    outcome = StudyOutcome(study_dir, progress.finished, progress.failed,
                           progress.planned if spec.search.kind == "optuna" else total,
                           time.monotonic() - started, remaining=progress.remaining, interrupted=received(),
                           stopped=progress.stopped, draws_note=progress.draws_note())  # fmt: skip
    try:
        from study.tracking.tracker import Tracker

        # the tracker that logged the trials knows which runs it wrote whole: sync reads back only the others
        tracker = (tracking and tracking.sound_tracker()) or Tracker(study_dir, uri, study["experiment_name"])
        tracker.sync(study)  # anything the callback could not log (an outage) is logged now if possible
        status = "KILLED" if outcome.interrupted and outcome.remaining else "FINISHED"
        summary = {"trials_finished": outcome.finished, "wall_seconds": outcome.seconds}
        if progress.draws is not None:  # an Optuna study: its draws, repeats included, beside the trials
            summary |= {"optuna_draws": progress.draws, "repeated_draws": progress.repeated_draws}
        tracker.finish(study, status, summary)
    except Exception as err:  # noqa: BLE001 - the study folder holds everything; tracking is best effort
        again = study_command("track", study_dir, *tracking_options(study_dir, tracking_uri, study.get("tracking_uri")))
        console.print(f"[yellow]warning:[/] MLflow tracking unavailable ({type(err).__name__}); run `{again}` later",
                      highlight=False)  # fmt: skip
    return outcome
