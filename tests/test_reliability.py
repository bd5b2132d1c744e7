"""Faults survived, nothing lost: a lost worker node, a tracking server that goes away, storage
that cannot take the study, the same spec twice, and the security defaults."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from analysis.load import load_tune
from tests.cli import BIN, taugate
from tests.raycluster import LocalCluster, free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

SLOW_SMOKE = """
name: {name}
foundation: {{epochs: 1}}
epochs: {epochs}
seeds: [0, 1]
max_concurrent_trials: 2
reuse_actors: false
max_failures: 3
methods:
  taugate: {{gate_sharpness: [3, 10, 30, 100]}}
"""


def ledger(study_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (study_dir / "trials").glob("*/metrics.json")]


def start_driver(*args: str) -> subprocess.Popen:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    return subprocess.Popen([str(BIN / "taugate"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)  # fmt: skip


def wait_until(condition, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or (process is not None and process.poll() is not None):
            raise AssertionError("condition not reached")
        time.sleep(0.2)


def test_losing_a_worker_node_mid_study_loses_and_duplicates_nothing(tmp_path):
    cluster = LocalCluster(cpus_per_node=1)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SLOW_SMOKE.format(name="nodeloss", epochs=60))
    study_dir = tmp_path / "study"
    try:
        cluster.start_head()
        cluster.add_node()
        cluster.wait_for_nodes(2)
        driver = start_driver("run", str(spec), "--output", str(study_dir), "--address", cluster.address)
        nodes = set()

        def worker_has_run_a_trial() -> bool:
            nodes.update(m["node_id"] for m in ledger(study_dir))
            return len(nodes) == 2

        try:
            wait_until(worker_has_run_a_trial, timeout=300, process=driver)
        except AssertionError:
            driver.kill()
            raise AssertionError(f"trials never reached the worker node: {driver.communicate()[1][-3000:]}") from None
        assert len(ledger(study_dir)) < 8, "the node should be lost while trials remain"
        worker = cluster.processes[1]
        os.killpg(worker.pid, signal.SIGKILL)  # the worker's raylet and every process on that node
        worker.wait(timeout=30)
        stdout, stderr = driver.communicate(timeout=600)
    finally:
        cluster.stop()
    assert driver.returncode == 0, stderr[-3000:]
    finished = ledger(study_dir)
    assert len(finished) == 8 and all(m["status"] == "ok" for m in finished)
    table = load_tune(study_dir)
    assert len(table) == 8 and table["trial_id"].is_unique and set(table["status"]) == {"ok"}
    runs = mlflow.MlflowClient(f"sqlite:///{study_dir / 'mlflow.db'}").search_runs(
        [mlflow.MlflowClient(f"sqlite:///{study_dir / 'mlflow.db'}").get_experiment_by_name("nodeloss").experiment_id],
        "tags.`taugate.kind` = 'trial'",
    )
    keys = [r.data.tags["taugate.trial_key"] for r in runs if r.data.tags["taugate.status"] == "ok"]
    assert sorted(keys) == sorted(table["trial_id"])


def mlflow_server(db: Path, port: int, log: Path) -> subprocess.Popen:
    command = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]  # fmt: skip
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env=os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})  # fmt: skip


def healthy(url: str) -> bool:
    import urllib.request

    try:
        return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
    except OSError:
        return False


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_tracking_server_down_mid_study_warns_and_track_backfills(tmp_path):
    port, db = free_port(), tmp_path / "tracking.db"
    url = f"http://127.0.0.1:{port}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(SLOW_SMOKE.format(name="outage", epochs=10))
    study_dir = tmp_path / "study"
    server = mlflow_server(db, port, tmp_path / "mlflow-1.log")
    try:
        wait_until(lambda: healthy(url), timeout=120)
        driver = start_driver("run", str(spec), "--output", str(study_dir), "--tracking-uri", url)
        wait_until(lambda: len(ledger(study_dir)) >= 1, timeout=300, process=driver)
        stop(server)  # the tracking server goes away mid-study
        stdout, stderr = driver.communicate(timeout=600)
        assert driver.returncode == 0, stderr[-3000:]
        assert "warning" in stderr and "taugate track" in stderr
        assert len(ledger(study_dir)) == 8  # nothing lost: every result is in the study folder

        server = mlflow_server(db, port, tmp_path / "mlflow-2.log")  # the server is back
        wait_until(lambda: healthy(url), timeout=120)
        for _ in range(2):  # backfill, and a second call adds nothing
            result = taugate("track", str(study_dir), "--tracking-uri", url)
            assert result.returncode == 0, result.stderr[-2000:]
        client = mlflow.MlflowClient(url)
        runs = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
        kinds = [r.data.tags.get("taugate.kind") for r in runs]
        assert kinds.count("study") == 1 and kinds.count("trial") == 8
        trials = [r for r in runs if r.data.tags.get("taugate.kind") == "trial"]
        trial_keys = {r.data.tags["taugate.trial_key"] for r in trials}
        assert len(trial_keys) == 8
    finally:
        stop(server)


def test_unwritable_output_folder_is_refused_before_any_trial(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits: use a read-only bind instead
            subprocess.run(["mount", "--bind", "-o", "ro", str(locked), str(locked)], check=True)
            subprocess.run(["mount", "-o", "remount,bind,ro", str(locked)], check=True)
        result = taugate("run", str(ROOT / "configs" / "smoke.yaml"), "--output", str(locked / "study"))
    finally:
        subprocess.run(["umount", str(locked)], check=False, capture_output=True)
        locked.chmod(0o700)
    assert result.returncode == 2
    assert "not writable" in result.stderr and str(locked) in result.stderr
    assert "trials:" not in result.stderr and "Traceback" not in result.stderr


def test_full_output_folder_is_refused_before_any_trial(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(full)], check=True)
    try:
        result = taugate("run", str(ROOT / "configs" / "smoke.yaml"), "--output", str(full / "study"))
    finally:
        subprocess.run(["umount", str(full)], check=True)
    assert result.returncode == 2
    assert "not writable" in result.stderr and "No space left" in result.stderr


def test_same_spec_twice_gives_identical_result_tables(smoke_study, tmp_path):
    again = tmp_path / "again"
    result = taugate("run", str(ROOT / "configs" / "smoke.yaml"), "--output", str(again))
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = load_tune(smoke_study), load_tune(again)
    pd.testing.assert_frame_equal(first.drop(columns="train_seconds"), second.drop(columns="train_seconds"))


def test_nothing_in_the_project_unpickles():
    pattern = re.compile(r"pickle\.loads?\(|torch\.load\((?![^)]*weights_only=True)|allow_pickle=True")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("trainables", "study", "analysis")
        for path in (ROOT / folder).rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, offenders


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a listening socket on `port`, from /proc/net/tcp (state 0A = LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_mlflow_ui_binds_to_loopback_by_default(smoke_study):
    port = free_port()
    ui = start_driver("ui", str(smoke_study), "--port", str(port))
    try:
        wait_until(lambda: healthy(f"http://127.0.0.1:{port}"), timeout=120, process=ui)
        assert listening_addresses(port) == {"127.0.0.1"}
    finally:
        stop(ui)
