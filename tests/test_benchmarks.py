"""The benchmark harness runs (quick mode) and writes valid JSON; no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_writes_its_figures(tmp_path):
    output = tmp_path / "results.json"
    result = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--output", str(output)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(output.read_text())
    assert figures["quick"] is True and figures["command"].endswith("--quick")
    positive = ("trial_seconds", "epoch_bare_seconds", "epoch_ours_seconds", "epoch_vs_bare", "epoch_gflops",
                "matmul_peak_gflops", "fused_speedup_k5", "floor_seconds", "study_seconds", "study_unfused_seconds",
                "naive_seconds", "study_vs_floor", "study_vs_naive", "steady_largest_vs_smallest")  # fmt: skip
    for name in positive:
        assert isinstance(figures[name], float) and figures[name] > 0, name
    # the ratios are the figures they are made of, not separate measurements
    assert figures["study_vs_floor"] == figures["study_seconds"] / figures["floor_seconds"]
    assert figures["study_vs_naive"] == figures["naive_seconds"] / figures["study_window_seconds"]
    assert figures["study_window_seconds"] < figures["study_seconds"]  # the CLI's window lies inside its process
    for name in ("trials_per_minute", "trials_per_minute_steady"):
        assert set(figures[name]) == {"5", "10"} and all(v > 0 for v in figures[name].values()), name
