"""Target angle as a study axis: one foundation per seed serves every target mode; the axis plans,
fuses and resumes like the other axes; the report's modes section reads the finished study.

One tiny modes study (3 target angles, one of them never seen by the foundation, x 3 methods x
2 seeds) runs once through `taugate run` and serves every assertion of this module.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from study.spec.loader import parse_spec
from study.spec.plan import foundation_key, fused_groups, planned_trials, run_name, trial_config, trial_key, variants
from tests.support.cli import taugate
from tests.support.html_page import Page
from trainables.config import accuracy_name, parse_config
from trainables.data import load_modes
from trainables.device import resolve_device
from trainables.engine.fit import train_foundation

MODES_SPEC = {
    "name": "modes-tiny",
    "angles": [0, 45],
    "eval_angles": [90],
    "target_angle": [0, 45, 90],
    "foundation": {"hidden": [32, 32], "epochs": 1},
    "epochs": 1,
    "seeds": [0, 1],
    "methods": {"frozen": {}, "taugate": {"sparsity_weight": [0]}, "lora": {"lora_rank": [4]}},
    "fuse": 2,
}


def test_the_target_axis_multiplies_every_method_and_shares_foundations_per_seed() -> None:
    spec = parse_spec(MODES_SPEC)
    grid = variants(spec)
    assert len(grid) == 3 * 3 * 2 and {v["target_angle"] for v in grid} == {0, 45, 90}
    configs = [trial_config(spec, v) for v in grid]
    assert len({trial_key(c) for c in configs}) == len(grid)
    by_seed: dict[int, set[str]] = {}
    for config in configs:
        by_seed.setdefault(config.seed, set()).add(foundation_key(config))
        assert config.evaluated_angles == [0, 45, 90] and config.angles == [0, 45]
    assert all(len(keys) == 1 for keys in by_seed.values()) and len(by_seed) == 2
    assert "taugate-t90-l0-seed1" in {run_name(v) for v in grid}
    planned = planned_trials(spec, grid)
    assert {entry["columns"]["target_angle"] for entry in planned.values()} == {0, 45, 90}


def test_fused_groups_never_mix_target_angles() -> None:
    groups = fused_groups(parse_spec(MODES_SPEC), variants(parse_spec(MODES_SPEC)))
    assert len(groups) == 9 and all(len(group) == 2 for group in groups)  # method x target, the seeds fused
    assert all(len({member["target_angle"] for member in group}) == 1 for group in groups)


def test_a_single_target_spec_has_no_axis() -> None:
    spec = parse_spec({k: v for k, v in MODES_SPEC.items() if k not in ("target_angle", "eval_angles")})
    assert all("target_angle" not in v for v in variants(spec))
    assert {trial_config(spec, v).target_angle for v in variants(spec)} == {45.0}


def test_the_foundation_trains_on_its_mixture_only() -> None:
    """Evaluated-only modes never enter the foundation: the same weights with or without them."""
    device = resolve_device("cpu")
    raw = {"hidden": [16], "foundation_epochs": 1, "angles": [0, 45], "device": "cpu"}
    plain = parse_config(raw)
    wider = parse_config(raw | {"eval_angles": [90, 135], "target_angle": 135})
    assert plain.foundation_id() == wider.foundation_id()
    a = train_foundation(plain, load_modes(plain, device)).state_dict()
    b = train_foundation(wider, load_modes(wider, device)).state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)


@pytest.fixture(scope="module")
def modes_study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny modes study, run once; then two of its trials are deleted from the ledger and the
    study is resumed (the resumed trials' first metrics are kept to compare)."""
    folder = tmp_path_factory.mktemp("modes")
    spec_path, study_dir = folder / "modes.yaml", folder / "study"
    spec_path.write_text(yaml.safe_dump(MODES_SPEC))
    run = taugate("run", str(spec_path), "--output", str(study_dir))
    assert run.returncode == 0, run.stderr
    trials = {p.name: json.loads((p / "config.json").read_text()) for p in (study_dir / "trials").iterdir()}
    first = {key: json.loads((study_dir / "trials" / key / "metrics.json").read_text()) for key in trials}
    report_md = (study_dir / "report" / "report.md").read_text()
    page = Page()
    page.feed((study_dir / "report" / "report.html").read_text())
    # forget one fused group's members at the unseen target: resume must train exactly those again
    lost = sorted(k for k, c in trials.items() if c["run_name"].startswith("taugate-t90"))
    for key in lost:
        (study_dir / "trials" / key / "metrics.json").unlink()
    resumed = taugate("resume", str(study_dir))
    return {"dir": study_dir, "run": run, "trials": trials, "first": first, "lost": lost, "resumed": resumed,
            "report_md": report_md, "page": page}  # fmt: skip


