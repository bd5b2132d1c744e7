"""A study submitted with `taugate submit` as a Ray job to a real two-node Ray cluster on loopback
runs its trials on both nodes."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import taugate
from tests.support.paths import SMOKE
from tests.support.raycluster import LocalCluster

pytestmark = pytest.mark.slow

# Two trials at a time on two single-CPU nodes, each in a worker process of its own (no actor
# reuse): the two trials' resources are reserved together, one CPU on each node, so both nodes take
# trials however short they are. (With actor reuse, a short trial could end before the other node's
# worker process had started, and its node take the next trial too.)
SPREAD = """
name: spread
foundation: {hidden: [16], epochs: 1}
epochs: 1
seeds: [0]
max_concurrent_trials: 2
reuse_actors: false
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


def test_a_study_submitted_as_a_ray_job_runs_on_both_nodes_of_a_cluster(cluster, tmp_path):
    spec = tmp_path / "spread.yaml"
    spec.write_text(SPREAD)
    output = tmp_path / "submitted"
    cluster.wait_for_job_server()
    result = taugate("submit", str(spec), "--address", cluster.job_address, "--output", str(output))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "SUCCEEDED" in result.stderr
    assert "4/4 trials finished" in result.stdout  # the job's own log, streamed
    metrics = [json.loads(p.read_text()) for p in (output / "trials").glob("*/metrics.json")]
    assert len(metrics) == 4
    assert len({m["node_id"] for m in metrics}) == 2, "trials should have run on both nodes"


def test_submit_without_a_token_fails_clearly(cluster, tmp_path):
    result = taugate("submit", str(SMOKE), "--address", cluster.job_address,
                     env={"HOME": str(tmp_path), "RAY_AUTH_TOKEN": "", "RAY_AUTH_MODE": "token"})  # fmt: skip
    assert result.returncode == 2 and "token" in result.stderr and "Traceback" not in result.stderr
