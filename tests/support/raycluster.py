"""A real Ray cluster on loopback for tests: a head and worker nodes started with `ray start
--block`, each in its own process group, and stopped by PID (never by process name)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.support.cli import BIN

NODE_IP = "127.0.0.2"  # Ray rewrites 127.0.0.1 to the network address; this stays on loopback


def gcs_port() -> int:
    """A free loopback port outside Ray's worker range (Ray refuses a GCS port there)."""
    from study.cluster.head import WORKER_PORTS

    while (port := free_port()) in WORKER_PORTS:
        pass
    return port


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports: each socket stays bound until all are chosen, since ports asked
    for one at a time may repeat (a node given one port for its agent's HTTP and a gRPC server answered
    its health check in HTTP/2)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class LocalCluster:
    def __init__(self, cpus_per_node: int = 1):
        self.cpus = cpus_per_node
        self.port, self.dashboard_port = free_ports(2)
        self.temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        self.processes: list[subprocess.Popen] = []
        self.agent_ports: list[int] = []  # each node's dashboard agent (HTTP), in node order
        # RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0: on SIGTERM, `ray start --block` would try for 30 s to
        # drain its node through a head that is already gone, in every test's teardown
        self.env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
                                 "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # fmt: skip

    @property
    def address(self) -> str:
        return f"{NODE_IP}:{self.port}"

    @property
    def job_address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, *args: str) -> None:
        # every node gets its own agent ports: two nodes on one machine must not share Ray's defaults
        agent, grpc, metrics, runtime_env = free_ports(4)
        self.agent_ports.append(agent)
        args = (*args, "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(grpc),
                "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime_env))  # fmt: skip
        log = open(self.temp / f"node-{len(self.processes)}.log", "w")  # noqa: SIM115 - lives as long as the node
        process = subprocess.Popen([str(BIN / "ray"), "start", "--block", *args], stdout=log, stderr=log,
                                   env=self.env, start_new_session=True)  # fmt: skip
        self.processes.append(process)

    def start_head(self) -> None:
        self._start("--head", "--node-ip-address", NODE_IP, "--port", str(self.port),
                    "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
                    "--num-cpus", str(self.cpus), "--temp-dir", str(self.temp / "session"),
                    "--include-dashboard", "true")  # fmt: skip

    def add_node(self) -> None:
        self._start("--address", self.address, "--node-ip-address", NODE_IP, "--num-cpus", str(self.cpus))

    def wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        script = (
            "import ray, time\n"
            f"ray.init(address='{self.address}', logging_level='error')\n"
            f"deadline = time.time() + {timeout}\n"
            f"while len([n for n in ray.nodes() if n['Alive']]) < {count} and time.time() < deadline:\n"
            "    time.sleep(0.5)\n"
            "print(len([n for n in ray.nodes() if n['Alive']]))\n"
        )
        out = subprocess.run([str(BIN / "python"), "-c", script], capture_output=True, text=True, env=self.env,
                             timeout=timeout + 60, check=False)  # fmt: skip
        assert out.stdout.strip().endswith(str(count)), f"cluster did not reach {count} nodes: {out.stderr[-2000:]}"

    def wait_for_job_server(self, timeout: float = 120) -> None:
        """The head's job server listens, and the head's dashboard agent, to which it hands a job
        (before that it answers a submission with "No available agent to submit job"), answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.dashboard_port), timeout=1):
                    pass
                health = f"http://127.0.0.1:{self.agent_ports[0]}/api/local_raylet_healthz"
                if urllib.request.urlopen(health, timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError("the Ray job server did not start")

    def stop(self) -> None:
        for process in reversed(self.processes):  # workers first, then the head
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
