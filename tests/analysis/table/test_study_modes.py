"""The report works at the study's angles: a study targeting 30 degrees is analysed at 30 degrees,
and the paper's 0/45-degree table is set beside it only when those are the study's angles."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.aggregate.stats import seed_statistics
from analysis.paper.reference import PAPER
from analysis.report.document import write_report
from analysis.table.study_modes import StudyModes, evaluated_angles, study_modes
from tests.support.html_page import Page
from tests.support.synthetic import synthetic_study


def render(df: pd.DataFrame, out: Path, gate_stats: dict | None = None, **options) -> tuple[dict, Page, str, str]:
    paths = write_report(df, out, {}, gate_stats or {}, **options)
    html = paths["html"].read_text(encoding="utf-8")
    page = Page()
    page.feed(html)
    return paths, page, html, paths["markdown"].read_text(encoding="utf-8")


def test_the_modes_come_from_the_table() -> None:
    df, _ = synthetic_study(seeds=2, sweep=False, target=30.0)
    modes = study_modes(df)
    assert (modes.target, modes.retention, modes.scope, modes.targets) == (30.0, 0.0, "", (30.0,))
    assert (modes.target_metric, modes.retention_metric, modes.selection_metric) == ("acc_30", "acc_0", "val_acc_30")
    assert study_modes(seed_statistics(df)).target == 30.0  # a statistics table says the same
    assert evaluated_angles(["acc_m30", "val_acc_22p5", "acc_45_hard", "acc_0_mean", "accuracy"]) == [-30.0, 0.0, 22.5]
    # the original mode is the other evaluated angle, 0 preferred
    assert study_modes(pd.DataFrame({"target_angle": [30.0], "acc_30": [0.8], "acc_60": [0.7]})).retention == 60.0
    both = pd.DataFrame({"target_angle": [30.0], "acc_30": [0.8], "acc_60": [0.7], "acc_0": [0.9]})
    assert study_modes(both).retention == 0.0


def test_a_table_without_the_target_column_assumes_the_default_and_says_so() -> None:
    df, _ = synthetic_study(seeds=2, sweep=False)
    modes = study_modes(df.drop(columns=["target_angle"]))
    assert (modes.target, modes.retention) == (45.0, 0.0)
    assert "no target_angle column" in modes.describe() and "assumed" in modes.describe()
    assert "no target_angle column" not in study_modes(df).describe()


def test_several_targets_analyse_the_primary_one_and_say_so() -> None:
    a, _ = synthetic_study(seeds=2, sweep=False, target=30.0)
    b, _ = synthetic_study(seeds=2, sweep=False)
    both = pd.concat([a, b], ignore_index=True)
    modes = study_modes(both)
    assert (modes.target, modes.targets, modes.several_targets) == (45.0, (30.0, 45.0), True)
    assert "2 target angles (30°, 45°)" in modes.scope and "the 45° trials only" in modes.scope
    assert set(modes.analysed(both)["target_angle"]) == {45.0} and len(modes.analysed(both)) == len(b)
    without_45 = study_modes(pd.concat([a, a.assign(target_angle=60.0)], ignore_index=True))
    assert without_45.target == 30.0 and "the first target" in without_45.scope


@pytest.fixture(scope="module")
def report_30(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Page, str, str]:
    """A study of the angles 0 and 30, targeting 30: every method, sweeps, three seeds, two failures."""
    df, gate_stats = synthetic_study(seeds=3, target=30.0)
    return render(df, tmp_path_factory.mktemp("target-30"), gate_stats)


def test_a_30_degree_study_gets_fronts_at_30_degrees(report_30) -> None:
    paths, page, _, _ = report_30
    for name in ("accuracy_vs_params", "accuracy_vs_retention"):
        assert paths[f"figure:pareto-{name}"].is_file()
        header, *rows = page.tables[f"front-table-{name}"]
        assert header[1] == "accuracy, target mode (30°) (mean ± 95% CI)"
        assert any(row[-1] == "yes" for row in rows) and all(row[1] != "-" for row in rows)
    assert page.tables["front-table-accuracy_vs_retention"][0][2] == "accuracy, original mode (0°) (mean ± 95% CI)"
    for figure in ("accuracy-vs-params", "sensitivity-gate-sharpness", "lora-rank", "gate-heatmaps"):
        assert paths[f"figure:{figure}"].is_file(), figure


def test_a_30_degree_study_gets_statistics_and_significance_at_30_degrees(report_30) -> None:
    _, page, html, _ = report_30
    header, *rows = page.tables["seed-statistics-table"]
    assert "acc 30° (mean ± 95% CI)" in header and "acc 0° (mean ± 95% CI)" in header
    assert all(row[header.index("acc 30° (mean ± 95% CI)")] != "-" for row in rows)
    _, *compared = page.tables["significance-table-acc-30"]
    assert len(compared) == len(rows) - 1 and any(row[-1] == "yes" for row in compared)
    assert page.tables["significance-table-acc-0"][1:]
    # the representatives were chosen on val_acc_30: TauGate has one, and it is the significance reference
    assert "acc_30 against taugate" in html
    header, *rows = page.tables["interpretability-table"]
    assert "active at 30° (mean ± std)" in header and rows


def test_a_30_degree_study_says_the_paper_does_not_apply(report_30) -> None:
    _, page, html, markdown = report_30
    said = "The reference paper reports the target mode at 45° and the original mode at 0°; this study targets 30°"
    for text in (html, markdown):
        assert said in text
        assert "not in this study" not in text  # not one "not in this study" per method
    assert {"paper-mismatch", "fidelity-mismatch", "verdicts-mismatch"} <= page.ids
    assert page.tables["paper-table"][1:] == [["none"]] and page.tables["fidelity-table"][1:] == [["none"]]
    verdicts = page.tables["verdicts-table"][1:]
    assert len(verdicts) == 8 and {row[2] for row in verdicts} == {"not testable"}
    assert all("this study targets 30°" in row[3] for row in verdicts)
    assert page.tables["metadata-table"][-1][1].startswith("target 30°, original 0°; target from the results table")
    assert '<span id="summary-modes">target mode 30°, original mode 0°</span>' in html


def test_a_reference_at_the_studys_angles_is_compared(tmp_path: Path) -> None:
    df, gate_stats = synthetic_study(seeds=2, sweep=False, failures=False, target=30.0)
    raw = PAPER.model_dump(exclude_none=True)
    raw |= {"name": "ours-at-30", "target_angle": 30.0}
    for row in raw["methods"].values():
        row["cells"] = {k.replace("acc_45", "acc_30"): v for k, v in row["cells"].items()}
    reference = tmp_path / "at-30.yaml"
    reference.write_text(yaml.safe_dump(raw))
    _, page, html, _ = render(df, tmp_path / "report", gate_stats, calibration={"reference": str(reference)})
    header, *cells = page.tables["fidelity-table"]
    assert {row[header.index("metric")] for row in cells} == {"acc_0", "acc_30"} and len(cells) == 8
    assert "fidelity-mismatch" not in page.ids
    assert "paper-mismatch" in page.ids  # the paper's own table is still at 45 degrees


def test_a_table_with_several_targets_is_analysed_at_its_primary_target(tmp_path: Path) -> None:
    a, _ = synthetic_study(seeds=2, sweep=False, target=30.0)
    b, _ = synthetic_study(seeds=2, sweep=False)
    _, page, html, markdown = render(pd.concat([a, b], ignore_index=True), tmp_path)
    assert "modes-scope" in page.ids and "the 45° trials only" in markdown
    statistics = page.tables["seed-statistics-table"]
    assert len(statistics) > 2 and all("30" not in " ".join(row) for row in statistics[1:] if "target" in row)
    assert any(src.startswith("figures/pareto") for src in page.images)


def test_the_45_degree_report_reads_its_target_from_the_table(tmp_path: Path) -> None:
    """With or without the target_angle column a 45-degree study reports the same, and says where 45 came from."""
    df, gate_stats = synthetic_study(seeds=2)
    reports = {}
    for name, table in (("with", df), ("without", df.drop(columns=["target_angle"]))):
        _, _, _, markdown = render(table, tmp_path / name, gate_stats)
        reports[name] = markdown
    assert (
        "modes (read from the results table)**: target 45°, original 0°; target from the results table"
        in (reports["with"])
    )
    assert "the results table has no target_angle column" in reports["without"]

    def content(markdown: str) -> list[str]:
        return [line.replace("target_angle=45, ", "") for line in markdown.splitlines()
                if not line.startswith(("Generated", "- **modes"))]  # fmt: skip

    assert content(reports["with"]) == content(reports["without"])
    assert "| acc 45° (mean ± 95% CI) |" in reports["with"] and "### acc_45 against taugate" in reports["with"]


def test_study_modes_is_a_value() -> None:
    assert StudyModes(30.0, 0.0).keys == ("0", "30") and StudyModes(-22.5, 0.0).target_label == "target mode (-22.5°)"
