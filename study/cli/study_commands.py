"""The study commands: `spec-schema`, `plan`, `run`, `resume`, `status` and `track`."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from study.cli.common import cluster_options, console, fail, spec_or_exit, study_or_exit
from study.cli.driver import interrupted, one_driver, stop_on_signals
from study.commands import study_command
from study.tracking.mlflow_store import absolute_sqlite, tracking_options


def spec_schema() -> None:
    """Print the study spec's JSON schema."""
    from study.spec.study_spec import StudySpec

    print(json.dumps(StudySpec.model_json_schema(), indent=2))


def plan(
    spec: Annotated[Path, typer.Argument(help="study spec (YAML)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the totals as JSON")] = False,
) -> None:
    """Show the trials a spec asks for, without running anything."""
    from study.spec.plan import run_name, summary, variants

    study_spec = spec_or_exit(spec)
    totals = summary(study_spec)
    if totals["trials"] > study_spec.max_trials:  # `taugate run` refuses it without --yes (study.folder.metadata)
        console.print(
            Text.assemble(("warning:", "yellow"), f" {totals['trials']} trials, more than max_trials="
                          f"{study_spec.max_trials}: `taugate run` refuses this spec unless given --yes; "
                          "raise max_trials in the spec or shrink the grid to run it without"),
            highlight=False,
        )  # fmt: skip
    if as_json:
        print(json.dumps(totals))
        return
    out = Console()
    if study_spec.search.kind == "grid":
        table = Table(title=f"study {study_spec.name}: trials")
        for column in ("#", "run name", "method", "target", "seed"):
            table.add_column(column)
        for index, variant in enumerate(variants(study_spec)):
            target = variant.get("target_angle", study_spec.target_angles[0])
            table.add_row(str(index), run_name(variant), variant["method"], f"{target:g}°", str(variant["seed"]))
        out.print(table)
    if study_spec.search.kind == "optuna":
        search = study_spec.search
        out.print(
            f"{totals['trials']} trials (optuna): {search.num_samples} configurations drawn over "
            f"{', '.join(study_spec.methods)}, each on {len(study_spec.seeds)} seeds"
        )
    else:
        out.print(
            f"{totals['trials']} trials (grid), {totals['foundations']} foundations; "
            + ", ".join(f"{m}: {n}" for m, n in totals["per_method"].items())
        )
    targets = totals["target_angles"]
    out.print(
        f"target angle{'s' if len(targets) > 1 else ''} {', '.join(f'{t:g}°' for t in targets)}"
        + (" (an axis: one foundation per seed serves every target)" if len(targets) > 1 else "")
        + f"; evaluated on {', '.join(f'{a:g}°' for a in totals['evaluated_angles'])}"
        + f" (foundation mixture {', '.join(f'{a:g}°' for a in study_spec.angles)})"
    )
    swept = study_spec.protocol.axes()
    out.print(
        f"protocol ({totals['protocols']} shared by every method): "
        + ", ".join(
            f"{k} {'/'.join(f'{v:g}' for v in vs)}{' (swept)' if k in swept else ''}"
            for k, vs in totals["protocol"].items()
        )  # fmt: skip
    )
    out.print(describe_long_trials(study_spec))


def describe_long_trials(spec) -> str:
    """The plan's line on early stopping and epoch checkpoints."""
    scheduler = spec.scheduler
    if scheduler.kind == "none":
        stopping = "scheduler none (every trial runs all its epochs)"
    else:
        stopping = f"scheduler {scheduler.kind} on {scheduler.metric} ({scheduler.mode})"
        stopping += f", grace {scheduler.grace_period} epoch(s)"
        if scheduler.kind == "asha":
            stopping += f", reduction factor {scheduler.reduction_factor:g}"
            stopping += f", max {scheduler.max_epochs} epochs" if scheduler.max_epochs else ""
    after = spec.checkpoint_after_s
    checkpoints = "no epoch checkpoints" if after is None else f"epoch checkpoints once a trial runs {after:g}s"
    return f"{stopping}; {checkpoints}; reuse_actors {str(spec.reuse_actors).lower()}"


def _run_study(
    spec, study, study_dir: Path, address: str | None, tracking_uri: str | None, report: bool = True
) -> None:
    from study.cluster.cluster_error import ClusterError
    from study.cluster.interrupt import SIGNALS, received
    from study.pipeline.service import finish_study
    from study.tune import runner

    where = {"address": address, "tracking_uri": tracking_uri}
    try:
        outcome = runner.execute(spec, study, study_dir, address=address, tracking_uri=tracking_uri, console=console)
    except ClusterError as err:
        folder = study_dir.resolve()
        resume = study_command("resume", folder, *cluster_options(address),
                               *tracking_options(folder, tracking_uri, study.get("tracking_uri")))  # fmt: skip
        fail(f"{err}; the study folder {folder} is kept, `{resume}` continues it", code=1)
    except KeyboardInterrupt:  # a second signal (or Ctrl-C before the handlers): stop at once
        interrupted(spec, study, study_dir, received() or SIGNALS[0], **where)
    if outcome.interrupted is not None:
        interrupted(spec, study, study_dir, outcome.interrupted, outcome.seconds, **where)
    finish_study(spec, study_dir, outcome, tracking_uri, report, console)
    if outcome.failed:
        raise typer.Exit(1)


