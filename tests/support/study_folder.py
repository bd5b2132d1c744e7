"""Reading a study folder the way tests check it: the ledger's metrics and Tune's logged results."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path


def ledger_metrics(study_dir: Path) -> dict[str, dict]:
    """Every finished trial's metrics.json, by trial key."""
    return {p.parent.name: json.loads(p.read_text()) for p in (Path(study_dir) / "trials").glob("*/metrics.json")}


def trial_results(trial_dir: Path) -> list[dict]:
    """The results Tune logged for one trial (result.json: one line per result, appended across retries)."""
    path = Path(trial_dir) / "result.json"
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        with contextlib.suppress(ValueError):  # a line being written
            rows.append(json.loads(line))
    return rows


def tune_results(study_dir: Path) -> dict[str, list[dict]]:
    """Each Tune trial's reported results, by trial folder name."""
    return {
        folder.name: trial_results(folder)
        for folder in sorted((Path(study_dir) / "tune").glob("run-*/*/"))
        if (folder / "result.json").is_file()
    }


def optuna_study(study_dir: Path):
    """The Optuna study an Optuna search persisted in its study folder (`optuna.db`)."""
    import optuna

    name = json.loads((Path(study_dir) / "study.json").read_text())["optuna_study_name"]
    return optuna.load_study(study_name=name, storage=f"sqlite:///{Path(study_dir) / 'optuna.db'}")
