"""The `taugate` command line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from study.cluster import app as cluster_app
from trainables.config import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="TauGate ablation study service.")
app.add_typer(cluster_app, name="cluster")  # taugate cluster start|stop|status (study/cluster.py)
console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    # the message is text, never markup: `pip install '.[directml]'` must print as written
    console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
    raise typer.Exit(code)


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        fail(f"{path}: file not found")
    except yaml.YAMLError as err:
        fail(f"{path}: YAML syntax error: {err}")
    if not isinstance(data, dict):
        fail(f"{path}: expected a mapping of config fields")
    return data


@app.command()
def trial(
    method: Annotated[
        str | None, typer.Option(help="frozen|bitfit|taugate|gain_only|threshold_only|lora|full (default taugate)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="default 0")] = None,
    gate_sharpness: Annotated[float | None, typer.Option(help="TauGate sharpness s")] = None,
    sparsity_weight: Annotated[float | None, typer.Option(help="TauGate sparsity weight lambda")] = None,
    lora_rank: Annotated[int | None, typer.Option()] = None,
    dataset: Annotated[str | None, typer.Option(help="mnist5k (bundled) or mnist (torchvision)")] = None,
    data_root: Annotated[str | None, typer.Option()] = None,
    download: Annotated[bool, typer.Option(help="let torchvision download MNIST")] = False,
    device: Annotated[str | None, typer.Option(help="auto|cpu|cuda|mps|directml")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML or JSON file of trial config fields")] = None,
    artifacts: Annotated[Path | None, typer.Option(help="folder for the adapter and gate statistics")] = None,
) -> None:
    """Run one trial (training its own foundation); the metrics dict is the last line of stdout.
    Options given on the command line override the fields of `--config`."""
    from trainables.trial import run_trial

    raw = _load_yaml(config) if config else {}
    options = {
        "method": method, "seed": seed, "gate_sharpness": gate_sharpness, "sparsity_weight": sparsity_weight,
        "lora_rank": lora_rank, "dataset": dataset, "data_root": data_root, "device": device,
    }  # fmt: skip
    raw |= {k: v for k, v in options.items() if v is not None}
    if download:
        raw["download"] = True
    try:
        metrics = run_trial(raw, artifact_dir=artifacts)
    except ConfigError as err:
        fail(str(err))
    print(json.dumps(metrics))


@app.command()
def paper(
    seeds: Annotated[int, typer.Option(min=1, help="seeds per method")] = 5,
    device: Annotated[str, typer.Option(help="auto|cpu|cuda|mps|directml")] = "auto",
    output: Annotated[Path | None, typer.Option(help="write every trial's metrics as JSON")] = None,
) -> None:
    """The paper's five methods over the seeds, in this process, beside the paper's table."""
    from analysis.paper import PAPER_METHODS
    from trainables.config import parse_config
    from trainables.data import load_modes
    from trainables.device import resolve_device
    from trainables.train import train_foundation
    from trainables.trial import run_trial, shared

    results = []
    try:
        for seed in range(seeds):
            config = parse_config({"seed": seed, "device": device})
            modes = load_modes(config, resolve_device(device))
            foundation = train_foundation(config, modes)  # one foundation per seed, shared by the methods
            for method in PAPER_METHODS:
                metrics = run_trial({"seed": seed, "method": method, "device": device}, shared(foundation))
                results.append(metrics)
                console.print(f"seed {seed} {method:<8} acc_45={metrics.get('acc_45', float('nan')):.3f}")
    except ConfigError as err:
        fail(str(err))
    if output:
        output.write_text(json.dumps(results, indent=2))
    Console().print(paper_comparison(results))


def paper_comparison(results: list[dict[str, Any]]) -> Table:
    from analysis.paper import COMPARISON_COLUMNS, comparison_rows

    table = Table(title="TauGate mode specialisation: ours (mnist5k) vs paper")
    for column in COMPARISON_COLUMNS:
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in comparison_rows(results):
        table.add_row(*row)
    return table


def _study_or_exit(study_dir: Path):
    """The (spec, metadata) of a study folder, or a clear error and exit code 2."""
    from study.runner import load_study
    from study.spec import SpecError
    from study.storage import StorageError

    try:
        return load_study(study_dir)
    except (SpecError, StorageError) as err:
        fail(str(err))


def _spec_or_exit(path: Path):
    from study.spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as err:
        fail(str(err))


@app.command("spec-schema")
def spec_schema() -> None:
    """Print the study spec's JSON schema."""
    from study.spec import StudySpec

    print(json.dumps(StudySpec.model_json_schema(), indent=2))


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="study spec (YAML)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the totals as JSON")] = False,
) -> None:
    """Show the trials a spec asks for, without running anything."""
    from study.plan import run_name, summary, variants

    study_spec = _spec_or_exit(spec)
    totals = summary(study_spec)
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


