"""A normal run prints the study's own lines and real warnings, nothing of its dependencies (issue 27,
item 6): no progress bar, no INFO line, no deprecation warning of MLflow, Ray, Tune or anything they
import. Real `taugate` processes, as a user starts them: the paper study joining the session's warm
cluster, and `taugate bank` logging banks to MLflow (which printed MLflow's tqdm bar and INFO lines)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from study.folder.metadata import prepare
from study.spec.loader import parse_spec
from tests.support.bank_study import make_study
from tests.support.paths import ROOT
from tests.support.processes import TOKEN_ENV, taugate_process

pytestmark = pytest.mark.slow

RUN_WAIT, BANK_WAIT = 600, 300  # seconds, on a loaded 2-core machine
# What a dependency prints: a logging line ("2026/12/03 11:28:18 INFO mlflow.pyfunc: ...", "[I 2026-...]",
# "INFO ...:"), a tqdm bar ("Downloading artifacts:  33%|###  | 1/3 [00:00<...]"), a Python warning
# ("...: FutureWarning: ...") and Ray's worker and driver lines ("(pid=123) ...", "... INFO worker.py:...").
DEPENDENCY_LINES = re.compile(
    r"\b(INFO|DEBUG)\b|^\[[IDW] \d{4}-|\d+%\|.*\|\s*\d+/\d+|it/s\]|\w*Warning: |warnings\.warn|^\s*\((pid|raylet)\b"
)


def dependency_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if DEPENDENCY_LINES.search(line)]


def run(*args: str, timeout: float) -> tuple[int, str, str]:
    process = taugate_process(*args, env=os.environ | TOKEN_ENV)
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.communicate()
    return process.returncode, out, err


def test_the_patterns_catch_what_runs_printed_before():
    seen = [
        "2026/12/03 11:28:18 INFO mlflow.pyfunc: Validating input example against model signature",
        "Downloading artifacts:  33%|###3      | 1/3 [00:00<00:00, 10407.70it/s]",
        "[I 2026-12-03 10:01:02,123] A new study created in RDB with name: paper",
        "/x/mlflow/server/fastapi_app.py:23: StarletteDeprecationWarning: starlette.middleware.wsgi is deprecated",
        "(pid=4242) some worker line",
    ]
    assert dependency_lines("\n".join(seen)) == seen
    ours = ["study paper: 50 trials, 50 to run, folder /tmp/x", "[  39.4s] 0/50 done, 5 running, 0 failed, estimating",
            "warning: MLflow tracking at sqlite:///x failed (OSError: y); the study goes on",
            "  logged to MLflow as models:/m-1", "report: /tmp/x/report/report.html"]  # fmt: skip
    assert dependency_lines("\n".join(ours)) == []


def test_a_paper_run_prints_only_the_studys_own_lines(warm_cluster, tmp_path: Path):
    study = tmp_path / "paper"
    code, out, err = run("run", str(ROOT / "configs" / "paper.yaml"), "--output", str(study), "--address",
                         warm_cluster.address, timeout=RUN_WAIT)  # fmt: skip
    assert code == 0, err[-3000:]
    assert "study paper: 50/50 trials finished" in err and "report: " in err
    assert dependency_lines(err) == [] and dependency_lines(out) == [], err[-5000:]


def test_taugate_bank_logs_its_banks_without_progress_bars_or_mlflow_info(tmp_path: Path):
    study = tmp_path / "study"
    prepare(parse_spec({"name": "banks", "dataset": "mnist5k", "methods": {"taugate": {}}}), study)
    make_study(study, (("t0", "taugate", 0, 0.0), ("t45", "taugate", 45, 0.0)), second_seed=True)
    code, out, err = run("bank", str(study), "--no-compact", timeout=BANK_WAIT)
    assert code == 0, err[-3000:]
    assert err.count("  logged to MLflow as models:/m-") == 2, err  # two foundations, two bank models
    assert dependency_lines(err) == [] and dependency_lines(out) == [], err[-5000:]
    assert "Downloading artifacts" not in err + out
