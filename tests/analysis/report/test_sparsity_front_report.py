"""The report's sparsity-front section: rendered with the knee's numbers when TauGate's budget is
mapped across several ratios, absent otherwise (older studies keep their report)."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.aggregate.sparsity_front import RATIO, sparsity_front
from analysis.aggregate.stats import seed_statistics
from analysis.report.document import write_report
from analysis.report.sections.blocks import mean_ci
from tests.support.html_page import Page
from tests.support.sparse_study import SWEEP_1, SWEEP_25, point, sparse_study
from tests.support.synthetic import synthetic_study

DUAL = [point(25, 1.0, 0.31, 0.90, sparsity_target=0.3), point(25, 1.0, 0.50, 0.90, sparsity_target=0.5)]


@pytest.fixture(scope="module")
def mapped(tmp_path_factory: pytest.TempPathFactory):
    df = sparse_study(SWEEP_25 + SWEEP_1 + DUAL)
    # a calibration holding TauGate out: its accuracies are then predictions, labelled so
    return df, write_report(df, tmp_path_factory.mktemp("mapped"), {}, {}, calibration={"held_out": ["taugate"]})


def test_the_section_names_the_knee_with_its_numbers(mapped) -> None:
    df, paths = mapped
    knee = sparsity_front(seed_statistics(df)).knee
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert "## Sparsity front: TauGate across its budget" in markdown
    assert f"The knee is {knee['label']} (budget {knee['budget']}" in markdown
    assert f"validation ratio {mean_ci(knee, RATIO)}" in markdown
    assert f"45° {mean_ci(knee, 'acc_45')}, 0° {mean_ci(knee, 'acc_0')}" in markdown
    assert "knee (validation only)" in markdown  # the rule beside the choice


def test_the_section_shows_every_part_with_its_rule(mapped) -> None:
    _, paths = mapped
    page = Page()
    page.feed(paths["html"].read_text(encoding="utf-8"))
    for table in ("sparsity-front-table", "sparsity-references-table", "lambda-saturation-table",
                  "sparsity-targets-table", "dual-vs-sweep-table", "sparse-claims-table"):  # fmt: skip
        assert table in page.ids, table
    _, *claims = page.tables["sparse-claims-table"]
    assert len(claims) == 3 and all(row[-1].startswith("holds at") for row in claims)
    header, *rows = page.tables["sparsity-front-table"]
    assert any("95% CI" in column for column in header) and "seeds" in header
    assert any("prediction" in column for column in header)
    saturated = {row[0]: row[-1] for row in page.tables["lambda-saturation-table"][1:]}
    assert saturated == {"×τ=1 s=10": "yes", "×τ=25 s=10": "no"}
    assert {"figure:sparsity-front", "figure:lambda-saturation"} <= set(paths)
    assert all(Path(paths[f"figure:{name}"]).is_file() for name in ("sparsity-front", "lambda-saturation"))


def test_the_sparsity_target_no_longer_says_out_of_reach_once_the_budget_is_mapped(tmp_path: Path) -> None:
    df = sparse_study([p for p in SWEEP_25 if p["sparsity_weight"] != 1.0] + SWEEP_1)
    paths = write_report(df, tmp_path, {}, {}, calibration={"sparsity_target": 0.28})
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert "not reached by any configuration of TauGate's mapped budget" in markdown
    assert "out of reach" not in markdown
    assert "no TauGate configuration is within ±0.05 of 0.28; the closest is" in markdown


@pytest.mark.parametrize("study", ["old", "narrow"])
def test_absent_without_a_mapped_budget(study: str, tmp_path: Path) -> None:
    """An older study (no budget columns), or one whose TauGate ratios barely move (0.69 to 0.73)."""
    df = synthetic_study(seeds=2, sweep=True)[0] if study == "old" else sparse_study(SWEEP_1)
    paths = write_report(df, tmp_path, {}, {})
    assert "Sparsity front" not in paths["markdown"].read_text(encoding="utf-8")
    assert 'id="sparsity-front"' not in paths["html"].read_text(encoding="utf-8")
    assert "figure:sparsity-front" not in paths
