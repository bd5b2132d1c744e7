"""Write a study's ledger entries by hand, as `study.storage.TrialLedger.record` does, for tests that
build a tiny study folder without Ray."""

from __future__ import annotations

import json
from pathlib import Path

from trainables.config import parse_config


def record_trial(study: Path, key: str, config: dict, metrics: dict) -> None:
    folder = study / "trials" / key
    folder.mkdir(parents=True, exist_ok=True)
    record = {"variant": {}, "run_name": key, "config": parse_config(config).model_dump(), "columns": {}}
    (folder / "config.json").write_text(json.dumps(record))
    (folder / "metrics.json").write_text(json.dumps(metrics))