@contextlib.contextmanager
def _one_driver(study_dir: Path, read_only_ok: bool = False):
    """Hold the study folder's driver lock (`study.lock`) for the block; a live driver holding it
    is refused with exit 2 naming its host and pid, a stale one (killed, machine lost) is taken
    over. `read_only_ok`: on a folder this user cannot write, only check that no driver is alive."""
    from study.lock import DriverLock, StudyLocked
    from study.storage import StorageError, check_writable

    def lost(holder: dict) -> None:  # this driver was judged dead (a long pause) and replaced
        who = f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}"
        console.print(
            Text.assemble(("error:", "bold red"), f" another driver ({who}) took over {study_dir}; this one stops")
        )
        os.kill(os.getpid(), signal.SIGTERM)

    lock = DriverLock(study_dir, on_lost=lost)
    try:
        check_writable(study_dir)
        lock.acquire()
    except StudyLocked as err:
        fail(str(err))
    except (StorageError, OSError) as err:
        if not read_only_ok:
            fail(str(err) if isinstance(err, StorageError) else f"{study_dir}: cannot take the driver lock ({err})")
        try:
            lock.check()
        except StudyLocked as locked:
            fail(str(locked))
        yield
        return
    if gone := lock.taken_over:
        who = f"host {gone.get('host', '?')}, pid {gone.get('pid', '?')}: {gone['why']}"
        console.print(Text.assemble(("warning:", "yellow"), f" took over the lock of a driver that is gone ({who})"))
    try:
        yield
    finally:
        lock.release()


def _stop_on_signals() -> None:
    """SIGINT and SIGTERM end the study cleanly (`study.interrupt`); a second one ends it at once."""
    from study.interrupt import install, name

    def notify(signum: int) -> None:
        console.print(f"{name(signum)}: stopping the study; finished trials are kept (again to stop at once)",
                      highlight=False)  # fmt: skip

    install(notify)


def _interrupted(spec, study, study_dir: Path, signum: int, seconds: float | None = None) -> None:
    """The summary of an interrupted study, and exit 128 + the signal (130 for Ctrl-C, 143 for SIGTERM)."""
    from study.interrupt import exit_code, name
    from study.progress import study_progress

    progress = study_progress(study_dir, spec, study)
    took = f", {seconds:.1f}s" if seconds is not None else ""
    console.print(
        f"study {spec.name} interrupted ({name(signum)}): {progress.finished}/{progress.planned} trials finished, "
        f"{progress.failed} failed, {progress.remaining} remaining{took}; no report written (`taugate report` "
        f"writes one for the partial study)\ncontinue with: taugate resume {Path(study_dir).resolve()}",
        highlight=False,
    )
    raise typer.Exit(exit_code(signum))


