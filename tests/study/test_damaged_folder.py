"""A damaged file in a study folder: every command names it and says what to do, never a traceback.

Each test damages real files of a copy of the session's finished smoke study (never the shared one) and
runs the real command line: a damaged study.json, spec.yaml, plan.json or optuna.db stops a command with
exit code 2 and `error: <file>: <what is wrong>; <what to do>`; a damaged ledger entry counts as not run and
`resume` trains exactly that trial again; a damaged history is a warning; a damaged foundation is set aside
and trained again once by the trial that needs it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis.table.load import load_tune
from study.spec.plan import foundation_key
from tests.support.cli import run_spec, taugate
from tests.support.study_folder import ledger_metrics
from trainables.config import parse_config

pytestmark = pytest.mark.slow

READ_COMMANDS = ("status", "report", "resume", "track")


def copy_of(study: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(study, tmp_path / "study"))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("train_seconds", "node_id")}


def assert_refused_naming(result, path: Path) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.splitlines()[0].startswith(f"error: {path}: "), result.stderr


def foundation_of(study: Path, key: str) -> str:
    return foundation_key(parse_config(json.loads((study / "trials" / key / "config.json").read_text())))


def keys_by_method(study: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, metrics in sorted(ledger_metrics(study).items()):
        out.setdefault(metrics["method"], []).append(key)
    return out


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("study.json", truncate),
        ("plan.json", truncate),
        ("spec.yaml", lambda p: p.write_text("name: smoke\nmethods: {frozen: {}}\nseeds: [0, 0]\nepochs: -1\n")),
        ("spec.yaml", lambda p: p.write_text("name: [smoke\n")),
    ],
    ids=["study-json-truncated", "plan-json-truncated", "spec-yaml-invalid", "spec-yaml-syntax"],
)
def test_a_damaged_study_file_stops_every_command_naming_it(smoke_study, tmp_path, name, damage):
    study = copy_of(smoke_study, tmp_path)
    damage(study / name)
    for command in READ_COMMANDS:
        result = taugate(command, str(study))
        assert_refused_naming(result, study / name)
        assert "; " in result.stderr.splitlines()[0]  # the fix follows the problem
    checked = taugate("status", str(study), "--check")
    assert checked.returncode == 2
    assert [d["file"] for d in json.loads(checked.stdout)["damaged"]] == [str(study / name)]
    assert not (study / "tune" / "run-2").exists()  # nothing started


def test_damaged_ledger_entries_count_as_not_run_and_resume_trains_exactly_them(smoke_study, tmp_path):
    study = copy_of(smoke_study, tmp_path)
    original = ledger_metrics(smoke_study)
    by_method = keys_by_method(study)
    damaged = {  # what a careful user found: each entry accepted or a traceback before
        by_method["frozen"][0]: ("metrics.json", "[]"),
        by_method["frozen"][1]: ("metrics.json", '"x"'),
        by_method["bitfit"][0]: ("metrics.json", "1"),
        by_method["bitfit"][1]: ("metrics.json", "{}"),
        by_method["lora"][0]: (
            "metrics.json",
            json.dumps({k: v for k, v in original[by_method["lora"][0]].items() if k != "trainable_params"}),
        ),  # fmt: skip
        by_method["taugate"][0]: ("config.json", '{"variant": {"method": "tau'),
    }
    for key, (name, text) in damaged.items():
        (study / "trials" / key / name).write_text(text)
    untouched = {k: (study / "trials" / k / "metrics.json").stat().st_mtime_ns for k in original if k not in damaged}

    status = taugate("status", str(study))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["finished"] == len(original) - len(damaged)
    assert json.loads(status.stdout)["remaining"] == len(damaged)
    for key, (name, _) in damaged.items():
        assert f"warning: {study / 'trials' / key / name}: " in status.stderr
    checked = taugate("status", str(study), "--check")
    assert checked.returncode == 2
    found = {d["file"]: d for d in json.loads(checked.stdout)["damaged"]}
    assert set(found) == {str(study / "trials" / key / name) for key, (name, _) in damaged.items()}
    assert all("taugate resume" in d["what_to_do"] for d in found.values())

    resumed = taugate("resume", str(study))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    assert f"{len(original)}/{len(original)} trials finished" in resumed.stderr
    now = ledger_metrics(study)
    assert {k: comparable(m) for k, m in now.items()} == {k: comparable(m) for k, m in original.items()}
    # exactly the damaged entries were trained again
    assert {k for k in original if k not in damaged and (study / "trials" / k / "metrics.json").stat().st_mtime_ns
            != untouched[k]} == set()  # fmt: skip
    assert taugate("status", str(study), "--check").returncode == 0
    pd.testing.assert_frame_equal(
        load_tune(study).drop(columns="train_seconds"), load_tune(smoke_study).drop(columns="train_seconds")
    )


def test_a_damaged_history_is_a_warning_and_the_results_stay(smoke_study, tmp_path):
    study = copy_of(smoke_study, tmp_path)
    key = sorted(ledger_metrics(study))[0]
    history = study / "trials" / key / "history.json"
    truncate(history)
    report = taugate("report", str(study))
    assert report.returncode == 0, report.stderr[-3000:]
    warning = f"warning: {history}: not valid JSON"
    assert warning in report.stderr and "no learning curve for this trial" in report.stderr
    assert json.loads(taugate("status", str(study)).stdout)["finished"] == len(ledger_metrics(smoke_study))
    checked = taugate("status", str(study), "--check")
    assert checked.returncode == 2 and [d["file"] for d in json.loads(checked.stdout)["damaged"]] == [str(history)]


def test_a_damaged_foundation_is_set_aside_and_trained_again_once(smoke_study, tmp_path):
    study = copy_of(smoke_study, tmp_path)
    original = ledger_metrics(smoke_study)
    foundation = sorted((study / "foundations").glob("*.safetensors"))[0]
    # one trial left, on that foundation: the adapter records which foundation it was trained on
    key = next(k for k in sorted(original) if foundation_of(study, k) == foundation.stem)
    (study / "trials" / key / "metrics.json").unlink()
    truncate(foundation)

    checked = taugate("status", str(study), "--check")
    assert checked.returncode == 2
    assert [d["file"] for d in json.loads(checked.stdout)["damaged"]] == [str(foundation)]

    resumed = taugate("resume", str(study))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"warning: {foundation}: " in resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert "0 failed" in resumed.stderr
    set_aside = list(foundation.parent.glob(f"{foundation.name}.damaged-*"))
    assert len(set_aside) == 1  # trained again once, not once per Tune retry
    assert (
        foundation.is_file() and foundation.read_bytes() == (smoke_study / "foundations" / foundation.name).read_bytes()
    )
    assert comparable(ledger_metrics(study)[key]) == comparable(original[key])
    assert taugate("status", str(study), "--check").returncode == 0


OPTUNA = """
name: search-damaged
foundation: {epochs: 1}
epochs: 1
seeds: [0]
methods: {bitfit: {}}
search:
  kind: optuna
  num_samples: 1
  objectives: [{metric: val_acc_45, mode: max}]
