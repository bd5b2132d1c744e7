"""Attribution by intervention: on a network built so the answer is known, then end to end on a
tiny study folder (real foundation, real TauGate trials, no Ray)."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from analysis.figures.mode_plots import plot_core_by_gap, plot_intervention, plot_jaccard
from analysis.per_mode.interventions import CAUSAL_RULE, ROW_COLUMNS, intervene, summarise
from analysis.per_mode.mode_analysis import analyse_study_modes
from analysis.per_mode.mode_units import common_core
from tests.support.ledger import record_trial
from trainables.config import accuracy_name, parse_config
from trainables.data import load_modes
from trainables.engine.evaluation import gate_statistics
from trainables.engine.fit import train_foundation
from trainables.engine.trial import run_trial
from trainables.formats.checkpoints import CheckpointError, load_adapter, load_foundation, save_foundation
from trainables.methods import taugate
from trainables.model import MLP

# --- a toy where the answer is known ----------------------------------------------------------
# Ten hidden units, identity first layer. Mode A (0 deg) puts its class evidence on units 0/1,
# mode B (90 deg) on units 2/3; units 4-9 fire for every digit and add the same to both logits.
# Silencing A's units {0, 1} leaves A's logits tied (argmax picks class 0: half right) and B intact;
# silencing any two of the filler units changes nothing.
WIDTH, A, B, C = 10, 0.0, 90.0, 180.0
ACTIVE = {
    A: frozenset({(0, u) for u in (0, 1, 4, 5, 6, 7, 8, 9)}),
    B: frozenset({(0, 2), (0, 3)}),
    C: frozenset({(0, 4)}),
}
ATTRIBUTED = {A: frozenset({(0, 0), (0, 1)}), B: frozenset({(0, 2), (0, 3)}), C: frozenset()}


def toy_model() -> MLP:
    model = MLP(in_features=WIDTH, hidden=[WIDTH], classes=2)
    taugate.install(model, parse_config({"method": "taugate"}))  # hard gates open for every z > tau < 0
    readout = torch.zeros(2, WIDTH)
    readout[0, [0, 2]] = 1.0  # class 0 evidence: unit 0 (mode A), unit 2 (mode B)
    readout[1, [1, 3]] = 1.0  # class 1 evidence: unit 1 (mode A), unit 3 (mode B)
    readout[:, 4:] = 0.5  # filler: the same to both classes
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.eye(WIDTH))
        model.layers[0].bias.zero_()
        model.layers[1].weight.copy_(readout)
        model.layers[1].bias.zero_()
    return model


def toy_digits(evidence_units: tuple[int, int], n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % 2
    x = torch.zeros(n, WIDTH)
    x[:, 4:] = 1.0
    x[y == 0, evidence_units[0]] = 1.0
    x[y == 1, evidence_units[1]] = 1.0
    return x, y


def toy() -> tuple[dict, dict]:
    base = toy_model()
    models = {angle: copy.deepcopy(base) for angle in (A, B, C)}  # each mode "its own adapter"
    test = {A: toy_digits((0, 1)), B: toy_digits((2, 3)), C: toy_digits((2, 3))}
    return models, test


def row(rows: pd.DataFrame, silenced: float, evaluated: float, control: str) -> pd.DataFrame:
    return rows[(rows.silenced == silenced) & (rows.evaluated == evaluated) & (rows.control == control)]


def test_silencing_a_modes_attributed_units_drops_that_mode_only():
    models, test = toy()
    rows = intervene(models, test, ATTRIBUTED, ACTIVE, draws=5, seed=0)
    assert list(rows.columns) == list(ROW_COLUMNS)

    own = row(rows, A, A, "attributed").iloc[0]
    assert (own.n_units, own.units, own.acc_before, own.acc_after, own["drop"]) == (2, ((0, 0), (0, 1)), 1.0, 0.5, 0.5)
    other = row(rows, A, B, "attributed").iloc[0]
    assert (other.acc_before, other.acc_after, other["drop"]) == (1.0, 1.0, 0.0)
    assert row(rows, B, B, "attributed").iloc[0]["drop"] == 0.5
    assert row(rows, B, A, "attributed").iloc[0]["drop"] == 0.0


def test_the_random_control_draws_as_many_of_the_modes_other_active_units_and_drops_less():
    models, test = toy()
    rows = intervene(models, test, ATTRIBUTED, ACTIVE, draws=5, seed=0)
    random = row(rows, A, A, "random")
    assert list(random.draw) == [0, 1, 2, 3, 4]
    assert (random.n_units == 2).all()
    fillers = ACTIVE[A] - ATTRIBUTED[A]
    assert all(set(units) <= fillers for units in random.units)
    assert random.units.nunique() > 1  # the draws differ
    assert (random["drop"] == 0.0).all() and (random.note == "").all()
    # the same units are silenced on every evaluated mode within a draw
    assert list(row(rows, A, B, "random").units) == list(random.units)


def test_draws_are_reproducible_with_the_seed():
    models, test = toy()
    first = intervene(models, test, ATTRIBUTED, ACTIVE, draws=5, seed=3)
    again = intervene(models, test, ATTRIBUTED, ACTIVE, draws=5, seed=3)
    other = intervene(models, test, ATTRIBUTED, ACTIVE, draws=5, seed=4)
    pd.testing.assert_frame_equal(first, again)
    assert list(row(first, A, A, "random").units) != list(row(other, A, A, "random").units)


def test_too_few_other_active_units_widen_the_control_pool_and_say_so():
    models, test = toy()
    random = row(intervene(models, test, ATTRIBUTED, ACTIVE, draws=2), B, B, "random")
    assert (random.n_units == 2).all()
    assert all("only 0 other active units" in note for note in random.note)


def test_a_mode_without_attributed_units_gets_rows_saying_so():
    models, test = toy()
    rows = intervene(models, test, ATTRIBUTED, ACTIVE)
    empty = rows[rows.silenced == C]
    assert len(empty) == 2 * 3  # one attributed and one random row per evaluated mode
    assert (empty.n_units == 0).all() and empty.acc_after.isna().all() and empty["drop"].isna().all()
    assert all("no unit attributed" in note for note in empty.note)
    assert (empty.acc_before == 1.0).all()


def test_intervention_leaves_the_models_as_they_were():
    models, test = toy()
    before = {a: {k: v.clone() for k, v in m.state_dict().items()} for a, m in models.items()}
    intervene(models, test, ATTRIBUTED, ACTIVE)
    for angle, model in models.items():
        assert all(torch.equal(model.state_dict()[k], v) for k, v in before[angle].items())
        assert not model.activations[0]._forward_hooks and model.activations[0].hard is False


# --- summarise and its causal rule ------------------------------------------------------------


def rows_of(seed: int, attributed_drop: float, random_drops: list[float], other_drop: float = 0.0) -> list[dict]:
    common = {"seed": seed, "silenced": A, "n_units": 2}
    out = [{**common, "evaluated": A, "control": "attributed", "draw": 0, "drop": attributed_drop}]
    out += [{**common, "evaluated": A, "control": "random", "draw": d, "drop": v} for d, v in enumerate(random_drops)]
    out.append({**common, "evaluated": B, "control": "attributed", "draw": 0, "drop": other_drop})
    return out


def test_summary_averages_draws_before_seeds_and_states_the_rule():
    rows = pd.DataFrame(
        rows_of(0, 0.50, [0.0, 0.1], other_drop=0.02)
        + rows_of(1, 0.45, [0.2, 0.0], other_drop=0.04)
        + rows_of(2, 0.55, [0.03, 0.03], other_drop=0.0)
    )
    summary = summarise(rows).set_index("silenced").loc[A]
    assert (summary.seeds, summary.n_units, summary.own_drop_attributed_n) == (3, 2.0, 3)
    assert summary.own_drop_attributed_mean == pytest.approx(0.5)
    assert summary.own_drop_attributed_std == pytest.approx(np.std([0.5, 0.45, 0.55], ddof=1))
    assert summary.own_drop_random_mean == pytest.approx((0.05 + 0.1 + 0.03) / 3)
    assert summary.own_drop_random_std == pytest.approx(np.std([0.05, 0.1, 0.03], ddof=1))
    assert summary.other_drop_attributed_mean == pytest.approx(0.02)
    # the paired difference per seed (attributed drop - mean random drop), checked against scipy's own test
    differences = np.array([0.50 - 0.05, 0.45 - 0.10, 0.55 - 0.03])
    attributed, random = np.array([0.50, 0.45, 0.55]), np.array([0.05, 0.10, 0.03])
    assert summary.n_seeds == 3 and summary.difference_mean == pytest.approx(differences.mean())
    half = stats.t.ppf(0.975, 2) * differences.std(ddof=1) / math.sqrt(3)
    assert (summary.difference_ci_low, summary.difference_ci_high) == pytest.approx(
        (differences.mean() - half, differences.mean() + half)
    )
    assert summary.d_z == pytest.approx(differences.mean() / differences.std(ddof=1))
    assert summary.p == pytest.approx(stats.ttest_rel(attributed, random, alternative="greater").pvalue)
    assert summary.p_holm == pytest.approx(summary.p)  # a family of one: nothing to correct
    assert summary.causal_holds is True and summary.causal.startswith("holds")
    assert "Holm-corrected p = " in summary.causal and "d_z = " in summary.causal and "95% CI" in summary.causal
    assert "p <" in CAUSAL_RULE and "paired" in CAUSAL_RULE and "Holm-corrected" in CAUSAL_RULE


def test_the_rule_fails_when_the_random_control_drops_as_much():
    rows = pd.DataFrame(rows_of(0, 0.2, [0.25]) + rows_of(1, 0.3, [0.2]) + rows_of(2, 0.2, [0.3]))
    summary = summarise(rows).iloc[0]
    assert summary.causal_holds is False and summary.causal.startswith("does not hold")


def test_one_seed_is_not_testable_and_seeds_without_units_are_left_out():
    models, test = toy()
    summary = summarise(intervene(models, test, ATTRIBUTED, ACTIVE).assign(seed=0)).set_index("silenced")
    assert summary.loc[A].causal_holds is None and summary.loc[A].causal.startswith("not testable")
    assert summary.loc[A].own_drop_attributed_mean == 0.5 and summary.loc[A].own_drop_random_mean == 0.0
    assert summary.loc[C].n_units == 0 and summary.loc[C].own_drop_attributed_n == 0
    assert math.isnan(summary.loc[C].own_drop_attributed_mean)


# --- end to end on a tiny study folder ---------------------------------------------------------

TINY = {"method": "taugate", "hidden": [16, 16], "foundation_epochs": 1, "epochs": 1, "angles": [0, 45],
        "eval_angles": [90], "device": "cpu", "seed": 0}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> Path:
    """Targets 0, 45 (twice: two candidates of one budget) and 90 on one foundation; a diverged trial; a LoRA
    trial and a second seed's foundation with a single target (both without files: never loaded). Several
    budgets: tests/study/test_modes_budgets.py."""
    study = tmp_path_factory.mktemp("modes") / "study"
    config = parse_config(TINY)
    modes = load_modes(config, torch.device("cpu"))
    foundation = train_foundation(config, modes)
    save_foundation(foundation, study / "foundations" / f"{config.foundation_id()}.safetensors")
    for key, target, weight in (("t0", 0, 0.0), ("t45a", 45, 0.0), ("t45b", 45, 0.0), ("t90", 90, 0.0)):
        trial = TINY | {"target_angle": target, "sparsity_weight": weight}
        metrics = run_trial(trial, foundation=lambda c, m: foundation, artifact_dir=study / "trials" / key)
        record_trial(study, key, trial, metrics)
    record_trial(study, "diverged", TINY | {"target_angle": 90}, {"status": "diverged", "method": "taugate"})
    record_trial(study, "lora", TINY | {"method": "lora", "target_angle": 90}, {"status": "ok", "method": "lora"})
    record_trial(study, "seed1", TINY | {"seed": 1, "target_angle": 45}, {"status": "ok", "val_acc_45_hard": 0.5})
    return study


def metrics_of(study: Path, key: str) -> dict:
    return json.loads((study / "trials" / key / "metrics.json").read_text())


def test_study_analysis_structure_and_invariants(tiny_study: Path, tmp_path: Path):
    (result,) = analyse_study_modes(tiny_study, draws=3)  # one budget: one analysis, unlabelled
    assert result.method == "taugate" and result.label == ""
    assert result.parameters["draws"] == 3 and result.parameters["threshold"] == 0.5
    (found,) = result.foundations
    angles = [0.0, 45.0, 90.0]
    assert found.seed == 0 and found.foundation == parse_config(TINY).foundation_id()

    # the representative of 45 is the trial with the better hard-gated validation accuracy
    name = accuracy_name(45, hard=True, validation=True)
    best = max(("t45a", "t45b"), key=lambda k: (metrics_of(tiny_study, k)[name], k == "t45a"))
    assert found.trials == {0.0: "t0", 45.0: best, 90.0: "t90"}
    assert any(f"(seed 0): mode 45 is trial {best} ({name} = " in n for n in result.notes)
    assert any("(seed 1): skipped, 1 target mode" in n for n in result.notes)

    # unit sets come from validation digits, each mode under its own adapter
    config = parse_config(TINY | {"target_angle": 90})
    modes = load_modes(config, torch.device("cpu"))
    base = load_foundation(tiny_study / "foundations" / f"{found.foundation}.safetensors", [16, 16])
    adapted = load_adapter(base, tiny_study / "trials" / "t90" / "adapter")
    assert found.rates[90.0] == gate_statistics(adapted, modes[90.0], split="val").rate

    matrix = found.jaccard.to_numpy()
    assert list(found.jaccard.index) == angles and list(found.jaccard.columns) == angles
    assert (matrix.diagonal() == 1).all() and (matrix == matrix.T).all()
    assert ((matrix >= 0) & (matrix <= 1)).all()
    for a in angles:
        assert found.exclusive[a] <= found.sets[a] and found.attributed[a] <= found.sets[a]
        assert len(found.attributed[a]) <= round(0.05 * 32)
        for b in angles:
            assert a == b or not found.exclusive[a] & found.exclusive[b]
    assert found.common_core == common_core(found.sets)

    rows = result.interventions
    assert {(s, e) for s, e in zip(rows.silenced, rows.evaluated, strict=True)} == {
        (a, b) for a in angles for b in angles
    }
    assert (rows.seed == 0).all() and (rows.foundation == found.foundation).all()
    for (silenced, evaluated), pair in rows.groupby(["silenced", "evaluated"]):
        assert pair.n_units.nunique() == 1  # random controls as large as the attributed set
        assert pair.n_units.iloc[0] == len(found.attributed[silenced])  # the attributed units are silenced
        # measured on test digits: before any silencing, the trial's own hard-gated test accuracy
        own = found.trials[evaluated]
        assert pair.acc_before.iloc[0] == pytest.approx(metrics_of(tiny_study, own)[accuracy_name(evaluated, True)])

    assert list(result.summary.silenced) == angles
    assert result.summary.causal.str.startswith("not testable").all()  # one seed
    assert result.jaccard_mean.to_numpy() == pytest.approx(matrix)
    assert result.jaccard_std.isna().all().all() and (result.jaccard_n == 1).all().all()
    assert set(result.core_by_gap.gap) == {45.0, 90.0} and result.core_by_gap.pairs.sum() == 3

    assert plot_jaccard(result.jaccard_mean, tmp_path / "jaccard.png").stat().st_size > 0
    assert plot_core_by_gap(result.core_by_gap, tmp_path / "core.png").stat().st_size > 0
    drawn = plot_intervention(result.summary, tmp_path / "drop.png")
    assert drawn is None if result.summary.own_drop_attributed_mean.isna().all() else drawn.stat().st_size > 0


def test_plots_with_nothing_to_draw_return_none(tmp_path: Path):
    assert plot_jaccard(pd.DataFrame(), tmp_path / "a.png") is None
    assert plot_core_by_gap(pd.DataFrame(columns=["gap"]), tmp_path / "b.png") is None
    no_units = pd.DataFrame([{"silenced": 0.0, "n_units": 0.0, "own_drop_attributed_mean": math.nan}])
    assert plot_intervention(no_units, tmp_path / "c.png") is None
    assert not list(tmp_path.iterdir())


def test_intervention_plot_draws_the_toy_summary(tmp_path: Path):
    rows = pd.DataFrame(rows_of(0, 0.5, [0.0, 0.1]) + rows_of(1, 0.45, [0.2, 0.0]))
    assert plot_intervention(summarise(rows), tmp_path / "drop.png").stat().st_size > 0


@pytest.mark.parametrize("bad", [{"threshold": 0.0}, {"on": 0.2, "off": 0.3}, {"draws": 0}])
def test_bad_parameters_are_refused_before_anything_loads(tmp_path: Path, bad: dict):
    with pytest.raises(ValueError):
        analyse_study_modes(tmp_path, **bad)


def test_a_study_without_two_target_modes_gives_no_analysis(tmp_path: Path):
    record_trial(tmp_path, "only", TINY | {"target_angle": 45}, {"status": "ok", "val_acc_45_hard": 0.5})
    assert analyse_study_modes(tmp_path) == []
    assert analyse_study_modes(tmp_path / "missing") == []


def test_a_damaged_adapter_is_an_error_naming_the_file(tiny_study: Path, tmp_path: Path):
    study = Path(shutil.copytree(tiny_study, tmp_path / "study"))
    damaged = study / "trials" / "t0" / "adapter" / "adapter.safetensors"
    damaged.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=re.escape(str(damaged))):
        analyse_study_modes(study)


def test_a_missing_foundation_is_an_error_naming_the_file(tiny_study: Path, tmp_path: Path):
    study = Path(shutil.copytree(tiny_study, tmp_path / "study"))
    (path,) = (study / "foundations").glob("*.safetensors")
    path.unlink()
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        analyse_study_modes(study)
