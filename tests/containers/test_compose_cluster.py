"""The compose topology as real containers (podman, images of `make images`): MLflow, a Ray head and
two Ray workers made from docker/docker-compose.yml's own service definitions (tests/containers/
compose.py). `taugate submit` sends the smoke spec from the host to the head's published job API
with the cluster's token, as docker/README.md's step 3 does; one worker container is killed while a
trial runs on it. The study still finishes, in the shared `studies` volume, with the results table of
the same spec run locally (training time aside), each trial once, and its runs in the MLflow server.
Every published port answers on 127.0.0.1 and on no other host address, every process of every
container runs as a non-root user, and nothing of the project is left afterwards, pass or fail.

Not in `make test` (about 6 minutes, see docker/README.md): `make test-containers` runs it.
MLflow's backend is SQLite in a volume instead of the compose file's Postgres (no registry to pull
postgres:17-bookworm from); everything else is the compose file's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from analysis.table.load import load_tune
from tests.containers.compose import Project, podman
from tests.support.cli import BIN

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
STUDY_IMAGE = "localhost/taugate-study:0.1.0-ray2.60.0"
MLFLOW_IMAGE = "localhost/taugate-mlflow:3.17.2"
WORKERS = ("ray-worker-1", "ray-worker-2")
pytestmark = pytest.mark.containers


@pytest.fixture
def project(tmp_path):
    """The compose project, up to its containers; down at the end, whatever happened, and checked gone."""
    for image in (STUDY_IMAGE, MLFLOW_IMAGE):
        assert podman("image", "exists", image, check=False).returncode == 0, f"{image} is missing: `make images`"
    # one CPU per worker: two trials at a time on this 2-core machine, one per worker
    cluster = Project(f"taugate-ct-{uuid.uuid4().hex[:8]}", tmp_path, {"RAY_WORKER_NUM_CPUS": "1"})
    try:
        yield cluster
    finally:
        left = cluster.down()
    assert not left, f"left behind: {left}"


def up(cluster: Project) -> None:
    """compose's order: MLflow, then the head once MLflow is healthy, then the workers once the head is."""
    cluster.up_network()
    cluster.run("mlflow", "mlflow", replace={"--backend-store-uri": "sqlite:////mlflow/db/mlflow.db"},
                drop_env=("PGPASSWORD_FILE",), extra_volumes=("mlflow-db:/mlflow/db:U",))  # fmt: skip
    cluster.wait_healthy("mlflow", "mlflow")
    cluster.run("ray-head", "ray-head")
    cluster.wait_healthy("ray-head", "ray-head")
    for worker in WORKERS:
        cluster.run("ray-worker", worker)
    for worker in WORKERS:
        cluster.wait_healthy("ray-worker", worker)


def running_trials(container: str) -> list[str]:
    """The Ray actor and task processes busy in a container (Ray names a busy worker process `ray::<what>`)."""
    listed = podman("top", container, "args", check=False).stdout.splitlines()[1:]
    return [line.strip() for line in listed if line.strip().startswith("ray::") and "IDLE" not in line]


def kill_a_worker_mid_trial(worker: str, study_root: Path, finished: threading.Event, killed: dict) -> None:
    """Once a trial runs on the second worker and the study has finished at least one trial, kill that
    worker's container (SIGKILL to its init: every process in it goes at once, as with a lost machine)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not finished.is_set():
        done = list(study_root.glob("*/trials/*/metrics.json"))
        busy = running_trials(worker)
        if done and busy:
            podman("kill", "--signal", "KILL", worker)
            killed.update(processes=busy, trials_done=len(done))
            return
        time.sleep(0.5)


def reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=3):
        return True
    return False


def other_host_addresses() -> list[str]:
    """This machine's IPv4 addresses outside loopback (and outside podman's own bridges)."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout.split()
    return [a for a in out if "." in a and not a.startswith(("127.", "10.88.", "10.89."))]


