"""Every command the CLI prints for the user to run works as printed: pasted into a shell (`bash -c`)
in another folder, with nothing of the printing shell's state (its folder, TAUGATE_CLUSTER_FILE, the
environment that named a tracking store), it does what the line says.

Each line comes from a real run, as a user sees it:
- `continue with:` (and the `taugate report` hint beside it) from a driver that joined the session's warm
  cluster, logging to a SQLite store given relative to the driver's folder, stopped with Ctrl-C;
- `next:` from a calibration study on the warm cluster;
- `taugate cluster start`'s `taugate run SPEC --address ...` (SPEC filled in, as its placeholder asks) and
  its `taugate cluster stop`, from a cluster recorded in a state file of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import mlflow
import pytest

from study.processes import session_members, start_time
from tests.support.cli import BIN, taugate
from tests.support.processes import TOKEN_ENV, process_tree, running, wait_until
from tests.support.raycluster import gcs_port

pytestmark = pytest.mark.slow

TINY = """
foundation: {epochs: 1, hidden: [16]}
epochs: 1
seeds: [0]
"""
# a user's shell: this venv's `taugate` first, token auth on, and none of the variables a printed line
# must not rely on (the cluster, its state file, a tracking store, Ray's temp folder)
UNSET = ("RAY_ADDRESS", "TAUGATE_CLUSTER_FILE", "MLFLOW_TRACKING_URI", "RAY_TMPDIR")
SHELL = {name: value for name, value in (os.environ | TOKEN_ENV).items() if name not in UNSET}


def paste(line: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """The printed line run as a user pastes it: a fresh shell, another folder, the user's plain environment."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=SHELL, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def printed(prefix: str, text: str) -> str:
    found = re.findall(rf"^{re.escape(prefix)}(.+)$", text, flags=re.MULTILINE)
    assert len(found) == 1, f"one `{prefix}` line expected in:\n{text[-3000:]}"
    return found[0].strip()


def study_status(study_dir: Path) -> dict:
    result = taugate("status", str(study_dir))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_continue_with_resumes_the_interrupted_study_on_its_cluster_and_store(tmp_path, warm_cluster):
    driver_cwd, elsewhere = tmp_path / "driver", tmp_path / "elsewhere"
    driver_cwd.mkdir()
    # 3 methods x 6 seeds, one at a time: with 3 one-epoch trials, all had finished before the Ctrl-C stopped Tune
    (driver_cwd / "spec.yaml").write_text("name: printedresume\nmax_concurrent_trials: 1\n"
                                          + TINY.replace("seeds: [0]", "seeds: [0, 1, 2, 3, 4, 5]")
                                          + "methods: {frozen: {}, bitfit: {}, lora: {lora_rank: [2]}}\n")  # fmt: skip
    # relative paths, as typed in the driver's folder: the printed line must not depend on that folder. (Not
    # `study`: Ray puts the driver's folder on its workers' path, where a folder `study` hides the package.)
    study_dir = driver_cwd / "printed"
    driver = subprocess.Popen(
        [str(BIN / "taugate"), "run", "spec.yaml", "--output", "printed", "--address", warm_cluster.address,
         "--tracking-uri", "sqlite:///tracking.db"],
        cwd=driver_cwd, env=SHELL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: len(list(study_dir.glob("trials/*/metrics.json"))) >= 1, process=driver, poll=0.1,
                   timeout=240)  # fmt: skip
        os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C
        _, stderr = driver.communicate(timeout=120)
    except AssertionError:  # no trial finished: say what the driver said
        os.killpg(driver.pid, signal.SIGKILL)
        raise AssertionError(f"no trial finished; the driver said:\n{driver.communicate()[1][-3000:]}") from None
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, stderr[-3000:]
    assert study_status(study_dir)["remaining"] > 0, "the Ctrl-C should come mid-study"

    store = f"sqlite:///{driver_cwd.resolve() / 'tracking.db'}"
    line = printed("continue with: ", stderr)
    assert line == f"taugate resume {study_dir.resolve()} --address {warm_cluster.address} --tracking-uri {store}"
    report = re.search(r"\(`(taugate report [^`]+)` writes one for the partial study\)", stderr)
    assert report, stderr[-3000:]
    assert report.group(1) == f"taugate report {study_dir.resolve()} --tracking-uri {store}"

    reported = paste(report.group(1), elsewhere)
    assert reported.returncode == 0, reported.stderr[-3000:]
    assert "partial study" in (study_dir / "report" / "report.md").read_text()

    resumed = paste(line, elsewhere)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert study_status(study_dir)["remaining"] == 0 and study_status(study_dir)["finished"] == 18
    assert not list(elsewhere.glob("*.db")), "the resumed study logged to a store in the paste's folder"
    client = mlflow.MlflowClient(store)  # the store the study was started on holds every trial, once
    experiment = client.get_experiment_by_name("printedresume").experiment_id
    trials = client.search_runs([experiment], "tags.`taugate.kind` = 'trial'")
    assert len(trials) == 18 and {run.info.status for run in trials} == {"FINISHED"}


