"""The compose topology without Docker: the services' own commands from docker-compose.yml run as
local processes on loopback (Ray head, one Ray worker, an MLflow server with SQLite in place of
Postgres), then `taugate submit` of the smoke spec to that head; its runs land in that server, and
its results table is the one `taugate run` of the same spec gave on the session's warm cluster (the
same spec twice, on two clusters: identical results)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from analysis.table.load import load_tune
from tests.support.cli import BIN, taugate
from tests.support.mlflowserver import ENV as MLFLOW_ENV
from tests.support.mlflowserver import MlflowServer
from tests.support.raycluster import NODE_IP, free_ports

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "docker-compose.yml"
SMOKE = ROOT / "configs" / "smoke.yaml"
pytestmark = pytest.mark.slow


def expand(argument: str) -> str:
    """Compose's ${VAR:-default} with the defaults (the test sets no such variables)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", argument)


def service_command(service: str, replace: dict[str, str]) -> list[str]:
    command = [expand(a) for a in yaml.safe_load(COMPOSE.read_text())["services"][service]["command"]]
    out = []
    for argument in command:
        flag = argument.split("=", 1)[0]
        out.append(f"{flag}={replace[flag]}" if flag in replace else argument)
    return out


class Node:
    """A Ray node's service command as a process of its own process group, with agent ports of its
    own: two nodes on one machine (or another test's) must not share Ray's fixed defaults."""

    def __init__(self, folder: Path, name: str, command: list[str], env: dict[str, str]):
        self.agent, grpc, metrics, runtime_env = free_ports(4)
        ports = [f"--node-ip-address={NODE_IP}", f"--dashboard-agent-listen-port={self.agent}",
                 f"--dashboard-agent-grpc-port={grpc}", f"--metrics-export-port={metrics}",
                 f"--runtime-env-agent-port={runtime_env}"]  # fmt: skip
        command = [a for a in command if not a.startswith("--dashboard-agent-listen-port=")] + ports
        self.log = (folder / f"{name}.log").open("w")
        self.process = subprocess.Popen([str(BIN / command[0]), *command[1:]], stdout=self.log, stderr=self.log,
                                        env=env, cwd=folder, start_new_session=True)  # fmt: skip

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)

    def wait(self) -> None:
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.log.close()


def wait_for(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer")


def test_compose_services_as_local_processes_run_a_submitted_study(smoke_study, tmp_path):
    gcs, dashboard, port = free_ports(3)
    ray_temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths are capped at 107 bytes
    # RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0: on SIGTERM a node would try for 30 s to drain itself;
    # MLflow's job runner is off (tests/support/mlflowserver.py): TauGate submits no MLflow jobs
    env = os.environ | MLFLOW_ENV | {"RAY_AUTH_MODE": "token", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    nodes: list[Node] = []
    # compose's order (MLflow, then the head, then its worker), each started as soon as the one it
    # depends on can take it: MLflow boots meanwhile
    mlflow_service = MlflowServer(None, tmp_path / "mlflow.log", port=port, cwd=tmp_path, command=service_command(
        "mlflow", {"--backend-store-uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                   "--artifacts-destination": str(tmp_path / "artifacts"), "--host": "127.0.0.1", "--port": str(port)},
    ) + ["--workers=1"])  # fmt: skip
    try:
        nodes.append(Node(tmp_path, "ray-head", service_command("ray-head", {
            "--port": str(gcs), "--dashboard-host": "127.0.0.1", "--dashboard-port": str(dashboard),
        }) + [f"--temp-dir={ray_temp}"], env))  # fmt: skip
        wait_for(f"http://127.0.0.1:{dashboard}/api/gcs_healthz")
        nodes.append(Node(tmp_path, "ray-worker", service_command("ray-worker", {"--address": f"{NODE_IP}:{gcs}"}),
                          env))  # fmt: skip
        tracking = mlflow_service.wait_healthy()
        for node in nodes:  # the job server hands a job to the head's agent; trials go to the worker's
            wait_for(f"http://127.0.0.1:{node.agent}/api/local_raylet_healthz")

        output = tmp_path / "studies" / "smoke"
        result = taugate("submit", str(SMOKE), "--address", f"http://127.0.0.1:{dashboard}",
                         "--output", str(output), "--tracking-uri", tracking)  # fmt: skip
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert "SUCCEEDED" in result.stderr
        assert "8/8 trials finished" in result.stdout  # the job's own log, streamed
        client = mlflow.MlflowClient(tracking)
        runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
        kinds = [r.data.tags.get("taugate.kind") for r in runs]
        assert kinds.count("study") == 1 and kinds.count("trial") == 8
    finally:
        for node in reversed(nodes):  # the worker, then the head
            node.stop()
        mlflow_service.stop()  # while the nodes end
        for node in reversed(nodes):
            node.wait()
        shutil.rmtree(ray_temp, ignore_errors=True)
    # the same spec twice (`taugate run` on the warm cluster, submitted here): the same results table
    first, second = load_tune(smoke_study), load_tune(output)
    pd.testing.assert_frame_equal(first.drop(columns="train_seconds"), second.drop(columns="train_seconds"))