def _run_study(
    spec, study, study_dir: Path, address: str | None, tracking_uri: str | None, report: bool = True
) -> None:
    from study.interrupt import SIGNALS, received
    from study.runner import ClusterError, execute

    try:
        outcome = execute(spec, study, study_dir, address=address, tracking_uri=tracking_uri, console=console)
    except ClusterError as err:
        fail(f"{err}; the study folder {study_dir} is kept, `taugate resume` continues it", code=1)
    except KeyboardInterrupt:  # a second signal (or Ctrl-C before the handlers): stop at once
        _interrupted(spec, study, study_dir, received() or SIGNALS[0])
    if outcome.interrupted is not None:
        _interrupted(spec, study, study_dir, outcome.interrupted, outcome.seconds)
    console.print(
        f"study {spec.name}: {outcome.finished}/{outcome.total} trials finished"
        + (f" ({outcome.stopped} stopped early by the scheduler)" if outcome.stopped else "")
        + f", {outcome.failed} failed, {outcome.seconds:.1f}s; results in {outcome.study_dir}",
        highlight=False,
    )
    from study.calibrate import calibrate_study

    if calibrated := calibrate_study(study_dir, spec):
        protocol, path = calibrated
        console.print(
            "calibrated protocol (best validation fidelity over the fitted methods): "
            + ", ".join(f"{k} {v:g}" for k, v in protocol.items())
            + f"\nnext: taugate run {path}",
            highlight=False,
        )
    if len(spec.target_angles) > 1:  # a modes study: its adapters become a bank the report describes
        _bank_modes(spec, study_dir, tracking_uri)
    if report:
        _report(study_dir, tracking_uri, outcome.seconds)
    if outcome.failed:
        raise typer.Exit(1)


def _bank_modes(spec, study_dir: Path, tracking_uri: str | None) -> None:
    """Build each foundation's mode bank (`taugate bank`) at the end of a modes study. A problem is a
    warning: the study's results stand, and `taugate bank` can build it later."""
    from study.bank import build_banks
    from trainables.bank import BANK_METHODS, BankError

    methods = tuple(m for m in spec.methods if m in BANK_METHODS)
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
    _log_banks(built, study_dir, tracking_uri)


def _log_banks(built, study_dir: Path, tracking_uri: str | None) -> None:
    """Each bank as an MLflow pyfunc model of the study's parent run (`mlflow models serve` serves it).
    Tracking is best effort: a store that cannot be reached is a warning naming the way back."""
    from study.serving import log_bank_model

    for result in built:
        name = "mode_bank" if len(built) == 1 else f"mode_bank_seed{result.seed}"
        try:
            uri = log_bank_model(result.folder, study_dir, tracking_uri, artifact_path=name)
        except Exception as err:  # noqa: BLE001 - the bank is on disk; tracking is best effort
            problem = (f" bank {result.folder} not logged to MLflow ({type(err).__name__}: {err}); "
                       f"`taugate bank {study_dir}` logs it again")  # fmt: skip
            console.print(Text.assemble(("warning:", "yellow"), problem))
            continue
        console.print(f"  logged to MLflow as {uri} (serve: mlflow models serve -m {uri} --env-manager local)",
                      highlight=False)  # fmt: skip


def _report(study_dir: Path, tracking_uri: str | None, wall_seconds: float | None = None) -> None:
    from study.reporting import log_report, write_study_report

    paths = write_study_report(study_dir, wall_seconds)
    try:
        log_report(study_dir, tracking_uri)
    except Exception as err:  # noqa: BLE001 - the report is on disk; tracking is best effort
        problem = (f" report not logged to MLflow ({type(err).__name__}: {err}); once the store is reachable, "
                   f"`taugate track {study_dir}` backfills any missing runs and `taugate report {study_dir}` logs "
                   "the report")  # fmt: skip
        console.print(Text.assemble(("warning:", "yellow"), problem))
    console.print(f"report: {paths['html'].resolve()}", highlight=False)


def _default_output(spec) -> Path:
    import os
    from datetime import datetime

    # the spec's storage_path, else TAUGATE_STORAGE_PATH (set on cluster nodes), else ./studies
    root = Path(spec.storage_path or os.environ.get("TAUGATE_STORAGE_PATH") or "studies")
    return root / f"{spec.name}-{datetime.now():%Y%m%d-%H%M%S}"


@app.command()
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
    from study.runner import prepare
    from study.spec import SpecError
    from study.storage import StorageError

    study_spec = _spec_or_exit(spec)
    study_dir = output or _default_output(study_spec)
    _stop_on_signals()
    created = not study_dir.exists()
    with _one_driver(study_dir):
        try:
            study = prepare(study_spec, study_dir, yes=yes, tracking_uri=tracking_uri)
        except (SpecError, StorageError) as err:
            refused = str(err)
        else:
            _run_study(study_spec, study, study_dir, address, tracking_uri, report)
            return
    if created:  # refused before anything was written: leave no empty folder behind
        from study.lock import GUARD_FILE

        with contextlib.suppress(OSError):
            (study_dir / GUARD_FILE).unlink()
            study_dir.rmdir()
    fail(refused)


