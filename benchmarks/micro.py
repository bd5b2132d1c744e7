"""In-process measurements: one trial, one epoch against a bare PyTorch loop, the machine's
matmul peak, and fused against unfused trials. Each ratio's two sides run interleaved in one
process, so drift of the machine hits both alike."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import parse_config
from trainables.data import load_modes
from trainables.device import resolve_device
from trainables.engine.fit import fit, specialise, train_foundation
from trainables.engine.trial import run_trial
from trainables.methods import adapt
from trainables.model import MLP


def best_of(repeats: int, action) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def interleaved(repeats: int, actions: dict) -> dict[str, float]:
    """Best time of each action, the actions taking turns."""
    timings: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            started = time.perf_counter()
            action()
            timings[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in timings.items()}


def bench_trial(repeats: int, overrides: dict | None = None) -> dict[str, float]:
    """trial_seconds: one TauGate specialisation of the default paper setting, after warm-up
    (`overrides`: config fields changed from that setting, e.g. a tiny one for the tests)."""
    config = parse_config({"method": "taugate", "device": "cpu"} | (overrides or {}))
    modes = load_modes(config, resolve_device("cpu"))
    foundation = train_foundation(config, modes)
    specialise(foundation, config, modes[45.0])  # warm-up
    return {"trial_seconds": best_of(repeats, lambda: specialise(foundation, config, modes[45.0]))}


def matmul_peak(size: int, repeats: int) -> dict[str, float]:
    """matmul_peak_gflops: float32 square matmuls with torch's default threads, best of `repeats`."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=generator), torch.randn(size, size, generator=generator)
    torch.mm(a, b)  # warm-up
    seconds = best_of(repeats, lambda: torch.mm(a, b))
    return {"matmul_size": size, "matmul_peak_gflops": 2 * size**3 / seconds / 1e9}


def bare_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(y))
    for start in range(0, len(y), batch_size):
        index = order[start : start + batch_size]
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def bench_epoch(samples: int, repeats: int) -> dict[str, float]:
    """epoch_vs_bare: our `fit` epoch / a bare PyTorch loop with the same MLP, batches and Adam."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 784, generator=generator)
    y = torch.randint(0, 10, (samples,), generator=generator)

    def ours() -> None:
        fit(MLP(), x, y, epochs=1, lr=1e-3, batch_size=64, seed=0)

    def bare() -> None:
        model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
        bare_epoch(model, x, y, 64)

    def ours_taugate() -> None:
        model = adapt(MLP(), parse_config({"method": "taugate"}))
        fit(model, x, y, epochs=1, lr=1e-2, batch_size=64, seed=0)

    ours(), bare()  # warm-up
    best = interleaved(repeats, {"bare": bare, "ours": ours})
    flops = 6 * samples * (784 * 128 + 128 * 128 + 128 * 10)  # forward + backward
    return {
        "epoch_samples": samples,
        "epoch_bare_seconds": best["bare"],
        "epoch_ours_seconds": best["ours"],
        "epoch_vs_bare": best["ours"] / best["bare"],
        "epoch_taugate_seconds": best_of(repeats, ours_taugate),
        "epoch_gflops": flops / best["ours"] / 1e9,
    }


def bench_fused(
    repeats: int, epochs: int | None = None, members: int = 5, overrides: dict | None = None
) -> dict[str, float | int]:
    """fused_speedup_k5: trial throughput of `members` TauGate trials (default paper setting,
    seeds 0..members-1, one foundation each) fused into one vectorised run with the frozen-prefix
    cache (trainables.engine.fused.run_fused) / the same trials run one after another with run_trial;
    fused_speedup_k5_nocache: the same without the cache. Foundations are trained beforehand and
    shared by both sides; each side's time covers specialisation and evaluation of every trial.
    `overrides`: config fields changed from the default setting, e.g. a tiny one for the tests."""
    from trainables.engine.fused import run_fused

    extra = (overrides or {}) | ({} if epochs is None else {"epochs": epochs})
    configs = [parse_config({"method": "taugate", "seed": seed, "device": "cpu"} | extra) for seed in range(members)]
    modes = load_modes(configs[0], resolve_device("cpu"))
    foundations = {config.seed: train_foundation(config, modes) for config in configs}

    def provider(config, modes):
        return foundations[config.seed]

    actions = {
        "sequential": lambda: [run_trial(config, provider) for config in configs],
        "fused": lambda: run_fused(configs, provider, cache_prefix=True),
        "fused_nocache": lambda: run_fused(configs, provider, cache_prefix=False),
    }
    if repeats > 1:
        for action in actions.values():  # warm-up
            action()
    best = interleaved(repeats, actions)
    return {
        "fused_members": members,
        "fused_sequential_seconds": best["sequential"],
        "fused_seconds": best["fused"],
        "fused_nocache_seconds": best["fused_nocache"],
        "fused_speedup_k5": best["sequential"] / best["fused"],
        "fused_speedup_k5_nocache": best["sequential"] / best["fused_nocache"],
    }