@pytest.mark.timeout(1800)  # about 4 minutes alone; more beside other work on 2 cores
def test_compose_cluster_in_containers_runs_a_submitted_study_through_a_lost_worker(project, request):
    up(project)
    head_ip, dashboard = project.published["ray-head"][8265]
    mlflow_ip, mlflow_port = project.published["mlflow"][5000]

    # published ports: on the compose file's loopback address, answering there and on no other address
    for container in project.containers():
        bindings = project.inspect(container)["HostConfig"]["PortBindings"] or {}
        for port, hosts in bindings.items():
            assert all(h["HostIp"] == "127.0.0.1" for h in hosts), f"{container} publishes {port} on {hosts}"
    assert (head_ip, mlflow_ip) == ("127.0.0.1", "127.0.0.1")
    assert reachable("127.0.0.1", dashboard) and reachable("127.0.0.1", mlflow_port)
    others = other_host_addresses()
    assert others, "this machine has no address but loopback: the check below would prove nothing"
    for address in others:
        assert not reachable(address, dashboard), f"the Ray job API answers on {address}:{dashboard}"
        assert not reachable(address, mlflow_port), f"MLflow answers on {address}:{mlflow_port}"
    # ... and the ports only the compose network reaches (Ray's GCS) are published nowhere
    assert not project.inspect("ray-worker-1")["HostConfig"]["PortBindings"]

    # README step 3: the host's `taugate submit` with the cluster's token; the study folder and the
    # tracking URI come from the nodes' environment (TAUGATE_STORAGE_PATH, MLFLOW_TRACKING_URI)
    env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(project.secrets["ray_auth_token"])}
    env.pop("RAY_AUTH_TOKEN", None)
    studies = project.volume_path("studies")
    finished, killed = threading.Event(), {}
    killer = threading.Thread(
        target=kill_a_worker_mid_trial, args=(project.full(WORKERS[1]), studies, finished, killed), daemon=True
    )
    killer.start()
    try:
        result = subprocess.run([str(BIN / "taugate"), "submit", str(SMOKE), "--address", f"http://127.0.0.1:{dashboard}"],
                                capture_output=True, text=True, env=env, timeout=1500)  # fmt: skip
    finally:
        finished.set()
        killer.join(timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "SUCCEEDED" in output and "8/8 trials finished" in output, output[-4000:]
    assert killed, f"no trial was seen running on {WORKERS[1]}, which was never killed:\n{output[-3000:]}"
    print(f"killed {WORKERS[1]} after {killed['trials_done']} finished trials, while it ran {killed['processes']}")

    # processes of every container (the killed worker's restart included): none is root
    for container in project.containers():
        if project.inspect(container)["State"]["Running"]:
            rows = [line.split() for line in podman("top", container, "user", "huser").stdout.splitlines()[1:]]
            assert rows and all("root" not in row and "0" not in row for row in rows), (container, rows)

    # the study folder, in the `studies` volume that every node mounts at /shared/studies
    (study_dir,) = studies.glob("smoke-*/")
    assert (study_dir / "report" / "report.html").is_file(), sorted(p.name for p in study_dir.iterdir())
    submitted = load_tune(study_dir)
    assert len(submitted) == 8 and submitted["trial_id"].is_unique
    client = mlflow.MlflowClient(f"http://127.0.0.1:{mlflow_port}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    kinds = [r.data.tags.get("taugate.kind") for r in runs]
    assert kinds.count("study") == 1 and kinds.count("trial") == 8, kinds
    assert all(r.info.status == "FINISHED" for r in runs)

    # the same spec run locally (`taugate run` on the session's warm cluster): the same table
    local = load_tune(request.getfixturevalue("smoke_study"))
    pd.testing.assert_frame_equal(
        local.drop(columns="train_seconds").sort_values("trial_id", ignore_index=True),
        submitted.drop(columns="train_seconds").sort_values("trial_id", ignore_index=True),
    )
