"""What follows a study's trials, as the service does it: the summary line, the calibrated protocol,
a modes study's mode banks (logged to MLflow) and the report; warnings, never failures, when
tracking is unreachable. The CLI runs the trials (`study.tune.runner.execute`), then `finish_study`."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console
from rich.text import Text

from study.commands import study_command
from study.spec.study_spec import StudySpec
from study.tracking.mlflow_store import tracking_options
from study.tune.runner import StudyOutcome


def finish_study(
    spec: StudySpec, study_dir: Path, outcome: StudyOutcome, tracking_uri: str | None, report: bool, console: Console
) -> None:
    """The post-run pipeline of a study that was not interrupted: summary, calibration, banks, report."""
    console.print(
        f"study {spec.name}: {outcome.finished}/{outcome.total} trials finished"
        + (f" ({outcome.stopped} stopped early by the scheduler)" if outcome.stopped else "")
        + (f" ({outcome.draws_note})" if outcome.draws_note else "")
        + f", {outcome.failed} failed, {outcome.seconds:.1f}s; results in {outcome.study_dir}",
        highlight=False,
    )
    from study.pipeline.calibrate import calibrate_study, next_command

    if calibrated := calibrate_study(study_dir, spec):
        protocol, path = calibrated
        console.print(
            "calibrated protocol (best validation fidelity over the fitted methods): "
            + ", ".join(f"{k} {v:g}" for k, v in protocol.items())
            + f"\nnext: {next_command(path, study_dir, spec, tracking_uri)}",
            highlight=False,
        )
    if len(spec.target_angles) > 1:  # a modes study: its adapters become a bank the report describes
        bank_modes(spec, study_dir, tracking_uri, console)
    if report:
        write_report(study_dir, tracking_uri, console, outcome.seconds)
    if len(spec.target_angles) > 1 or report:
        close_parent_run(study_dir, tracking_uri)


def close_parent_run(study_dir: Path, tracking_uri: str | None) -> None:
    """The study's MLflow parent run ends after what the study logged to it last (banks, report), so that it
    spans the whole `taugate run`. Best effort and silent: a store that failed has been reported already."""
    import contextlib

    from study.folder.metadata import load_study
    from study.tracking.tracker import Tracker

    with contextlib.suppress(Exception):
        _, study = load_study(study_dir)
        Tracker(study_dir, tracking_uri or study.get("tracking_uri"), study["experiment_name"]).extend_end(study)


def bank_modes(spec: StudySpec, study_dir: Path, tracking_uri: str | None, console: Console) -> None:
    """Build each foundation's mode bank (`taugate bank`) at the end of a modes study. A problem is a
    warning: the study's results stand, and `taugate bank` can build it later."""
    from study.pipeline.mode_banks import build_banks
    from trainables import registry
    from trainables.bank.layout import BankError

    methods = tuple(m for m in spec.methods if m in registry.bank_methods())
    if not methods:
        return
    try:
        built = build_banks(study_dir, None, methods)
    except (BankError, OSError) as err:
        again = study_command("bank", study_dir, *tracking_options(study_dir, tracking_uri))
        console.print(Text.assemble(("warning:", "yellow"), f" no mode bank built ({err}); `{again}`"))
        return
    for result in built:
        console.print(f"bank: {result.folder} (foundation {result.foundation_id}, seed {result.seed}, "
                      f"{len(result.modes)} modes)", highlight=False)  # fmt: skip
    log_banks(built, study_dir, tracking_uri, console)


def log_banks(built, study_dir: Path, tracking_uri: str | None, console: Console) -> None:
    """Each bank as an MLflow pyfunc model of the study's parent run (`mlflow models serve` serves it).
    Tracking is best effort: a store that cannot be reached is a warning naming the way back."""
    from study.serving import log_bank_model, serve_command

    for result in built:
        name = "mode_bank" if len(built) == 1 else f"mode_bank_seed{result.seed}"
        if result.label and len(built) > 1:  # several budgets: one bank of each per seed (MLflow names take no ".")
            name += "_" + re.sub(r"[^A-Za-z0-9_-]", "_", result.label)
        try:
            model = log_bank_model(result.folder, study_dir, tracking_uri, artifact_path=name)
        except Exception as err:  # noqa: BLE001 - the bank is on disk; tracking is best effort
            problem = (f" bank {result.folder} not logged to MLflow ({type(err).__name__}: {err}); "
                       f"`{study_command('bank', study_dir, *tracking_options(study_dir, tracking_uri))}` logs it "
                       "again")  # fmt: skip
            console.print(Text.assemble(("warning:", "yellow"), problem))
            continue
        said = "logged to MLflow as" if model.logged_now else "already logged to MLflow (nothing new logged) as"
        # the serve line runs as pasted, from any folder: the store, this environment's mlflow, on loopback
        console.print(f"  {said} {model.uri}\n    serve: {serve_command(model.uri, model.tracking_uri)}",
                      highlight=False, markup=False, emoji=False)  # fmt: skip


def write_report(
    study_dir: Path, tracking_uri: str | None, console: Console, wall_seconds: float | None = None
) -> None:
    """Write the report into the study folder and attach it to the MLflow parent run (best effort)."""
    from study.pipeline.reporting import log_report, write_study_report

    paths = write_study_report(study_dir, wall_seconds)
    try:
        log_report(study_dir, tracking_uri)
    except Exception as err:  # noqa: BLE001 - the report is on disk; tracking is best effort
        tracking = tracking_options(study_dir, tracking_uri)
        problem = (f" report not logged to MLflow ({type(err).__name__}: {err}); once the store is reachable, "
                   f"`{study_command('track', study_dir, *tracking)}` backfills any missing runs and "
                   f"`{study_command('report', study_dir, *tracking)}` logs the report")  # fmt: skip
        console.print(Text.assemble(("warning:", "yellow"), problem))
    console.print(f"report: {paths['html'].resolve()}", highlight=False)
