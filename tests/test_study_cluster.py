"""A study on a real two-node Ray cluster on loopback, then the same cluster running `taugate submit`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import taugate
from tests.raycluster import LocalCluster

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"
pytestmark = pytest.mark.slow

SPREAD = """
name: spread
foundation: {epochs: 1}
epochs: 60
seeds: [0, 1]
max_concurrent_trials: 2
methods:
  taugate: {gate_sharpness: [3, 10, 30, 100]}
"""


@pytest.fixture(scope="module")
def cluster():
    nodes = LocalCluster(cpus_per_node=1)
    try:
        nodes.start_head()
        nodes.add_node()
        nodes.wait_for_nodes(2)
        yield nodes
    finally:
        nodes.stop()


def test_a_study_runs_on_both_nodes_of_a_cluster(cluster, tmp_path):
    spec = tmp_path / "spread.yaml"
    # trials of several seconds, two at a time on two single-CPU nodes: a trial outlasts the start of
    # a worker on the other node, so both nodes take trials
    spec.write_text(SPREAD)
    result = taugate("run", str(spec), "--output", str(tmp_path / "study"), "--address", cluster.address)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads(p.read_text()) for p in (tmp_path / "study" / "trials").glob("*/metrics.json")]
    assert len(metrics) == 8
    assert len({m["node_id"] for m in metrics}) == 2, "trials should have run on both nodes"


def test_submit_runs_the_smoke_study_as_a_ray_job(cluster, tmp_path):
    cluster.wait_for_job_server()
    output = tmp_path / "submitted"
    result = taugate("submit", str(SMOKE), "--address", cluster.job_address, "--output", str(output))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "SUCCEEDED" in result.stderr
    assert "8/8 trials finished" in result.stdout  # the job's own log, streamed
    assert len(list((output / "trials").glob("*/metrics.json"))) == 8


def test_submit_without_a_token_fails_clearly(cluster, tmp_path):
    result = taugate("submit", str(SMOKE), "--address", cluster.job_address,
                     env={"HOME": str(tmp_path), "RAY_AUTH_TOKEN": "", "RAY_AUTH_MODE": "token"})  # fmt: skip
    assert result.returncode == 2 and "token" in result.stderr and "Traceback" not in result.stderr
