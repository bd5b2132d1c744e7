"""Faults survived, nothing lost: a lost worker node, a tracking server that goes away, storage
that cannot take the study, and the security defaults. (The same spec twice giving identical
result tables: tests/deploy/test_docker_topology.py, whose submitted smoke study is compared with
`taugate run`'s.)"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch

from analysis.table.load import load_tune
from study.folder.filenames import TUNE_DIR
from study.folder.storage import FoundationStore
from study.processes import descendants
from study.spec.plan import trial_key
from study.tracking.mlflow_store import seed_sqlite_store
from study.tracking.tracker import Tracker
from tests.support.cli import taugate
from tests.support.mlflowserver import ENV as MLFLOW_ENV
from tests.support.mlflowserver import MlflowServer, healthy
from tests.support.paths import ROOT, SMOKE
from tests.support.processes import TOKEN_ENV, taugate_process, wait_until
from tests.support.raycluster import LocalCluster, free_port
from tests.support.study_folder import ledger_metrics, trial_results
from trainables.config import parse_config
from trainables.engine.resume import read_history
from trainables.engine.trial import run_trial

pytestmark = pytest.mark.slow

OUTAGE = """
name: outage
foundation: {hidden: [16], epochs: 1}
epochs: 1
seeds: [0, 1]
methods:
  taugate: {gate_sharpness: [3, 10, 30, 100]}
"""


LEDGER = "trials/*/metrics.json"  # a finished trial's ledger entry, in a folder named by its trial key


NODE_LOSS = """
name: nodeloss
foundation: {{epochs: 1}}
epochs: {epochs}
seeds: [0]
max_concurrent_trials: 2
reuse_actors: false
max_failures: 3
checkpoint_after_s: 0
methods:
  taugate: {{gate_sharpness: [3, 30]}}
