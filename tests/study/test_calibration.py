"""Calibration end to end on a tiny grid: the baselines choose the protocol on validation fidelity,
TauGate is held out, and the generated spec runs the prediction study (two commands)."""

from __future__ import annotations

import statistics

import pandas as pd
import pytest
import yaml

from analysis.paper.reference import load_reference
from tests.support.cli import taugate

pytestmark = pytest.mark.slow

SPEC = """
name: tinycal
foundation: {epochs: 1}
seeds: [0, 1]
methods: {frozen: {}, bitfit: {}, lora: {lora_rank: [8]}, full: {}}
protocol: {lr_scale: [0.05, 1.0]}
epochs: 1
calibrate:
  reference: paper
  held_out: [taugate]
  sparsity_target: 0.28
  next:
    seeds: [0, 1]
    methods: {taugate: {gate_sharpness: [10], sparsity_weight: [0, 30]}}
fuse: 4
"""
PROTOCOL = ["foundation_epochs", "epochs", "lr_scale", "batch_size"]


def validation_gap(rows: pd.DataFrame) -> float:
    """The calibration score recomputed by hand: mean |baseline-relative gap| of the validation
    accuracies of bitfit, lora and full against the paper's table (frozen is the baseline)."""
    paper = load_reference("paper")
    means = rows.groupby("method")[["val_acc_0", "val_acc_45"]].mean()
    gaps = []
    for method in ("bitfit", "lora", "full"):
        for metric in ("acc_0", "acc_45"):
            ours = means.loc[method, f"val_{metric}"] - means.loc["frozen", f"val_{metric}"]
            ref = paper.cell(method, metric).mean - paper.cell("frozen", metric).mean
            gaps.append(abs(ours - ref))
    return statistics.fmean(gaps)


def test_calibration_chooses_on_validation_and_the_generated_spec_predicts_taugate(tmp_path):
    spec = tmp_path / "calibrate.yaml"
    spec.write_text(SPEC)
    first = taugate("run", str(spec), "--output", str(tmp_path / "calibrate"))
    assert first.returncode == 0, first.stderr[-3000:]

    results = pd.read_csv(tmp_path / "calibrate" / "report" / "results.csv")
    assert set(results["method"]) == {"frozen", "bitfit", "lora", "full"}  # TauGate never entered the fit
    scores = {lr: validation_gap(rows) for lr, rows in results.groupby("lr_scale")}
    best = min(scores, key=scores.get)
    generated = tmp_path / "calibrate" / "calibrated.yaml"
    assert generated.is_file() and "next: taugate run" in first.stderr
    calibrated = yaml.safe_load(generated.read_text())
    assert calibrated["lr_scale"] == pytest.approx(best)  # the protocol with the best validation fidelity
    assert "protocol" not in calibrated or not calibrated["protocol"]
    assert calibrated["methods"]["taugate"] == {"gate_sharpness": [10.0], "sparsity_weight": [0.0, 30.0]}
    report = (tmp_path / "calibrate" / "report" / "report.md").read_text()
    assert "Chosen from 2 protocols" in report

    second = taugate("run", str(generated), "--output", str(tmp_path / "paper"))
    assert second.returncode == 0, second.stderr[-3000:]
    table = pd.read_csv(tmp_path / "paper" / "report" / "results.csv")
    assert set(table["lr_scale"]) == {best} and set(table["method"]) >= {"taugate", "frozen"}
    # lambda is chosen from the validation ratio alone: the configuration closest to 0.28
    ratios = table[table["method"] == "taugate"].groupby("sparsity_weight")["val_high_activation_ratio"].mean()
    chosen = (ratios - 0.28).abs().idxmin()
    report = (tmp_path / "paper" / "report" / "report.md").read_text()
    taugate_row = next(line for line in report.splitlines() if line.startswith("| **TauGate** | **512**"))
    assert f"λ={chosen:g}" in taugate_row and "prediction (held out of the fit)" in taugate_row
