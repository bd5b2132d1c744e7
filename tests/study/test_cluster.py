"""`taugate cluster`: a warm local Ray on loopback that studies join, started and stopped by PID.

One real cluster for the module (`taugate cluster start` as a user runs it, its state file and
Ray's temp folder under this test's own paths, so nothing collides with other Ray clusters on the
machine); tiny studies run on it with `taugate run --address`, and `taugate cluster stop` must
leave none of its processes behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from study.processes import session_members, start_time
from tests.study.test_loopback import listeners
from tests.support.cli import BIN
from tests.support.processes import process_tree, running
from tests.support.raycluster import gcs_port

pytestmark = pytest.mark.slow

# Two trials of a fraction of a second each, on a tiny foundation.
SPEC = """
name: warm
foundation: {epochs: 1, hidden: [16]}
epochs: 1
seeds: [0]
methods:
  frozen: {}
  bitfit: {}
"""


@dataclass
class Cluster:
    port: int
    env: dict[str, str]
    state_file: Path
    folder: Path
    started: subprocess.CompletedProcess

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def state(self) -> dict:
        return json.loads(self.state_file.read_text())


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "taugate"), *args], capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)  # fmt: skip


def environment(state_file: Path, ray_tmp: Path) -> dict[str, str]:
    """The user's environment, with the cluster recorded under the test's folder. RAY_TMPDIR points
    Ray's default temp folder (where `ray start` records the cluster for `--address auto`) at the
    cluster's own, so `auto` finds this cluster and not another one on the machine."""
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "TAUGATE_CLUSTER_FILE": str(state_file),
                        "RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "token"}  # fmt: skip
    for name in ("RAY_ADDRESS", "TAUGATE_RAY_NODE_IP"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    folder = tmp_path_factory.mktemp("cluster")
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    state_file = folder / "cluster.json"
    env = environment(state_file, ray_tmp)
    port = gcs_port()
    started = cli("cluster", "start", "--port", str(port), "--num-cpus", "2", "--temp-dir", str(ray_tmp / "ray"),
                  env=env, timeout=120)  # fmt: skip
    pid = json.loads(state_file.read_text())["pid"] if state_file.exists() else None
    tree = process_tree(pid) if pid else {}
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        yield Cluster(port, env, state_file, folder, started)
    finally:
        cli("cluster", "stop", env=env, timeout=60)
        # safety net, by recorded PID only: whatever of the cluster is still there
        if pid:
            for leftover in running(tree | session_members(pid)):
                with contextlib.suppress(OSError):
                    os.kill(leftover, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_start_says_where_the_cluster_is_and_status_sees_it(cluster):
    assert f"taugate run SPEC --address {cluster.address}" in cluster.started.stderr, cluster.started.stderr
    result = cli("cluster", "status", env=cluster.env)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["address"] == cluster.address and status["alive"] is True
    assert status["pid"] == cluster.state()["pid"] and status["num_cpus"] == 2
    assert status["uptime_s"] >= 0


def test_the_cluster_listens_on_loopback_only(cluster):
    seen = listeners(cluster.state()["pid"])
    names = {s.name for s in seen}
    assert {"gcs_server", "raylet"} <= names, sorted(seen, key=str)
    assert cluster.port in {s.port for s in seen if s.name == "gcs_server"}
    beyond = [s for s in seen if not s.on_loopback]
    assert not beyond, "\n".join(map(str, beyond))


def run_sampling(args: list[str], env: dict[str, str], cluster_pid: int, folder: Path) -> tuple[int, str, set]:
    """`taugate run ...` to its end, the cluster's listening sockets read every half second meanwhile
    (trial workers are the raylet's children, so in the cluster's tree, not the driver's)."""
    with (folder / "stderr.txt").open("w+") as err:
        process = subprocess.Popen([str(BIN / "taugate"), *args], stdout=subprocess.DEVNULL, stderr=err, env=env)
        seen, deadline = set(), time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            seen |= listeners(cluster_pid)
            time.sleep(0.5)
        if process.poll() is None:
            process.kill()
        process.wait()
        err.seek(0)
        return process.returncode, err.read(), seen


def test_studies_in_a_row_join_the_warm_cluster_and_leave_it_up(cluster, tmp_path):
    spec = tmp_path / "warm.yaml"
    spec.write_text(SPEC)
    pid, nodes, seen = cluster.state()["pid"], set(), set()
    idle = {s.pid for s in listeners(pid)}
    # by its address, then as `auto` (Ray's record of the last cluster started, under RAY_TMPDIR)
    for name, address in (("first", cluster.address), ("second", "auto")):
        output = tmp_path / name
        output.mkdir()
        args = ["run", str(spec), "--address", address, "--output", str(output / "study"), "--no-report"]
        code, stderr, sockets = run_sampling(args, cluster.env, pid, output)
        seen |= sockets
        assert code == 0, stderr[-3000:]
        assert "2/2 trials finished" in stderr, stderr[-3000:]
        metrics = [json.loads(p.read_text()) for p in (output / "study" / "trials").glob("*/metrics.json")]
        assert len(metrics) == 2
        nodes |= {m["node_id"] for m in metrics}
        assert start_time(pid) == cluster.state()["start_time"], f"taugate run ({address}) stopped the cluster"
    # one node for both studies: they ran on the warm cluster, not on a Ray of their own each
    assert len(nodes) == 1, nodes
    assert json.loads(cli("cluster", "status", env=cluster.env).stdout)["alive"] is True
    # while trials ran, the cluster's workers listened too, and on loopback only
    assert {s.pid for s in seen} - idle, sorted(seen, key=str)
    beyond = [s for s in seen if not s.on_loopback]
    assert not beyond, "\n".join(map(str, beyond))


def test_a_second_start_is_refused(cluster, tmp_path):
    again = cli("cluster", "start", "--port", str(gcs_port()), env=cluster.env)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "already running" in again.stderr and cluster.address in again.stderr, again.stderr
    assert str(cluster.state()["pid"]) in again.stderr
    # another state file, the same port: refused before Ray starts, naming the port
    other = cluster.env | {"TAUGATE_CLUSTER_FILE": str(tmp_path / "other.json")}
    taken = cli("cluster", "start", "--port", str(cluster.port), env=other)
    assert taken.returncode == 2 and f"port {cluster.port}" in taken.stderr and "in use" in taken.stderr, taken.stderr
    assert not (tmp_path / "other.json").exists()


def test_stop_leaves_no_process_of_the_cluster(cluster):
    tree = process_tree(cluster.state()["pid"])
    assert len(tree) > 3, tree  # ray start, GCS, raylet, agents, ...
    result = cli("cluster", "stop", env=cluster.env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "stopped" in result.stderr
    assert not cluster.state_file.exists()
    deadline = time.monotonic() + 10  # SIGKILLed processes vanish a moment later
    while running(tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not running(tree), running(tree)
    assert cli("cluster", "status", env=cluster.env).returncode == 1


def test_stop_without_a_cluster_fails_clearly(tmp_path):
    env = environment(tmp_path / "cluster.json", tmp_path)
    none = cli("cluster", "stop", env=env)
    assert none.returncode == 1 and "no taugate cluster is recorded" in none.stderr, none.stderr
    assert "Traceback" not in none.stderr
    # a record of a cluster that is gone: said so, and the stale record goes
    record = {"pid": 2**22 + 7, "start_time": "1", "address": "127.0.0.1:1"}  # above Linux's largest PID
    (tmp_path / "cluster.json").write_text(json.dumps(record))
    stale = cli("cluster", "stop", env=env)
    assert stale.returncode == 1 and "no longer running" in stale.stderr, stale.stderr
    assert not (tmp_path / "cluster.json").exists()


def test_start_on_a_fresh_machine_makes_the_users_ray_token_and_keeps_it(tmp_path, monkeypatch):
    # `ray start --head` refuses to start with token auth on and no token; `taugate cluster start`
    # makes one first, as `ray.init` does for a local Ray, and never replaces an existing one
    from study.cluster.head import ensure_auth_token

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    token = tmp_path / ".ray" / "auth_token"
    ensure_auth_token()
    assert token.is_file() and len(token.read_text().strip()) >= 32
    first = token.read_text()
    ensure_auth_token()
    assert token.read_text() == first
