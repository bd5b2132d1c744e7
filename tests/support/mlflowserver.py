"""A real `mlflow server` for tests: on loopback, in its own process group, stopped by its PID.

One uvicorn worker and no MLflow job runner: the job runner (`MLFLOW_SERVER_ENABLE_JOB_EXECUTION`,
on by default) starts eight more Python processes beside the server (a runner and its huey
consumers, for MLflow's GenAI jobs, which TauGate never submits). On a loaded 2-core machine they
made a server's boot two to three times slower (until /health answers: ~24 s against 8-13 s; the
compose service's command, 20-34 s against 7-13 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from http.client import HTTPException
from pathlib import Path

from tests.support.cli import BIN
from tests.support.raycluster import free_port

BOOT = 180.0  # seconds: the most a server may take to answer /health on a loaded machine
ENV = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def healthy(url: str) -> bool:
    """`url/health` answers 200. Anything else (nothing listening, or another program that took the
    port and speaks another protocol) is not this server yet."""
    try:
        return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
    except (OSError, HTTPException):
        return False


class MlflowServer:
    """`mlflow server --backend-store-uri STORE` on a free 127.0.0.1 port; or `command`, a whole
    `mlflow ...` argument list (the compose service's) serving on 127.0.0.1:`port`. Started at once,
    waited for with `wait_healthy()`."""

    def __init__(self, store: str | None, log: Path, *, command: list[str] | None = None, port: int | None = None,
                 cwd: Path | None = None):  # fmt: skip
        self.port = port or free_port()
        self.url, self.log = f"http://127.0.0.1:{self.port}", log
        if command is None:
            command = ["mlflow", "server", "--backend-store-uri", str(store), "--host", "127.0.0.1",
                       "--port", str(self.port), "--workers", "1"]  # fmt: skip
        with log.open("w") as out:
            self.process = subprocess.Popen([str(BIN / command[0]), *command[1:]], stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd,
                                            env=os.environ | ENV)  # fmt: skip

    def wait_healthy(self, timeout: float = BOOT) -> str:
        """The server's URL once it answers; fails with its log if it exits or never answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if healthy(self.url):
                return self.url
            time.sleep(0.25)
        raise AssertionError(f"mlflow server did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM to its process group (the CLI forwards it to uvicorn), SIGKILL if it lingers."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
