"""Write a study's ledger entries by hand, as `study.folder.storage.TrialLedger.record` does, for tests that
build a tiny study folder without Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainables.config import parse_config


def record_trial(
    study: Path, key: str, config: dict, metrics: dict, history: list[dict[str, Any]] | None = None, **extras: Any
) -> None:
    """One finished trial: `config.json` (the record, plus `extras` such as `started_at`, `ended_at`,
    `worker_pid`), `history.json` when `history` (its epochs) is given, and `metrics.json` last."""
    folder = study / "trials" / key
    folder.mkdir(parents=True, exist_ok=True)
    record = {"variant": {}, "run_name": key, "config": parse_config(config).model_dump(), "columns": {}} | extras
    (folder / "config.json").write_text(json.dumps(record))
    if history is not None:
        (folder / "history.json").write_text(json.dumps({"epochs": history}))
    (folder / "metrics.json").write_text(json.dumps(metrics))
