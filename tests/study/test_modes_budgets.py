"""Modes where gates close: a modes study that trains TauGate at several budgets (dense, and sparse) gets one
per-mode analysis and one bank per budget, chosen on validation within its budget, and a report that sets the
budgets side by side; a study with one budget keeps its single analysis, `bank/<foundation>/` and report.
Real foundations, trials and adapters on the bundled data (a tiny study folder built without Ray)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from analysis.per_mode.mode_analysis import analyse_study_modes
from analysis.report.document import write_report
from analysis.report.sections.bank_tables import compact_cells, forced_summary
from analysis.report.sections.modes_section import modes_section
from analysis.table.load import (
    LedgerTrial,
    budget_labels,
    budget_of,
    choose_per_mode,
    describe_budget,
    load_tune,
)
from study.pipeline.mode_banks import bank_summaries, build_bank, build_banks
from tests.support.bank_study import SEED0, TINY, make_study
from trainables.bank.disk import load_bank
from trainables.bank.layout import BankError
from trainables.config import parse_config

DENSE = (("d0", "taugate", 0, 0.0), ("d45", "taugate", 45, 0.0), ("d90", "taugate", 90, 0.0))
SPARSE = (("s0", "taugate", 0, 0.05), ("s45", "taugate", 45, 0.05), ("s90", "taugate", 90, 0.05))
LABELS = ["dense", "lambda0.05"]


@pytest.fixture(scope="module")
def two_budgets(tmp_path_factory) -> Path:
    study = make_study(tmp_path_factory.mktemp("budgets") / "study", DENSE + SPARSE, second_seed=False)
    for record_file in study.glob("trials/*/config.json"):  # the results-table columns a planned study records
        record = json.loads(record_file.read_text())
        config = record["config"]
        record["columns"] = {name: config[name] for name in ("method", "seed", "target_angle", "sparsity_weight")}
        record_file.write_text(json.dumps(record))
    return study


@pytest.fixture(scope="module")
def one_budget(two_budgets: Path, tmp_path_factory) -> Path:
    """The dense half of the same study: its trials and foundation only."""
    study = tmp_path_factory.mktemp("one") / "study"
    shutil.copytree(two_budgets / "foundations", study / "foundations")
    for key in ("d0", "d45", "d90", "diverged", "lora"):
        shutil.copytree(two_budgets / "trials" / key, study / "trials" / key)
    return study


def ledger(key: str, metrics: dict, **config) -> LedgerTrial:
    return LedgerTrial(key, Path(key), parse_config(TINY | config), {"status": "ok"} | metrics)


# --- choosing per mode within a budget -----------------------------------------------------------


def test_trials_of_two_budgets_are_never_compared_and_each_budget_chooses_on_validation():
    trials = [
        ledger("a", {"val_acc_45_hard": 0.9, "acc_45_hard": 0.1}, target_angle=45),
        ledger("b", {"val_acc_45_hard": 0.5, "acc_45_hard": 0.99}, target_angle=45, sparsity_target=0.4,
               tau_lr_multiplier=25),
        ledger("c", {"val_acc_45_hard": 0.7}, target_angle=45, sparsity_target=0.4, tau_lr_multiplier=25,
               gate_init_margin=2.0),  # not a budget field: a second candidate of b's budget
    ]  # fmt: skip
    choices = choose_per_mode(trials)
    assert [(c.angle, c.trial.key, c.candidates) for c in choices] == [
        (45.0, "a", {"a": 0.9}), (45.0, "c", {"b": 0.5, "c": 0.7})
    ]  # fmt: skip
    assert [dict(c.budget)["sparsity_target"] for c in choices] == [None, 0.4]
    one = choose_per_mode([t for t in trials if t.key != "b"] + [ledger("d", {"val_acc_45_hard": 0.95},
                                                                        target_angle=45)])  # fmt: skip
    assert [(c.trial.key, sorted(c.candidates)) for c in one] == [("d", ["a", "d"]), ("c", ["c"])]


def test_budget_labels_are_short_unique_and_empty_for_a_single_budget():
    dense = budget_of(parse_config(TINY))
    sparse = budget_of(parse_config(TINY | {"sparsity_target": 0.4, "tau_lr_multiplier": 25}))
    fixed = budget_of(parse_config(TINY | {"sparsity_weight": 0.3, "tau_lr_multiplier": 25}))
    assert budget_labels([dense]) == {dense: ""}
    assert budget_labels([sparse, dense, dense]) == {dense: "dense", sparse: "target0.4-taulr25"}
    assert budget_labels([dense, sparse, fixed]) == {
        dense: "dense", sparse: "lambda0-target0.4-taulr25", fixed: "lambda0.3-targetnone-taulr25"
    }  # fmt: skip
    sharp = budget_of(parse_config(TINY | {"gate_sharpness": 30}))
    assert budget_labels([dense, sharp]) == {dense: "s10", sharp: "s30"}  # "dense" only names a sparsity budget
    assert describe_budget(sparse, [dense]) == "sparsity_target 0.4, tau_lr_multiplier 25"


# --- one analysis and one bank per budget --------------------------------------------------------


def test_each_budget_gets_its_own_analysis_from_its_own_trials(two_budgets: Path):
    analyses = analyse_study_modes(two_budgets, draws=2)
    assert [a.label for a in analyses] == LABELS
    assert [a.budget["sparsity_weight"] for a in analyses] == [0.0, 0.05]
    assert analyses[1].description == "sparsity_weight 0.05"
    for analysis, prefix in zip(analyses, "ds", strict=True):
        (found,) = analysis.foundations
        assert found.trials == {0.0: f"{prefix}0", 45.0: f"{prefix}45", 90.0: f"{prefix}90"}
        assert set(analysis.unit_counts["trial"]) == {f"{prefix}0", f"{prefix}45", f"{prefix}90"}
        assert list(analysis.chosen["trial"]) == [f"{prefix}0", f"{prefix}45", f"{prefix}90"]
        metrics = json.loads((two_budgets / "trials" / f"{prefix}45" / "metrics.json").read_text())
        row = analysis.chosen.set_index("trial").loc[f"{prefix}45"]
        assert row["val_high_activation_ratio"] == metrics["val_high_activation_ratio"]
        assert row["acc_hard"] == metrics["acc_45_hard"]
    assert any("budget lambda0.05: mode 45 is trial s45" in note for note in analyses[1].notes)


def test_each_budget_gets_its_own_bank_named_by_the_budget(two_budgets: Path, tmp_path: Path):
    built = build_banks(two_budgets, tmp_path / "bank", compact=False)
    assert [(b.label, b.folder.name) for b in built] == [(label, f"{SEED0}-{label}") for label in LABELS]
    for result, prefix in zip(built, "ds", strict=True):
        bank = load_bank(result.folder)
        assert bank.names == ["taugate@0", "taugate@45", "taugate@90"]
        assert [bank.mode(name).trial for name in bank.names] == [f"{prefix}0", f"{prefix}45", f"{prefix}90"]
        assert bank.source["budget_label"] == result.label and bank.source["budget"] == result.budget
        assert all(f"budget {result.label}:" in n for n in bank.source["notes"] if "is trial" in n)
    only = build_banks(two_budgets, tmp_path / "only", compact=False, budget="lambda0.05")
    assert [b.folder.name for b in only] == [f"{SEED0}-lambda0.05"]
    assert sorted(p.name for p in (tmp_path / "only").iterdir()) == [f"{SEED0}-lambda0.05"]


def test_an_ambiguous_or_unknown_budget_is_an_error_naming_the_budgets(two_budgets: Path, tmp_path: Path):
    listed = "dense (sparsity_weight 0), lambda0.05 (sparsity_weight 0.05)"
    with pytest.raises(BankError, match=re.escape(f"at 2 budgets ({listed}); a bank holds one budget's modes")):
        build_bank(two_budgets, tmp_path / "single", compact=False)
    with pytest.raises(BankError, match=re.escape(f"budget 'sparse' is not one of the study's: {listed}")):
        build_banks(two_budgets, tmp_path / "banks", compact=False, budget="sparse")
    assert not (tmp_path / "single").exists() and not (tmp_path / "banks").exists()
    chosen = load_bank(build_bank(two_budgets, tmp_path / "chosen", compact=False, budget="dense"))
    assert [chosen.mode(name).trial for name in chosen.names] == ["d0", "d45", "d90"]


def test_a_single_budget_study_keeps_its_analysis_bank_folder_and_index(one_budget: Path):
    (analysis,) = analyse_study_modes(one_budget, draws=2)
    assert (analysis.label, analysis.foundations[0].trials) == ("", {0.0: "d0", 45.0: "d45", 90.0: "d90"})
    assert not any("budget" in note for note in analysis.notes)
    (built,) = build_banks(one_budget, compact=False)
    assert built.folder == one_budget / "bank" / SEED0 and built.label == ""
    source = json.loads((built.folder / "bank.json").read_text())["source"]
    assert set(source) == {"study", "seed", "dataset", "notes"}  # the index as before: no budget fields
    with pytest.raises(BankError, match="the study has one budget"):
        build_banks(one_budget, compact=False, budget="dense")


# --- the report ----------------------------------------------------------------------------------


def report_of(study: Path, out: Path) -> tuple[str, str]:
    spec = {"angles": [0, 45], "target_angle": [0, 45, 90]}
    paths = write_report(load_tune(study), out, {"title": "modes", "spec": spec},
                         mode_analysis=analyse_study_modes(study, draws=2),
                         banks=bank_summaries(study))  # fmt: skip
    return paths["markdown"].read_text(), paths["html"].read_text()


def test_the_report_sets_the_budgets_side_by_side(two_budgets: Path, tmp_path: Path):
    study = Path(shutil.copytree(two_budgets, tmp_path / "study"))
    build_banks(study)
    markdown, html = report_of(study, tmp_path / "report")
    assert "### TauGate budgets side by side" in markdown and 'id="modes-budgets"' in html
    table = markdown.split("### TauGate budgets side by side", 1)[1]
    header = next(line for line in table.splitlines() if line.startswith("| quantity"))
    assert header.split("|")[1:-1] == [" quantity ", " dense ", " lambda0.05 "]
    for row in ("Jaccard between two modes", "units exclusive to one mode", "attributed units carry their mode",
                "validation high-activation ratio", "compact: hidden units kept per layer",
                "compact: parameters / dense", "compact: multiply-adds / dense",
                "compact: test digits predicted otherwise", "latency compact / dense at batch 1",
                "latency compact / dense at batch 256", "forced to 50% of units: parameters / multiply-adds",
                "forced to 50% of units: test digits predicted otherwise",
                "forced to 50% of units: test accuracy dense / compact"):  # fmt: skip
        line = next(line for line in table.splitlines() if line.startswith("| ") and row in line)
        assert line.count("|") == 4 and " - |" not in line, line  # a value for both budgets
    forced = next(line for line in table.splitlines() if "forced to 50% of units: test digits" in line)
    assert re.fullmatch(r"\| [^|]+ \| [\d,]+ of 3,000 \| [\d,]+ of 3,000 \|", forced), forced  # 3 modes x 1,000
    assert "per hidden layer the ceil(0.5 x width) units" in table.split("| quantity", 1)[0]  # the rule, stated
    for label in LABELS:
        assert f"### Budget {label}: neurons per mode" in markdown
        assert f"### Budget {label}: compact per-mode subnetworks" in markdown
        assert f'id="modes-jaccard-table-{label}"' in html and f'id="modes-bank-table-{label}"' in html
        part = markdown.split(f"### Budget {label}: compact per-mode subnetworks", 1)[1]
        assert re.search(r"\nForced to 50% of units \(units kept per layer 8/16, 8/16; per hidden layer .*\): "
                         r"[\d,]+ of 3,000 test digits predicted otherwise than the dense hard-gated model; test "
                         r"accuracy dense / compact 0\.\d{3} / 0\.\d{3} \([+-]0\.\d{3}\), mean over 3 \(mode, seed\) "
                         r"pairs", part)  # fmt: skip
        assert f'id="modes-forced-{label}"' in html
    assert "figures/modes-jaccard-budgets.png" in markdown and "figures/modes-intervention-budgets.png" in markdown
    assert (tmp_path / "report" / "figures" / "modes-jaccard-budgets.png").stat().st_size > 0
    assert "### Neurons per mode" not in markdown  # the single-budget layout is not repeated


def test_a_single_budget_report_is_laid_out_as_before(one_budget: Path, tmp_path: Path):
    study = Path(shutil.copytree(one_budget, tmp_path / "study"))
    build_banks(study)
    markdown, html = report_of(study, tmp_path / "report")
    assert "side by side" not in markdown and "Budget " not in markdown
    order = [markdown.index(title) for title in ("### Neurons per mode", "### Attribution by intervention",
                                                  "### Mode bank: compact per-mode subnetworks")]  # fmt: skip
    assert order == sorted(order)
    assert 'id="modes-jaccard-table"' in html and 'id="modes-bank-table"' in html
    header = next(line for line in markdown.splitlines() if line.startswith("| foundation (seed)"))
    assert "latency" not in header  # the single-budget bank table keeps its columns
    assert "forced to 50% of units: test digits predicted otherwise" in header
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "taugate@" in line]
    assert len(rows) == 3 and all(re.search(r"\| \d+ of 1000 \| 0\.\d{3} / 0\.\d{3} \|$", r) for r in rows), rows
    assert re.search(r"\nForced to 50% of units \(units kept per layer 8/16, 8/16;.*mean over 3 \(mode, seed\) pairs",
                     markdown)  # fmt: skip
    assert 'id="modes-forced"' in html
    section = modes_section(load_tune(study), {"spec": {"angles": [0, 45]}}, analyse_study_modes(study, draws=2),
                            lambda *args: None, bank_summaries(study))  # fmt: skip
    assert section["budgets"] == [] and section["units"] is not None and section["bank_table"] is not None


def test_a_bank_built_before_the_forced_check_reports_a_dash(two_budgets: Path, tmp_path: Path):
    study = Path(shutil.copytree(two_budgets, tmp_path / "study"))
    build_banks(study)
    for index in study.glob("bank/*/compact/*/compact.json"):  # as a bank built before the forced check
        info = json.loads(index.read_text())
        del info["report"]["forced"]
        index.write_text(json.dumps(info))
    markdown, html = report_of(study, tmp_path / "report")
    table = markdown.split("### TauGate budgets side by side", 1)[1]
    for row in ("forced to 50% of units: test digits predicted otherwise",
                "forced to 50% of units: test accuracy dense / compact"):  # fmt: skip
        line = next(line for line in table.splitlines() if line.startswith("| ") and row in line)
        assert line.endswith("| - | - |"), line
    assert "compact: test digits predicted otherwise" in table  # the exact compact rows are still there
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "taugate@" in line]
    assert len(rows) == 6 and all(r.endswith("| - | - |") for r in rows)
    assert markdown.count("Forced to 50% of units: - (not measured when the bank was built") == 2


def test_compact_cells_sum_and_range_the_constructed_reports():
    def report(kept: list[int], parameters: int, macs: int, differ: int, fired: int, ratio1: float) -> dict:
        return {"kept": kept, "units": [128, 128], "parameter_ratio": parameters / 1000, "mac_ratio": macs / 1000,
                "digits": 1000, "differ": differ, "differ_dropped_fired": fired, "accuracy_dense": 0.9,
                "accuracy_compact": 0.9 - differ / 1000,
                "latency": {"batch_1": {"dense_seconds": 1e-4, "compact_seconds": ratio1 * 1e-4, "ratio": ratio1},
                            "batch_256": {"dense_seconds": 1e-3, "compact_seconds": 5e-4, "ratio": 0.5}}}  # fmt: skip

    cells = compact_cells([report([64, 32], 400, 380, 0, 0, 0.8), report([32, 64], 200, 190, 3, 2, 0.6)])
    assert cells["compact: hidden units kept per layer: mean (min-max) over modes and seeds"] == (
        "38% (25-50%); 38% (25-50%)"
    )
    assert cells["compact: parameters / dense: mean (min-max)"] == "0.300 (0.200-0.400)"
    assert cells["compact: multiply-adds / dense: mean (min-max)"] == "0.285 (0.190-0.380)"
    assert cells["compact: test digits predicted otherwise than the dense hard-gated model (same adapter)"] == (
        "3 of 2,000 (2 where a dropped unit fired)"
    )
    assert cells["compact: latency compact / dense at batch 1"] == "x0.70 (100 → 70 µs, median of 2 modes)"
    assert cells["compact: latency compact / dense at batch 256"].startswith("x0.50 (1000 → 500 µs")
    for name in ("parameters / multiply-adds vs dense", "test digits predicted otherwise than the dense "
                 "hard-gated model", "test accuracy dense / compact (difference)"):  # fmt: skip
        assert cells[f"forced to 50% of units: {name}"] == "-"  # no report records the forced check

    def forced(differ: int, accuracy: float, ratio: float) -> dict:
        return {"keep": 0.5, "kept": [64, 64], "units": [128, 128], "digits": 1000, "differ": differ,
                "accuracy_dense": 0.9, "accuracy_compact": accuracy, "parameter_ratio": ratio,
                "mac_ratio": ratio}  # fmt: skip

    reports = [report([64, 32], 400, 380, 0, 0, 0.8) | {"forced": forced(300, 0.6, 0.46)},
               report([32, 64], 200, 190, 3, 2, 0.6) | {"forced": forced(100, 0.8, 0.44)},
               report([32, 64], 200, 190, 3, 2, 0.6)]  # fmt: skip
    cells = compact_cells(reports)
    assert cells["forced to 50% of units: parameters / multiply-adds vs dense"] == "0.450 / 0.450"
    assert cells["forced to 50% of units: test digits predicted otherwise than the dense hard-gated model"] == (
        "400 of 2,000 (1 modes not measured)"
    )
    assert cells["forced to 50% of units: test accuracy dense / compact (difference)"] == (
        "0.900 / 0.700 (-0.200), mean over 2 (mode, seed) pairs"
    )
    assert forced_summary(reports).startswith(
        "Forced to 50% of units (units kept per layer 64/128, 64/128; per hidden layer the ceil(0.5 x width) units"
    )


def test_taugate_bank_builds_one_budget_and_refuses_an_unknown_one_naming_the_budgets(two_budgets: Path, tmp_path):
    from tests.support.cli import taugate

    refused = taugate("bank", str(two_budgets), "--output", str(tmp_path / "none"), "--budget", "sparse", "--no-log")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "budget 'sparse' is not one of the study's: dense (sparsity_weight 0)" in refused.stderr
    built = taugate("bank", str(two_budgets), "--output", str(tmp_path / "banks"), "--budget", "dense",
                    "--no-compact", "--no-log")  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert f"foundation {SEED0} (seed 0, budget dense), 3 modes" in built.stdout
    assert sorted(p.name for p in (tmp_path / "banks").iterdir()) == [f"{SEED0}-dense"]