def _default_output(spec) -> Path:
    import os
    from datetime import datetime

    # the spec's storage_path, else TAUGATE_STORAGE_PATH (set on cluster nodes), else ./studies
    root = Path(spec.storage_path or os.environ.get("TAUGATE_STORAGE_PATH") or "studies")
    return root / f"{spec.name}-{datetime.now():%Y%m%d-%H%M%S}"


def run(
    spec: Annotated[Path, typer.Argument(help="study spec (YAML; - reads standard input)")],
    output: Annotated[Path | None, typer.Option(help="study folder (default: studies/<name>-<time>)")] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address, or auto (default: a local Ray on loopback)")
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: SQLite in the folder)")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="run a grid larger than max_trials")] = False,
    report: Annotated[bool, typer.Option(help="write the report at the end (`taugate report` writes it later)")] = True,
) -> None:
    """Run a study: every trial on Ray Tune, tracked in MLflow, results in the study folder."""
    from study.folder.metadata import prepare
    from study.folder.storage import StorageError
    from study.spec.loader import SpecError

    study_spec = spec_or_exit(spec)
    study_dir = output or _default_output(study_spec)
    tracking_uri = absolute_sqlite(tracking_uri)  # as recorded in study.json: the same store from any folder
    stop_on_signals()
    created = not study_dir.exists()
    with one_driver(study_dir):
        try:
            study = prepare(study_spec, study_dir, yes=yes, tracking_uri=tracking_uri)
        except (SpecError, StorageError) as err:
            refused = str(err)
        else:
            _run_study(study_spec, study, study_dir, address, tracking_uri, report)
            return
    if created:  # refused before anything was written: leave no empty folder behind
        from study.folder.lock import GUARD_FILE

        with contextlib.suppress(OSError):
            (study_dir / GUARD_FILE).unlink()
            study_dir.rmdir()
    fail(refused)


def resume(
    study_dir: Annotated[Path, typer.Argument(help="an existing study folder")],
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address, or auto (default: a local Ray on loopback)")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
    report: Annotated[bool, typer.Option(help="write the report at the end")] = True,
) -> None:
    """Finish an interrupted study: finished trials are not run again."""
    study_spec, study = study_or_exit(study_dir)
    stop_on_signals()
    with one_driver(study_dir):
        _run_study(study_spec, study, study_dir, address, absolute_sqlite(tracking_uri), report)


def status(
    study_dir: Annotated[Path, typer.Argument(help="a study folder")],
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="check every file of the folder instead and print each damaged one as JSON (file, problem, "
            "what_to_do), changing nothing; exit code 0 when all are sound, 2 when any is damaged",
        ),
    ] = False,
) -> None:
    """Trials finished (ok, diverged or stopped early), failed and still to run."""
    from study.folder.progress import study_progress

    if check:
        from study.folder.validate import check_folder

        damage = check_folder(study_dir)
        print(json.dumps({"study": str(study_dir), "damaged": [d.as_dict() for d in damage]}, indent=1))
        raise typer.Exit(2 if damage else 0)
    spec, study = study_or_exit(study_dir)
    print(json.dumps({"name": study["name"]} | study_progress(study_dir, spec, study).as_dict()))


def track(
    study_dir: Annotated[Path, typer.Argument(help="a study folder")],
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: the study's own)")] = None,
) -> None:
    """(Re)log a study to MLflow; idempotent: runs already there are not duplicated."""
    from study.folder.progress import study_progress
    from study.tracking.tracker import Tracker

    spec, study = study_or_exit(study_dir, needs_mlflow=tracking_uri is None)
    uri = tracking_uri or study.get("tracking_uri")
    with one_driver(study_dir, read_only_ok=True):
        try:
            tracker = Tracker(study_dir, uri, study["experiment_name"])
            added = tracker.sync(study)
            # a study stopped part-way stays KILLED until `taugate resume` completes it
            tracker.finish(study, "KILLED" if study_progress(study_dir, spec, study).remaining else "FINISHED")
        except Exception as err:  # noqa: BLE001 - any store failure is the user's to fix; the folder keeps everything
            again = study_command("track", study_dir,
                                  *tracking_options(study_dir, tracking_uri, study.get("tracking_uri")))  # fmt: skip
            fail(f"MLflow tracking at {uri or 'the study folder'} failed ({type(err).__name__}: {str(err)[:300]}); "
                 f"nothing was lost: the study folder holds every result, run `{again}` again "
                 "once the store is reachable", code=1)  # fmt: skip
    console.print(f"logged {added} new trial runs to {tracker.uri} (experiment {study['experiment_name']})")
    if tracker.completed:  # runs a killed driver or a lost server left half-logged
        console.print(f"completed {len(tracker.completed)} half-logged trial runs from the study folder: "
                      + ", ".join(tracker.completed), highlight=False)  # fmt: skip
    if tracker.merged:
        console.print(f"deleted {tracker.merged} duplicate trial runs (one run per trial kept)", highlight=False)