@app.command()
def resume(
    study_dir: Annotated[Path, typer.Argument(help="an existing study folder")],
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address, or auto (default: a local Ray on loopback)")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
    report: Annotated[bool, typer.Option(help="write the report at the end")] = True,
) -> None:
    """Finish an interrupted study: finished trials are not run again."""
    study_spec, study = _study_or_exit(study_dir)
    _stop_on_signals()
    with _one_driver(study_dir):
        _run_study(study_spec, study, study_dir, address, tracking_uri, report)


@app.command()
def status(study_dir: Annotated[Path, typer.Argument(help="a study folder")]) -> None:
    """Trials finished (ok, diverged or stopped early), failed and still to run."""
    from study.progress import study_progress

    spec, study = _study_or_exit(study_dir)
    print(json.dumps({"name": study["name"]} | study_progress(study_dir, spec, study).as_dict()))


@app.command()
def track(
    study_dir: Annotated[Path, typer.Argument(help="a study folder")],
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: the study's own)")] = None,
) -> None:
    """(Re)log a study to MLflow; idempotent: runs already there are not duplicated."""
    from study.progress import study_progress
    from study.tracking import Tracker

    spec, study = _study_or_exit(study_dir)
    uri = tracking_uri or study.get("tracking_uri")
    with _one_driver(study_dir, read_only_ok=True):
        try:
            tracker = Tracker(study_dir, uri, study["experiment_name"])
            added = tracker.sync(study)
            # a study stopped part-way stays KILLED until `taugate resume` completes it
            tracker.finish(study, "KILLED" if study_progress(study_dir, spec, study).remaining else "FINISHED")
        except Exception as err:  # noqa: BLE001 - any store failure is the user's to fix; the folder keeps everything
            fail(f"MLflow tracking at {uri or 'the study folder'} failed ({type(err).__name__}: {str(err)[:300]}); "
                 f"nothing was lost: the study folder holds every result, run `taugate track {study_dir}` again "
                 "once the store is reachable", code=1)  # fmt: skip
    console.print(f"logged {added} new trial runs to {tracker.uri} (experiment {study['experiment_name']})")


@app.command()
def report(
    study_dir: Annotated[Path, typer.Argument(help="a study folder")],
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: the study's own)")] = None,
) -> None:
    """Write the ablation report (report.html, report.md, results.csv) and log it to MLflow."""
    _study_or_exit(study_dir)
    with _one_driver(study_dir, read_only_ok=True):
        _report(study_dir, tracking_uri)


