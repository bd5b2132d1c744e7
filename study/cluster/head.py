"""The warm local cluster of `taugate cluster`: a single-node Ray on loopback that several `taugate run`s can join.

A local study starts and stops its own Ray (several seconds on a small machine); while iterating
on small studies a user can keep one up instead. `taugate cluster start` runs Ray's own
`ray start --head --block` in its own session, on 127.0.0.1 with token authentication, and records
its PID in a state file; `taugate cluster stop` ends that process and everything below it by PID,
never by name (`ray stop` would stop every Ray on the machine, other people's included).

Its environment (`ENVIRONMENT`) is explained where it is defined.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from study.cluster.cluster_error import ClusterError
from study.cluster.warm import worker_environment
from study.processes import descendants, end_processes, session_members, start_time

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_GRACE = 15.0
READY_MARK = "Ray runtime started"
STATE_ENV = "TAUGATE_CLUSTER_FILE"
WORKER_PORTS = range(10002, 20000)  # Ray's default --min/max-worker-port; the GCS port may not be one
# The environment of the `ray start --head` process (besides this process's own):
# - RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 says this Ray is one node, which is what keeps Ray from
#   rewriting 127.0.0.1 to the network address; with 127.0.0.1 as the node address Ray 2.60 binds
#   every server to loopback (tests/study/test_cluster.py reads every listening socket to check).
# - RAY_AUTH_MODE=token keeps Ray's token authentication on (the token is ~/.ray/auth_token).
# - RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0: on SIGTERM a node would otherwise spend up to 30 s
#   trying to drain itself.
# - RAY_enable_worker_prestart=1: Ray prestarts a node's workers for its first driver only; with this
#   every `taugate run` that joins gets its workers started as it connects, while it sets up Tune,
#   instead of when the first trial is placed (benchmarks/README.md, "At scale", has the measurement).
# - PYTHONPATH and TAUGATE_PRELOAD (`study.cluster.warm.worker_environment`): each worker imports torch and
#   Ray Tune as it is born, before a trial is placed on it.
ENVIRONMENT = {
    "RAY_AUTH_MODE": "token",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    "RAY_enable_worker_prestart": "1",
}


def state_file() -> Path:
    """Where the running cluster is recorded: one place per user, so `stop` finds what `start` began
    (TAUGATE_CLUSTER_FILE moves it, for tests and for several clusters side by side)."""
    return Path(os.environ.get(STATE_ENV) or Path.home() / ".taugate" / "cluster.json")


def alive(state: dict[str, Any]) -> bool:
    """The recorded `ray start` process still runs (same PID and start time)."""
    return start_time(int(state["pid"])) == state["start_time"]


def read_state() -> dict[str, Any] | None:
    path = state_file()
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ClusterError(f"{path}: unreadable cluster state ({err}); remove it if no cluster runs") from None
    if not isinstance(state, dict) or not {"pid", "start_time", "address"} <= state.keys():
        raise ClusterError(f"{path}: not a taugate cluster state file; remove it if no cluster runs")
    return state


def port_in_use(port: int) -> bool:
    """Something already listens on `port` (on loopback or on every interface)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no conflict
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


def answers(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


def default_num_cpus() -> int:
    """All the CPUs this process may use, as Ray counts them (cgroup quotas included)."""
    try:
        from ray._private.utils import get_num_cpus

        return int(get_num_cpus())
    except Exception:  # noqa: BLE001 - any failure: fall back to the plain count
        return len(os.sched_getaffinity(0))


def ray_command(port: int, num_cpus: int, temp_dir: Path | None) -> list[str]:
    ray = Path(sys.executable).parent / "ray"
    command = [str(ray) if ray.exists() else "ray", "start", "--head", "--block", "--node-ip-address", HOST,
               "--port", str(port), "--include-dashboard", "false", "--num-cpus", str(num_cpus),
               "--disable-usage-stats"]  # fmt: skip
    if temp_dir is not None:
        command += ["--temp-dir", str(temp_dir.resolve())]
    return command


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_ready(process: subprocess.Popen, port: int, log: Path, timeout: float) -> str | None:
    """None once the GCS answers and `ray start` says the node is up; else why not. A driver that
    joined on the GCS port alone could find no raylet yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"`ray start` exited with code {process.returncode}"
        if answers(port) and READY_MARK in log.read_text(errors="replace"):
            return None
        time.sleep(0.25)
    return f"Ray did not come up within {timeout:.0f} s"


def end_cluster(pid: int, start: str, grace: float = STOP_GRACE) -> None:
    """SIGTERM the `ray start --block` process (it stops its GCS, raylet and agents), then make sure
    nothing below it or in its session outlives it. The processes are listed before the signal:
    once `ray start` is gone its orphans no longer show as its descendants."""
    processes = {pid: start} | descendants(pid) | session_members(pid)
    if start_time(pid) == start:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    end_processes(processes, grace)


def ensure_auth_token() -> None:
    """Give this user a Ray auth token when there is none yet, as `ray.init` does for a local Ray:
    `ray start --head` refuses to start with token authentication on and no token. Ray's own
    `ray get-auth-token --generate` writes it (~/.ray/auth_token) and keeps an existing one."""
    if (
        os.environ.get("RAY_AUTH_TOKEN")
        or Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").is_file()
    ):
        return
    ray = Path(sys.executable).parent / "ray"
    made = subprocess.run([str(ray) if ray.exists() else "ray", "get-auth-token", "--generate"], capture_output=True,
                          text=True, env=os.environ | ENVIRONMENT, timeout=60, check=False)  # fmt: skip
    if made.returncode != 0:
        raise ClusterError(f"no Ray auth token, and `ray get-auth-token --generate` failed: {made.stderr[-500:]}", 1)


def start_cluster(port: int, num_cpus: int | None, temp_dir: Path | None) -> dict[str, Any]:
    """Start the cluster and record it; a ClusterError says why not (nothing is left running)."""
    state = read_state()
    if state is not None and alive(state):
        raise ClusterError(f"a taugate cluster is already running at {state['address']} (pid {state['pid']}, "
                           f"recorded in {state_file()}); stop it with `taugate cluster stop`")  # fmt: skip
    if not 0 < port < 65536:
        raise ClusterError(f"--port {port}: expected a TCP port between 1 and 65535")
    if port in WORKER_PORTS:
        raise ClusterError(f"--port {port}: Ray keeps {WORKER_PORTS.start}-{WORKER_PORTS.stop - 1} for its workers; "
                           "choose another port (the default is 6379)")  # fmt: skip
    if port_in_use(port):
        raise ClusterError(f"port {port} on {HOST} is already in use (another Ray or service?); choose one with --port")
    num_cpus = num_cpus or default_num_cpus()
    ensure_auth_token()
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.with_suffix(".log")
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(ray_command(port, num_cpus, temp_dir), stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, env=os.environ | ENVIRONMENT | worker_environment(),
                                   start_new_session=True)  # fmt: skip
    start = start_time(process.pid) or ""
    problem = wait_until_ready(process, port, log, START_TIMEOUT)
    if problem is not None:
        end_cluster(process.pid, start)
        process.wait(timeout=STOP_GRACE)
        raise ClusterError(f"{problem}; the last lines of {log}:\n{log_tail(log)}", code=1)
    state = {"pid": process.pid, "start_time": start, "address": f"{HOST}:{port}", "num_cpus": num_cpus,
             "log": str(log), "started": time.time()}  # fmt: skip
    path.write_text(json.dumps(state, indent=2) + "\n")
    return state