def test_every_trial_is_evaluated_on_every_mode_and_seeds_share_their_foundation(modes_study: dict) -> None:
    study_dir = modes_study["dir"]
    assert len(modes_study["trials"]) == 18
    assert len(list((study_dir / "foundations").glob("*.safetensors"))) == 2
    for key, metrics in modes_study["first"].items():
        assert metrics["status"] == "ok"
        for angle in (0, 45, 90):
            assert accuracy_name(angle) in metrics and accuracy_name(angle, validation=True) in metrics
        assert modes_study["trials"][key]["fused_with"] == 2  # the two seeds trained together
    frozen = [m for k, m in modes_study["first"].items() if modes_study["trials"][k]["run_name"].startswith("frozen")]
    # the foundation never saw 90 degrees: Frozen is far worse there than on its own modes
    assert all(m["acc_90"] < min(m["acc_0"], m["acc_45"]) - 0.2 for m in frozen)


def test_resume_trains_only_the_lost_trials_and_gets_their_metrics_again(modes_study: dict) -> None:
    resumed = modes_study["resumed"]
    assert resumed.returncode == 0, resumed.stderr
    assert "2 to run" in resumed.stdout + resumed.stderr
    study_dir = modes_study["dir"]
    for key in modes_study["lost"]:
        again = json.loads((study_dir / "trials" / key / "metrics.json").read_text())
        before = modes_study["first"][key]
        for name in (accuracy_name(a) for a in (0, 45, 90)):
            assert again[name] == pytest.approx(before[name], abs=2e-3)  # one test digit of the 1,000
    untouched = set(modes_study["first"]) - set(modes_study["lost"])
    for key in untouched:
        assert json.loads((study_dir / "trials" / key / "metrics.json").read_text()) == modes_study["first"][key]


def number(cell: str) -> float:
    return float(cell.split(" ")[0])


