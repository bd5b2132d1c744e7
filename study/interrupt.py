"""Ctrl-C (SIGINT) and SIGTERM stop a study; they do not fail it.

The first signal is recorded and the driver winds down: Tune stops its trials at its next step
(`study.callbacks.StopOnSignal`), finished trials stay in the ledger, the MLflow parent run is
marked KILLED, Ray is shut down and the CLI exits 128 + the signal (130, 143) with the
`taugate resume` command. A second signal stops at once (KeyboardInterrupt); the ledger is
still consistent, since a trial is only ever recorded whole.

Tune's own SIGINT handler (which prints `Tuner.restore(...)`, not how this service resumes) is
switched off in `study.runner` with TUNE_DISABLE_SIGINT_HANDLER.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []
_handlers: list[Callable[[int, object], None]] = []


def received() -> int | None:
    """The first stop signal this process got, or None."""
    return _received[0] if _received else None


def exit_code(signum: int) -> int:
    return 128 + signum


def name(signum: int) -> str:
    return signal.Signals(signum).name


def install(notify: Callable[[int], None] | None = None) -> None:
    """Route SIGINT and SIGTERM to a clean stop (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: object) -> None:
        if _received:  # a second signal: stop at once
            raise KeyboardInterrupt
        _received.append(signum)
        if notify is not None:
            notify(signum)

    _handlers[:] = [stop]
    reinstall()


def reinstall() -> None:
    """Put the handlers back: `ray.init` installs its own SIGTERM handler (it logs a stack and
    dies), so the driver calls this once Ray is up."""
    if _handlers and threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _handlers[0])


def reset() -> None:
    """Forget a received signal (tests that call the CLI in-process)."""
    _received.clear()


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`: pid -> start time (Linux /proc; elsewhere nothing)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        if (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = {}, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        if (fields := _stat(child)) is not None:
            found[child] = fields[19]
            todo += children.get(child, [])
    return found


def end_processes(processes: dict[int, str], grace: float = 2.0) -> None:
    """Wait up to `grace` seconds for these processes (pid -> start time) to end, then SIGKILL the
    rest. `ray.shutdown` stops the raylet, whose workers notice and exit on their own a little
    later; a worker still in a trial must not outlive its driver."""

    def alive() -> list[int]:
        return [pid for pid, start in processes.items()
                if (fields := _stat(pid)) is not None and fields[19] == start and fields[0] not in "ZX"]  # fmt: skip

    deadline = time.monotonic() + grace
    while (left := alive()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