"""
NODE_LOSS_EPOCHS = 30  # the worker node's trial is lost at epoch 3-5 (its worker starts late): most of it to run


def test_losing_a_worker_node_mid_study_loses_and_duplicates_nothing(tmp_path):
    """Kill the worker node of a two-node cluster while one of the two trials runs there and has
    checkpointed a few epochs: Tune retries that trial on the head, where it restores the
    checkpoint and resumes after the checkpointed epoch, and it ends exactly as an uninterrupted
    run of its config; nothing is lost or recorded twice. The driver runs in this process (the
    test is about the cluster's node, not the driver's process); a thread loses the node."""
    cluster = LocalCluster(cpus_per_node=1)  # one trial per node
    spec = tmp_path / "spec.yaml"
    spec.write_text(NODE_LOSS.format(epochs=NODE_LOSS_EPOCHS))
    study_dir = tmp_path / "study"
    found: dict[str, Any] = {}
    driver_done = threading.Event()

    def lose_the_worker_node() -> dict:
        """Once a trial on the worker node has checkpointed epoch 3 or later, kill the node; then the
        uninterrupted run of that trial's config (while the cluster carries on)."""
        worker = cluster.processes[1]

        def worker_trial_has_checkpointed() -> bool:
            # a Ray worker process has its own process group, under the node's raylet, under its `ray start`
            on_worker = descendants(worker.pid)
            for trial_dir in (study_dir / TUNE_DIR / "run-1").glob("*/"):
                rows = [r for r in trial_results(trial_dir) if r.get("members_epoch", [{}])[0].get("pid") in on_worker]
                if rows and rows[-1]["epoch"] >= 3 and any(trial_dir.glob("checkpoint_*")):
                    found.update(trial_dir=trial_dir, epoch=rows[-1]["epoch"], processes=on_worker)
                    return True
            return False

        wait_until(worker_trial_has_checkpointed, timeout=300, ended=driver_done.is_set)
        # the whole node goes at once, as a lost machine: `ray start`'s process group (raylet, agents)
        # and its Ray workers, which have process groups of their own and would report for a while
        os.killpg(worker.pid, signal.SIGKILL)
        for pid in found["processes"]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        worker.wait(timeout=30)
        params = json.loads((found["trial_dir"] / "params.json").read_text())
        found["config"] = config = parse_config(params["base"] | params["variant"])  # as study.tune.trainable runs it
        found["key"] = trial_key(config)
        found["finished_before_the_loss"] = (study_dir / "trials" / found["key"] / "metrics.json").is_file()
        # an uninterrupted run of the same trial on the study's foundation, while the cluster carries on
        # on its one remaining CPU. One torch thread, as in a Ray worker of one CPU (Ray sets
        # OMP_NUM_THREADS=1): then the metrics are bit-identical; with two threads mean_gate differs ~1e-7
        return single_threaded(run_trial, config, foundation=FoundationStore(study_dir).get)

    with ThreadPoolExecutor(1) as pool:
        try:
            cluster.start_head()
            cluster.add_node()
            cluster.wait_for_nodes(2)
            losing = pool.submit(lose_the_worker_node)
            try:
                result = taugate("run", str(spec), "--output", str(study_dir), "--address", cluster.address,
                                 "--no-report")  # fmt: skip
            finally:
                driver_done.set()
        finally:
            cluster.stop()
        try:
            whole = losing.result(timeout=600)
        except AssertionError:
            raise AssertionError(f"no trial checkpointed on the worker node: {result.stderr[-3000:]}") from None
    assert not found["finished_before_the_loss"], "the node is lost mid-trial"
    config, key = found["config"], found["key"]
    assert result.returncode == 0, result.stderr[-3000:]
    finished = list(ledger_metrics(study_dir).values())
    assert len(finished) == 2 and all(m["status"] == "ok" for m in finished)
    table = load_tune(study_dir)
    assert len(table) == 2 and table["trial_id"].is_unique and set(table["status"]) == {"ok"}
    client = mlflow.MlflowClient(f"sqlite:///{study_dir / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("nodeloss").experiment_id], "tags.`taugate.kind` = 'trial'"
    )
    keys = [r.data.tags["taugate.trial_key"] for r in runs if r.data.tags["taugate.status"] == "ok"]
    assert sorted(keys) == sorted(table["trial_id"])

    # Tune's results of the trial: the first attempt's, then the retry's, appended. The retry restored a
    # checkpoint: its first result (iterations_since_restore 1) is never epoch 1 again, but the epoch
    # after the newest checkpoint Tune had registered. Tune asks for an epoch only once the previous
    # one's checkpoint is registered, so that is at most the epoch in flight at the loss, run again,
    # and never before the last epoch the test saw. Tune's results file may also leave out the first
    # attempt's latest lines: restarting a trial, it copies result.json back from the study folder
    # over its driver's staging copy, which can hold an epoch not yet synced
    # (ray.tune.logger.logger._restore_from_remote). The ledger's learning curve below is exact.
    results = trial_results(found["trial_dir"])
    assert [r["epoch"] for r in results] == [r["training_iteration"] for r in results], results
    restarts = [i for i, r in enumerate(results) if r["iterations_since_restore"] == 1]
    assert restarts[0] == 0 and len(restarts) == 2, restarts  # the first attempt, and one retry
    first, retried = results[: restarts[1]], results[restarts[1] :]
    assert [r["epoch"] for r in first] == list(range(1, len(first) + 1))
    assert [r["epoch"] for r in retried] == list(range(retried[0]["epoch"], NODE_LOSS_EPOCHS + 1))
    assert retried[0]["epoch"] >= len(first) >= found["epoch"] >= 3
    assert {r["members_epoch"][0]["pid"] for r in retried}.isdisjoint(found["processes"])  # not on the lost node
    assert all(r["members_epoch"][0]["pid"] in found["processes"] for r in first)
    # the trial's learning curve in the ledger: every epoch once, the retry continuing the saved history
    trial = study_dir / "trials" / key
    assert [e["epoch"] for e in read_history(trial)] == list(range(1, NODE_LOSS_EPOCHS + 1))
    # and it ends exactly as the uninterrupted run: same config, same foundation, the same metrics to the bit
    record, metrics = json.loads((trial / "config.json").read_text()), json.loads((trial / "metrics.json").read_text())
    assert parse_config(record["config"]) == config
    assert record["worker_pid"] == retried[-1]["members_epoch"][0]["pid"]
    assert metrics.keys() - {"node_id"} == whole.keys()
    assert {k: v for k, v in metrics.items() if k not in ("train_seconds", "node_id")} == {
        k: v for k, v in whole.items() if k != "train_seconds"
    }


