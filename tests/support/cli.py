"""Run the `taugate` command line as a user does, with its exit code and output.

`taugate(...)` calls the command in this test process (typer's runner): no fresh interpreter and
its ~3 s of imports per call. A study it runs (`run`, `resume`) joins the session's warm Ray
cluster (`tests.support.warm`) unless the test names another `--address` or asks for `local=True`.
Tests about signals, the real process's exit code, locks between processes or sockets start the
installed console script (`BIN / "taugate"`) as a real process instead.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import traceback
from pathlib import Path

BIN = Path(sys.executable).parent
STUDY_COMMANDS = ("run", "resume")


def taugate(
    *args: str, env: dict | None = None, local: bool = False, input: str | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess:
    """`taugate ARGS` in this process: a CompletedProcess with the exit code, stdout and stderr, as a
    subprocess would give (an unhandled exception is exit 1 with its traceback on stderr).

    A study joins the warm cluster; `local=True` lets it start and stop a Ray of its own. `env`
    holds for the call only. `timeout` is accepted for the subprocess signature; pytest-timeout
    bounds an in-process call."""
    from typer.testing import CliRunner

    from study.cli.main import app
    from study.cluster import connect, interrupt

    args = list(args)
    joins = bool(args) and args[0] in STUDY_COMMANDS
    if joins and "--address" not in args and not local:
        from tests.support.warm import cluster

        args += ["--address", cluster().address]
    if joins and _ray_connected() and (local or _address(args) != _warm_address()):
        _ray_shutdown()  # joining another cluster (or starting a local Ray): leave the warm one first
    handlers = {signum: signal.getsignal(signum) for signum in interrupt.SIGNALS}
    interrupt.reset()
    connect.started_local_ray = False
    try:
        result = CliRunner().invoke(app, args, env=env, input=input, catch_exceptions=True)
    finally:
        for signum, handler in handlers.items():  # the study's Ctrl-C handling ends with the command
            signal.signal(signum, handler)
        interrupt.reset()
        if joins and _ray_connected() and _address(args) != _warm_address():
            _ray_shutdown()  # only the warm cluster's connection is kept between calls
    stderr = result.stderr
    code = result.exit_code
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
        code = 1
    return subprocess.CompletedProcess(["taugate", *args], code, result.stdout, stderr)


def _ray_connected() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def _ray_shutdown() -> None:
    sys.modules["ray"].shutdown()


def _address(args: list[str]) -> str | None:
    return args[args.index("--address") + 1] if "--address" in args else None


def _warm_address() -> str | None:
    from tests.support import warm

    return warm._cluster.address if warm._cluster is not None else None


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


def run_spec(folder: Path, text: str) -> Path:
    """`taugate run` on a spec written from `text` into `folder`; asserts it finished, returns the study folder."""
    spec, study_dir = folder / "spec.yaml", folder / "study"
    spec.write_text(text)
    result = taugate("run", str(spec), "--output", str(study_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return study_dir
