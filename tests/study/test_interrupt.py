"""One driver per study, and interruption is not failure: one study, driven as a user would.

`taugate run` is started on a Ray of its own; while it runs, a second driver (`resume` on another
loopback address, `run`, `track`, `report`) is refused. Ctrl-C (SIGINT to the driver's process
group, as a terminal sends it) stops it and its Ray. `resume`, joined to the session's warm
cluster, is stopped with SIGTERM, which leaves the cluster up; the next `resume` is SIGKILLed
with a trial in flight; a last `resume` takes over the dead driver's lock, runs only the trials
the ledger lacks and completes the study. The results must equal an uninterrupted
run's, with exactly one MLflow child run per trial.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from analysis.table.load import load_tune
from study.folder.lock import LOCK_FILE
from study.processes import start_time
from tests.support.cli import taugate
from tests.support.processes import TOKEN_ENV, taugate_process, wait_until
from tests.support.study_folder import ledger_metrics as ledger

pytestmark = pytest.mark.slow

SPEC = """
name: interrupt
foundation: {epochs: 1}
epochs: 2
seeds: [0, 1]
max_concurrent_trials: 1
methods:
  frozen: {}
  bitfit: {}
  taugate: {gate_sharpness: [10], sparsity_weight: [0.0]}
  lora: {lora_rank: [4]}
"""
TRIALS = 8
ENV = os.environ | TOKEN_ENV


def start(*args: str, env: dict | None = None, stdin=None) -> subprocess.Popen:
    return taugate_process(*args, env=ENV | (env or {}), stdin=stdin)


def finished(study_dir: Path) -> int:
    return len(list((study_dir / "trials").glob("*/metrics.json")))


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("train_seconds", "node_id")}


def settled(study_dir: Path, quiet: float = 3.0, limit: float = 60.0) -> dict[str, dict]:
    """The ledger once no trial has landed for `quiet` seconds: the worker running a trial may finish
    it after its driver is SIGKILLed, before Ray takes the dead driver's workers down."""
    deadline, last, since = time.monotonic() + limit, ledger(study_dir), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.2)
        now = ledger(study_dir)
        if now.keys() != last.keys():
            last, since = now, time.monotonic()
    return last


def mid_trial(run_dir: Path) -> bool:
    """Tune has made a trial's folder in this run: a trial has started. (A driver SIGKILLed while it
    logs a finished trial leaves a half-logged MLflow child run that no later driver completes.)"""
    return run_dir.is_dir() and any(child.is_dir() for child in run_dir.iterdir())


