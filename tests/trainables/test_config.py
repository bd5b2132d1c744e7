"""A study's ledger entry is a trial config: `trials/<key>/config.json` as the study wrote it loads with
`parse_config` (its bookkeeping dropped, by name), runs again with `taugate trial --config`, and anything
else in it is still refused with the field named."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import taugate
from trainables.config import LEDGER_FIELDS, ConfigError, TrialConfig, parse_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def entry(smoke_study) -> dict:
    """A LoRA trial's ledger entry in the session's smoke study (configs/smoke.yaml: LoRA at rank 4)."""
    configs = sorted((smoke_study / "trials").glob("*/config.json"))
    path = next(c for c in configs if json.loads(c.read_text())["config"]["method"] == "lora")
    return {"path": path, "record": json.loads(path.read_text())}


def test_a_ledger_config_json_loads_as_the_trial_config_it_ran(entry):
    record = entry["record"]
    assert {"variant", "run_name"} <= set(record)  # what parse_config used to refuse
    config = parse_config(record)
    assert isinstance(config, TrialConfig)
    assert config.model_dump() == record["config"]
    assert (config.method, config.lora_rank) == ("lora", 4)
    assert set(record) - {"config"} <= set(LEDGER_FIELDS)  # every bookkeeping field is a named one


def test_a_field_that_is_neither_config_nor_bookkeeping_is_refused_by_name(entry):
    record = entry["record"] | {"lr_schedule": "cosine"}
    with pytest.raises(ConfigError, match=r"lr_schedule: unknown field .*bookkeeping fields variant, run_name"):
        parse_config(record)
    inner = entry["record"] | {"config": entry["record"]["config"] | {"epochs": -1}}
    with pytest.raises(ConfigError, match=r"^config\.epochs: "):  # named where it sits in the entry
        parse_config(inner)
    with pytest.raises(ConfigError, match="variant: unknown field"):  # a flat config keeps refusing it
        parse_config({"method": "lora", "variant": {}})


def test_taugate_trial_reruns_a_ledger_entry_with_an_option_on_top(entry, tmp_path):
    result = taugate("trial", "--config", str(entry["path"]), "--seed", "3", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout.splitlines()[-1])
    assert (metrics["method"], metrics["seed"], metrics["status"]) == ("lora", 3, "ok")
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps(entry["record"] | {"typo": 1}))
    refused = taugate("trial", "--config", str(bad))
    assert refused.returncode == 2 and "typo: unknown field" in refused.stderr and "Traceback" not in refused.stderr
