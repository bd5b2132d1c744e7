"""Fidelity to a reference table: hand-computed cells and scores, reference files, and choices
(protocol, lambda) that read validation metrics only and never a held-out method's rows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.aggregate.stats import seed_statistics
from analysis.paper.paper_table import PAPER_TABLE
from analysis.paper.reference import ReferenceError, load_reference
from analysis.reproduction.fidelity import choose_by_ratio, choose_protocol, fidelity_cells, protocol_scores
from analysis.reproduction.spread import ASSUMED_REFERENCE_N


def cells(acc_0: tuple[float, float], acc_45: tuple[float, float]) -> dict:
    return {"acc_0": {"mean": acc_0[0], "std": acc_0[1]}, "acc_45": {"mean": acc_45[0], "std": acc_45[1]}}


TINY = {
    "name": "tiny",
    "baseline": "frozen",
    "methods": {
        "frozen": {"label": "Frozen", "cells": cells((0.80, 0.02), (0.70, 0.02))},
        "taugate": {"label": "TauGate", "cells": cells((0.82, 0.01), (0.78, 0.03))},
    },
}


def write(tmp_path: Path, reference: dict, name: str = "reference.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(reference))
    return path


def rows(method: str, **metrics: list[float]) -> list[dict]:
    """One trial per seed; `metrics` maps a metric to its per-seed values."""
    seeds = len(next(iter(metrics.values())))
    return [{"trial_id": f"{method}{s}", "status": "ok", "method": method, "seed": s,
             **{m: v[s] for m, v in metrics.items()}} for s in range(seeds)]  # fmt: skip


def tiny_study() -> pd.DataFrame:
    return pd.DataFrame(
        rows("frozen", acc_0=[0.79, 0.81], acc_45=[0.69, 0.71], val_acc_0=[0.80, 0.80], val_acc_45=[0.70, 0.70])
        + rows("taugate", acc_0=[0.83, 0.85], acc_45=[0.74, 0.78], val_acc_0=[0.81, 0.83], val_acc_45=[0.77, 0.79])
    )


def test_cells_and_score_by_hand(tmp_path: Path) -> None:
    reference = load_reference(write(tmp_path, TINY))
    table = fidelity_cells(seed_statistics(tiny_study()), reference, validation=False).set_index("metric")
    # ours: taugate acc_0 0.84 ± 0.014142, acc_45 0.76 ± 0.028284; frozen acc_0 0.80, acc_45 0.70
    acc_0, acc_45 = table.loc["acc_0"], table.loc["acc_45"]
    assert (acc_0["ours_mean"], acc_0["ours_std"]) == (pytest.approx(0.84), pytest.approx(0.0141421356))
    assert acc_0["abs_diff"] == pytest.approx(0.02)
    assert acc_0["relative_diff"] == pytest.approx((0.84 - 0.80) - (0.82 - 0.80))  # +0.02
    assert acc_0["z"] == pytest.approx(0.02 / math.sqrt(0.0002 + 0.0001))  # 1.1547
    assert acc_45["abs_diff"] == pytest.approx(0.02)
    assert acc_45["relative_diff"] == pytest.approx((0.76 - 0.70) - (0.78 - 0.70))  # -0.02
    assert acc_45["z"] == pytest.approx(-0.02 / math.sqrt(0.0008 + 0.0009))  # -0.48507
    # z_means: in standard errors of the difference of means, our n = 2 seeds, the reference's n assumed
    assert (acc_0["n"], acc_0["reference_n"]) == (2, ASSUMED_REFERENCE_N)
    assert acc_0["z_means"] == pytest.approx(0.02 / math.sqrt(0.0002 / 2 + 0.0001 / ASSUMED_REFERENCE_N))
    assert acc_45["z_means"] == pytest.approx(-0.02 / math.sqrt(0.0008 / 2 + 0.0009 / ASSUMED_REFERENCE_N))
    assert abs(acc_0["z_means"]) > abs(acc_0["z"])  # means are tighter than single runs
    assert list(table["method"]) == ["taugate", "taugate"]  # the baseline has no cells of its own

    scores = protocol_scores(seed_statistics(tiny_study()), reference, validation=False)
    assert scores["score"].tolist() == [pytest.approx(0.02)]  # mean of |+0.02| and |-0.02|
    # validation: taugate 0.82 / 0.78 over frozen 0.80 / 0.70 is exactly the reference's gap
    validation = fidelity_cells(seed_statistics(tiny_study()), reference, validation=True)
    assert validation["column"].tolist() == ["val_acc_0", "val_acc_45"]
    assert validation["relative_diff"].tolist() == pytest.approx([0.0, 0.0])


def test_a_method_missing_from_the_study_leaves_the_score_undefined(tmp_path: Path) -> None:
    reference = load_reference(write(tmp_path, TINY))
    frozen_only = tiny_study().query("method == 'frozen'")
    missing = fidelity_cells(seed_statistics(frozen_only), reference, validation=False)
    assert missing["ours_mean"].isna().all() and missing["configuration"].isna().all()
    assert math.isnan(protocol_scores(seed_statistics(frozen_only), reference, validation=False)["score"][0])


def test_the_papers_table_is_the_shipped_reference() -> None:
    paper = load_reference("paper")
    assert paper.baseline == "frozen" and paper.accuracy_metrics() == ["acc_0", "acc_45"]
    assert paper.cell("full", "acc_45").mean == 0.887 and paper.cell("taugate", "high_activation_ratio").std is None
    assert [(r.method, r.trainable_params, r.acc_0, r.acc_45) for r in PAPER_TABLE][2] == (
        "taugate", 512, (0.850, 0.006), (0.850, 0.010),
    )  # fmt: skip
    assert paper.settings() == {"lora": {"lora_rank": 8}}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r["methods"]["taugate"]["cells"]["acc_45"].update(mean="high"), "methods.taugate.cells.acc_45.mean"),
        (lambda r: r.update(baseline="nobody"), "baseline"),
        (lambda r: r["methods"]["taugate"]["cells"].update(val_acc_45={"mean": 0.8}), "methods.taugate.cells"),
        (lambda r: r["methods"]["frozen"].update(colour="red"), "methods.frozen.colour"),
        (lambda r: r.pop("name"), "name"),
    ],
)
def test_a_bad_reference_names_the_field(tmp_path: Path, change, field: str) -> None:
    broken = yaml.safe_load(yaml.safe_dump(TINY))
    change(broken)
    with pytest.raises(ReferenceError, match=field.replace(".", r"\.")):
        load_reference(write(tmp_path, broken))
    with pytest.raises(ReferenceError, match="no such file"):
        load_reference(tmp_path / "absent.yaml")


CALIBRATION = {
    "name": "three",
    "baseline": "frozen",
    "methods": {m: {"label": m, "cells": {"acc_0": {"mean": a0, "std": 0.01}, "acc_45": {"mean": a45, "std": 0.01}}}
                for m, a0, a45 in (("frozen", 0.80, 0.80), ("bitfit", 0.82, 0.85), ("taugate", 0.82, 0.86))},
}  # fmt: skip


def protocol_study() -> pd.DataFrame:
    """Epochs 1: bitfit far from the reference, TauGate on it; epochs 5: the other way round.
    Holding TauGate out must choose epochs 5; fitting it would choose epochs 1."""
    trials = []
    for epochs, (bitfit, taugate) in ((1, ((0.80, 0.80), (0.82, 0.86))), (5, ((0.82, 0.85), (0.60, 0.60)))):
        for method, (a0, a45) in (("frozen", (0.80, 0.80)), ("bitfit", bitfit), ("taugate", taugate)):
            for seed in range(2):
                noise = 0.001 * seed
                trials.append({
                    "trial_id": f"{method}-{epochs}-{seed}", "status": "ok", "method": method, "seed": seed,
                    "foundation_epochs": 1, "epochs": epochs, "lr_scale": 1.0, "batch_size": 64,
                    "acc_0": a0 - 0.05, "acc_45": a45 + 0.05,  # test far from validation: must not matter
                    "val_acc_0": a0 + noise, "val_acc_45": a45 + noise,
                })  # fmt: skip
    return pd.DataFrame(trials)


def test_choose_protocol_fits_only_the_methods_not_held_out(tmp_path: Path) -> None:
    reference = load_reference(write(tmp_path, CALIBRATION))
    stats = seed_statistics(protocol_study())
    choice = choose_protocol(stats, reference, held_out=["taugate"])
    assert choice.protocol == {"foundation_epochs": 1, "epochs": 5, "lr_scale": 1.0, "batch_size": 64}
    assert choice.fitted == ["bitfit"] and choice.ranking["epochs"].tolist() == [5, 1]
    assert choice.ranking["score"].iloc[0] == pytest.approx(0.0, abs=1e-12)  # seed noise is shared with frozen
    assert choose_protocol(stats, reference, held_out=[]).protocol["epochs"] == 1  # the held-out rows would sway it


def test_choose_protocol_reads_no_test_metric_and_no_held_out_row(tmp_path: Path) -> None:
    reference = load_reference(write(tmp_path, CALIBRATION))
    df = protocol_study()
    expected = choose_protocol(seed_statistics(df), reference, held_out=["taugate"])
    rng = np.random.default_rng(1)
    corrupted = df.assign(acc_0=rng.permutation(df["acc_0"].to_numpy()), acc_45=rng.uniform(0, 1, len(df)))
    held = corrupted["method"] == "taugate"
    corrupted.loc[held, ["val_acc_0", "val_acc_45"]] = rng.uniform(0, 1, (int(held.sum()), 2))
    for table in (corrupted, df.drop(columns=["acc_0", "acc_45"])):
        again = choose_protocol(seed_statistics(table), reference, held_out=["taugate"])
        assert again.protocol == expected.protocol
        pd.testing.assert_frame_equal(again.ranking, expected.ranking)
    with pytest.raises(ValueError, match="baseline"):
        choose_protocol(seed_statistics(df), reference, held_out=["frozen"])


def ratio_study() -> pd.DataFrame:
    trials = []
    for weight, val, test in ((0.0, 0.40, 0.28), (0.01, 0.3125, 0.9), (0.1, 0.25, 0.1), (1.0, 0.05, 0.28)):
        for seed in range(2):
            trials.append({"trial_id": f"{weight}-{seed}", "status": "ok", "method": "taugate", "seed": seed,
                           "sparsity_weight": weight, "epochs": 5, "val_high_activation_ratio": val,
                           "high_activation_ratio": test, "acc_45": 0.8, "val_acc_45": 0.8})  # fmt: skip
    return pd.DataFrame(trials)


def test_choose_by_ratio_closest_validation_ratio_ties_to_the_smaller_lambda() -> None:
    stats = seed_statistics(ratio_study())
    choice = choose_by_ratio(stats, "taugate", target=0.28125, protocol={"epochs": 5})
    # 0.3125 and 0.25 are both 0.03125 away: the smaller lambda wins; the test ratios (0.28) play no part
    assert choice.configuration["sparsity_weight"] == 0.01
    assert (choice.ratio, choice.gap, choice.within) == (0.3125, 0.03125, True)
    far = choose_by_ratio(stats, "taugate", target=0.9, tolerance=0.05)
    assert far.configuration["sparsity_weight"] == 0.0 and not far.within and far.gap == pytest.approx(0.5)
    shuffled = ratio_study().assign(high_activation_ratio=lambda d: d["high_activation_ratio"][::-1].to_numpy())
    assert (
        choose_by_ratio(seed_statistics(shuffled), "taugate", target=0.28125).configuration["sparsity_weight"] == 0.01
    )
    assert choose_by_ratio(stats, "lora", target=0.28).configuration is None