@app.command()
def bank(
    study_dir: Annotated[Path, typer.Argument(help="a study folder with finished gated trials")],
    output: Annotated[Path | None, typer.Option(help="banks folder (default: STUDY_DIR/bank)")] = None,
    method: Annotated[
        list[str] | None, typer.Option(help="taugate|gain_only|threshold_only; repeat for several (default taugate)")
    ] = None,
    foundation: Annotated[str | None, typer.Option(help="build only this foundation's bank (its id)")] = None,
    compact: Annotated[bool, typer.Option(help="write each mode's compact subnetwork beside the bank")] = True,
    log: Annotated[bool, typer.Option(help="log each bank to the study's MLflow parent run as a pyfunc model")] = True,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store (default: the study's own)")] = None,
) -> None:
    """Gather each foundation's gated adapters into a mode bank (one folder per foundation: bank.json,
    bank.safetensors, a copy of the foundation, compact subnetworks); per mode, the best trial on validation."""
    from study.bank import build_banks
    from trainables.bank import BankError

    try:
        built = build_banks(study_dir, output, tuple(method or ("taugate",)), foundation, compact)
    except BankError as err:
        fail(str(err))
    except OSError as err:
        fail(f"{output or study_dir / 'bank'}: cannot write the bank ({err})")
    for result in built:
        print(f"bank {result.folder}: foundation {result.foundation_id} (seed {result.seed}), "
              f"{len(result.modes)} modes")  # fmt: skip
        for name in result.modes:
            chosen = result.selections[name]
            line = (f"  {name:<20} trial {result.trials[name]} ({chosen['metric']} {chosen['value']:.4f}, "
                    f"best of {len(chosen['candidates'])})")  # fmt: skip
            if found := result.compact.get(name):
                kept = ", ".join(f"{k}/{n}" for k, n in zip(found["kept"], found["units"], strict=True))
                line += (
                    f"; compact: units kept {kept}, parameters x{found['parameter_ratio']:.3f}, "
                    f"multiply-adds x{found['mac_ratio']:.3f}; {found['differ']}/{found['digits']} test digits "
                    f"predicted otherwise than the dense net ({found['differ_dropped_fired']} of them where a "
                    f"dropped unit fired; dropped units fired on {found['dropped_fired']} digits)"
                )
            print(line)
        for note in result.notes:
            if "skipped" in note:
                print(f"  note: {note}")
    if log:
        _log_banks(built, study_dir, tracking_uri)


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="study spec (YAML)")],
    address: Annotated[str, typer.Option(help="the cluster's job server, e.g. http://127.0.0.1:8265")],
    output: Annotated[str | None, typer.Option(help="study folder on the cluster's shared storage")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI as the cluster sees it")] = None,
    follow: Annotated[bool, typer.Option(help="stream the job's logs until it ends")] = True,
) -> None:
    """Run a study as a Ray Job on a cluster (Ray token authentication); exits with the job's status."""
    from study.submit import SubmitError
    from study.submit import submit as submit_job

    study_spec = _spec_or_exit(spec)
    try:
        job_id, job_status = submit_job(spec, study_spec, address, output, tracking_uri, follow=follow)
    except SubmitError as err:
        fail(str(err))
    console.print(f"job {job_id}: {job_status}")
    if follow and job_status != "SUCCEEDED":
        raise typer.Exit(1)


@app.command()
def ui(
    study_dir: Annotated[Path, typer.Argument(help="a study folder")],
    port: Annotated[int, typer.Option()] = 5000,
    host: Annotated[str, typer.Option(help="127.0.0.1 keeps it on this machine; opt in to expose it")] = "127.0.0.1",
) -> None:
    """Open the study's MLflow store in the MLflow UI (on 127.0.0.1 by default)."""
    import os

    from study.mlflow_store import default_tracking_uri

    if not (study_dir / "mlflow.db").is_file():
        fail(f"{study_dir}: no mlflow.db (was the study tracked on a server? open that server instead)")
    command = ["mlflow", "ui", "--backend-store-uri", default_tracking_uri(study_dir), "--host", host,
               "--port", str(port), "--workers", "1"]  # fmt: skip
    console.print(f"MLflow UI on http://{host}:{port} (Ctrl-C stops it)")
    os.execvp(command[0], command)


def main() -> None:
    """Run the command; a study that joined a running cluster then ends its process as soon as
    everything Python-level is done.

    After such a study the interpreter's own finalization (module teardown, the native destructors
    of Ray's core worker, gRPC and torch) takes ~2.7 s on 2 cores, longer than a small study's
    trials on a warm cluster (benchmarks/README.md, "At scale"). Every command has closed its files
    by the time it returns; the non-daemon threads are joined and the atexit handlers (Ray's
    shutdown, logging's flush) run as at any exit, then the standard streams are flushed and the
    process ends with the command's exit code. A driver that started its own Ray exits the usual
    way: the last of that Ray's worker processes end during it."""
    import atexit
    import threading

    try:
        app(standalone_mode=True)
        status: int | str | None = 0
    except SystemExit as done:
        status = done.code
    runner = sys.modules.get("study.runner")
    if runner is None or runner.started_local_ray or "ray" not in sys.modules:  # no study on a cluster
        sys.exit(status)
    if isinstance(status, str):
        print(status, file=sys.stderr)
    code = status if isinstance(status, int) else (0 if status is None else 1)
    threading._shutdown()  # what the interpreter does first at exit: wait for non-daemon threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
