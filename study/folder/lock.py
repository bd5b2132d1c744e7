"""One driver per study folder: a lock file that names its holder and proves it is alive.

`<study>/driver.lock` holds JSON: host, pid, the process's start time, the machine's boot id and
pid namespace, the command, a random token and a heartbeat time that a background thread
rewrites every `HEARTBEAT_SECONDS`. A driver that finds the file decides whether its holder is
alive:

- same machine (host name, boot id and pid namespace all equal): alive while that pid exists
  with the recorded start time (a reused pid has another start time; a reboot another boot id);
- another machine (the folder is on shared storage): alive while its heartbeat is younger than
  `stale_after` seconds (`TAUGATE_LOCK_STALE_SECONDS`, default 60: twelve missed heartbeats, room
  for NFS attribute caching and a few seconds of clock skew between the machines).

A stale lock (its driver was SIGKILLed, its machine lost) is taken over with a warning; a live
one is refused naming host and pid. Reading, judging and replacing the file happen under a
`filelock` guard (`.driver.guard`, flock, which Linux NFS clients forward to the server), so two
drivers racing for a stale lock cannot both win; the lock file itself is only ever replaced
whole (a temporary file, then a rename), so nobody reads half a record.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from study.commands import study_command
from study.processes import start_time as process_start
from trainables.errors import TauGateError
from trainables.files import write_json

LOCK_FILE, GUARD_FILE = "driver.lock", ".driver.guard"
HEARTBEAT_SECONDS = 5.0
DEFAULT_STALE_SECONDS = 60.0


class StudyLocked(TauGateError, RuntimeError):
    """Another driver, alive, holds the study folder."""

    def __init__(self, study_dir: Path, holder: dict[str, Any], reason: str):
        self.holder = holder
        started = holder.get("started", "?")
        super().__init__(
            f"study folder {study_dir} is in use by a running driver: host {holder.get('host', '?')}, "
            f"pid {holder.get('pid', '?')} (`{holder.get('command', '?')}`, started {started}; {reason}); "
            "one driver per study: wait for it to end, or stop it (Ctrl-C, or `kill -INT "
            f"{holder.get('pid', '?')}` on {holder.get('host', '?')}) and `{study_command('resume', study_dir)}`"
        )


def stale_after() -> float:
    return float(os.environ.get("TAUGATE_LOCK_STALE_SECONDS", DEFAULT_STALE_SECONDS))


def _read(path: Path) -> str | None:
    with contextlib.suppress(FileNotFoundError, OSError):
        return path.read_text()
    return None


def machine() -> dict[str, Any]:
    """What identifies this machine (and pid namespace) in a lock record."""
    boot = _read(Path("/proc/sys/kernel/random/boot_id"))
    with contextlib.suppress(OSError):
        namespace = os.readlink("/proc/self/ns/pid")
        return {"host": platform.node(), "boot_id": boot and boot.strip(), "pid_namespace": namespace}
    return {"host": platform.node(), "boot_id": boot and boot.strip(), "pid_namespace": None}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def holder_alive(holder: dict[str, Any], now: float | None = None) -> tuple[bool, str]:
    """(alive, why) for a lock record, judged from this process."""
    here = machine()
    if all(holder.get(k) == here[k] for k in ("host", "boot_id", "pid_namespace")):
        pid = int(holder.get("pid", -1))
        if pid <= 0 or not pid_alive(pid):
            return False, f"process {pid} is not running"
        recorded, actual = holder.get("process_start"), process_start(pid)
        if recorded is not None and actual is not None and recorded != actual:
            return False, f"pid {pid} now belongs to another process"
        return True, "the process is running on this machine"
    age = (time.time() if now is None else now) - float(holder.get("heartbeat", 0))
    limit = stale_after()
    if age > limit:
        return False, f"its last heartbeat was {age:.0f}s ago, more than {limit:.0f}s"
    return True, f"heartbeat {max(age, 0):.0f}s ago; it counts as gone after {limit:.0f}s without one"


class DriverLock:
    """The study folder's driver lock. `acquire()` takes it (or raises `StudyLocked`), starts the
    heartbeat, and `release()` gives it back. `on_lost` is called (from the heartbeat thread) if
    another driver took the lock over, i.e. this one was judged dead (a long pause, a partition)."""

    def __init__(self, study_dir: Path, on_lost: Callable[[dict[str, Any]], None] | None = None,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS):  # fmt: skip
        self.study_dir = Path(study_dir)
        self.path = self.study_dir / LOCK_FILE
        self.guard = FileLock(str(self.study_dir / GUARD_FILE), timeout=30)
        self.on_lost, self.heartbeat_seconds = on_lost, heartbeat_seconds
        self.record: dict[str, Any] | None = None
        self.taken_over: dict[str, Any] | None = None  # the stale record this driver replaced, if any
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> dict[str, Any] | None:
        """The current lock record; an unreadable one counts as written at the file's mtime."""
        text = _read(self.path)
        if text is None:
            return None
        try:
            record = json.loads(text)
            if isinstance(record, dict):
                return record
        except json.JSONDecodeError:
            pass
        with contextlib.suppress(OSError):
            return {"host": "?", "pid": -1, "heartbeat": self.path.stat().st_mtime, "command": "unreadable lock"}
        return None

    def check(self) -> None:
        """Raise `StudyLocked` when a live driver holds the folder (takes nothing)."""
        holder = self.holder()
        if holder is not None and (alive := holder_alive(holder))[0]:
            raise StudyLocked(self.study_dir, holder, alive[1])

    def _write(self, record: dict[str, Any]) -> None:
        write_json(self.path, record, default=None)  # replaced whole: nobody reads half a record

    def acquire(self) -> DriverLock:
        self.study_dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        record = machine() | {
            "pid": os.getpid(), "process_start": process_start(os.getpid()),
            "command": shlex.join(["taugate", *sys.argv[1:]]), "token": uuid.uuid4().hex,
            "started": datetime.now(UTC).isoformat(timespec="seconds"), "heartbeat": now,
            "heartbeat_seconds": self.heartbeat_seconds, "stale_after_seconds": stale_after(),
        }  # fmt: skip
        try:
            with self.guard:
                holder = self.holder()
                if holder is not None:
                    alive, why = holder_alive(holder)
                    if alive:
                        raise StudyLocked(self.study_dir, holder, why)
                    self.taken_over = holder | {"why": why}
                self._write(record)
        except Timeout:
            raise StudyLocked(self.study_dir, {"host": "?", "pid": "?", "command": "?"},
                              f"its guard {self.guard.lock_file} stayed locked for 30s") from None  # fmt: skip
        self.record = record
        self._thread = threading.Thread(target=self._beat, name="taugate-driver-lock", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                with self.guard.acquire(timeout=self.heartbeat_seconds):
                    current = self.holder()
                    if current is None or current.get("token") != self.record["token"]:
                        lost = current or {}
                        break
                    self.record["heartbeat"] = time.time()
                    self._write(self.record)
            except (Timeout, OSError):
                continue  # a missed beat; the stale limit allows many
        else:
            return
        if self.on_lost is not None and not self._stop.is_set():
            self.on_lost(lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_seconds + 5)
        if self.record is None:
            return
        with contextlib.suppress(Timeout, OSError), self.guard.acquire(timeout=10):
            current = self.holder()
            if current is not None and current.get("token") == self.record["token"]:
                self.path.unlink()
        self.record = None

    def __enter__(self) -> DriverLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
