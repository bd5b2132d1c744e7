"""The bare loop a careful researcher would write for a study's trials, with none of the service:
no Ray, Tune, MLflow or ledger. One process, trials one after another (unfused), each foundation
trained once and shared by the trials on it. `python -m benchmarks.loop TRIALS.json` runs the trial
configs in the file; `trial_configs(spec)` writes them for a spec. It is the denominator of
`study_warm_vs_floor` and `study_400_vs_loop` (benchmarks/scale.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def trial_configs(spec_path: Path) -> list[dict[str, Any]]:
    """Every trial config dict of a grid spec, in the study's grid order."""
    import yaml

    from study.spec.loader import parse_spec
    from study.spec.plan import config_fields, variants

    spec = parse_spec(yaml.safe_load(spec_path.read_text()), source=str(spec_path))
    return [spec.base_config() | config_fields(variant) for variant in variants(spec)]


def main(path: Path) -> None:
    from trainables.config import parse_config
    from trainables.data import load_modes
    from trainables.device import resolve_device
    from trainables.engine.fit import train_foundation
    from trainables.engine.trial import run_trial, shared

    foundations = {}
    for raw in json.loads(path.read_text()):
        config = parse_config(raw)
        if (key := config.foundation_id()) not in foundations:
            foundations[key] = train_foundation(config, load_modes(config, resolve_device(config.device)))
        run_trial(config, shared(foundations[key]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
