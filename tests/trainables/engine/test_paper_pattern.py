"""The paper's pattern on the bundled data with the documented defaults (3 seeds)."""

from __future__ import annotations

import statistics

import pytest

from trainables.config import parse_config
from trainables.data import load_modes
from trainables.device import resolve_device
from trainables.engine.fit import train_foundation
from trainables.engine.trial import run_trial, shared


@pytest.mark.slow
def test_default_settings_reproduce_the_papers_pattern():
    results: dict[str, list[dict]] = {}
    for seed in range(3):
        config = parse_config({"seed": seed, "device": "cpu"})
        foundation = train_foundation(config, load_modes(config, resolve_device("cpu")))
        for method in ("frozen", "taugate", "lora", "full"):
            metrics = run_trial({"seed": seed, "method": method, "device": "cpu"}, shared(foundation))
            results.setdefault(method, []).append(metrics)

    def mean(method: str, metric: str) -> float:
        return statistics.fmean(r[metric] for r in results[method])

    assert mean("taugate", "acc_45") > mean("frozen", "acc_45")  # RQ1: gating specialises the frozen base
    assert abs(mean("taugate", "acc_0") - mean("frozen", "acc_0")) <= 0.02  # and keeps the original mode
    assert mean("full", "acc_45") == max(mean(m, "acc_45") for m in results)  # full FT wins the target mode
    assert mean("full", "acc_0") < mean("frozen", "acc_0")  # but forgets the original mode
