"""Learning curves and early-stopping savings: from trials' per-epoch histories to the report's section.

Studies here are fabricated: results tables by hand, or study folders written with `tests.support.ledger`
(nothing trains), so every expected number is worked out from the histories written below.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.aggregate.curves import curve_summary, epoch_curves, epoch_rows, scheduler_savings
from analysis.aggregate.stats import seed_statistics
from analysis.report.sections.blocks import FigureEntry
from analysis.report.sections.curves_section import curves_section
from analysis.table.load import load_histories, load_tune
from analysis.table.results import config_columns, failed_rows, ok_rows, stopped_rows
from study.pipeline.reporting import write_study_report
from tests.support.html_page import Page
from tests.support.ledger import record_trial


def epochs(*val_accs: float, loss: float = 0.5) -> list[dict]:
    """A history: one entry per epoch (1-based) with the given validation accuracies."""
    return [{"epoch": i + 1, "loss": loss, "val_acc": v, "seconds": 0.1 * (i + 1)} for i, v in enumerate(val_accs)]


# ---- curves: seed mean and min-max band per (configuration, epoch) -------------------------------------


def hand_made_table() -> tuple[pd.DataFrame, dict[str, list[dict]]]:
    """TauGate s=1 on seeds 0 and 1, TauGate s=10 on seed 0 with a history and seed 1 without."""
    df = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d"], "status": ["ok", "ok", "ok", "ok"], "method": ["taugate"] * 4,
        "seed": [0, 1, 0, 1], "gate_sharpness": [1.0, 1.0, 10.0, 10.0], "epochs": [3, 3, 3, 3],
        "acc_45": [0.8, 0.7, 0.9, 0.9],
    })  # fmt: skip
    histories = {"a": epochs(0.5, 0.7, 0.8), "b": epochs(0.6, 0.9, 0.7), "c": epochs(0.4, 0.6, None)}
    return df, histories


def test_each_epoch_is_the_seed_mean_with_a_min_max_band() -> None:
    df, histories = hand_made_table()
    curves = epoch_curves(epoch_rows(df, histories))
    soft = curves[curves["label"] == "taugate s=1"].set_index("epoch")
    assert list(soft.index) == [1, 2, 3]
    assert soft["val_acc_mean"].tolist() == pytest.approx([0.55, 0.8, 0.75])
    assert soft["val_acc_min"].tolist() == pytest.approx([0.5, 0.7, 0.7])
    assert soft["val_acc_max"].tolist() == pytest.approx([0.6, 0.9, 0.8])
    assert soft["val_acc_std"].tolist() == pytest.approx([math.sqrt(0.005), math.sqrt(0.02), math.sqrt(0.005)])
    assert soft["val_acc_n"].tolist() == [2, 2, 2]
    sharp = curves[curves["label"] == "taugate s=10"].set_index("epoch")
    # trial d has no history (skipped); c's third epoch has no val_acc (no point)
    assert list(sharp.index) == [1, 2] and sharp["val_acc_n"].tolist() == [1, 1]
    assert sharp["val_acc_mean"].tolist() == pytest.approx([0.4, 0.6])


def test_the_summary_names_the_final_and_best_epoch_of_each_configuration() -> None:
    df, histories = hand_made_table()
    rows = epoch_rows(df, histories)
    summary = curve_summary(df, epoch_curves(rows), rows).set_index("label")
    soft, sharp = summary.loc["taugate s=1"], summary.loc["taugate s=10"]
    assert (soft["trials"], soft["last_epoch"], soft["planned_epochs"]) == (2, 3, 3)
    assert (soft["final_mean"], soft["final_min"], soft["final_max"]) == pytest.approx((0.75, 0.7, 0.8))
    assert (soft["best_epoch"], soft["best_mean"]) == (2, pytest.approx(0.8))  # the peak, not the last epoch
    assert (sharp["trials"], sharp["last_epoch"], sharp["best_epoch"]) == (1, 2, 2)


def test_without_histories_there_are_no_curves() -> None:
    df, _ = hand_made_table()
    assert epoch_rows(df, {}).empty and epoch_curves(epoch_rows(df, {})).empty


# ---- savings: trial-epochs spent against the full grid's ------------------------------------------------


def savings_table() -> tuple[pd.DataFrame, dict[str, list[dict]]]:
    df = pd.DataFrame({
        "trial_id": ["t1", "t2", "t3", "t4", "t5", "t6", "t7"],
        "status": ["ok", "stopped", "stopped", "ok", "diverged", "error", "ok"],
        "method": ["taugate"] * 6 + ["lora"],
        "seed": [0, 1, 2, 3, 4, 5, 0],
        "epochs": [5, 5, 5, 5, 5, 5, 9],
        "stopped_at_epoch": [math.nan, 1, 2, math.nan, math.nan, math.nan, math.nan],
    })  # fmt: skip
    histories = {"t1": epochs(*[0.8] * 5), "t2": epochs(0.3), "t5": epochs(0.5, 0.4, None)}
    return df, histories


def test_savings_count_the_epochs_each_trial_ran_against_its_planned_epochs() -> None:
    df, histories = savings_table()
    savings = scheduler_savings(df, histories, {"kind": "asha", "metric": "val_acc", "mode": "max", "grace_period": 1,
                                                "reduction_factor": 3, "max_epochs": None})  # fmt: skip
    # taugate: t1 its history's 5, t2 its history's 1, t3 stopped_at_epoch 2, t4 (ok, no history) its planned 5,
    # t5 its history's 3; t6 (error) left out. lora: t7 its planned 9.
    per_method = savings.per_method.set_index("method")
    assert per_method.loc["taugate"].tolist() == [5, 2, 16, 25]  # trials, stopped, spent, planned
    assert per_method.loc["lora"].tolist() == [1, 0, 9, 9]
    assert (savings.spent, savings.planned, savings.stopped) == (25, 34, 2)
    assert savings.saving == pytest.approx(1 - 25 / 34)
    assert savings.stops == {1: 1, 2: 1}
    assert any("1 failed trial(s) left out" in note for note in savings.notes)
    assert "ASHA" in savings.scheduler and "grace period 1" in savings.scheduler


def test_a_stopped_trial_that_says_nowhere_when_claims_no_saving() -> None:
    df = pd.DataFrame({"trial_id": ["x"], "status": ["stopped"], "method": ["taugate"], "epochs": [4]})
    savings = scheduler_savings(df, {}, None)
    assert (savings.spent, savings.planned, savings.stopped, savings.stops) == (4, 4, 1, {})
    assert any("neither a history nor stopped_at_epoch" in note for note in savings.notes)


def test_no_scheduler_and_no_stopped_trial_means_no_savings_but_a_named_scheduler_always_has_them() -> None:
    df, histories = savings_table()
    finished = df[df["status"].isin(["ok", "diverged"])]
    assert scheduler_savings(finished, histories, None) is None
    savings = scheduler_savings(finished, histories, {"kind": "median", "grace_period": 2})
    assert savings is not None and savings.stopped == 0 and savings.stops == {}
    assert (savings.spent, savings.planned) == (5 + 5 + 3 + 9, 5 + 5 + 5 + 9)
    assert "median stopping" in savings.scheduler


# ---- study folders: the ledger's stopped trials, histories, and the written report ------------------------

SPEC = {"name": "curves", "seeds": [0, 1], "epochs": 3,
        "methods": {"taugate": {"gate_sharpness": [1, 10]}, "lora": {"lora_rank": [8]}}}  # fmt: skip
TRIAL = {"method": "taugate", "hidden": [16, 16], "foundation_epochs": 1, "epochs": 3, "device": "cpu"}


def ok_metrics(method: str, seed: int, acc: float, trainable_params: int = 512) -> dict:
    return {"status": "ok", "method": method, "seed": seed, "trainable_params": trainable_params,
            "acc_0": 0.8, "acc_45": acc, "val_acc_0": 0.8, "val_acc_45": acc - 0.01, "final_loss": 0.4,
            "train_seconds": 1.0}  # fmt: skip


def columns(method: str, seed: int, **own: float) -> dict:
    return {"method": method, "seed": seed, "target_angle": 45.0, "epochs": 3, **own}


def make_study(folder: Path, histories: bool = True) -> Path:
    """TauGate s=1 (seeds 0, 1: ok), TauGate s=10 (seed 0 ok; seed 1 stopped by the scheduler at epoch 1)
    and LoRA r=8 (seed 0 ok, without a history); with `histories` False an old-style study (no history,
    no stopped trial)."""
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    trials = [
        ("soft0", TRIAL | {"gate_sharpness": 1.0, "seed": 0}, columns("taugate", 0, gate_sharpness=1.0),
         ok_metrics("taugate", 0, 0.86), epochs(0.70, 0.80, 0.85)),
        ("soft1", TRIAL | {"gate_sharpness": 1.0, "seed": 1}, columns("taugate", 1, gate_sharpness=1.0),
         ok_metrics("taugate", 1, 0.84), epochs(0.60, 0.82, 0.83)),
        ("sharp0", TRIAL | {"gate_sharpness": 10.0, "seed": 0}, columns("taugate", 0, gate_sharpness=10.0),
         ok_metrics("taugate", 0, 0.90), epochs(0.75, 0.88, 0.89)),
        ("sharp1", TRIAL | {"gate_sharpness": 10.0, "seed": 1}, columns("taugate", 1, gate_sharpness=10.0),
         {"status": "stopped", "stopped_at_epoch": 1, "method": "taugate", "seed": 1, "trainable_params": 512,
          "train_seconds": 0.3, "final_loss": 0.9, "val_acc_45": 0.20}, epochs(0.20)),
        ("lora0", TRIAL | {"method": "lora", "lora_rank": 8, "seed": 0}, columns("lora", 0, lora_rank=8),
         ok_metrics("lora", 0, 0.88, 9000), None),
    ]  # fmt: skip
    if not histories:
        trials = [(key, config, cols, metrics, None) for key, config, cols, metrics, _ in trials if key != "sharp1"]
    for key, config, cols, metrics, history in trials:
        record_trial(folder, key, config, metrics, history=history, columns=cols)
    study = {"name": "curves", "created": "2025-01-01T00:00:00+00:00", "trials_planned": len(trials)}
    (folder / "study.json").write_text(json.dumps(study))
    return folder


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_study(tmp_path_factory.mktemp("curves") / "study")


@pytest.fixture(scope="module")
def report(study: Path) -> tuple[dict[str, Path], Page, str, str]:
    paths = write_study_report(study)
    html, markdown = paths["html"].read_text(encoding="utf-8"), paths["markdown"].read_text(encoding="utf-8")
    page = Page()
    page.feed(html)
    return paths, page, html, markdown


def test_a_stopped_trial_keeps_its_epoch_and_is_neither_ok_nor_failed(study: Path) -> None:
    df = load_tune(study)
    stopped = df[df["trial_id"] == "sharp1"].iloc[0]
    assert stopped["status"] == "stopped" and stopped["stopped_at_epoch"] == 1
    assert "stopped_at_epoch" not in config_columns(df)  # an outcome, not a configuration knob
    assert list(stopped_rows(df)["trial_id"]) == ["sharp1"]
    assert "sharp1" not in set(ok_rows(df)["trial_id"]) and failed_rows(df).empty
    stats = seed_statistics(df).set_index("label")
    sharp = stats.loc["taugate s=10"]
    assert (sharp["n_trials"], sharp["n_ok"]) == (2, 1)
    assert sharp["val_acc_45_mean"] == pytest.approx(0.89)  # the stopped seed's 0.20 is not averaged in


def test_histories_are_read_for_the_trials_that_wrote_them(study: Path) -> None:
    histories = load_histories(study, ["soft0", "sharp1", "lora0", "error:none"])
    assert set(histories) == {"soft0", "sharp1"} and [e["val_acc"] for e in histories["sharp1"]] == [0.20]


def test_the_report_shows_curves_and_the_scheduler_savings(report) -> None:
    paths, page, html, markdown = report
    assert {"learning-curves", "curves-table", "figure-learning-curves", "scheduler-savings-table",
            "scheduler-stops-table", "summary-stopped"} <= page.ids  # fmt: skip
    assert paths["figure:learning-curves"].is_file()
    header, *rows = page.tables["curves-table"]
    by_label = {row[0]: row for row in rows}
    assert set(by_label) == {"taugate s=1", "taugate s=10"}  # lora0 has no history: skipped
    soft = by_label["taugate s=1"]
    assert soft[1:] == ["2", "3 / 3", "0.840 [0.830, 0.850], n=2", "3 (0.840)"]
    sharp = by_label["taugate s=10"]  # epoch 1 over both seeds (0.75, 0.20); later epochs seed 0 only
    assert sharp[1:] == ["2", "3 / 3", "0.890 [0.890, 0.890], n=1", "3 (0.890)"]
    # spent: 3 + 3 + 3 + 1 (stopped) + 3 (lora, ok without history) = 13 of 5 x 3 = 15
    _, *savings = page.tables["scheduler-savings-table"]
    assert savings[-1] == ["all", "5", "1", "13", "15", "13.3%"]
    assert page.tables["scheduler-stops-table"] == [["stopped at epoch", "trials"], ["1", "1"]]
    assert "1 stopped by the scheduler" in html and "a saving of 13.3%" in html
    assert "the spec names no scheduler, yet 1 trial(s) are recorded as stopped" in html
    assert page.tables["failed-trials-table"][1:] == [["none"]]  # a stopped trial is not a failure
    assert "## Learning curves" in markdown and "### Early stopping" in markdown
    assert "| taugate s=1 | 2 | 3 / 3 | 0.840 [0.830, 0.850], n=2 | 3 (0.840) |" in markdown
    assert "| **all** | **5** | **1** | **13** | **15** | **13.3%** |" in markdown  # the total, in bold
    assert "1 stopped by the scheduler" in markdown


def test_accuracy_summaries_leave_the_stopped_trial_out(report) -> None:
    _, page, _, _ = report
    header, *rows = page.tables["seed-statistics-table"]
    sharp = next(row for row in rows if row[0] == "taugate s=10")
    assert sharp[1] == "1 / 2"
    assert page.tables["seed-statistics-table"] and "0.900" in sharp[header.index("acc 45° (mean ± 95% CI)")]


def test_a_spec_scheduler_is_named_even_when_it_stopped_nothing(study: Path) -> None:
    df = load_tune(study)
    df = df[df["status"] == "ok"]
    scheduler = {"kind": "asha", "metric": "val_acc", "mode": "max", "grace_period": 1, "reduction_factor": 3}
    drawn = []

    def figure(fid, title, draw, missing):
        drawn.append(fid)
        return FigureEntry(fid, title, None, missing)

    histories = load_histories(study, list(df["trial_id"]))
    section = curves_section(df, histories, {"spec": SPEC | {"scheduler": scheduler}}, figure)
    assert section["shown"] and section["available"] and drawn == ["learning-curves"]
    text = section["scheduler"]["text"]
    assert text.startswith("Scheduler: ASHA (asynchronous successive halving) on val_acc (max), grace period 1")
    assert "a saving of 0.0%" in text and "Trials stopped early: 0." in text
    assert section["scheduler"]["stops_table"].rows == []
    # the spec's default block (kind none) and no stopped trial: no scheduler part; no history either: no section
    assert curves_section(df, histories, {"spec": SPEC | {"scheduler": {"kind": "none"}}}, figure)["scheduler"] is None
    assert curves_section(df, {}, {"spec": SPEC | {"scheduler": {"kind": "none"}}}, figure) == {"shown": False}


def test_an_old_study_without_histories_reports_without_the_section(tmp_path: Path) -> None:
    old = make_study(tmp_path / "old", histories=False)
    paths = write_study_report(old)
    html, markdown = paths["html"].read_text(encoding="utf-8"), paths["markdown"].read_text(encoding="utf-8")
    page = Page()
    page.feed(html)
    assert "paper-table" in page.ids and "seed-statistics-table" in page.ids
    assert not {"learning-curves", "curves-table", "scheduler-savings-table", "summary-stopped"} & page.ids
    assert "figure:learning-curves" not in paths and "Learning curves" not in html + markdown
    assert not (paths["figures"] / "learning-curves.png").exists()
