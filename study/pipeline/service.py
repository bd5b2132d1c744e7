"""What follows a study's trials, as the service does it: the summary line, the calibrated protocol,
a modes study's mode banks (logged to MLflow) and the report; warnings, never failures, when
tracking is unreachable. The CLI runs the trials (`study.tune.runner.execute`), then `finish_study`."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console
from rich.text import Text

from study.spec.study_spec import StudySpec
from study.tune.runner import StudyOutcome


def finish_study(
    spec: StudySpec, study_dir: Path, outcome: StudyOutcome, tracking_uri: str | None, report: bool, console: Console
) -> None:
    """The post-run pipeline of a study that was not interrupted: summary, calibration, banks, report."""
    console.print(
        f"study {spec.name}: {outcome.finished}/{outcome.total} trials finished"
        + (f" ({outcome.stopped} stopped early by the scheduler)" if outcome.stopped else "")
        + f", {outcome.failed} failed, {outcome.seconds:.1f}s; results in {outcome.study_dir}",
        highlight=False,
    )
    from study.pipeline.calibrate import calibrate_study

    if calibrated := calibrate_study(study_dir, spec):
        protocol, path = calibrated
        console.print(
            "calibrated protocol (best validation fidelity over the fitted methods): "
            + ", ".join(f"{k} {v:g}" for k, v in protocol.items())
            + f"\nnext: taugate run {path}",
            highlight=False,
        )
    if len(spec.target_angles) > 1:  # a modes study: its adapters become a bank the report describes
        bank_modes(spec, study_dir, tracking_uri, console)
    if report:
        write_report(study_dir, tracking_uri, console, outcome.seconds)


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
        console.print(Text.assemble(("warning:", "yellow"), f" no mode bank built ({err}); `taugate bank {study_dir}`"))
        return
    for result in built:
        console.print(f"bank: {result.folder} (foundation {result.foundation_id}, seed {result.seed}, "
                      f"{len(result.modes)} modes)", highlight=False)  # fmt: skip
    log_banks(built, study_dir, tracking_uri, console)


def log_banks(built, study_dir: Path, tracking_uri: str | None, console: Console) -> None:
    """Each bank as an MLflow pyfunc model of the study's parent run (`mlflow models serve` serves it).
    Tracking is best effort: a store that cannot be reached is a warning naming the way back."""
    from study.serving import log_bank_model

    for result in built:
        name = "mode_bank" if len(built) == 1 else f"mode_bank_seed{result.seed}"
        if result.label and len(built) > 1:  # several budgets: one bank of each per seed (MLflow names take no ".")
            name += "_" + re.sub(r"[^A-Za-z0-9_-]", "_", result.label)
        try:
            uri = log_bank_model(result.folder, study_dir, tracking_uri, artifact_path=name)
        except Exception as err:  # noqa: BLE001 - the bank is on disk; tracking is best effort
            problem = (f" bank {result.folder} not logged to MLflow ({type(err).__name__}: {err}); "
                       f"`taugate bank {study_dir}` logs it again")  # fmt: skip
            console.print(Text.assemble(("warning:", "yellow"), problem))
            continue
        console.print(f"  logged to MLflow as {uri} (serve: mlflow models serve -m {uri} --env-manager local)",
                      highlight=False)  # fmt: skip


def write_report(
    study_dir: Path, tracking_uri: str | None, console: Console, wall_seconds: float | None = None
) -> None:
    """Write the report into the study folder and attach it to the MLflow parent run (best effort)."""
    from study.pipeline.reporting import log_report, write_study_report

    paths = write_study_report(study_dir, wall_seconds)
    try:
        log_report(study_dir, tracking_uri)
    except Exception as err:  # noqa: BLE001 - the report is on disk; tracking is best effort
        problem = (f" report not logged to MLflow ({type(err).__name__}: {err}); once the store is reachable, "
                   f"`taugate track {study_dir}` backfills any missing runs and `taugate report {study_dir}` logs "
                   "the report")  # fmt: skip
        console.print(Text.assemble(("warning:", "yellow"), problem))
    console.print(f"report: {paths['html'].resolve()}", highlight=False)
