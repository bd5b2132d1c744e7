"""One driver per study folder (`study.lock`): a live holder is refused by host and pid, a dead one
(SIGKILL, a reused pid, a lost machine whose heartbeat stopped) is taken over, and racing drivers
cannot both win. Plain processes, no Ray: the CLI side is in tests/study/test_interrupt.py."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study.folder.lock import LOCK_FILE, DriverLock, StudyLocked, holder_alive, machine
from tests.support.paths import ROOT

HOLD = """
import sys, time
from study.folder.lock import DriverLock
lock = DriverLock(sys.argv[1], heartbeat_seconds=0.2).acquire()
print("held", flush=True)
time.sleep(120)
"""

RACE = """
import sys
from study.folder.lock import DriverLock, StudyLocked
try:
    DriverLock(sys.argv[1]).acquire()
    print("won", flush=True)
    sys.stdin.read()  # hold it until the test has counted the winners
except StudyLocked:
    print("refused", flush=True)
"""


def python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            start_new_session=True, **kwargs)  # fmt: skip


def write_record(folder: Path, **fields) -> None:
    record = machine() | {"pid": os.getpid(), "command": "taugate run x", "token": "other", "heartbeat": time.time()}
    (folder / LOCK_FILE).write_text(json.dumps(record | fields))


def test_a_live_driver_on_this_machine_is_refused_by_host_and_pid(tmp_path):
    holder = python(HOLD, str(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StudyLocked) as refused:
            DriverLock(tmp_path).acquire()
        assert f"host {platform.node()}, pid {holder.pid}" in str(refused.value)
        assert "taugate resume" in str(refused.value)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)


def test_the_lock_of_a_sigkilled_driver_is_taken_over(tmp_path):
    holder = python(HOLD, str(tmp_path))
    assert holder.stdout.readline().strip() == "held"
    os.killpg(holder.pid, signal.SIGKILL)  # no chance to release: the lock file stays
    holder.wait(timeout=30)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid
    lock = DriverLock(tmp_path).acquire()
    try:
        assert lock.taken_over["pid"] == holder.pid and "not running" in lock.taken_over["why"]
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_reused_pid_does_not_keep_a_dead_drivers_lock(tmp_path):
    write_record(tmp_path, process_start="1")  # our own, live pid, but another process's start time
    assert holder_alive(json.loads((tmp_path / LOCK_FILE).read_text())) == (
        False, f"pid {os.getpid()} now belongs to another process"
    )  # fmt: skip
    DriverLock(tmp_path).acquire().release()


def test_a_driver_on_another_machine_is_alive_while_its_heartbeat_is_fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("TAUGATE_LOCK_STALE_SECONDS", "30")
    write_record(tmp_path, host="node-7", pid=4242, heartbeat=time.time() - 20)
    with pytest.raises(StudyLocked) as refused:
        DriverLock(tmp_path).acquire()
    assert "host node-7, pid 4242" in str(refused.value) and "heartbeat 20s ago" in str(refused.value)
    # the same record from another boot of this machine counts as another machine too
    write_record(tmp_path, boot_id="an-earlier-boot", heartbeat=time.time() - 31)
    lock = DriverLock(tmp_path).acquire()
    assert "more than 30s" in lock.taken_over["why"]
    lock.release()


def test_heartbeat_advances_and_a_lost_lock_is_reported(tmp_path):
    lost = []
    lock = DriverLock(tmp_path, on_lost=lost.append, heartbeat_seconds=0.1).acquire()
    first = json.loads((tmp_path / LOCK_FILE).read_text())["heartbeat"]
    time.sleep(0.5)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["heartbeat"] > first
    write_record(tmp_path, host="node-7", pid=4242)  # another driver judged this one dead
    deadline = time.monotonic() + 5
    while not lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lost and lost[0]["host"] == "node-7"
    lock.release()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["host"] == "node-7"  # not ours to remove


def test_drivers_racing_for_a_stale_lock_elect_exactly_one(tmp_path):
    write_record(tmp_path, host="lost-node", pid=1, heartbeat=0)
    racers = [python(RACE, str(tmp_path), stdin=subprocess.PIPE) for _ in range(6)]
    try:
        answers = [racer.stdout.readline().strip() for racer in racers]
    finally:
        for racer in racers:
            racer.stdin.close()
            racer.wait(timeout=30)
    assert sorted(answers) == ["refused"] * 5 + ["won"]
