"""CUDA check of the modes path, run by hand on a GPU machine (never in CI): `python -m benchmarks.cuda_check`.

Trials evaluated on modes the foundation never saw (CUDA against CPU), fused against unfused, and
batched interventions against one silencing at a time. 2026-11-29 on an H200 (torch 2.11): equal
accuracies on both devices, both gaps 0.0, PASSED. It first found that `adapt` left the methods' new
tensors on the CPU beside a CUDA foundation (fixed; tests/trainables/methods/test_methods.py guards it on the
meta device).
"""

from __future__ import annotations

import json
import time

import torch

from trainables.config import TrialConfig, parse_config
from trainables.data import load_modes
from trainables.engine.fit import train_foundation
from trainables.engine.fused import run_fused
from trainables.engine.silence import hard_accuracy, silenced, silenced_accuracies
from trainables.engine.trial import run_trial
from trainables.methods import adapt

BASE = {"angles": [0, 45], "eval_angles": [90, 135, 180], "target_angle": 90}


def accuracies(metrics: dict) -> dict[str, float]:
    return {k: round(v, 4) for k, v in metrics.items() if k.startswith("acc_")}


def main() -> None:
    out: dict[str, object] = {"torch": torch.__version__, "cuda": torch.cuda.get_device_name(0)}
    for device in ("cuda", "cpu"):
        config = parse_config(BASE | {"method": "taugate", "device": device})
        foundation = train_foundation(config, load_modes(config, torch.device(device)))
        started = time.perf_counter()
        metrics = run_trial(config, foundation=lambda c, m, base=foundation: base)
        out[f"taugate_{device}"] = accuracies(metrics) | {"seconds": round(time.perf_counter() - started, 3)}

    configs = [parse_config(BASE | {"method": "taugate", "device": "cuda", "seed": s}) for s in (0, 1, 2)]
    modes = load_modes(configs[0], torch.device("cuda"))
    foundations = {c.seed: train_foundation(c, modes) for c in configs}

    def provider(config: TrialConfig, modes: dict) -> torch.nn.Module:
        return foundations[config.seed]

    fused = run_fused(configs, foundation=provider)
    alone = [run_trial(c, foundation=provider) for c in configs]
    out["fused_vs_alone_max_acc_gap"] = max(
        abs(f[k] - a[k]) for f, a in zip(fused, alone, strict=True) for k in a if k.startswith(("acc_", "val_acc_"))
    )

    model = adapt(foundations[0], configs[0])
    for gate in model.activations:
        gate.tau.data.uniform_(-0.5, 0.5)  # some gates shut, so silencing and the hard gate both matter
    x, y = modes[90.0].test_x, modes[90.0].test_y
    silencings = [{0: list(range(0, 128, 3))}, {1: [1, 2, 3, 50]}, {0: [5], 1: list(range(64))}, {}]
    batched = silenced_accuracies(model, x, y, silencings)
    looped = []
    for units in silencings:
        with silenced(model, units):
            looped.append(hard_accuracy(model, x, y))
    out["silenced_max_gap"] = max(abs(a - b) for a, b in zip(batched, looped, strict=True))
    print(json.dumps(out, indent=1))
    ok = out["fused_vs_alone_max_acc_gap"] <= 2e-3 and out["silenced_max_gap"] <= 1e-3
    print("CUDA CHECK", "PASSED" if ok else "FAILED")


if __name__ == "__main__":
    main()
