"""write_report: three files, figures on disk and referenced relatively, failures listed, CSV round-trips."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pandas as pd
import pytest

from analysis.paper.paper_table import PAPER_TABLE
from analysis.report.document import write_report
from tests.support.html_page import Page
from tests.support.synthetic import PROTOCOL_GRID, synthetic_study

METADATA = {
    "spec": {"name": "ablation", "seeds": 4, "methods": ["taugate", "lora"]},
    "git_commit": "0123abcd",
    "hardware": "2 CPU cores",
    "wall_time_s": 321.5,
    "note": "<script>alert(1)</script>",
}


@pytest.fixture(scope="module")
def study() -> tuple[pd.DataFrame, dict]:
    """Every method, four seeds, sweeps over s, lambda and the LoRA rank, one diverged and one errored trial."""
    return synthetic_study(seeds=4)


@pytest.fixture(scope="module")
def report(study, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Page]:
    df, gate_stats = study
    paths = write_report(df, tmp_path_factory.mktemp("report"), METADATA, gate_stats)
    page = Page()
    page.feed(paths["html"].read_text(encoding="utf-8"))
    return paths, page


def test_writes_html_markdown_and_csv(report) -> None:
    paths, _ = report
    for name in ("html", "markdown", "csv"):
        assert paths[name].is_file() and paths[name].stat().st_size > 0
    assert paths["html"].name == "report.html" and paths["markdown"].name == "report.md"
    assert paths["csv"].name == "results.csv"
    assert paths["figures"].is_dir()


def test_the_study_has_the_failures_the_test_relies_on(study) -> None:
    df, _ = study
    assert sorted(df.loc[df["status"] != "ok", "status"]) == ["diverged", "error"]
    assert df["gate_sharpness"].nunique() > 2 and df["sparsity_weight"].nunique() > 2


def test_every_image_exists_and_is_referenced_relatively(report) -> None:
    paths, page = report
    out = paths["html"].parent
    assert len(page.images) >= 9  # 4 fronts, efficiency, 3 sensitivity, heatmaps
    for src in page.images:
        assert not src.startswith(("/", "http:", "https:", "file:", "data:")), src
        assert (out / src).is_file(), src
    figures = {key: path for key, path in paths.items() if key.startswith("figure:")}
    assert {(out / src).resolve() for src in page.images} == {p.resolve() for p in figures.values()}


def test_opens_offline_nothing_is_fetched(report) -> None:
    paths, page = report
    html = paths["html"].read_text(encoding="utf-8")
    assert all(link.startswith("#") for link in page.links), page.links
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_paper_table_beside_ours(report, study) -> None:
    _, page = report
    assert "paper-table" in page.ids
    header, *rows = page.tables["paper-table"]
    assert "acc 45° paper (mean ± std)" in header and "acc 45° ours (mean ± std)" in header
    assert [row[0] for row in rows] == [p.label for p in PAPER_TABLE]
    taugate = rows[[p.method for p in PAPER_TABLE].index("taugate")]
    assert taugate[header.index("acc 45° paper (mean ± std)")] == "0.850 ± 0.010"
    assert taugate[header.index("acc 45° ours (mean ± std)")] != "-"
    assert "(n=" in taugate[-1]


def test_sections_have_stable_ids(report) -> None:
    _, page = report
    expected = {
        "summary", "paper", "paper-table", "verdicts", "verdicts-table", "pareto", "sensitivity",
        "seed-statistics", "seed-statistics-table", "significance", "significance-table-acc-45",
        "interpretability", "interpretability-table", "failed-trials", "failed-trials-table", "metadata",
        "metadata-table", "front-accuracy_vs_params", "front-table-accuracy_vs_params", "figure-gate-heatmaps",
        "fidelity", "fidelity-table", "fidelity-scores-table", "fidelity-protocols-table", "sparsity",
        "sparsity-table", "budget", "figure-retention-vs-budget", "figure-ratio-vs-lambda", "figure-fidelity-grid",
    }  # fmt: skip
    assert expected <= page.ids


def test_verdicts_one_per_claim(report) -> None:
    _, page = report
    header, *rows = page.tables["verdicts-table"]
    assert header == ["claim", "rule", "verdict", "numbers (test metrics)"]
    assert len(rows) == 8
    assert {row[2] for row in rows} <= {"reproduced", "direction only", "not reproduced", "not testable"}
    assert all("2·sqrt(σ_ours² + σ_ref²) = " in row[1] for row in rows if row[2] != "not testable" and "acc" in row[1])


def test_every_spread_label_says_which_spread_and_which_n(report) -> None:
    """The verdicts' tolerance is an equivalence margin on single runs, the fidelity z comes in both scales,
    the reference's n is stated as assumed, and the significance tables name their correction."""
    paths, page = report
    markdown, html = (" ".join(paths[kind].read_text(encoding="utf-8").split()) for kind in ("markdown", "html"))
    for text in (markdown, html):  # whitespace folded: the templates wrap their lines
        assert "equivalence margin 2·sqrt(σ_ours² + σ_ref²), 2 × the spread of a difference of single runs" in text
        assert "sqrt(σ_ours²/n_ours + σ_ref²/n_ref)" in text and "n_ref = 5 assumed" in text
        assert "σ of a difference of two means" not in text  # the old label: a single-run spread called a mean's
        assert "no multiple-comparison" not in text.lower() and "Holm-corrected p" in text
    _, *rows = page.tables["verdicts-table"]
    judged = [row[1] for row in rows if row[2] != "not testable" and "acc" in row[1]]
    assert judged and all("n_ours = 4 seeds" in rule and "n_ref = 5 assumed" in rule for rule in judged)
    header = page.tables["fidelity-table"][0]
    assert "z (single runs)" in header and "z (means, n_ref assumed)" in header
    assert "spread of a difference of single runs" in markdown and "n_ref = 5 assumed" in markdown


