"""Study specs: plan totals for the shipped specs; bad specs refused before anything starts."""

from __future__ import annotations

import json

import pytest

from study.spec.loader import parse_spec
from study.spec.plan import summary, variants
from tests.support.cli import assert_spec_refused, taugate
from tests.support.paths import CONFIGS


@pytest.mark.parametrize(
    ("spec", "trials", "foundations"),
    [
        ("paper.yaml", 50, 5),
        ("ablation.yaml", 120, 3),
        ("smoke.yaml", 8, 2),
        ("optuna.yaml", 60, 3),
        ("calibrate.yaml", 720, 15),
        ("budget.yaml", 135, 3),
        ("modes.yaml", 325, 5),
    ],  # optuna: 20 configurations x 3 seeds
)
def test_plan_json_totals_of_the_shipped_specs(spec, trials, foundations):
    result = taugate("plan", str(CONFIGS / spec), "--json")
    assert result.returncode == 0, result.stderr
    totals = json.loads(result.stdout)
    assert (totals["trials"], totals["foundations"]) == (trials, foundations)


def test_grid_expands_each_method_only_over_its_own_axes():
    spec = parse_spec({
        "name": "t", "seeds": [0, 1],
        "methods": {"frozen": {}, "taugate": {"gate_sharpness": [1, 10, 100], "sparsity_weight": [0, 0.01]},
                    "lora": {"lora_rank": [2, 8]}, "bitfit": {"seeds": [5]}},
    })  # fmt: skip
    grid = variants(spec)
    per_method = summary(spec)["per_method"]
    assert per_method == {"frozen": 2, "taugate": 12, "lora": 4, "bitfit": 1}
    assert all(set(v) == {"method", "seed"} for v in grid if v["method"] in ("frozen", "bitfit"))
    assert {v["lora_rank"] for v in grid if v["method"] == "lora"} == {2, 8}
    assert len({json.dumps(v, sort_keys=True) for v in grid}) == len(grid)


def test_spec_schema_is_json_schema_of_the_spec():
    result = taugate("spec-schema")
    schema = json.loads(result.stdout)
    assert result.returncode == 0 and "methods" in schema["properties"] and "name" in schema["required"]


BAD_SPECS = [
    ("name: x\nmethods: {dropout: {}}\n", "dropout"),
    ("name: x\nseeds: []\nmethods: {frozen: {}}\n", "seeds"),
    ("name: x\nmethods: {lora: {lora_rank: [0]}}\n", "lora_rank"),
    ("name: x\nmethods: {taugate: {gate_sharpness: [0]}}\n", "gate_sharpness"),
    ("name: x\nmethods: {taugate: {sparsity_weight: [-1]}}\n", "sparsity_weight"),
    ("name: x\nmethods: {frozen: {}}\nsearch: {kind: optuna, objectives: [{metric: speed, mode: max}]}\n", "speed"),
    ("name: x\nmethod: {frozen: {}}\n", "method"),
    ("name: x\nmethods: {frozen: {}\n", "YAML"),
    ("name: x\nseeds: [1, 1]\nmethods: {frozen: {}}\n", "duplicate"),
    ("name: x\nmethods: {}\n", "methods"),
    ("name: x\nmethods: {lora: {gate_sharpness: [3]}}\n", "gate_sharpness"),
    ("name: x\ntarget_angle: 30\nmethods: {frozen: {}}\n", "target_angle"),
    ("- just\n- a list\n", "mapping"),
    ("name: x\nfuse: 2\nmethods: {taugate: {}}\nsearch: {kind: optuna}\n", "fuse"),
]


@pytest.mark.parametrize(("text", "field"), BAD_SPECS)
def test_bad_spec_exits_2_naming_the_field_and_writes_nothing(text, field, tmp_path):
    assert_spec_refused(text, field, tmp_path)


def test_grid_over_the_cap_needs_yes(tmp_path):
    spec = tmp_path / "big.yaml"
    spec.write_text("name: big\nmax_trials: 3\nseeds: [0, 1]\nmethods: {frozen: {}, bitfit: {}}\n")
    result = taugate("run", str(spec), "--output", str(tmp_path / "study"))
    assert result.returncode == 2 and "max_trials" in result.stderr and "--yes" in result.stderr
    assert not (tmp_path / "study" / "study.json").exists()
