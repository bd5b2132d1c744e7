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
    assert figures["quick"] is True
    for name in ("trial_seconds", "epoch_bare_seconds", "epoch_ours_seconds", "epoch_vs_bare", "epoch_gflops"):
        assert isinstance(figures[name], float) and figures[name] > 0, name
