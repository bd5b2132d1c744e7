"""Nothing a local study or `taugate ui` starts listens beyond the machine.

Every TCP socket in LISTEN state (from /proc/net/tcp and /proc/net/tcp6) that belongs to the
command's process tree (the `taugate` process, every descendant, and anything left in its
session: Ray's GCS, raylet, workers, agents, autoscaler monitor, dashboard process; MLflow's
server and workers) must be on a loopback address (127.0.0.0/8, ::1, or ::ffff:127.x), unless
its process is one of the exceptions README.md and RELIABILITY.md name (none, with the shipped
defaults). Sockets are read every half second while the command runs, so short-lived workers
are caught too.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import BIN
from tests.support.mlflowserver import healthy
from tests.support.processes import process_tree

pytestmark = pytest.mark.slow

# Processes allowed to listen beyond loopback, as the docs name them (README.md "Network
# exposure", RELIABILITY.md). With the shipped defaults there are none.
ALLOWED_BEYOND_LOOPBACK: frozenset[str] = frozenset()

# Several seconds of trials, two at a time, each in a fresh worker process.
SPEC = """
name: loopback
foundation: {epochs: 1}
epochs: 4
seeds: [0]
max_concurrent_trials: 2
reuse_actors: false
methods:
  frozen: {}
  taugate: {gate_sharpness: [10, 30]}
"""
SAMPLE_EVERY = 0.5


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    pid: int
    name: str

    @property
    def on_loopback(self) -> bool:
        ip = ipaddress.ip_address(self.address)
        mapped = getattr(ip, "ipv4_mapped", None)
        return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def listening_sockets() -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port) for every TCP socket in LISTEN state (0A)."""
    found = {}
    for family, table in ((socket.AF_INET, "/proc/net/tcp"), (socket.AF_INET6, "/proc/net/tcp6")):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":
                continue
            hex_address, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_address)  # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found[int(fields[9])] = (socket.inet_ntop(family, raw), int(hex_port, 16))
    return found


def listeners(root: int) -> set[Listener]:
    """The listening sockets that processes of `root`'s tree hold open."""
    sockets, found = listening_sockets(), set()
    for pid in set(process_tree(root)):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in descriptors:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in sockets:
                found.add(Listener(*sockets[int(target[8:-1])], pid, name))
    return found


def start(*args: str) -> subprocess.Popen:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    env.pop("TAUGATE_RAY_NODE_IP", None)  # the shipped default
    return subprocess.Popen([str(BIN / "taugate"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)  # fmt: skip


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def beyond_loopback(seen: set[Listener]) -> list[Listener]:
    return sorted(s for s in seen if not s.on_loopback and s.name not in ALLOWED_BEYOND_LOOPBACK)


@pytest.fixture(scope="module")
def sampled_study(tmp_path_factory) -> tuple[Path, set[Listener], str]:
    """`taugate run` on a small spec, its process tree's listening sockets read every half second."""
    folder = tmp_path_factory.mktemp("loopback")
    spec = folder / "spec.yaml"
    spec.write_text(SPEC)
    study_dir = folder / "study"
    run = start("run", str(spec), "--output", str(study_dir))
    seen: set[Listener] = set()
    deadline = time.monotonic() + 480
    try:
        while run.poll() is None and time.monotonic() < deadline:
            seen |= listeners(run.pid)
            time.sleep(SAMPLE_EVERY)
        assert run.poll() is not None, "the study did not finish in 8 minutes"
        _, stderr = run.communicate(timeout=30)
    finally:
        stop(run)
    assert run.returncode == 0, stderr[-3000:]
    return study_dir, seen, stderr


def test_a_local_study_listens_on_loopback_only(sampled_study):
    study_dir, seen, stderr = sampled_study
    assert "3/3 trials finished" in stderr, stderr[-3000:]
    names = {s.name for s in seen}
    # the sample saw Ray itself, not just an idle driver: GCS, raylet, the driver's core worker,
    # agents, and trial workers
    assert {"gcs_server", "raylet", "taugate"} <= names, sorted(names)
    assert any(n.startswith("ray::") for n in names), sorted(names)
    assert not beyond_loopback(seen), "\n".join(map(str, beyond_loopback(seen)))
    # Ray's own record of the node: 127.0.0.1 (not rewritten to the network address)
    assert all(s.address in {"127.0.0.1", "::ffff:127.0.0.1"} for s in seen), sorted(seen, key=str)


def test_the_mlflow_ui_listens_on_loopback_only(sampled_study):
    study_dir, _, _ = sampled_study
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ui = start("ui", str(study_dir), "--port", str(port))
    seen: set[Listener] = set()
    try:
        deadline, ready = time.monotonic() + 120, 0.0
        while ui.poll() is None and time.monotonic() < deadline:
            seen |= listeners(ui.pid)
            if not ready and healthy(f"http://127.0.0.1:{port}"):
                ready = time.monotonic()
            if ready and time.monotonic() - ready > 3:  # a few more samples once it serves
                break
            time.sleep(SAMPLE_EVERY)
        assert ready, f"the MLflow UI did not come up: {ui.poll()}"
    finally:
        stop(ui)
    assert port in {s.port for s in seen}, sorted(seen, key=str)
    assert not beyond_loopback(seen), "\n".join(map(str, beyond_loopback(seen)))
