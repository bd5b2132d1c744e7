"""One warm loopback Ray cluster for the whole test session.

Started on first use with the project's own `taugate cluster start` (token auth, 127.0.0.1, a state
file and Ray temp folder of its own, so it never meets a user's cluster), joined by every study a
test runs in-process (`tests.support.cli.taugate`) or as a driver process given `--address`. Tests about
Ray's own start, node loss or socket binding keep clusters of their own.

It never outlives the test run:
- `pytest_sessionfinish` (tests/conftest.py) stops it by PID at the end of the session, which pytest
  also reaches after a failure or Ctrl-C;
- a watchdog process stops it by PID as soon as the pytest process is gone, whatever killed it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from study.cluster.head import STATE_ENV
from study.processes import descendants, end_processes, session_members, start_time
from tests.support.paths import ROOT

NUM_CPUS = 2


@dataclass
class WarmCluster:
    address: str
    pid: int
    start_time: str
    state_file: Path
    ray_tmp: Path
    watchdog: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """What `taugate cluster status|stop` and `--address auto` need to find this cluster."""
        return {STATE_ENV: str(self.state_file), "RAY_TMPDIR": str(self.ray_tmp)}

    def tree(self) -> dict[int, str]:
        """The `ray start` process and everything below it or in its session: pid -> start time."""
        return {self.pid: self.start_time} | descendants(self.pid) | session_members(self.pid)


_cluster: WarmCluster | None = None


def cluster() -> WarmCluster:
    """The session's warm cluster, started on first call."""
    global _cluster
    if _cluster is not None:
        return _cluster
    from tests.support.cli import taugate
    from tests.support.raycluster import gcs_port

    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-warm-", dir="/tmp"))  # short: Ray's socket paths fit 107 bytes
    state_file = ray_tmp / "cluster.json"
    env = {STATE_ENV: str(state_file), "RAY_TMPDIR": str(ray_tmp)}
    started = taugate("cluster", "start", "--port", str(gcs_port()), "--num-cpus", str(NUM_CPUS), "--temp-dir",
                      str(ray_tmp / "ray"), env=env)  # fmt: skip
    if started.returncode != 0:
        shutil.rmtree(ray_tmp, ignore_errors=True)
        raise RuntimeError(f"the session's warm Ray cluster did not start:\n{started.stderr[-3000:]}")
    state = json.loads(state_file.read_text())
    _cluster = WarmCluster(state["address"], int(state["pid"]), state["start_time"], state_file, ray_tmp)
    _cluster.watchdog = subprocess.Popen(
        [sys.executable, "-m", "tests.support.warm", str(os.getpid()), str(_cluster.pid), _cluster.start_time],
        cwd=ROOT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    return _cluster


def stop() -> None:
    """Stop the session's cluster (if it started) with `taugate cluster stop`, then by recorded PID
    whatever of it is left; the watchdog goes too."""
    global _cluster
    if _cluster is None:
        return
    warm, _cluster = _cluster, None
    import ray

    if ray.is_initialized():  # this process's driver connection to it
        ray.shutdown()
    from tests.support.cli import taugate

    tree = warm.tree()
    taugate("cluster", "stop", env=warm.env)
    end_processes(tree, grace=0)  # whatever of it `stop` left: by recorded PID, never by name
    if warm.watchdog is not None:
        warm.watchdog.kill()
        warm.watchdog.wait()
    shutil.rmtree(warm.ray_tmp, ignore_errors=True)


def watch(parent: int, pid: int, started: str) -> None:
    """Wait for the pytest process to go, then end the cluster by PID (`study.cluster.head.end_cluster`)."""
    import time

    from study.cluster.head import end_cluster

    parent_started = start_time(parent)
    while start_time(parent) == parent_started and parent_started is not None:
        if start_time(pid) != started:  # the cluster was stopped: nothing left to watch
            return
        time.sleep(1)
    end_cluster(pid, started, grace=5)


if __name__ == "__main__":
    watch(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