def test_front_members_are_highlighted(report) -> None:
    paths, _ = report
    html = paths["html"].read_text(encoding="utf-8")
    front_html = html.split('id="front-table-accuracy_vs_params"')[1].split("</table>")[0]
    highlighted = front_html.count('class="highlight"')
    assert 0 < highlighted == front_html.count("<td>yes</td>")


def test_failed_trials_are_listed_with_config_and_error(report, study) -> None:
    df, _ = study
    _, page = report
    _, *rows = page.tables["failed-trials-table"]
    failed = df[df["status"] != "ok"]
    assert sorted(row[0] for row in rows) == sorted(failed["trial_id"])
    by_id = {row[0]: row for row in rows}
    for _, trial in failed.iterrows():
        row = by_id[trial["trial_id"]]
        assert row[1] == trial["status"]
        assert f"method={trial['method']}" in row[2]
        if isinstance(trial["error"], str):
            assert trial["error"] in row[4]
    assert "nan" not in " ".join(" ".join(r) for r in rows).lower()


def test_interpretability_counts_and_jaccard(report) -> None:
    _, page = report
    header, *rows = page.tables["interpretability-table"]
    assert "Jaccard (active sets; mean ± std)" in header
    assert any(row[0].startswith("taugate") for row in rows)
    jaccard = float(rows[0][header.index("Jaccard (active sets; mean ± std)")].split(" ")[0])
    assert 0.0 <= jaccard <= 1.0


def test_metadata_shown_as_given_and_escaped(report) -> None:
    paths, page = report
    html = paths["html"].read_text(encoding="utf-8")
    values = {row[0]: row[1] for row in page.tables["metadata-table"]}
    assert values["git_commit"] == "0123abcd" and values["wall_time_s"] == "321.5"
    assert '"name": "ablation"' in values["spec"]
    assert values["note"] == "<script>alert(1)</script>"  # as text: the parser saw it escaped
    assert "&lt;script&gt;" in html


def test_results_csv_round_trips_the_rows(report, study) -> None:
    df, _ = study
    paths, _ = report
    again = pd.read_csv(paths["csv"])
    assert list(again.columns) == list(df.columns)
    pd.testing.assert_frame_equal(again, df, check_dtype=False)