def session(sid: int) -> dict[int, str]:
    """Processes in session `sid` (the driver's, started with start_new_session): pid -> name."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid:
            found[int(stat.parent.name)] = text[text.index("(") + 1 : text.rindex(")")]
    return found


def lock_holder(study_dir: Path) -> int | None:
    try:
        return json.loads((study_dir / LOCK_FILE).read_text())["pid"]
    except (OSError, ValueError):
        return None


def stop(process: subprocess.Popen, how: str) -> dict:
    """Interrupt a running driver; its exit status, output and any process of its session left."""
    running = session(process.pid) if how != "SIGKILL" else {}  # a SIGKILL comes at once, the moment chosen
    if how == "SIGINT":  # Ctrl-C: the terminal signals the whole foreground process group
        os.killpg(process.pid, signal.SIGINT)
    elif how == "SIGTERM":
        os.kill(process.pid, signal.SIGTERM)
    else:  # SIGKILL: a lost machine, nothing runs any cleanup
        os.killpg(process.pid, signal.SIGKILL)
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 1  # a process that is ending may take a moment to vanish
    while (left := session(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return {"code": process.returncode, "stderr": stderr, "ran": running, "left": left}


def parent_status(study_dir: Path) -> str:
    client = mlflow.MlflowClient(f"sqlite:///{study_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("interrupt").experiment_id
    [parent] = client.search_runs([experiment], "tags.`taugate.kind` = 'study'")
    return parent.info.status


@pytest.fixture(scope="module")
def story(tmp_path_factory, warm_cluster) -> dict:
    folder = tmp_path_factory.mktemp("interrupt")
    spec = folder / "spec.yaml"
    spec.write_text(SPEC)
    study_dir = folder / "study"
    warm = ["--address", warm_cluster.address]
    seen: dict = {"study_dir": study_dir, "spec": spec}

    # Ctrl-C of a local study: the driver starts a Ray of its own, which SIGINT reaches too
    driver = start("run", str(spec), "--output", str(study_dir))
    wait_until(lambda: lock_holder(study_dir) == driver.pid, process=driver, poll=0.1)
    second = {  # every command that writes the study, started while its driver lives
        "resume on 127.0.0.3": start("resume", str(study_dir), env={"TAUGATE_RAY_NODE_IP": "127.0.0.3"}),
        "run": start("run", str(spec), "--output", str(study_dir)),
        "track": start("track", str(study_dir)),
        "report": start("report", str(study_dir)),
    }
    seen["second"] = {name: (p.wait(timeout=120), p.communicate()[1]) for name, p in second.items()}
    seen["driver_pid"] = driver.pid
    wait_until(lambda: finished(study_dir) >= 1, process=driver, poll=0.1)
    seen["sigint"] = stop(driver, "SIGINT") | {"local": True}
    seen["sigint"] |= {"finished": finished(study_dir), "mlflow": parent_status(study_dir)}
    seen["status"] = json.loads(taugate("status", str(study_dir)).stdout)
    seen["report"] = taugate("report", str(study_dir))
    seen["partial_report"] = (study_dir / "report" / "report.md").read_text()

    # SIGTERM to a driver that joined a running cluster (the session's warm one)
    driver = start("resume", str(study_dir), *warm)
    before = finished(study_dir)
    wait_until(lambda: finished(study_dir) > before, process=driver, poll=0.1)
    seen["sigterm"] = stop(driver, "SIGTERM") | {"local": False}
    seen["sigterm"]["cluster_up"] = start_time(warm_cluster.pid) == warm_cluster.start_time
    seen["sigterm"] |= {"finished": finished(study_dir), "mlflow": parent_status(study_dir)}

    # SIGKILL, a lost driver, with a trial in flight: once its Tune run has started a trial, and
    # before one finishes (so not while it logs a finished trial to MLflow, see `mid_trial`)
    before = finished(study_dir)
    run_dir = study_dir / "tune" / f"run-{len(list((study_dir / 'tune').glob('run-*'))) + 1}"
    driver = start("resume", str(study_dir), *warm)

    def started_or_ended() -> bool:
        return lock_holder(study_dir) == driver.pid and (mid_trial(run_dir) or finished(study_dir) > before)

    wait_until(started_or_ended, process=driver, poll=0.1)
    ended = finished(study_dir) > before
    seen["sigkill"] = stop(driver, "SIGKILL") | {"pid": driver.pid, "finished_a_trial": ended}
    killed = settled(study_dir)
    seen["killed"] = killed
    seen["stamps"] = {key: (study_dir / "trials" / key / "metrics.json").stat().st_mtime_ns for key in killed}

    seen["resume"] = taugate("resume", str(study_dir), *warm, env={"RAY_AUTH_MODE": "token"})
    seen["clean"] = folder / "clean"
    seen["clean_run"] = taugate("run", str(spec), "--output", str(seen["clean"]), *warm)
    return seen


def test_a_second_driver_on_a_live_study_is_refused_naming_its_host_and_pid(story):
    for name, (code, stderr) in story["second"].items():
        assert code == 2, (name, stderr[-2000:])
        assert f"in use by a running driver: host {platform.node()}, pid {story['driver_pid']}" in stderr, name
        assert "Traceback" not in stderr


@pytest.mark.parametrize(("how", "code"), [("sigint", 130), ("sigterm", 143)])
def test_a_signal_stops_the_study_as_interrupted_not_failed(story, how, code):
    seen = story[how]
    stderr, done = seen["stderr"], seen["finished"]
    assert seen["code"] == code, stderr[-3000:]
    assert 1 <= done < TRIALS, "the signal should come mid-study"
    summary = f"interrupted ({how.upper()}): {done}/{TRIALS} trials finished, 0 failed, {TRIALS - done} remaining"
    assert summary in stderr, stderr[-3000:]
    assert f"continue with: taugate resume {story['study_dir'].resolve()}" in stderr
    for noise in ("Tuner.restore", "FileNotFoundError", "Traceback", "Stop signal received", "report: "):
        assert noise not in stderr, noise
    if seen["local"]:  # the driver's own Ray is shut down with it
        assert any(name == "raylet" for name in seen["ran"].values()), "Ray should have been running"
    else:  # a cluster the driver joined is not its to stop
        assert not any(name == "raylet" for name in seen["ran"].values()), "the driver should have joined a cluster"
        assert seen["cluster_up"], f"taugate resume ({how.upper()}) stopped the cluster it joined"
    assert seen["left"] == {}, f"processes of the study outlived its driver: {seen['left']}"
    assert seen["mlflow"] == "KILLED"
    assert not (story["study_dir"] / LOCK_FILE).exists()


def test_status_and_report_of_the_interrupted_study_count_no_failures_and_say_partial(story):
    done = story["sigint"]["finished"]
    assert story["status"] | {"name": None} == {"name": None, "planned": TRIALS, "finished": done, "diverged": 0,
                                                 "failed": 0, "remaining": TRIALS - done, "stopped": 0}  # fmt: skip
    assert story["report"].returncode == 0, story["report"].stderr[-3000:]
    markdown = story["partial_report"]
    assert "partial study" in markdown and f"{TRIALS - done} not run yet" in markdown


def test_resume_after_a_sigkilled_driver_takes_over_its_lock_and_completes(story):
    result = story["resume"]
    assert story["sigkill"]["code"] == -signal.SIGKILL
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"took over the lock of a driver that is gone (host {platform.node()}, pid {story['sigkill']['pid']}" in (
        result.stderr
    )
    assert f"{TRIALS}/{TRIALS} trials finished, 0 failed" in result.stderr
    assert parent_status(story["study_dir"]) == "FINISHED"


def test_the_interrupted_study_ends_with_the_clean_runs_results_and_one_mlflow_run_per_trial(story):
    assert story["clean_run"].returncode == 0, story["clean_run"].stderr[-3000:]
    interrupted, clean = load_tune(story["study_dir"]), load_tune(story["clean"])
    assert len(interrupted) == TRIALS and set(interrupted["status"]) == {"ok"}
    pd.testing.assert_frame_equal(interrupted.drop(columns="train_seconds"), clean.drop(columns="train_seconds"))
    client = mlflow.MlflowClient(f"sqlite:///{story['study_dir'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("interrupt").experiment_id
    runs = client.search_runs([experiment], "tags.`taugate.kind` = 'trial'")
    keys = [run.data.tags["taugate.trial_key"] for run in runs]
    assert sorted(keys) == sorted(interrupted["trial_id"])  # one child run per trial, none twice, no error runs
    assert {run.info.status for run in runs} == {"FINISHED"}


def test_resume_after_a_killed_driver_reruns_nothing_and_matches_an_uninterrupted_run(story):
    killed, result = story["killed"], story["resume"]
    assert not story["sigkill"]["finished_a_trial"], "the SIGKILL should come while the driver's first trial runs"
    assert 1 <= len(killed) < TRIALS, "the driver should die mid-study"
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{TRIALS} trials, {TRIALS - len(killed)} to run" in result.stderr, result.stderr[-3000:]
    after = ledger(story["study_dir"])
    assert len(after) == TRIALS
    for key, stamp in story["stamps"].items():  # finished trials were not run again
        assert (story["study_dir"] / "trials" / key / "metrics.json").stat().st_mtime_ns == stamp
    assert story["clean_run"].returncode == 0, story["clean_run"].stderr[-3000:]
    clean = ledger(story["clean"])
    assert {k: comparable(m) for k, m in clean.items()} == {k: comparable(m) for k, m in after.items()}