def test_the_report_has_the_limits_map_the_overlap_matrix_and_the_intervention_table(modes_study: dict) -> None:
    page, markdown = modes_study["page"], modes_study["report_md"]
    assert "modes-missing" not in page.ids and "modes-units-missing" not in page.ids
    assert "modes-scope" in page.ids and "the 45° trials only" in markdown
    header, *rows = page.tables["modes-limits-table"]
    assert {(row[0], row[1].split(" ")[0]) for row in rows} == {
        (f"{t}°", m) for t in (0, 45, 90) for m in ("frozen", "taugate", "lora")
    }
    gain = header.index("gain over Frozen (mean ± std)")
    assert all(number(row[gain]) == 0 for row in rows if row[1] == "frozen")
    assert all(row[header.index("n seeds")] == "2" for row in rows)
    accuracy = header.index("target acc (mean ± std)")
    frozen = {row[0]: number(row[accuracy]) for row in rows if row[1] == "frozen"}
    assert frozen["90°"] < min(frozen["0°"], frozen["45°"])  # the mode the foundation never saw
    for figure in ("modes-limits", "modes-jaccard", "modes-core-by-gap", "modes-intervention"):
        assert f"figures/{figure}.png" in page.images
        assert (modes_study["dir"] / "report" / "figures" / f"{figure}.png").stat().st_size > 5000

    header, *rows = page.tables["modes-jaccard-table"]
    assert header == ["mode", "0°", "45°", "90°"] and len(rows) == 3
    values = [[number(cell) for cell in row[1:]] for row in rows]
    assert all(values[i][i] == 1 for i in range(3)) and all(0 <= v <= 1 for row in values for v in row)
    assert values[0][2] == values[2][0]

    header, *rows = page.tables["modes-intervention-table"]
    assert [row[0] for row in rows] == ["0°", "45°", "90°"]
    silenced = header.index("units silenced (attributed)")
    assert all(number(row[silenced]) == 3 for row in rows)  # 5% of the 64 hidden units
    assert all(row[header.index("n seeds")] == "2" for row in rows)
    raw, corrected = header.index("p (one-sided, raw)"), header.index("p (Holm-corrected)")
    assert all(float(row[corrected]) >= float(row[raw]) for row in rows)  # three modes, one Holm family
    assert all("[" in row[header.index("difference attributed - random [95% CI]")] for row in rows)
    verdicts = [row[header.index("causal?")] for row in rows]
    assert all(v.startswith(("holds", "does not hold")) and "n = 2 seeds" in v for v in verdicts)
    assert not any("specific" in column for column in header)
    assert "Attributed units carry their mode" in markdown and "Units exclusive to one mode" in markdown


def test_a_modes_study_ends_with_a_mode_bank_per_foundation_described_in_its_report(modes_study: dict) -> None:
    from trainables.bank.disk import load_bank

    banks = sorted((modes_study["dir"] / "bank").glob("*/bank.json"))
    assert len(banks) == 2 and "bank: " in modes_study["run"].stdout + modes_study["run"].stderr
    for index in banks:
        bank = load_bank(index.parent)
        assert bank.names == ["taugate@0", "taugate@45", "taugate@90"]
    header, *rows = modes_study["page"].tables["modes-bank-table"]
    assert len(rows) == 6 and {row[1] for row in rows} == {"taugate@0", "taugate@45", "taugate@90"}
    kept = header.index("units kept per layer")
    for row in rows:  # kept/units per layer of the 32-32 foundation
        assert all(0 < int(k) <= int(n) == 32 for k, n in (part.split("/") for part in row[kept].split(", ")))


def test_each_bank_is_logged_as_a_pyfunc_model_that_predicts_like_the_mixed_batch(modes_study: dict) -> None:
    """One command (`taugate run` of a modes study) builds the banks and logs them to the study's parent
    run; the logged model predicts every test digit of every mode as the in-process mixed batch does."""
    import re

    import mlflow
    import numpy as np

    from study.serving import request_frame, use_tracking_uri
    from trainables.bank.disk import load_bank

    output = modes_study["run"].stdout + modes_study["run"].stderr
    uris = re.findall(r"logged to MLflow as (models:/\S+)", output)
    assert len(uris) == 2
    study_dir = modes_study["dir"]
    bank = load_bank(sorted((study_dir / "bank").glob("*/bank.json"))[0].parent)
    modes = load_modes(parse_config({"hidden": [32, 32], "angles": [0, 45],
                                     "eval_angles": [90], "device": "cpu"}), torch.device("cpu"))  # fmt: skip
    x = torch.cat([modes[a].test_x for a in (0.0, 45.0, 90.0)])
    names = [name for a in ("0", "45", "90") for name in [f"taugate@{a}"] * len(modes[float(a)].test_y)]
    expected = bank.model(hard=True)(x, names).argmax(1).numpy()
    with use_tracking_uri(f"sqlite:///{study_dir / 'mlflow.db'}"):
        served = {uri: mlflow.pyfunc.load_model(uri) for uri in uris}
    predicted = None
    for model in served.values():  # the seed-0 bank is one of the two
        classes = model.predict(request_frame(x, names))["class"].to_numpy()
        if (classes == expected).all():
            predicted = classes
    assert predicted is not None and np.array_equal(predicted, expected)