def test_markdown_mirrors_the_html(report) -> None:
    paths, _ = report
    markdown = paths["markdown"].read_text(encoding="utf-8")
    out = paths["markdown"].parent
    images = [line.split("](")[1].rstrip(")") for line in markdown.splitlines() if line.startswith("![")]
    assert images and all((out / image).is_file() for image in images)
    headings = (
        "## Our results beside the paper's", "## Fidelity to the reference", "## Sparsity", "## The paper's claims",
        "## Retention against the specialisation budget", "## Failed trials (2)",
    )  # fmt: skip
    for heading in headings:
        assert heading in markdown
    assert "| TauGate | 512 |" in markdown


def test_smoke_study_report_notes_missing_figures(tmp_path: Path) -> None:
    df, gate_stats = synthetic_study(seeds=2, sweep=False)
    paths = write_report(df, tmp_path, {}, gate_stats, calibration={"sparsity_target": 0.9})
    html = paths["html"].read_text(encoding="utf-8")
    assert "does not sweep gate_sharpness" in html and "does not sweep the LoRA rank" in html
    assert "not reached by this λ sweep" in html and "does not sweep sparsity_weight" in html
    assert "no Optuna study was given" in html
    assert "figure:sensitivity-gate-sharpness" not in paths
    page = Page()
    page.feed(html)
    assert all((tmp_path / src).is_file() for src in page.images)


def test_degenerate_studies_still_write_a_report(tmp_path: Path) -> None:
    df, _ = synthetic_study(seeds=1, sweep=False, failures=False)
    paths = write_report(df, tmp_path / "one-seed", {"title": "one seed"}, None)
    assert "one seed" in paths["html"].read_text(encoding="utf-8")

    failed = df.assign(status="error", error="boom", acc_0=math.nan, acc_45=math.nan)
    paths = write_report(failed, tmp_path / "all-failed", {}, {})
    page = Page()
    page.feed(paths["html"].read_text(encoding="utf-8"))
    assert len(page.tables["failed-trials-table"]) == 1 + len(df)
    assert {row[2] for row in page.tables["verdicts-table"][1:]} == {"not testable"}


def test_optuna_importances_are_included(study, tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    search.optimize(lambda t: t.suggest_float("gate_sharpness", 1, 100, log=True) / 100, n_trials=12)
    df, gate_stats = study
    paths = write_report(df, tmp_path, {}, gate_stats, optuna_study=search)
    assert paths["figure:optuna-importances"].is_file()


def degenerate_tables() -> dict[str, pd.DataFrame]:
    df, _ = synthetic_study(seeds=2)
    columns = ["trial_id", "status", "method", "seed", "acc_45"]
    return {
        "list-valued config": df.assign(hidden=[[128, 128]] * len(df), dataset="mnist5k", lr=math.nan),
        "no status column": df.drop(columns=["status", "error"]),
        "one method": df[df["method"] == "taugate"],
        "minimal columns": df[columns],
        "one trial": df[columns].iloc[:1],
        "no trials": df.iloc[0:0],
        "empty frame": pd.DataFrame(),
    }


@pytest.mark.parametrize("case", list(degenerate_tables()))
def test_unusual_tables_still_write_a_complete_report(case: str, tmp_path: Path) -> None:
    df = degenerate_tables()[case]
    paths = write_report(df, tmp_path, {"case": case}, {})
    page = Page()
    page.feed(paths["html"].read_text(encoding="utf-8"))
    assert {"paper-table", "verdicts-table", "failed-trials-table"} <= page.ids
    assert all((tmp_path / src).is_file() for src in page.images)
    assert paths["csv"].is_file() and paths["markdown"].is_file()


def test_fidelity_and_sparsity_of_a_one_protocol_study(report) -> None:
    paths, page = report
    header, *cells = page.tables["fidelity-table"]
    assert len(cells) == 8  # four methods x acc_0, acc_45 (the paper's cells)
    assert {row[header.index("metric")] for row in cells} == {"acc_0", "acc_45"}
    assert all(row[header.index("role")] == "" for row in cells)  # nothing was fitted: no predictions
    scores = dict(page.tables["fidelity-scores-table"][1:])
    assert float(scores["every cell"]) < 0.02
    readings = {row[0]: row for row in page.tables["sparsity-table"][1:]}
    assert set(readings) == {"high_activation_ratio", "active_ratio", "strong_activation_ratio", "mean_gate"}
    assert readings["high_activation_ratio"][-1] == "0.28" and readings["active_ratio"][3] != "-"  # frozen's
    html = paths["html"].read_text(encoding="utf-8")
    assert "soft gate above 0.5 is the hard gate" in html
    assert "does not vary epochs or lr_scale" in html and "runs one protocol" in html
    assert "<em>validation</em> accuracy of the target mode" in html


@pytest.fixture(scope="module")
def calibration_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Page, pd.DataFrame]:
    """A calibration study: the paper's five methods and a lambda sweep over a 3 x 3 grid of epochs x lr_scale."""
    df, gate_stats = synthetic_study(seeds=3, sweep=False, failures=False, protocols=PROTOCOL_GRID)
    lambdas = df[df["method"] == "taugate"].copy()
    extra = []
    for weight in (0.01, 0.1, 1.0):
        extra.append(lambdas.assign(sparsity_weight=weight, trial_id=lambdas["trial_id"] + f"-{weight}",
                                    high_activation_ratio=0.28 / (1 + 10 * weight),
                                    val_high_activation_ratio=0.28 / (1 + 10 * weight) + 0.001))  # fmt: skip
    df = pd.concat([df, *extra], ignore_index=True)
    calibration = {"reference": "paper", "held_out": ["taugate"], "sparsity_target": 0.05}
    paths = write_report(df, tmp_path_factory.mktemp("calibration"), {}, gate_stats, calibration=calibration)
    page = Page()
    page.feed(paths["html"].read_text(encoding="utf-8"))
    return paths, page, df


