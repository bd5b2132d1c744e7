"""Processes for tests: the tree of a Ray or driver process by PID and start time, which of them still
run, the `taugate` console script as a real process of its own session, and waiting for a condition."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

from study.processes import descendants, session_members, start_time
from tests.support.cli import BIN

# a real process's environment: this venv's `taugate` and `ray` first, Ray's token authentication on
TOKEN_ENV = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}


def process_tree(pid: int) -> dict[int, str]:
    """`pid`, everything below it and everything in its session (a Ray process that outlives its parent
    is reparented, but stays in the session): pid -> start time."""
    return {pid: start_time(pid) or ""} | descendants(pid) | session_members(pid)


def running(processes: dict) -> list[int]:
    """The processes (pid -> start time; a pid may be JSON text) still running as the same process."""
    return [int(pid) for pid, started in processes.items() if start_time(int(pid)) == started]


def taugate_process(*args: str, env: dict | None = None, stdin=None) -> subprocess.Popen:
    """`taugate ARGS` as a real process in a session of its own, stdout and stderr piped as text; `env`
    is the whole environment (default: this one with TOKEN_ENV)."""
    return subprocess.Popen([str(BIN / "taugate"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=stdin, text=True, env=env or os.environ | TOKEN_ENV,
                            start_new_session=True)  # fmt: skip


def wait_until(condition: Callable[[], bool], timeout: float = 300, ended: Callable[[], bool] = lambda: False,
               process: subprocess.Popen | None = None, poll: float = 0.2) -> None:  # fmt: skip
    """Poll `condition` until it holds; fail past `timeout`, or once `ended()` (what should have
    brought it about is over), or once `process` (a driver) ended, with its stderr."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"driver ended early ({process.returncode}): {process.communicate()[1][-3000:]}")
        if time.monotonic() > deadline or ended():
            raise AssertionError("condition not reached")
        time.sleep(poll)


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether `condition` holds within `timeout` seconds (no failure: the caller asserts)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)
    return condition()