"""


def test_a_damaged_optuna_store_is_named_not_blamed_on_mlflow(tmp_path):
    study = run_spec(tmp_path, OPTUNA)
    (study / "optuna.db").write_bytes(b"garbage, not SQLite" * 100)
    for command in ("status", "track", "report", "resume"):
        result = taugate(command, str(study))
        assert_refused_naming(result, study / "optuna.db")
        assert "MLflow" not in result.stderr
    checked = taugate("status", str(study), "--check")
    assert checked.returncode == 2
    assert [d["file"] for d in json.loads(checked.stdout)["damaged"]] == [str(study / "optuna.db")]


def test_a_damaged_mlflow_store_stops_track_naming_it_and_track_rebuilds_it_once_set_aside(smoke_study, tmp_path):
    study = copy_of(smoke_study, tmp_path)
    store = study / "mlflow.db"
    store.write_bytes(b"this is not a database" * 100)
    refused = taugate("track", str(study))
    assert_refused_naming(refused, store)
    assert "not a readable SQLite database" in refused.stderr and "taugate track" in refused.stderr
    status = taugate("status", str(study))  # tracking is best effort: other commands warn and go on
    assert status.returncode == 0 and f"warning: {store}: " in status.stderr
    checked = taugate("status", str(study), "--check")
    assert checked.returncode == 2 and str(store) in [d["file"] for d in json.loads(checked.stdout)["damaged"]]
    store.rename(study / "mlflow.db.damaged")  # the fix the message gives
    rebuilt = taugate("track", str(study))
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert "logged 8 new trial runs" in rebuilt.stderr
    assert taugate("status", str(study), "--check").returncode == 0
