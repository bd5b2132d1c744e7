"""The report's Optuna importance figure: one panel per objective, named by the objective; a
configuration drawn twice counts once; trainable_params is assessed only over the parameters that
can change it (the method and its shape fields), so gate sharpness never gets importance for it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import optuna

from analysis.figures.gate_plots import param_importances, plot_param_importances, shape_params

OBJECTIVES = ["val_acc_45", "trainable_params", "val_sparsity"]


def searched_study(named: bool = True, repeats: int = 0) -> optuna.Study:
    """A real multi-objective Optuna study over the conditional space the service searches: gate
    sharpness and sparsity weight exist only for the gated methods, the rank only for LoRA. A
    threshold-only gate has half TauGate's trainable parameters, so the gate's knobs of the few
    threshold-only trials look "important" for trainable_params (Optuna alone gives them about 0.4
    here) unless the assessment knows they cannot change a parameter count."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize", "maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))  # fmt: skip
    if named:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(OBJECTIVES)

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        method = trial.suggest_categorical("method", ["taugate", "threshold_only", "lora"])
        if method != "lora":
            sharpness = trial.suggest_float("gate_sharpness", 1, 100, log=True)
            weight = trial.suggest_float("sparsity_weight", 1e-5, 0.1, log=True)
            return 0.6 + sharpness / 500, 512.0 if method == "taugate" else 256.0, min(0.9, weight * 9)
        rank = trial.suggest_int("lora_rank", 1, 16, log=True)
        return 0.7 + rank / 100, 1000.0 * rank, 0.1

    study.optimize(objective, n_trials=40)
    for trial in study.trials[:repeats]:  # repeated draws of finished configurations, same values
        study.add_trial(optuna.trial.create_trial(params=trial.params, distributions=trial.distributions,
                                                  values=trial.values))  # fmt: skip
    return study


def distinct(study: optuna.Study) -> int:
    return len({json.dumps(t.params, sort_keys=True) for t in study.trials})


def test_each_panel_names_its_objective_and_the_figure_is_written(tmp_path: Path):
    study = searched_study()
    panels = param_importances(study)
    assert [p.metric for p in panels] == OBJECTIVES
    assert all(p.title.startswith(f"{p.metric} ({distinct(study)} configurations)") for p in panels)
    assert plot_param_importances(searched_study(), tmp_path / "importances.png").is_file()


def test_a_study_stored_without_names_takes_the_specs_objectives():
    study = searched_study(named=False)
    assert [p.metric for p in param_importances(study, OBJECTIVES)] == OBJECTIVES
    assert [p.metric for p in param_importances(study)] == ["objective 0", "objective 1", "objective 2"]


def test_trainable_params_get_importance_only_from_what_can_change_them():
    panels = {p.metric: p for p in param_importances(searched_study())}
    shape = panels["trainable_params"]
    assert shape.restricted and set(shape.importances) == {"method", "lora_rank"} <= shape_params()
    assert shape.importances["method"] > 0
    # the gate's knobs cannot change a parameter count, yet Optuna alone would rank them
    unrestricted = optuna.importance.get_param_importances(searched_study(), target=lambda t: t.values[1])
    assert unrestricted["gate_sharpness"] + unrestricted["sparsity_weight"] > 0.2
    # every other objective is assessed over every searched parameter
    for metric in ("val_acc_45", "val_sparsity"):
        assert not panels[metric].restricted
        assert set(panels[metric].importances) == {"method", "gate_sharpness", "sparsity_weight", "lora_rank"}
    assert panels["val_acc_45"].importances["gate_sharpness"] > 0


def test_a_configuration_drawn_twice_is_assessed_once():
    study = searched_study(repeats=5)
    assert len(study.trials) == 45
    assert {p.configurations for p in param_importances(study)} == {distinct(study)} == {distinct(searched_study())}
