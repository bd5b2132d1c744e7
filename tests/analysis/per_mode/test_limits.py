"""The limits map (RQ4) on hand-made results tables whose answers are known."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.per_mode.limits import limits_map, verdict
from trainables.config import accuracy_name

TARGETS = (0.0, 45.0, 90.0)
PARAMS = {"frozen": 0, "taugate": 512, "lora": 12672, "full": 118282}
NOISE = (-0.004, 0.0, 0.004)  # per seed: a small paired spread


def table(gains: dict[str, dict[float, float]], frozen_acc: dict[float, float], retention_drop: float = 0.0):
    """One trial per (method, target, seed): accuracy on every angle = Frozen's + the method's gain
    at its own target; on the other angles the method loses `retention_drop` (LoRA only)."""
    rows = []
    for method, by_target in {"frozen": dict.fromkeys(TARGETS, 0.0), **gains}.items():
        for target in TARGETS:
            for seed, noise in enumerate(NOISE):
                row = {"trial_id": f"{method}-{target:g}-{seed}", "run_name": f"{method}-t{target:g}-seed{seed}",
                       "method": method, "target_angle": target, "seed": seed, "status": "ok",
                       "trainable_params": PARAMS[method]}  # fmt: skip
                for angle in TARGETS:
                    value = frozen_acc[angle] + seed * 0.01  # seeds differ; pairing removes it
                    if angle == target:
                        value += by_target[target] + (noise if method != "frozen" else 0.0)
                    elif method == "lora":
                        value -= retention_drop
                    row[accuracy_name(angle)] = value
                    row[accuracy_name(angle, validation=True)] = value
                rows.append(row)
    return pd.DataFrame(rows)


FROZEN = {0.0: 0.80, 45.0: 0.80, 90.0: 0.30}


def test_gain_and_retention_are_paired_against_frozen_by_seed() -> None:
    df = table({"taugate": {0.0: 0.02, 45.0: 0.03, 90.0: 0.10}, "lora": {0.0: 0.03, 45.0: 0.04, 90.0: 0.30}},
               FROZEN, retention_drop=0.05)  # fmt: skip
    result = limits_map(df, [0.0, 45.0])
    rows = result.table.set_index(["target", "method"])
    assert rows.loc[(90.0, "taugate"), "gain_mean"] == pytest.approx(0.10)
    assert rows.loc[(90.0, "taugate"), "gain_std"] == pytest.approx(0.004)  # the seed offsets cancel in the pairing
    assert rows.loc[(90.0, "lora"), "gain_mean"] == pytest.approx(0.30)
    assert rows.loc[(0.0, "frozen"), "gain_mean"] == 0.0
    assert rows.loc[(45.0, "lora"), "params"] == 12672
    # retention: the foundation's modes other than the target (0 and 45 at target 90; only 45 at target 0)
    assert rows.loc[(90.0, "lora"), "retention_mean"] == pytest.approx(-0.05)
    assert rows.loc[(0.0, "lora"), "retention_mean"] == pytest.approx(-0.05)
    assert rows.loc[(90.0, "taugate"), "retention_mean"] == pytest.approx(0.0)
    assert set(rows.index.get_level_values("target")) == set(TARGETS) and (result.table["n"] == 3).all()


def test_the_verdict_states_up_to_which_angle_taugate_stays_near_lora() -> None:
    df = table({"taugate": {0.0: 0.02, 45.0: 0.03, 90.0: 0.10}, "lora": {0.0: 0.03, 45.0: 0.04, 90.0: 0.30}}, FROZEN)
    near, helping = limits_map(df, [0.0, 45.0], tolerance=0.02).verdict
    assert "stays within 0.02 of lora up to 45°; from 90° lora leads by 0.200" in near
    assert "<= 0.02" in near  # the rule is stated
    assert "helps at 0°, 45°, 90°" in helping and "It helps at every target studied." in helping


def test_the_verdict_says_where_taugate_stops_helping() -> None:
    df = table({"taugate": {0.0: 0.02, 45.0: 0.03, 90.0: 0.0}, "lora": {0.0: 0.02, 45.0: 0.03, 90.0: 0.01}}, FROZEN)
    near, helping = limits_map(df, [0.0, 45.0]).verdict  # no Full: no share of its gain
    assert "at every target angle studied" in near
    assert "helps at 0°, 45°; not at 90°" in helping and "stops helping from 90° on" in helping
    assert "95% t-interval" in helping


def test_one_seed_is_not_testable_and_one_target_is_no_map() -> None:
    df = table({"taugate": {0.0: 0.02, 45.0: 0.03, 90.0: 0.1}}, FROZEN)
    single_seed = limits_map(df[df["seed"] == 0], [0.0, 45.0])
    assert math.isnan(single_seed.table["gain_ci95"].iloc[0])
    assert any("not testable" in line for line in single_seed.verdict)
    assert limits_map(df[df["target_angle"] == 45.0], [0.0, 45.0]) is None


def test_representatives_are_chosen_on_validation_not_test() -> None:
    """Two TauGate settings per target: the one better on validation stands for TauGate, even where
    the other is better on test."""
    df = table({"taugate": {0.0: 0.02, 45.0: 0.03, 90.0: 0.10}}, FROZEN)
    df["sparsity_weight"] = float("nan")
    df.loc[df["method"] == "taugate", "sparsity_weight"] = 0.0
    other = df[df["method"] == "taugate"].copy()
    other["sparsity_weight"] = 1.0
    other["trial_id"] += "-l1"
    for target in TARGETS:  # better on test, worse on validation
        at = other["target_angle"] == target
        other.loc[at, accuracy_name(target)] += 0.2
        other.loc[at, accuracy_name(target, validation=True)] -= 0.2
    result = limits_map(pd.concat([df, other], ignore_index=True), [0.0, 45.0])
    chosen = result.table[result.table["method"] == "taugate"]
    assert chosen["gain_mean"].round(6).tolist() == [0.02, 0.03, 0.1]
    assert all("λ=0" in label for label in chosen["label"])


def test_without_frozen_the_gain_is_not_invented() -> None:
    df = table({"taugate": {0.0: 0.02, 45.0: 0.03, 90.0: 0.10}}, FROZEN)
    result = limits_map(df[df["method"] != "frozen"], [0.0, 45.0])
    assert result.table.empty and len(result.notes) == 3 and "no finished Frozen trial" in result.notes[0]
    assert verdict(result) == ["No taugate trials: nothing to conclude about it."]


def test_the_share_of_full_fine_tunings_gain_falls_where_the_base_lacks_features() -> None:
    gains = {"taugate": {0.0: 0.02, 45.0: 0.03, 90.0: 0.05}, "full": {0.0: 0.04, 45.0: 0.05, 90.0: 0.60}}
    lines = limits_map(table(gains, FROZEN | {}), [0.0, 45.0]).verdict
    share = next(line for line in lines if line.startswith("Share of full"))
    assert "0° 50%; 45° 60%; 90° 8%" in share and "below 10% at 90°" in share
