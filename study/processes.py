"""Processes by PID and start time (psutil): what ends a study's Ray, a warm cluster, or tells a
live lock holder from a reused PID.

A start time is the process's start in clock ticks since boot (the number /proc/PID/stat holds,
as text), so records written before keep matching. With the PID it names one process: a PID
reused later has another start time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _start(process: psutil.Process) -> str | None:
    """`process`'s start time, or None when it is gone or a zombie."""
    try:
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        return str(round((process.create_time() - psutil.boot_time()) * _TICKS))
    except (psutil.Error, OSError):
        return None


def start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), or None when it is gone or a zombie."""
    try:
        return _start(psutil.Process(pid))
    except (psutil.Error, OSError, ValueError):
        return None


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`: pid -> start time."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except (psutil.Error, OSError, ValueError):
        return {}
    return {child.pid: start for child in children if (start := _start(child)) is not None}


def session_members(sid: int) -> dict[int, str]:
    """Every process in session `sid`: pid -> start time. `ray start` leads its own session, so this
    catches a Ray process that was reparented after its parent died (descendants would miss it)."""
    found = {}
    for pid in psutil.pids():
        if pid == sid:
            continue
        try:
            if os.getsid(pid) != sid:
                continue
        except OSError:
            continue
        if (start := start_time(pid)) is not None:
            found[pid] = start
    return found


def end_processes(processes: dict[int, str], grace: float = 2.0) -> None:
    """Wait up to `grace` seconds for these processes (pid -> start time) to end, then SIGKILL the
    rest. `ray.shutdown` stops the raylet, whose workers notice and exit on their own a little
    later; a worker still in a trial must not outlive its driver."""

    def alive() -> list[int]:
        return [pid for pid, start in processes.items() if start_time(pid) == start]

    deadline = time.monotonic() + grace
    while (left := alive()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
