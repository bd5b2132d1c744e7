"""`taugate bank STUDY_DIR` as a user runs it: a subprocess on a tiny study folder (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.bank_study import SEED0, TINY, make_study, record_trial
from tests.support.cli import taugate
from trainables.bank.disk import load_bank

TARGETS = (("t0", "taugate", 0, 0.0), ("t45", "taugate", 45, 0.0), ("t90", "taugate", 90, 0.0))
NAMES = ["taugate@0", "taugate@45", "taugate@90"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("cli") / "study", TARGETS, second_seed=False)


def refused(result, *phrases: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in " ".join(result.stderr.split()), result.stderr


def test_bank_builds_a_bank_per_foundation_and_says_what_it_built(study: Path):
    result = taugate("bank", str(study))
    assert result.returncode == 0, result.stderr
    folder = study / "bank" / SEED0
    assert f"bank {folder}: foundation {SEED0} (seed 0), 3 modes" in result.stdout
    bank = load_bank(folder)
    assert bank.names == NAMES and bank.foundation_id == SEED0
    for name, key in zip(NAMES, ("t0", "t45", "t90"), strict=True):
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(name))
        assert f"trial {key} (val_acc_{name.split('@')[1]}_hard" in line
        report = json.loads((folder / bank.mode(name).compact / "compact.json").read_text())["report"]
        kept = ", ".join(f"{k}/16" for k in report["kept"])
        assert f"units kept {kept}, parameters x{report['parameter_ratio']:.3f}" in line
        assert f"{report['differ']}/{report['digits']} test digits predicted otherwise" in line
    assert f"note: foundation {SEED0} (seed 0): trial diverged skipped, status 'diverged'" in result.stdout


def test_output_and_method_options(study: Path, tmp_path: Path):
    result = taugate("bank", str(study), "--output", str(tmp_path / "banks"), "--no-compact", "--method", "taugate")
    assert result.returncode == 0, result.stderr
    bank = load_bank(tmp_path / "banks" / SEED0)
    assert bank.names == NAMES and all(bank.mode(name).compact is None for name in NAMES)
    assert "compact" not in result.stdout and not (tmp_path / "banks" / SEED0 / "compact").exists()


def test_a_study_without_gated_trials_or_a_bad_folder_exits_2_and_writes_nothing(study: Path, tmp_path: Path):
    lora_only = tmp_path / "lora_only"
    record_trial(lora_only, "lora", TINY | {"method": "lora"}, {"status": "ok", "method": "lora"})
    refused(taugate("bank", str(lora_only)), f"{lora_only}: no finished trials of taugate")
    assert not (lora_only / "bank").exists()

    refused(taugate("bank", str(tmp_path / "missing")), "no such study folder")
    assert not (tmp_path / "missing").exists()

    # (a method without gates is refused by the same path: tests/trainables/bank/test_bank.py)
    output = tmp_path / "out"
    refused(
        taugate("bank", str(study), "--foundation", "feedbeef0000", "--output", str(output)),
        "foundation 'feedbeef0000' has no finished trials", f"{SEED0} (seed 0)",
    )  # fmt: skip
    assert not output.exists()
