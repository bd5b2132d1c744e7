"""The session's warm Ray cluster (tests/support/warm.py) never outlives the test run: a pytest session of
its own uses it, then passes, is Ctrl-C'd, or is killed outright; afterwards no process of that
cluster remains, checked by the PIDs (and start times) the session recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

from study.processes import start_time
from tests.support.paths import ROOT
from tests.support.processes import running, wait_for

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("ending", ["passes", "ctrl-c", "killed"])
def test_no_process_of_the_warm_cluster_outlives_its_session(ending, tmp_path):
    pids = tmp_path / "pids.json"
    env = os.environ | {"TAUGATE_PROBE_PIDS": str(pids)} | ({"TAUGATE_PROBE_WAIT": "1"} if ending != "passes" else {})
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "tests/support/probe_warm.py",
    ]
    # the session's output goes to a file, not a pipe: a process it started (the watchdog, Ray's daemons)
    # inherits the descriptor, and a pipe would then wait for the last of them, not for the session
    log = tmp_path / "session.log"
    with open(log, "w") as sink:
        session = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)  # fmt: skip
    try:
        if ending != "passes":
            assert wait_for(lambda: (tmp_path / "ready").exists() or session.poll() is not None, 120)
            assert session.poll() is None, log.read_text()[-3000:]
            # Ctrl-C reaches pytest as SIGINT; `killed` gives it no chance to clean up (the watchdog must)
            session.send_signal(signal.SIGINT if ending == "ctrl-c" else signal.SIGKILL)
        session.wait(timeout=120)
    finally:
        if session.poll() is None:
            tree = {process.pid: process.cmdline() for process in psutil.Process(session.pid).children(recursive=True)}
            os.killpg(session.pid, signal.SIGKILL)
            pytest.fail(f"the session did not end; its processes: {tree}\n{log.read_text()[-3000:]}")
    output = log.read_text()
    expected = {"passes": 0, "ctrl-c": 2, "killed": -signal.SIGKILL}[ending]  # pytest exits 2 when interrupted
    assert session.returncode == expected, output[-3000:]
    recorded = json.loads(pids.read_text())
    assert len(recorded["tree"]) > 3, recorded  # ray start, GCS, raylet, agents, workers
    # Ctrl-C and a pass stop it in the session's own teardown; a kill is left to the watchdog (it polls each second)
    assert wait_for(lambda: not running(recorded["tree"]), 30), running(recorded["tree"])
    assert wait_for(lambda: start_time(recorded["watchdog"]) is None, 30), "the watchdog outlived its session"
