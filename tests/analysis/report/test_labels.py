"""Labels say what a number is: our LoRA's rank where it is not the paper's, and what every "±" spreads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analysis.paper.reference import PAPER
from analysis.report.document import write_report
from tests.support.html_page import Page
from tests.support.synthetic import synthetic_study

SAYS_WHICH = ("mean ± std", "mean ± 95% CI", "(tolerance)")


def test_the_lora_row_names_our_rank_when_it_is_not_the_papers(tmp_path: Path) -> None:
    df, gate_stats = synthetic_study(seeds=2, failures=False)
    rank_4 = df[(df["method"] != "lora") | (df["lora_rank"] == 4.0)]  # LoRA at rank 4 only: 5,224 parameters
    paths = write_report(rank_4, tmp_path, {}, gate_stats)
    page = Page()
    page.feed(paths["html"].read_text(encoding="utf-8"))
    header, *rows = page.tables["paper-table"]
    lora = next(row for row in rows if row[0].startswith("LoRA"))
    assert lora[0] == "LoRA (ours r=4; paper r=8)"
    assert lora[header.index("params (ours)")] == "5224" and lora[-1].startswith("lora")
    fidelity = {row[0] for row in page.tables["fidelity-table"][1:]}
    assert "LoRA (ours r=4; paper r=8)" in fidelity and "LoRA (r=8)" not in fidelity
    assert "| LoRA (ours r=4; paper r=8) | 5224 |" in paths["markdown"].read_text(encoding="utf-8")
    assert PAPER.label_for("lora", {"lora_rank": 8.0, "lora_alpha": 8.0}) == "LoRA (r=8)"  # the paper's own stays


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A study with every table filled: sweeps, gate statistics, a sparsity target."""
    df, gate_stats = synthetic_study(seeds=3)
    paths = write_report(df, tmp_path_factory.mktemp("labels"), {}, gate_stats, calibration={"sparsity_target": 0.2})
    return paths["html"].read_text(encoding="utf-8"), paths["markdown"].read_text(encoding="utf-8")


def markdown_tables(markdown: str) -> list[list[list[str]]]:
    """Each markdown table as rows of cells (header first), the separator row dropped."""
    tables, current = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip().strip("*") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(set(c) <= {"-"} for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def unlabelled_spreads(table: list[list[str]]) -> list[str]:
    """Cells with a "±" whose column header does not say what it spreads, nor the cell itself."""
    header, *rows = table
    return [
        f"{header[i] if i < len(header) else '?'}: {cell}"
        for row in rows
        for i, cell in enumerate(row)
        if "±" in cell and not any(s in cell or (i < len(header) and s in header[i]) for s in SAYS_WHICH)
    ]


def test_every_plus_minus_in_the_html_says_what_it_spreads(report) -> None:
    html, _ = report
    page = Page()
    page.feed(html)
    tables = {name: rows for name, rows in page.tables.items() if rows}
    assert "seed-statistics-table" in tables and "paper-table" in tables
    assert {name: unlabelled_spreads(rows) for name, rows in tables.items() if unlabelled_spreads(rows)} == {}
    # a 95% CI in the all-configurations and front tables, a seed std beside the paper
    assert "acc 45° (mean ± 95% CI)" in tables["seed-statistics-table"][0]
    assert "acc 45° ours (mean ± std)" in tables["paper-table"][0]
    assert "accuracy, target mode (45°) (mean ± 95% CI)" in tables["front-table-accuracy_vs_params"][0]


def test_every_plus_minus_in_the_markdown_says_what_it_spreads(report) -> None:
    _, markdown = report
    tables = markdown_tables(markdown)
    assert len(tables) > 10
    assert [problem for table in tables for problem in unlabelled_spreads(table)] == []
    assert "(mean ± std)" in markdown.split("Sparsity target, λ chosen on the validation ratio:")[1].split("\n")[0]
