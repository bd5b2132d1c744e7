"""The command line reads whole at 80 columns: help texts and the paper table wrap between words, never
cut one (`gain_o…`, `BitFit (bias-…`).

Help is rendered as a user's terminal of 80 columns renders it (COLUMNS=80, the width rich reads);
the paper table is built from real trials' metrics (one tiny foundation, the paper's five methods)."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from analysis.paper.paper_table import PAPER_TABLE
from study.cli.trial_commands import paper_comparison
from tests.conftest import FAST
from tests.support.cli import taugate
from trainables import registry
from trainables.config import parse_config
from trainables.engine.fit import train_foundation
from trainables.engine.trial import run_trial, shared

NARROW = {"COLUMNS": "80"}
# every command of `taugate --help`
COMMANDS = [
    ["--help"], ["trial", "--help"], ["paper", "--help"], ["spec-schema", "--help"], ["plan", "--help"],
    ["run", "--help"], ["resume", "--help"], ["status", "--help"], ["track", "--help"], ["submit", "--help"],
    ["report", "--help"], ["bank", "--help"], ["ui", "--help"], ["readme", "--help"],
    ["cluster", "--help"], ["cluster", "start", "--help"], ["cluster", "stop", "--help"],
    ["cluster", "status", "--help"],
]  # fmt: skip


def help_text(*args: str) -> str:
    result = taugate(*args, env=NARROW)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, "the help should be laid out for 80 columns"
    return result.stdout


def test_trial_help_names_every_method_whole_at_80_columns():
    text = help_text("trial", "--help")
    words = set(re.findall(r"[A-Za-z_]+", text))
    for method in registry.names():
        assert method in words, f"method {method!r} is not whole in `taugate trial --help`:\n{text}"
    assert "…" not in text


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_no_help_text_is_cut_at_80_columns(args):
    assert "…" not in help_text(*args)


def test_the_paper_table_keeps_every_row_label_whole_at_80_columns(modes):
    config = {**FAST, "hidden": [16], "seed": 0}
    foundation = train_foundation(parse_config(config), modes)
    results = [run_trial({**config, "method": row.method}, shared(foundation)) for row in PAPER_TABLE]
    out = io.StringIO()
    Console(file=out, width=80, force_terminal=False).print(paper_comparison(results, 80))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    # the method column of the body, its wrapped lines joined: each label whole and in the paper's order
    body = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    column = " ".join(part for part in body if part)
    assert column == " ".join(row.label for row in PAPER_TABLE), text
    assert "λ = 0" in " ".join(text.split())  # the caption names the λ TauGate was trained with
    for row, result in zip(PAPER_TABLE, results, strict=True):  # the numbers are there, whole, too
        assert f"{result['trainable_params']}" in text, (row.method, text)
