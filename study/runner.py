"""Run a study on Ray Tune: local Ray by default, or an existing cluster.

Each invocation (`run`, then any `resume`) is one Tune experiment under `<study>/tune/`; the
ledger of finished trials spans them, so a resumed study schedules only what is not done.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our progress lines replace Tune's tables
# Ray's token authentication stays on; Ray reads this when it is first imported, so set it first.
os.environ.setdefault("RAY_AUTH_MODE", "token")
# An unreachable tracking server should cost seconds, not MLflow's default minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
# Tune's automatic loggers include TensorBoard's, whose import and event files cost the driver
# seconds per study; the JSON and CSV loggers (which the analysis reads) are added explicitly.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Ctrl-C and SIGTERM stop a study through study.interrupt; Tune's own SIGINT handler would print
# its `Tuner.restore(...)` hint, which is not how a study resumes.
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
# A diverged trial has no accuracy to report; the scheduler and Optuna see it as a trial without
# the metric (not an error that stops the study).
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
# Long trials checkpoint every epoch (num_to_keep=2), which forces an experiment snapshot each time;
# Tune warns about that on every short epoch, which is noise here.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
import platform
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from study.plan import (
    PLAN_FILE,
    fused_groups,
    longest_first,
    planned_trials,
    run_name,
    summary,
    trial_config,
    trial_key,
    variants,
)
from study.schedulers import trial_scheduler
from study.spec import SpecError, StudySpec, parse_spec
from study.storage import TUNE_DIR, StorageError, TrialLedger, check_writable, write_json

STUDY_FILE, SPEC_FILE, OPTUNA_DB = "study.json", "spec.yaml", "optuna.db"
# A local study's Ray node address. Ray 2.60 binds its servers (GCS, raylet, workers, agents,
# autoscaler monitor) to loopback only when the node address is 127.0.0.1 itself; any other
# address, 127.0.0.2 included, makes them listen on every interface. `connect` keeps Ray from
# rewriting 127.0.0.1 to the network address. TAUGATE_RAY_NODE_IP overrides it (at that cost).
LOCAL_NODE_IP = os.environ.get("TAUGATE_RAY_NODE_IP", "127.0.0.1")


# True once this driver started its own Ray: its exit then runs the interpreter's full shutdown,
# during which the last of Ray's worker processes end (study.cli.main)
started_local_ray = False


class ClusterError(RuntimeError):
    """The Ray cluster named by --address cannot be reached."""


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


def environment() -> dict[str, str]:
    """Versions, git commit and hardware: tags on the parent run and the report's metadata."""
    info = {"python": platform.python_version(), "machine": f"{platform.machine()} {os.cpu_count()} cpus",
            "host": platform.node()}  # fmt: skip
    for package in ("torch", "ray", "optuna", "mlflow", "taugate-study"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[package] = metadata.version(package)
    try:
        root = Path(__file__).resolve().parent.parent
        info["git_commit"] = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = "unknown"
    return info


def load_study(study_dir: Path) -> tuple[StudySpec, dict[str, Any]]:
    """The spec and metadata of an existing study folder."""
    study_file, spec_file = study_dir / STUDY_FILE, study_dir / SPEC_FILE
    if not study_file.is_file() or not spec_file.is_file():
        raise StorageError(f"{study_dir} is not a study folder (no {STUDY_FILE} / {SPEC_FILE})")
    return parse_spec(yaml.safe_load(spec_file.read_text()), source=str(spec_file)), json.loads(study_file.read_text())


def prepare(spec: StudySpec, study_dir: Path, yes: bool = False, tracking_uri: str | None = None) -> dict[str, Any]:
    """Check everything that can fail before a trial starts; write the spec and metadata."""
    totals = summary(spec)
    if totals["trials"] > spec.max_trials and not yes:
        raise SpecError(
            f"max_trials: the study has {totals['trials']} trials, more than max_trials={spec.max_trials}; "
            "pass --yes to run it anyway or raise max_trials"
        )
    check_writable(study_dir)
    study_file = study_dir / STUDY_FILE
    if study_file.is_file():
        raise StorageError(f"{study_dir} already holds a study; use `taugate resume {study_dir}` or another --output")
    (study_dir / SPEC_FILE).write_text(yaml.safe_dump(spec.dump(), sort_keys=False))
    study = {
        "study_id": uuid.uuid4().hex,
        "name": spec.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "trials_planned": totals["trials"],
        "foundations_planned": totals["foundations"],
        "environment": environment(),
        "optuna_study_name": spec.search.study_name or f"{spec.name}-{uuid.uuid4().hex[:8]}",
        # part of the study's record: resume, track and report write where the run wrote
        "tracking_uri": tracking_uri or spec.tracking_uri,
        "experiment_name": spec.experiment_name or spec.name,
    }
    write_json(study_file, study)
    return study


def use_prestarted_workers() -> None:
    """Let Tune's trial actors start on the worker processes Ray prestarts.

    Tune gives every trainable actor `runtime_env={"env_vars": {"PL_DISABLE_FORK": "1"}}` (a
    PyTorch Lightning setting, ray-project/ray#28197), and an actor with any runtime env cannot
    use the idle workers Ray starts with the driver: each trial actor waits for a fresh process
    instead (0.7 s on an idle 2-core machine, 1.4 s while Ray is still starting). We run no
    Lightning, so the default goes; variables Tune propagates from the driver's environment
    still make a runtime env (and then a fresh worker) as before. Ray is pinned (pyproject.toml);
    tests/test_study_local.py checks that this still takes effect.
    """
    from ray.tune.execution import class_cache

    class_cache.DEFAULT_ENV_VARS.pop("PL_DISABLE_FORK", None)


@contextlib.contextmanager
def single_node_on_loopback(node_ip: str):
    """Let `ray.init` keep 127.0.0.1 as the node address while it starts a local Ray.

    Ray 2.60 binds every server of a node to loopback when the node address is localhost, and to
    all interfaces otherwise; but `ray.init` first rewrites a localhost address to the machine's
    network address, unless Ray runs as a single-node cluster (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
    read once when Ray is imported, which Tune may already have done). A local study is one node,
    so it says so for the start only: Ray's processes get 127.0.0.1 on their command lines, and a
    later driver in this process that joins a cluster resolves its address as before. Ray is
    pinned (pyproject.toml); tests/test_loopback.py checks every listening socket of a study.
    """
    from ray._common.network_utils import is_localhost
    from ray._private import ray_constants

    if not is_localhost(node_ip):
        yield
        return
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when a `host:port` cluster address does not answer: Ray's own
    connection attempt retries for minutes before it gives up."""
    if not address or address == "auto":
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address {address!r}: expected host:port (for example 127.0.0.2:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ClusterError(f"cannot reach the Ray cluster at {address} ({err.strerror or err}); check the address "
                           "and that the head node is up") from None  # fmt: skip


def is_loopback(host: str) -> bool:
    from ray._common.network_utils import is_localhost

    return is_localhost(host)


def cluster_address(address: str | None) -> str | None:
    """The `host:port` a driver joins: --address, else RAY_ADDRESS; `auto` is the cluster `ray start`
    (or `taugate cluster start`) last started on this machine, as Ray records it."""
    from ray._private.services import get_ray_address_from_environment

    if address in (None, "auto"):
        try:
            found = get_ray_address_from_environment(address or "auto", None)
        except ConnectionError:
            raise ClusterError("--address auto: no Ray cluster is running on this machine; start one with "
                               "`taugate cluster start` or name its address") from None  # fmt: skip
        return None if found in (None, "auto") else found
    return address


def connect(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    global started_local_ray
    quiet = {"log_to_driver": False, "logging_level": "warning"}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        started_local_ray = True
        with single_node_on_loopback(LOCAL_NODE_IP):
            ray.init(address="local", _node_ip_address=LOCAL_NODE_IP, include_dashboard=False, **quiet)
    else:
        target = cluster_address(address)
        check_reachable(target)
        host = target.split("://")[-1].rpartition(":")[0] if target else ""
        loopback = {"_node_ip_address": host} if host and is_loopback(host) else {}
        try:  # an existing cluster, or the one a Ray Job runs on
            # a cluster on 127.0.0.1 (`taugate cluster start`) listens on loopback only: keep Ray
            # from rewriting the address (and this driver's node address) to the network address
            with single_node_on_loopback(host if loopback else ""):
                ray.init(address=address, **loopback, **quiet)
        except ConnectionError as err:
            raise ClusterError(
                f"cannot connect to the Ray cluster at {address or os.environ.get('RAY_ADDRESS')} ({err}); check the "
                "address and that this machine has the cluster's auth token (~/.ray/auth_token or RAY_AUTH_TOKEN)"
            ) from None


def shutdown_local_ray(address: str | None) -> None:
    """Stop the Ray this driver started (a cluster's Ray is not ours to stop)."""
    import ray

    from study.interrupt import descendants, end_processes

    if address is None and not os.environ.get("RAY_ADDRESS") and ray.is_initialized():
        ours = descendants(os.getpid())  # the Ray this driver started: GCS, raylet, workers, agents
        ray.shutdown()
        end_processes(ours)


def execute(
    spec: StudySpec, study: dict[str, Any], study_dir: Path, *, address: str | None,
    tracking_uri: str | None, console: Console,
) -> StudyOutcome:  # fmt: skip
    """Run every trial of the study that the ledger does not hold yet."""
    from study.mlflow_store import open_in_background, resolve_uri

    started = time.monotonic()
    study_dir = study_dir.resolve()
    ledger = TrialLedger(study_dir)
    done = ledger.all_finished()
    uri = resolve_uri(study_dir, tracking_uri or study.get("tracking_uri"))
    open_in_background(uri)  # MLflow opens its store while Ray starts
    objectives: tuple[str, ...] = ()

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
        from study.search import optuna_searcher

        objectives = tuple(o.metric for o in spec.search.objectives)
        search_alg, completed = optuna_searcher(spec, study, study_dir / OPTUNA_DB)
        # an Optuna trial is a configuration on every seed: the study's trials are its seeds' runs
        total = spec.search.num_samples * len(spec.seeds)
        todo = [seed for _ in range(max(0, spec.search.num_samples - completed)) for seed in spec.seeds]
        num_samples = len(todo) // len(spec.seeds)
        longest = max((method.epochs or spec.epochs for method in spec.methods.values()), default=1)
    console.print(f"study {spec.name}: {total} trials, {len(todo)} to run, folder {study_dir}", highlight=False)

    from study.interrupt import received
    from study.interrupt import reinstall as reinstall_signal_handlers

    if todo and received() is None:
        # Ray's start is mostly waiting on its processes: import Tune and our callbacks meanwhile
        importing = threading.Thread(target=importlib.import_module, args=("study.callbacks",), daemon=True)
        importing.start()
        connect(address)
        reinstall_signal_handlers()  # ray.init replaced the SIGTERM handler with its own
        importing.join()
        use_prestarted_workers()
        from ray import tune
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

        from study.callbacks import ProgressCallback, SchedulerStops, StopOnSignal, TrackingCallback
        from study.trainable import split_config, train_trial

        callbacks = [SchedulerStops(study_dir), JsonLoggerCallback(), CSVLoggerCallback(),
                     TrackingCallback(study_dir, uri, study),
                     ProgressCallback(total, already_done=total - len(todo))]  # fmt: skip
        param_space = {"base": spec.base_config(), "variant": tune.grid_search(units)} if units else {}
        previous = sorted((study_dir / TUNE_DIR).glob("run-*")) if (study_dir / TUNE_DIR).is_dir() else []
        trainable = tune.with_parameters(train_trial, study_dir=str(study_dir), objectives=objectives,
                                         checkpoint_after=spec.checkpoint_after_s)  # fmt: skip
        resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}

        def name(trial) -> str:
            return run_name(split_config(trial.config)[1])

        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=search_alg,
                num_samples=num_samples,
                max_concurrent_trials=spec.max_concurrent_trials,
                reuse_actors=spec.reuse_actors,
                scheduler=trial_scheduler(spec, longest),
                trial_name_creator=name,
                trial_dirname_creator=lambda trial: f"{name(trial)}_{trial.trial_id}",
            ),  # fmt: skip
            run_config=tune.RunConfig(
                name=f"run-{len(previous) + 1}",
                storage_path=str(study_dir / TUNE_DIR),
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),  # long trials' epoch checkpoints
                callbacks=callbacks,
                stop=StopOnSignal(),
                verbose=0,
            ),  # fmt: skip
        )
        try:
            tuner.fit()
        finally:
            shutdown_local_ray(address)  # no Ray process of a local study outlives its driver

    from study.progress import study_progress

    progress = study_progress(study_dir, spec, study)  # the one account of the study's trials
    outcome = StudyOutcome(study_dir, progress.finished, progress.failed, total, time.monotonic() - started,
                           remaining=progress.remaining, interrupted=received(),
                           stopped=progress.stopped)  # fmt: skip
    try:
        from study.tracking import Tracker

        tracker = Tracker(study_dir, uri, study["experiment_name"])
        tracker.sync(study)  # anything the callback could not log (an outage) is logged now if possible
        status = "KILLED" if outcome.interrupted and outcome.remaining else "FINISHED"
        tracker.finish(study, status, {"trials_finished": outcome.finished, "wall_seconds": outcome.seconds})
    except Exception as err:  # noqa: BLE001 - the study folder holds everything; tracking is best effort
        console.print(f"[yellow]warning:[/] MLflow tracking unavailable ({type(err).__name__}); "
                      f"run `taugate track {study_dir}` later", highlight=False)  # fmt: skip
    return outcome
