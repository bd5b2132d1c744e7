"""A tiny finished study folder built without Ray, for the mode bank's tests (tests/trainables/bank/test_bank.py)
and the study commands that read one (`taugate bank`, the served bank): real foundations, trials and
adapters on the bundled data."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.support.ledger import record_trial
from trainables.config import parse_config
from trainables.data import load_modes
from trainables.engine.fit import train_foundation
from trainables.engine.trial import run_trial
from trainables.formats.checkpoints import save_foundation

TINY = {"method": "taugate", "hidden": [16, 16], "foundation_epochs": 1, "epochs": 1, "angles": [0, 45],
        "eval_angles": [90], "device": "cpu", "seed": 0}  # fmt: skip
ALL_METHODS = ("taugate", "gain_only", "threshold_only")
# seed 0: TauGate on 0, 45 (twice: two lambdas) and 90; gain_only on 45; threshold_only on 90
SEED0_TRIALS = (
    ("t0", "taugate", 0, 0.0), ("t45a", "taugate", 45, 0.0), ("t45b", "taugate", 45, 0.05),
    ("t90", "taugate", 90, 0.0), ("g45", "gain_only", 45, 0.0), ("th90", "threshold_only", 90, 0.0),
)  # fmt: skip


def make_study(study: Path, trials: tuple = SEED0_TRIALS, second_seed: bool = True) -> Path:
    """A study folder as a finished study leaves it: foundations/, trials/<key>/{config,metrics}.json and
    adapters; plus a diverged TauGate trial and a LoRA trial (records only), and optionally a second
    seed's foundation with one TauGate trial."""
    plan = [(0, trials)] + ([(1, (("s1t45", "taugate", 45, 0.0),))] if second_seed else [])
    for seed, planned in plan:
        config = parse_config(TINY | {"seed": seed})
        modes = load_modes(config, torch.device("cpu"))
        foundation = train_foundation(config, modes)
        save_foundation(foundation, study / "foundations" / f"{config.foundation_id()}.safetensors")
        for key, method, target, weight in planned:
            trial = TINY | {"seed": seed, "method": method, "target_angle": target, "sparsity_weight": weight}
            metrics = run_trial(trial, foundation=lambda c, m, f=foundation: f, artifact_dir=study / "trials" / key)
            record_trial(study, key, trial, metrics)
    record_trial(study, "diverged", TINY | {"target_angle": 90}, {"status": "diverged", "method": "taugate"})
    record_trial(study, "lora", TINY | {"method": "lora", "target_angle": 90}, {"status": "ok", "method": "lora"})
    return study


SEED0 = parse_config(TINY).foundation_id()
SEED1 = parse_config(TINY | {"seed": 1}).foundation_id()
