"""Figures: every plot is written as a PNG for a full study and skipped, not failed, without its data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from matplotlib.image import imread

from analysis.aggregate.pareto import fronts, pareto_sets
from analysis.aggregate.stats import seed_statistics
from analysis.figures import gate_plots, tradeoff_plots
from analysis.table.study_modes import study_modes
from tests.support.synthetic import synthetic_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def full() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    df, gate_stats = synthetic_study(seeds=3)
    return df, seed_statistics(df), gate_stats


@pytest.fixture(scope="module")
def smoke() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Two seeds, the paper's five methods, no sweep: what a smoke study produces."""
    df, gate_stats = synthetic_study(seeds=2, sweep=False)
    return df, seed_statistics(df), gate_stats


def assert_png(path: Path | None) -> None:
    assert path is not None and path.is_file()
    image = imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0  # not a blank canvas


def test_pareto_plots_for_every_front(full, tmp_path: Path) -> None:
    _, stats, _ = full
    for name, front in pareto_sets(stats).items():
        assert_png(tradeoff_plots.plot_pareto(front, fronts(study_modes(stats))[name], tmp_path / f"{name}.png"))


def test_sensitivity_plots_for_a_sweep(full, tmp_path: Path) -> None:
    _, stats, _ = full
    assert_png(tradeoff_plots.plot_sensitivity(stats, "gate_sharpness", tmp_path / "s.png", xscale="log"))
    assert_png(tradeoff_plots.plot_sensitivity(stats, "sparsity_weight", tmp_path / "lambda.png", xscale="symlog"))
    assert_png(tradeoff_plots.plot_lora_rank(stats, tmp_path / "rank.png"))
    assert_png(tradeoff_plots.plot_accuracy_vs_params(stats, tmp_path / "params.png"))


def test_sensitivity_lines_join_configurations_differing_only_in_the_swept_knob(full) -> None:
    _, stats, _ = full
    lines = dict(tradeoff_plots._series(stats[stats["gate_sharpness"].notna()], "gate_sharpness"))
    # the s sweep at lambda=0 is one line; the lambda sweep at s=10 contributes single points
    assert sorted(lines["taugate λ=0"]["gate_sharpness"]) == [1.0, 3.0, 10.0, 30.0]
    rank_lines = tradeoff_plots._series(stats[stats["method"] == "lora"], "lora_rank")
    assert len(rank_lines) == 1  # alpha moves with the rank: it does not split the line


def test_heatmaps_of_a_gated_trial(full, tmp_path: Path) -> None:
    df, _, gate_stats = full
    trial = df[(df["method"] == "taugate") & (df["status"] == "ok")]["trial_id"].iloc[0]
    assert_png(gate_plots.plot_gate_heatmaps(gate_stats[trial], tmp_path / "heat.png", title="t"))


def test_smoke_study_skips_the_sweep_figures(smoke, tmp_path: Path) -> None:
    _, stats, _ = smoke
    assert tradeoff_plots.plot_sensitivity(stats, "gate_sharpness", tmp_path / "s.png") is None
    assert tradeoff_plots.plot_sensitivity(stats, "sparsity_weight", tmp_path / "l.png", xscale="symlog") is None
    assert tradeoff_plots.plot_lora_rank(stats, tmp_path / "r.png") is None
    assert not list(tmp_path.iterdir())
    for name, front in pareto_sets(stats).items():
        assert_png(tradeoff_plots.plot_pareto(front, fronts(study_modes(stats))[name], tmp_path / f"{name}.png"))
    assert_png(tradeoff_plots.plot_accuracy_vs_params(stats, tmp_path / "params.png"))


def test_too_little_data_skips_instead_of_crashing(smoke, tmp_path: Path) -> None:
    _, stats, _ = smoke
    one = stats.iloc[[0]]
    for name, front in pareto_sets(one).items():
        assert tradeoff_plots.plot_pareto(front, fronts(study_modes(stats))[name], tmp_path / f"{name}.png") is None
    assert tradeoff_plots.plot_accuracy_vs_params(one, tmp_path / "p.png") is None
    assert tradeoff_plots.plot_sensitivity(stats, "not_a_column", tmp_path / "x.png") is None
    empty = seed_statistics(pd.DataFrame({"trial_id": [], "status": [], "method": [], "seed": [], "acc_45": []}))
    assert tradeoff_plots.plot_accuracy_vs_params(empty, tmp_path / "e.png") is None
    assert tradeoff_plots.plot_lora_rank(empty, tmp_path / "e.png") is None
    assert gate_plots.plot_gate_heatmaps({}, tmp_path / "h.png") is None
    assert gate_plots.plot_gate_heatmaps({"modes": {"0": {"rate": [[0.5]]}}}, tmp_path / "h.png") is None
    assert not list(tmp_path.iterdir())


def test_one_seed_has_no_error_bars_but_still_plots(tmp_path: Path) -> None:
    df, _ = synthetic_study(seeds=1)
    stats = seed_statistics(df)
    assert stats["acc_45_std"].isna().all()
    assert_png(tradeoff_plots.plot_sensitivity(stats, "gate_sharpness", tmp_path / "s.png"))
    front = pareto_sets(stats)["accuracy_vs_params"]
    assert_png(tradeoff_plots.plot_pareto(front, fronts(study_modes(stats))["accuracy_vs_params"], tmp_path / "p.png"))


def objective(trial: optuna.Trial) -> tuple[float, float]:
    method = trial.suggest_categorical("method", ["taugate", "lora"])
    s = trial.suggest_float("gate_sharpness", 1, 100, log=True)
    rank = trial.suggest_int("lora_rank", 1, 16) if method == "lora" else 0  # conditional parameter
    accuracy = 0.8 + 0.02 * np.log10(s) + 0.001 * rank
    return accuracy, 512 + 1306 * rank


def test_optuna_importances_single_and_multi_objective(tmp_path: Path) -> None:
    sampler = optuna.samplers.RandomSampler(seed=0)
    single = optuna.create_study(direction="maximize", sampler=sampler)
    single.optimize(lambda t: objective(t)[0], n_trials=20)
    assert_png(gate_plots.plot_param_importances(single, tmp_path / "single.png"))

    multi = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    multi.optimize(objective, n_trials=20)
    assert_png(gate_plots.plot_param_importances(multi, tmp_path / "multi.png"))


def test_optuna_importances_skip_with_too_few_trials(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize")
    assert gate_plots.plot_param_importances(study, tmp_path / "none.png") is None
    study.optimize(lambda t: objective(t)[0], n_trials=1)
    assert gate_plots.plot_param_importances(study, tmp_path / "one.png") is None
