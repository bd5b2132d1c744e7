"""The compose topology without Docker: the services' own commands from docker-compose.yml run as
local processes on loopback (Ray head, one Ray worker, an MLflow server with SQLite in place of
Postgres), then `taugate submit` of the smoke spec to that head; its runs land in that server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.cli import BIN, taugate
from tests.raycluster import NODE_IP, free_port

ROOT = Path(__file__).resolve().parent.parent
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


class Services:
    def __init__(self, folder: Path):
        self.folder, self.processes = folder, []
        self.gcs, self.dashboard, self.agent, self.mlflow = free_port(), free_port(), free_port(), free_port()
        self.ray_temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths are capped at 107 bytes
        self.env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}

    def start(self, name: str, command: list[str]) -> None:
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 - closed when the service stops
        executable = str(BIN / command[0])
        self.processes.append((subprocess.Popen([executable, *command[1:]], stdout=log, stderr=log, env=self.env,
                                                cwd=self.folder, start_new_session=True), log))  # fmt: skip

    def stop(self) -> None:
        for process, _log in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process, log in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            log.close()


def wait_for(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer")


def test_compose_services_as_local_processes_run_a_submitted_study(tmp_path):
    services = Services(tmp_path)
    try:
        services.start("ray-head", service_command("ray-head", {
            "--port": str(services.gcs), "--dashboard-host": "127.0.0.1", "--dashboard-port": str(services.dashboard),
        }) + [f"--node-ip-address={NODE_IP}", f"--temp-dir={services.ray_temp}"])  # fmt: skip
        wait_for(f"http://127.0.0.1:{services.dashboard}/api/gcs_healthz")
        services.start("ray-worker", service_command("ray-worker", {
            "--address": f"{NODE_IP}:{services.gcs}", "--num-cpus": "1",
            "--dashboard-agent-listen-port": str(services.agent),
        }) + [f"--node-ip-address={NODE_IP}"])  # fmt: skip
        services.start("mlflow", service_command("mlflow", {
            "--backend-store-uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--artifacts-destination": str(tmp_path / "artifacts"), "--host": "127.0.0.1",
            "--port": str(services.mlflow),
        }) + ["--workers=1"])  # fmt: skip
        tracking = f"http://127.0.0.1:{services.mlflow}"
        wait_for(f"{tracking}/health")
        wait_for(f"http://127.0.0.1:{services.agent}/api/local_raylet_healthz")

        result = taugate("submit", str(SMOKE), "--address", f"http://127.0.0.1:{services.dashboard}",
                         "--output", str(tmp_path / "studies" / "smoke"), "--tracking-uri", tracking)  # fmt: skip
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        runs = mlflow.MlflowClient(tracking).search_runs(
            [mlflow.MlflowClient(tracking).get_experiment_by_name("smoke").experiment_id]
        )
        kinds = [r.data.tags.get("taugate.kind") for r in runs]
        assert kinds.count("study") == 1 and kinds.count("trial") == 8
    finally:
        services.stop()