def single_threaded(function, *args, **kwargs):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return function(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def test_tracking_server_down_mid_study_warns_and_track_backfills(tmp_path, monkeypatch):
    """The study's tracking server goes away right after it has logged the study's first trial: the
    study carries on and finishes, warns once and says to run `taugate track`, and loses nothing;
    with a server back on the same store, `taugate track` logs the seven missing trials, and a
    second call adds nothing.

    The outage comes at that exact point, not at a moment the test guesses: a wrapper around
    `Tracker.log_trials` (on the study's tracking thread) waits for the booting server before the
    first batch, logs its first trial's run and stops the server once that run is in. The server comes back on a fresh
    port (another program may have taken the old one), booting while the study finishes."""
    store = f"sqlite:///{tmp_path / 'tracking.db'}"
    server = MlflowServer(store, tmp_path / "mlflow-1.log")  # boots while the study starts
    back: list[MlflowServer] = []
    log_trials = Tracker.log_trials

    def then_the_server_goes(self, study, finished):
        if back:
            return log_trials(self, study, finished)
        try:  # the study's first batch: its first trial is logged while the server is up
            server.wait_healthy()
            added = log_trials(self, study, finished[:1])
        finally:  # its run is logged: the server goes away
            server.stop()
            back.append(MlflowServer(store, tmp_path / "mlflow-2.log"))
        return added + log_trials(self, study, finished[1:])

    monkeypatch.setattr(Tracker, "log_trials", then_the_server_goes)
    spec = tmp_path / "spec.yaml"
    spec.write_text(OUTAGE)
    study_dir = tmp_path / "study"
    url = server.url
    try:
        result = taugate("run", str(spec), "--output", str(study_dir), "--tracking-uri", url)
        assert result.returncode == 0, result.stderr[-3000:]
        assert back, "the study logged no trial while its server was up"
        assert result.stderr.count(f"warning: MLflow tracking at {url} failed") == 1, result.stderr[-3000:]
        assert "taugate track" in result.stderr
        assert "8/8 trials finished" in result.stderr
        assert len(list(ledger_metrics(study_dir).values())) == 8  # nothing lost: every result is in the study folder

        url_back = back[0].wait_healthy()  # the server is back, on the same store
        added = [taugate("track", str(study_dir), "--tracking-uri", url_back) for _ in range(2)]
        for tracked in added:
            assert tracked.returncode == 0, tracked.stderr[-2000:]
        assert "logged 7 new trial runs" in added[0].stderr and "logged 0 new trial runs" in added[1].stderr
        client = mlflow.MlflowClient(url_back)
        runs = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
        kinds = [r.data.tags.get("taugate.kind") for r in runs]
        assert kinds.count("study") == 1 and kinds.count("trial") == 8
        trials = [r for r in runs if r.data.tags.get("taugate.kind") == "trial"]
        assert {r.data.tags["taugate.trial_key"] for r in trials} == {p.parent.name for p in study_dir.glob(LEDGER)}
    finally:
        for running in (server, *back):
            running.stop()


def test_unwritable_output_folder_is_refused_before_any_trial(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits: use a read-only bind instead
            subprocess.run(["mount", "--bind", "-o", "ro", str(locked), str(locked)], check=True)
            subprocess.run(["mount", "-o", "remount,bind,ro", str(locked)], check=True)
        result = taugate("run", str(SMOKE), "--output", str(locked / "study"))
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
        result = taugate("run", str(SMOKE), "--output", str(full / "study"))
    finally:
        subprocess.run(["umount", str(full)], check=True)
    assert result.returncode == 2
    assert "not writable" in result.stderr and "No space left" in result.stderr


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


def test_mlflow_ui_binds_to_loopback_by_default(tmp_path):
    """`taugate ui` of a study folder (only its store matters here: a new study's empty one) serves
    on 127.0.0.1 and nowhere else. A real process: the test is about its socket."""
    study = tmp_path / "study"
    study.mkdir()
    seed_sqlite_store(study / "mlflow.db")
    port = free_port()
    ui = taugate_process(
        "ui", str(study), "--port", str(port), env=os.environ | TOKEN_ENV | MLFLOW_ENV
    )  # MLflow's job runner off: a slow boot
    try:
        wait_until(lambda: healthy(f"http://127.0.0.1:{port}"), timeout=180, ended=lambda: ui.poll() is not None)
        assert listening_addresses(port) == {"127.0.0.1"}
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGTERM)
        ui.communicate(timeout=30)
