"""Run the `taugate` command line as a user does: a subprocess, with its exit code and output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def taugate(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"} | (env or {})
    return subprocess.run(
        [str(BIN / "taugate"), *args], capture_output=True, text=True, timeout=timeout, check=False, env=environment
    )
