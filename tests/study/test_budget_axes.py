"""TauGate's own budget as study axes: its lr_scale, epochs, tau's lr multiplier and a sparsity target reach
the plan, the trial configs and the results-table columns, while the baselines keep the study's protocol;
Optuna searches a budget range only when the spec names it."""

from __future__ import annotations

import optuna
import pytest

from study.spec.loader import SpecError, parse_spec
from study.spec.plan import OWN, planned_trials, trial_config, variants
from study.tune.search import ConditionalSpace

SPEC = {
    "name": "budget-axes", "seeds": [0, 1],
    "methods": {"frozen": {}, "lora": {},
                "taugate": {"sparsity_weight": [0, 3], "tau_lr_multiplier": [1, 25], "lr_scale": [0.2, 1.0],
                            "epochs": 9},
                "threshold_only": {"sparsity_target": [0.3, 0.5]}},
}  # fmt: skip


def test_budget_axes_multiply_only_their_method():
    spec = parse_spec(SPEC)
    grid = variants(spec)
    per_method = {m: sum(v["method"] == m for v in grid) for m in SPEC["methods"]}
    assert per_method == {"frozen": 2, "lora": 2, "taugate": 2 * 2 * 2 * 2, "threshold_only": 2 * 2}
    taugate = [v for v in grid if v["method"] == "taugate"]
    assert {(v["tau_lr_multiplier"], v["lr_scale"], v["epochs"]) for v in taugate} == {
        (m, x, 9) for m in (1, 25) for x in (0.2, 1.0)
    }
    assert all(v[OWN] == ["lr_scale", "epochs"] for v in taugate)
    assert all(OWN not in v for v in grid if v["method"] != "taugate")


def test_budget_values_reach_the_trial_config_and_the_baselines_keep_the_protocol():
    spec = parse_spec(SPEC)
    configs = {(v["method"], v.get("tau_lr_multiplier"), v.get("lr_scale"), v.get("sparsity_target")):
               trial_config(spec, v) for v in variants(spec) if v["seed"] == 0}  # fmt: skip
    fast = configs[("taugate", 25, 1.0, None)]
    assert (fast.tau_lr_multiplier, fast.lr_scale, fast.epochs, fast.sparsity_target) == (25, 1.0, 9, None)
    lora = configs[("lora", None, None, None)]
    assert (lora.lr_scale, lora.epochs, lora.tau_lr_multiplier) == (0.2, 3, 1.0)  # the calibrated protocol
    target = configs[("threshold_only", None, None, 0.5)]
    assert target.sparsity_target == 0.5 and target.epochs == 3


def test_the_table_keeps_the_studys_protocol_and_names_the_methods_own_budget():
    spec = parse_spec(SPEC)
    columns = [entry["columns"] for entry in planned_trials(spec, variants(spec)).values()]
    assert {(c["epochs"], c["lr_scale"]) for c in columns} == {(3, 0.2)}  # one protocol for every method
    taugate = [c for c in columns if c["method"] == "taugate"]
    assert {(c["method_epochs"], c["method_lr_scale"], c["tau_lr_multiplier"]) for c in taugate} == {
        (9, x, m) for x in (0.2, 1.0) for m in (1.0, 25.0)
    }
    assert all("method_epochs" not in c for c in columns if c["method"] != "taugate")
    targeted = [c for c in columns if c["method"] == "threshold_only"]
    assert {c["sparsity_target"] for c in targeted} == {0.3, 0.5}


