"""A study with fused trials (`fuse: K`) gives the same results table as the same study unfused,
with one ledger entry and one MLflow run per member."""

from __future__ import annotations

import json
import re

import mlflow
import pandas as pd
import pytest

from analysis.table.load import load_tune
from tests.support.cli import taugate

pytestmark = pytest.mark.slow

SPEC = """
name: fusion
foundation: {{epochs: 1}}
epochs: 2
seeds: [0, 1, 2]
fuse: {fuse}
methods:
  frozen: {{}}
  bitfit: {{}}
  taugate: {{gate_sharpness: [3, 10], sparsity_weight: [0.0, 0.1]}}
  lora: {{lora_rank: [4]}}
"""


def run(tmp_path, fuse: int):
    spec = tmp_path / f"fuse{fuse}.yaml"
    spec.write_text(SPEC.format(fuse=fuse))
    study_dir = tmp_path / f"study-{fuse}"
    report = [] if fuse > 1 else ["--no-report"]  # the unfused run also shows --no-report
    result = taugate("run", str(spec), "--output", str(study_dir), *report)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (study_dir / "report" / "report.html").is_file() == (not report)
    return study_dir, result.stderr


def progress(stderr: str) -> list[tuple[int, int, int]]:
    """(done, total, running) of each live progress line."""
    found = re.findall(r"\] (\d+)/(\d+) done, (\d+) running", stderr)
    return [(int(d), int(t), int(r)) for d, t, r in found]


def test_fused_study_matches_the_unfused_study(tmp_path):
    (fused_dir, fused_log), (plain_dir, plain_log) = run(tmp_path, 4), run(tmp_path, 1)
    fused, plain = load_tune(fused_dir), load_tune(plain_dir)
    assert len(fused) == len(plain) == 3 * (1 + 1 + 4 + 1)
    pd.testing.assert_frame_equal(fused.drop(columns="train_seconds"), plain.drop(columns="train_seconds"),
                                  check_exact=False, rtol=0, atol=1e-5)  # fmt: skip
    records = [json.loads(p.read_text()) for p in (fused_dir / "trials").glob("*/config.json")]
    assert max(r.get("fused_with", 1) for r in records) == 4  # members really trained together
    assert len(list((fused_dir / "tune" / "run-1").glob("*/result.json"))) < len(fused)  # fewer Tune trials
    client = mlflow.MlflowClient(f"sqlite:///{fused_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("fusion").experiment_id], "tags.`taugate.kind` = 'trial'")
    assert sorted(r.data.tags["taugate.trial_key"] for r in runs) == sorted(fused["trial_id"])

    # progress counts study trials, not Tune trials: a fused group finishing adds its members
    for log in (fused_log, plain_log):
        lines = progress(log)
        assert lines[-1] == (21, 21, 0)
        assert [done for done, _, _ in lines] == sorted(done for done, _, _ in lines)
    assert max(running for _, _, running in progress(fused_log)) > 2  # a running group counts its members
