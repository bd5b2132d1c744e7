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


def assert_spec_refused(text: str, field: str, folder: Path) -> None:
    """`taugate plan` and `taugate run` refuse the spec: exit 2, `error:` naming the field, no
    traceback, and the output folder is never created."""
    spec = folder / "bad.yaml"
    spec.write_text(text)
    output = folder / "study"
    for args in (["plan", str(spec)], ["run", str(spec), "--output", str(output)]):
        result = taugate(*args)
        assert result.returncode == 2, result.stderr
        assert "error:" in result.stderr and field in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not output.exists()
