"""Study specs: plan totals for the shipped specs; bad specs refused before anything starts."""

from __future__ import annotations

import collections
import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from study.spec.loader import SpecError, load_spec, parse_spec
from study.spec.plan import summary, trial_config, variants
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


def listed_totals(spec) -> tuple[int, int, dict[str, int]]:
    """Trials, foundations and trials per method by listing every grid trial and its config (what `summary`
    did before it counted arithmetically)."""
    grid = variants(spec)
    foundations = {trial_config(spec, variant).foundation_id() for variant in grid}
    if spec.search.kind == "optuna":
        return spec.search.num_samples * len(spec.seeds), len(foundations), {}
    return len(grid), len(foundations), dict(collections.Counter(variant["method"] for variant in grid))


def counted_totals(spec) -> tuple[int, int, dict[str, int]]:
    totals = summary(spec)
    return totals["trials"], totals["foundations"], totals["per_method"]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.name)
def test_the_counted_totals_of_each_shipped_spec_are_its_listed_grid(path):
    spec = load_spec(path)
    assert counted_totals(spec) == listed_totals(spec)


def test_a_point_two_grids_of_a_method_share_is_counted_once():
    spec = parse_spec({
        "name": "overlap", "seeds": [0, 1, 2], "protocol": {"foundation_epochs": [1, 2]}, "target_angle": [0, 45],
        "methods": {"taugate": {"sparsity_weight": [0, 0.1, 1], "also": [
            {"sparsity_weight": [0, 1, 2]},  # shares lambda 0 and 1 with the first grid
            {"sparsity_weight": [0, 1], "seeds": [2, 7]},  # shares seed 2's lambda 0 and 1 with both
            {"sparsity_weight": [0], "gate_sharpness": [3]},  # another axis: shares nothing
            {"sparsity_weight": [0], "epochs": 5},  # its own budget: shares nothing
        ]}, "frozen": {}},
    })  # fmt: skip
    # per (foundation_epochs, target) pair, 4 of them: TauGate's lambda {0, 0.1, 1, 2} x seeds {0, 1, 2}, seed 7's
    # lambda 0 and 1, and 3 seeds each of the last two grids (20); frozen's 3 seeds
    assert counted_totals(spec) == listed_totals(spec) == (4 * 20 + 4 * 3, 8, {"taugate": 80, "frozen": 12})


AXES = {"seeds": [0, 1, 2], "gate_sharpness": [1.0, 3.0, 10.0], "sparsity_weight": [0.0, 0.01, 0.1],
        "tau_lr_multiplier": [1.0, 25.0], "epochs": [1, 2]}  # fmt: skip


@st.composite
def overlapping_grids(draw) -> dict:
    """TauGate grids over small pools of values, so that they often share points; a per-method lr now and then."""
    grids = []
    for _ in range(draw(st.integers(1, 4))):
        grid = {}
        for axis, pool in AXES.items():
            if draw(st.booleans()):
                grid[axis] = draw(st.lists(st.sampled_from(pool), min_size=1, unique=True))
        if draw(st.integers(0, 4)) == 0:
            grid["lr"] = 0.01
        grids.append(grid)
    first, *also = grids
    methods = {"taugate": first | ({"also": also} if also else {}), "lora": {"lora_rank": [2, 4]}}
    return {"name": "fuzz", "seeds": draw(st.lists(st.sampled_from([0, 1, 5]), min_size=1, unique=True)),
            "protocol": draw(st.sampled_from([{}, {"foundation_epochs": [1, 2]}, {"batch_size": [32, 64]}])),
            "methods": methods}  # fmt: skip


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=overlapping_grids())
def test_the_counted_totals_are_the_listed_grid_for_overlapping_grids(raw):
    try:
        spec = parse_spec(raw)
    except SpecError:
        assume(False)
    assert counted_totals(spec) == listed_totals(spec)


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