def test_calibration_chooses_a_protocol_and_labels_predictions(calibration_report) -> None:
    paths, page, _ = calibration_report
    header, *protocols = page.tables["fidelity-protocols-table"]
    assert len(protocols) == len(PROTOCOL_GRID)
    chosen = [row for row in protocols if row[-1] == "yes"]
    assert len(chosen) == 1
    validation = [float(row[header.index("validation score")]) for row in protocols]
    assert float(chosen[0][header.index("validation score")]) == min(validation)
    for key in ("figure:fidelity-grid", "figure:retention-vs-budget", "figure:ratio-vs-lambda"):
        assert paths[key].is_file(), key
    fidelity_header, *cells = page.tables["fidelity-table"]
    roles = {row[0]: row[fidelity_header.index("role")] for row in cells}
    assert roles["TauGate"] == "prediction (held out of the fit)" and roles["LoRA (r=8)"] == "fitted"
    paper_header, *rows = page.tables["paper-table"]
    taugate = next(row for row in rows if row[0] == "TauGate")
    assert "prediction (held out of the fit)" in taugate[-1]
    html = paths["html"].read_text(encoding="utf-8")
    assert "Chosen from 9 protocols" in html and "held out of the fit: taugate" in html
    assert "(prediction: held out of the fit)" in page.tables["verdicts-table"][1][0]


def test_sparsity_target_chooses_lambda_on_validation(calibration_report) -> None:
    paths, page, _ = calibration_report
    assert "sparsity-target" in page.ids
    html = paths["html"].read_text(encoding="utf-8")
    target = html.split('id="sparsity-target"')[1].split("</p>")[0]
    assert "λ = 1" in target and "within tolerance" in target  # 0.28 / 11 = 0.025 from 0.05


def test_an_old_study_without_validation_metrics_chooses_nothing(tmp_path: Path) -> None:
    df, gate_stats = synthetic_study(seeds=2, sweep=False)
    old = df.drop(columns=[c for c in df.columns if c.startswith("val_")])
    paths = write_report(old, tmp_path, {}, gate_stats)
    page = Page()
    page.feed(paths["html"].read_text(encoding="utf-8"))
    assert "selection-note" in page.ids
    assert "Selection needs validation metrics: rerun the study" in paths["html"].read_text(encoding="utf-8")
    assert all("no representative" in row[-1] for row in page.tables["paper-table"][1:])
    assert {row[2] for row in page.tables["verdicts-table"][1:]} == {"not testable"}
    assert all(row[3] == "-" for row in page.tables["fidelity-table"][1:])