def test_next_runs_the_calibrated_study_on_the_cluster_from_any_folder(tmp_path, warm_cluster):
    spec = tmp_path / "calibrate.yaml"
    # the paper's fitted baselines, all of them (each protocol's score needs every one)
    spec.write_text("name: printedcal\n" + TINY + "methods: {frozen: {}, bitfit: {}, lora: {lora_rank: [2]},"
                    " full: {}}\nprotocol: {lr_scale: [0.05, 1.0]}\ncalibrate: {reference: paper, held_out: [taugate],"
                    " next: {name: printednext}}\n")  # fmt: skip
    first = taugate("run", str(spec), "--output", str(tmp_path / "calibration"), "--no-report")
    assert first.returncode == 0, first.stderr[-3000:]
    calibrated = (tmp_path / "calibration" / "calibrated.yaml").resolve()
    line = printed("next: ", first.stderr)
    assert line == f"taugate run {calibrated} --address {warm_cluster.address}"
    assert f"# Run it with: {line}\n" in calibrated.read_text()

    elsewhere = tmp_path / "elsewhere"
    second = paste(line + " --no-report", elsewhere)
    assert second.returncode == 0, second.stderr[-3000:]
    [study_dir] = (elsewhere / "studies").glob("printednext-*")  # the default output, in the paste's folder
    assert study_status(study_dir) | {"name": None} == {"name": None, "planned": 4, "finished": 4, "diverged": 0,
                                                        "failed": 0, "remaining": 0, "stopped": 0}  # fmt: skip


def test_cluster_start_prints_a_run_and_a_stop_that_work_from_another_shell(tmp_path):
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    state_file = tmp_path / "state" / "cluster.json"
    env = SHELL | {"TAUGATE_CLUSTER_FILE": str(state_file), "RAY_TMPDIR": str(ray_tmp)}
    started = subprocess.run(
        [str(BIN / "taugate"), "cluster", "start", "--port", str(gcs_port()), "--num-cpus", "1", "--temp-dir",
         str(ray_tmp / "ray")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    pid = json.loads(state_file.read_text())["pid"] if state_file.exists() else None
    tree = process_tree(pid) if pid else {}
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        address = json.loads(state_file.read_text())["address"]
        run_line = printed("  ", started.stderr)
        assert run_line == f"taugate run SPEC --address {address}"
        stop_line = re.search(r"^and stop it with `(.+)`\.$", started.stderr, flags=re.MULTILINE).group(1)
        assert stop_line == f"TAUGATE_CLUSTER_FILE={state_file.resolve()} taugate cluster stop"

        spec = tmp_path / "spec.yaml"
        spec.write_text("name: printedwarm\n" + TINY + "methods: {frozen: {}, bitfit: {}}\n")
        elsewhere = tmp_path / "elsewhere"
        ran = paste(run_line.replace("SPEC", str(spec)) + " --no-report", elsewhere)
        assert ran.returncode == 0, ran.stderr[-3000:]
        [study_dir] = (elsewhere / "studies").glob("printedwarm-*")
        assert study_status(study_dir)["finished"] == 2
        assert start_time(pid) == tree[pid], "the study should have joined the cluster and left it up"

        stopped = paste(stop_line, tmp_path / "another")  # no TAUGATE_CLUSTER_FILE in this shell
        assert stopped.returncode == 0, stopped.stderr[-3000:]
        assert f"stopped the Ray cluster at {address}" in stopped.stderr
        wait_until(lambda: not running(tree), timeout=30)
        assert not state_file.exists()
    finally:
        if pid:  # by recorded PID only: whatever of the cluster is still there
            for leftover in running(tree | session_members(pid)):
                with contextlib.suppress(OSError):
                    os.kill(leftover, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
