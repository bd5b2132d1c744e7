"""`taugate cluster`: a warm single-node Ray on loopback that several `taugate run`s can join.

A local study starts and stops its own Ray (several seconds on a small machine); while iterating
on small studies a user can keep one up instead. `taugate cluster start` runs Ray's own
`ray start --head --block` in its own session, on 127.0.0.1 with token authentication, and records
its PID in a state file; `taugate cluster stop` ends that process and everything below it by PID,
never by name (`ray stop` would stop every Ray on the machine, other people's included).

Why the environment is what it is:
- RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 says this Ray is one node, which is what keeps Ray from
  rewriting 127.0.0.1 to the network address; with 127.0.0.1 as the node address Ray 2.60 binds
  every server to loopback (tests/test_cluster.py reads every listening socket to check).
- RAY_AUTH_MODE=token keeps Ray's token authentication on (the token is ~/.ray/auth_token).
- RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0: on SIGTERM a node would otherwise spend up to 30 s
  trying to drain itself.
- RAY_enable_worker_prestart=1: Ray prestarts a node's workers for its first driver only; with this
  every `taugate run` that joins gets its workers started as it connects, while it sets up Tune,
  instead of when the first trial is placed (benchmarks/README.md, "At scale", has the measurement).
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
from typing import Annotated, Any

import typer

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_GRACE = 15.0
READY_MARK = "Ray runtime started"
STATE_ENV = "TAUGATE_CLUSTER_FILE"
WORKER_PORTS = range(10002, 20000)  # Ray's default --min/max-worker-port; the GCS port may not be one
ENVIRONMENT = {
    "RAY_AUTH_MODE": "token",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    "RAY_enable_worker_prestart": "1",
}

app = typer.Typer(
    add_completion=False, no_args_is_help=True,
    help="A warm local Ray cluster on 127.0.0.1 (token auth) for `taugate run --address`.",
)  # fmt: skip


class ClusterError(Exception):
    """A refusal (exit code 2) or failure (1) with a message for the user."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def state_file() -> Path:
    """Where the running cluster is recorded: one place per user, so `stop` finds what `start` began
    (TAUGATE_CLUSTER_FILE moves it, for tests and for several clusters side by side)."""
    return Path(os.environ.get(STATE_ENV) or Path.home() / ".taugate" / "cluster.json")


def start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22), or None when it is
    gone or a zombie. With the PID it names one process: a PID reused later has another start time.
    The same text `study.interrupt.descendants` records, so both go to `end_processes` as they are."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in "ZX" else fields[19]


def session_members(sid: int) -> dict[int, str]:
    """Every process in session `sid`: pid -> start time. `ray start` leads its own session, so this
    catches a Ray process that was reparented after its parent died (descendants would miss it)."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and int(entry.name) != sid:
            found[int(entry.name)] = fields[19]
    return found


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
    from study.interrupt import descendants, end_processes

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
                                   stderr=subprocess.STDOUT, env=os.environ | ENVIRONMENT,
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


def _fail(err: ClusterError) -> None:
    from study.cli import fail

    fail(str(err), err.code)


@app.command()
def start(
    port: Annotated[int, typer.Option(help="the GCS port on 127.0.0.1")] = 6379,
    num_cpus: Annotated[int | None, typer.Option(min=1, help="CPUs Ray may use (default: all)")] = None,
    temp_dir: Annotated[Path | None, typer.Option(help="Ray's temp folder (default: Ray's, /tmp/ray)")] = None,
) -> None:
    """Start a single-node Ray on 127.0.0.1 with token authentication, kept up until `stop`."""
    from study.cli import console

    try:
        state = start_cluster(port, num_cpus, temp_dir)
    except ClusterError as err:
        _fail(err)
    console.print(f"Ray cluster up at {state['address']} (pid {state['pid']}, {state['num_cpus']} CPUs, "
                  f"log {state['log']}); run studies on it with:")  # fmt: skip
    console.print(f"  taugate run SPEC --address {state['address']}", highlight=False)
    console.print("and stop it with `taugate cluster stop`.")


@app.command()
def stop() -> None:
    """Stop the recorded cluster by its PID (never `ray stop`: other Ray clusters may run here)."""
    from study.cli import console

    try:
        state = read_state()
    except ClusterError as err:
        _fail(err)
    if state is None:
        _fail(ClusterError(f"no taugate cluster is recorded ({state_file()}); nothing to stop", code=1))
    path = state_file()
    if not alive(state):
        path.unlink(missing_ok=True)
        _fail(ClusterError(f"the cluster recorded at {state['address']} (pid {state['pid']}) is no longer "
                           f"running; removed the stale {path}", code=1))  # fmt: skip
    end_cluster(int(state["pid"]), state["start_time"])
    path.unlink(missing_ok=True)
    console.print(f"stopped the Ray cluster at {state['address']} (pid {state['pid']})")


@app.command()
def status() -> None:
    """The recorded cluster as JSON {address, alive, pid, num_cpus, uptime_s}; exit 1 when none runs."""
    from study.cli import console

    try:
        state = read_state()
    except ClusterError as err:
        _fail(err)
    if state is None:
        console.print(f"no taugate cluster is running (none recorded in {state_file()})")
        raise typer.Exit(1)
    running = alive(state)
    print(json.dumps({"address": state["address"], "alive": running, "pid": state["pid"],
                      "num_cpus": state.get("num_cpus"),
                      "uptime_s": round(time.time() - state["started"], 1) if running else None}))  # fmt: skip
    if not running:
        console.print(f"the cluster recorded at {state['address']} is not running; `taugate cluster stop` "
                      "removes the record")  # fmt: skip
        raise typer.Exit(1)
