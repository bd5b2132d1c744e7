"""The intervention's tests as one family: Holm-corrected over the silenced modes, each p beside its
effect size and CI, in the summary, in the report's table and as the figures' marks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.aggregate.stats import holm
from analysis.figures.mode_plots import (
    SURVIVES_LABEL,
    intervention_budgets_figure,
    intervention_figure,
    survives_correction,
)
from analysis.per_mode.interventions import CAUSAL_P, summarise
from analysis.report.sections.modes_section import INTERVENTION_HEADER, findings, intervention_table

# per mode, five seeds' paired differences (attributed drop - random drop): a clear effect, one whose raw
# one-sided p is below 0.05 but not once corrected for three tests, and none
DIFFERENCES = {
    0.0: [0.30, 0.32, 0.29, 0.31, 0.33],
    45.0: [0.05, 0.01, 0.04, 0.06, -0.01],
    90.0: [0.01, -0.02, 0.0, 0.02, -0.01],
}
RANDOM_DROP = 0.1


def family_rows(differences: dict[float, list[float]] = DIFFERENCES) -> pd.DataFrame:
    rows = []
    for angle, values in differences.items():
        for seed, difference in enumerate(values):
            common = {"seed": seed, "silenced": angle, "evaluated": angle, "n_units": 13, "draw": 0}
            rows.append(common | {"control": "attributed", "drop": RANDOM_DROP + difference})
            rows.append(common | {"control": "random", "drop": RANDOM_DROP})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def summary() -> pd.DataFrame:
    return summarise(family_rows()).set_index("silenced", drop=False)


def test_each_modes_p_is_its_one_sided_paired_test(summary: pd.DataFrame) -> None:
    for angle, values in DIFFERENCES.items():
        expected = stats.ttest_1samp(values, 0.0, alternative="greater").pvalue
        assert summary.loc[angle, "p"] == pytest.approx(expected)
        assert summary.loc[angle, "n_seeds"] == 5


def test_the_modes_are_one_family_corrected_by_holm(summary: pd.DataFrame) -> None:
    raw = summary["p"].to_numpy(float)
    assert summary["p_holm"].to_numpy(float) == pytest.approx(holm(raw))
    assert (summary["p_holm"] >= summary["p"]).all()
    # 45 degrees passes uncorrected and fails corrected: the verdict follows the corrected p
    assert summary.loc[45.0, "p"] < CAUSAL_P <= summary.loc[45.0, "p_holm"]
    assert [summary.loc[a, "causal_holds"] for a in DIFFERENCES] == [True, False, False]
    assert summary.loc[45.0, "causal"].startswith("does not hold: Holm-corrected p = ")
    assert f"raw one-sided p = {summary.loc[45.0, 'p']:.3g}" in summary.loc[45.0, "causal"]


def test_effect_sizes_come_with_their_confidence_intervals(summary: pd.DataFrame) -> None:
    for angle, values in DIFFERENCES.items():
        values = np.asarray(values)
        half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
        row = summary.loc[angle]
        assert row.difference_mean == pytest.approx(values.mean())
        assert (row.difference_ci_low, row.difference_ci_high) == pytest.approx(
            (values.mean() - half, values.mean() + half)
        )
        assert row.d_z == pytest.approx(values.mean() / values.std(ddof=1))


def test_a_mode_that_cannot_be_tested_stays_out_of_the_family() -> None:
    rows = family_rows()
    one_seed = rows[(rows.silenced != 90.0) | (rows.seed == 0)]  # 90 degrees: one seed, not testable
    summary = summarise(one_seed).set_index("silenced")
    assert summary.loc[90.0, "causal_holds"] is None and math.isnan(summary.loc[90.0, "p_holm"])
    tested = summary.loc[[0.0, 45.0]]
    assert tested["p_holm"].to_numpy(float) == pytest.approx(holm(tested["p"].to_numpy(float)))  # m = 2


def fake_analysis(summary: pd.DataFrame) -> SimpleNamespace:
    counts = pd.DataFrame(
        {"seed": s, "mode": a, "active": 60, "exclusive": 0, "attributed": 13, "common_core": 40}
        for a in summary["silenced"] for s in range(5)
    )  # fmt: skip
    parameters = {"causal_rule": "the rule"}
    return SimpleNamespace(summary=summary.reset_index(drop=True), unit_counts=counts, parameters=parameters,
                           core_by_gap=pd.DataFrame(columns=["gap"]))  # fmt: skip


def test_the_intervention_table_puts_raw_and_corrected_p_beside_the_effect_and_its_ci(summary) -> None:
    table = intervention_table(fake_analysis(summary))
    header = list(table.columns)
    assert header == list(INTERVENTION_HEADER)
    for name in ("n seeds", "difference attributed - random [95% CI]", "d_z", "p (one-sided, raw)",
                 "p (Holm-corrected)", "exclusive units", "units silenced (attributed)"):  # fmt: skip
        assert name in header
    assert not any("specific" in column for column in header)
    for row, (_, expected) in zip(table.rows, summary.iterrows(), strict=True):
        cells = dict(zip(header, row, strict=True))
        assert cells["n seeds"] == "5"
        assert cells["p (one-sided, raw)"] == f"{expected.p:.3g}"
        assert cells["p (Holm-corrected)"] == f"{expected.p_holm:.3g}"
        assert cells["difference attributed - random [95% CI]"] == (
            f"{expected.difference_mean:+.3f} [{expected.difference_ci_low:+.3f}, {expected.difference_ci_high:+.3f}]"
        )
    assert table.highlight == [h is True for h in summary["causal_holds"]]
    assert "Holm-corrected over the 3 modes" in findings(fake_analysis(summary))[0]


def marked_angles(figure) -> set[str]:
    """The tick labels (first line: the angle) under the stars of every panel of an intervention figure."""
    marked = set()
    for ax in figure.axes:
        stars = [line for line in ax.get_lines() if line.get_gid() == "survives-correction"]
        assert len(stars) == 1 and stars[0].get_label() == SURVIVES_LABEL
        ticks = {
            round(t): label.get_text().split("\n")[0]
            for t, label in zip(ax.get_xticks(), ax.get_xticklabels(), strict=True)
        }
        marked |= {ticks[round(x)] for x in stars[0].get_xdata()}
    return marked


def test_the_figure_marks_exactly_the_modes_that_survive_the_correction(summary: pd.DataFrame) -> None:
    survivors = {f"{a:g}°" for a in summary.loc[summary["p_holm"] < CAUSAL_P, "silenced"]}
    assert survivors == {"0°"}  # and not 45°, whose raw p is below 0.05
    assert list(survives_correction(summary)) == [a == 0.0 for a in summary["silenced"]]
    assert marked_angles(intervention_figure(summary)) == survivors
    legend = intervention_figure(summary).axes[0].get_legend()
    assert "Holm-corrected p < 0.05" in [t.get_text().split(" (")[0] for t in legend.get_texts()]


def test_each_budget_panel_marks_its_own_survivors(summary: pd.DataFrame) -> None:
    none_survive = summarise(family_rows({a: DIFFERENCES[90.0] for a in DIFFERENCES}))
    assert not survives_correction(none_survive).any()
    figure = intervention_budgets_figure({"dense": summary, "sparse": none_survive})
    assert marked_angles(figure) == {"0°"}
    assert "(Holm)" in figure.axes[0].get_title()