@pytest.mark.parametrize(
    ("methods", "extra", "field"),
    [
        ({"lora": {"tau_lr_multiplier": [5]}}, {}, "lora.tau_lr_multiplier"),
        ({"taugate": {"sparsity_target": [1.2]}}, {}, "sparsity_target"),
        ({"taugate": {"tau_lr_multiplier": [0]}}, {}, "tau_lr_multiplier"),
        ({"taugate": {"lr_scale": [1, 1]}}, {}, "lr_scale"),
        ({"taugate": {"epochs": [3, -1]}}, {}, "epochs"),
        ({"taugate": {"epochs": [3, 9]}}, {"protocol": {"epochs": [1, 2]}}, "methods.taugate.epochs"),
        ({"taugate": {"lr_scale": [1, 5]}}, {"search": {"kind": "optuna"}}, "methods.taugate.lr_scale"),
        ({"taugate": {"tau_lr_multiplier": [5]}}, {"search": {"kind": "optuna"}}, "methods.taugate.tau_lr_multiplier"),
        ({"taugate": {}}, {"search": {"kind": "optuna", "ranges": {"sparsity_target": {"low": 0, "high": 0.5}}}},
         "sparsity_target"),
    ],
)  # fmt: skip
def test_bad_budget_axes_are_refused_naming_the_field(methods, extra, field):
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_spec({"name": "x", "methods": methods} | extra)


def suggested(spec, seed: int = 0) -> dict:
    """What Optuna's define-by-run space suggests for one trial, and the constants it returns."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    constants = ConditionalSpace(spec)(trial)
    return trial.params | {k: v for k, v in constants.items() if k not in ("base", "seeds")}


def test_optuna_searches_a_budget_range_only_when_the_spec_names_it():
    plain = parse_spec({"name": "x", "methods": {"taugate": {}}, "search": {"kind": "optuna"}})
    assert set(suggested(plain)) == {"method", "gate_sharpness", "sparsity_weight"}
    ranges = {"tau_lr_multiplier": {"low": 1, "high": 50, "log": True}, "lr_scale": {"low": 0.1, "high": 2},
              "epochs": {"low": 2, "high": 6}}  # fmt: skip
    budget = parse_spec({"name": "x", "methods": {"taugate": {}, "lora": {}},
                         "search": {"kind": "optuna", "ranges": ranges}})  # fmt: skip
    for seed in range(6):
        params = suggested(budget, seed)
        if params["method"] == "lora":  # the baselines keep the protocol
            assert not {"tau_lr_multiplier", "lr_scale", "epochs", OWN} & set(params)
            continue
        assert 1 <= params["tau_lr_multiplier"] <= 50 and 0.1 <= params["lr_scale"] <= 2
        assert params["epochs"] in range(2, 7) and sorted(params[OWN]) == ["epochs", "lr_scale"]


def test_optuna_keeps_a_methods_fixed_budget():
    spec = parse_spec({"name": "x", "methods": {"taugate": {"epochs": 9, "lr_scale": 1.0}},
                       "search": {"kind": "optuna"}})  # fmt: skip
    params = suggested(spec)
    assert (params["epochs"], params["lr_scale"], sorted(params[OWN])) == (9, 1.0, ["epochs", "lr_scale"])


def test_further_grids_of_one_method_add_their_own_points_once():
    spec = parse_spec({"name": "x", "seeds": [0], "methods": {"taugate": {
        "tau_lr_multiplier": [1], "sparsity_weight": [0, 3],
        "also": [{"tau_lr_multiplier": [25], "sparsity_weight": [0, 1]},
                 {"tau_lr_multiplier": [25], "sparsity_target": [0.3, 0.5]},
                 {"tau_lr_multiplier": [1], "sparsity_weight": [0]}]}}})  # fmt: skip
    points = [(v["tau_lr_multiplier"], v.get("sparsity_weight"), v.get("sparsity_target")) for v in variants(spec)]
    # the last grid repeats a point of the first: it is planned once
    assert points == [(1, 0, None), (1, 3, None), (25, 0, None), (25, 1, None), (25, None, 0.3), (25, None, 0.5)]


@pytest.mark.parametrize(
    ("block", "extra", "field"),
    [
        ({"also": [{"lora_rank": [4]}]}, {}, "taugate.also.0.lora_rank"),
        ({"also": [{"also": [{}]}]}, {}, "also"),
        ({"also": [{"sparsity_weight": [1]}]}, {"search": {"kind": "optuna"}}, "methods.taugate.also"),
    ],
)
def test_bad_further_grids_are_refused_naming_them(block, extra, field):
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_spec({"name": "x", "methods": {"taugate": block}} | extra)
