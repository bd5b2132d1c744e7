"""Benchmarks, run on demand (never timed tests): `python -m benchmarks.run [--quick]`.

Prints a table and writes benchmarks/results.json. Each ratio is measured side by side in one run:
- trial_seconds: one specialisation (default paper setting, TauGate) after warm-up
- epoch_vs_bare: our training loop's epoch / a bare PyTorch loop with the same shapes
- study_vs_floor: configs/paper.yaml through Ray (Ray start to final results) / the same
  5 foundations + 25 specialisations run sequentially in one bare process
- naive_vs_study: a naive Ray Tune setup (no actor reuse, foundation retrained in every trial) / ours
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.json"
sys.path.insert(0, str(ROOT))

from trainables.config import parse_config  # noqa: E402
from trainables.data import load_modes  # noqa: E402
from trainables.device import resolve_device  # noqa: E402
from trainables.methods import adapt  # noqa: E402
from trainables.model import MLP  # noqa: E402
from trainables.train import fit, specialise, train_foundation  # noqa: E402
from trainables.trial import run_trial, shared  # noqa: E402


def best_of(repeats: int, action) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_trial(repeats: int) -> dict[str, float]:
    config = parse_config({"method": "taugate", "device": "cpu"})
    modes = load_modes(config, resolve_device("cpu"))
    foundation = train_foundation(config, modes)
    specialise(foundation, config, modes[45.0])  # warm-up
    seconds = best_of(repeats, lambda: specialise(foundation, config, modes[45.0]))
    return {"trial_seconds": seconds}


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
    timings = {"bare": [], "ours": []}
    for _ in range(repeats):  # interleaved, so drift of the machine hits both alike
        for name, action in (("bare", bare), ("ours", ours)):
            started = time.perf_counter()
            action()
            timings[name].append(time.perf_counter() - started)
    bare_s, ours_s = min(timings["bare"]), min(timings["ours"])
    flops = 6 * samples * (784 * 128 + 128 * 128 + 128 * 10)  # forward + backward
    return {
        "epoch_samples": samples,
        "epoch_bare_seconds": bare_s,
        "epoch_ours_seconds": ours_s,
        "epoch_vs_bare": ours_s / bare_s,
        "epoch_taugate_seconds": best_of(repeats, ours_taugate),
        "epoch_gflops": flops / ours_s / 1e9,
    }


def bench_fused(repeats: int, epochs: int | None = None, members: int = 5) -> dict[str, float | int]:
    """fused_speedup_k5: trial throughput of `members` TauGate trials (default paper setting,
    seeds 0..members-1, one foundation each) fused into one vectorised run with the frozen-prefix
    cache (trainables.fused.run_fused) / the same trials run one after another with run_trial;
    fused_speedup_k5_nocache: the same without the cache. Foundations are trained beforehand and
    shared by both sides; each side's time covers specialisation and evaluation of every trial."""
    from trainables.fused import run_fused

    extra = {} if epochs is None else {"epochs": epochs}
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
    timings: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeats):  # interleaved, so drift of the machine hits every side alike
        for name, action in actions.items():
            started = time.perf_counter()
            action()
            timings[name].append(time.perf_counter() - started)
    best = {name: min(values) for name, values in timings.items()}
    return {
        "fused_members": members,
        "fused_sequential_seconds": best["sequential"],
        "fused_seconds": best["fused"],
        "fused_nocache_seconds": best["fused_nocache"],
        "fused_speedup_k5": best["sequential"] / best["fused"],
        "fused_speedup_k5_nocache": best["sequential"] / best["fused_nocache"],
    }


def floor_paper(seeds: int) -> float:
    """The paper study's work in one bare process: 5 foundations, 25 specialisations."""
    started = time.perf_counter()
    for seed in range(seeds):
        config = parse_config({"seed": seed, "device": "cpu"})
        modes = load_modes(config, resolve_device("cpu"))
        foundation = train_foundation(config, modes)
        for method in ("frozen", "bitfit", "taugate", "lora", "full"):
            extra = {"sparsity_weight": 1.0} if method == "taugate" else {}
            run_trial({"seed": seed, "method": method, "device": "cpu"} | extra, shared(foundation))
    return time.perf_counter() - started


def study_seconds(spec: Path) -> float:
    """`taugate run` of a spec; returns the study's own time (Ray start to final results)."""
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "taugate"), "run", str(spec), "--output", f"{folder}/study"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    return float(re.search(r"failed, ([0-9.]+)s; results", result.stderr).group(1))


NAIVE = """
import sys, time, ray
from ray import tune
sys.path.insert(0, {root!r})
from trainables.trial import run_trial

def naive(config):
    tune.report(run_trial(config))  # trains its own foundation in every trial

started = time.perf_counter()
ray.init(address="local", _node_ip_address="127.0.0.2", include_dashboard=False, logging_level="error")
space = {{"method": tune.grid_search(["frozen", "bitfit", "taugate", "lora", "full"]),
          "seed": tune.grid_search(list(range({seeds}))), "device": "cpu"}}
tune.Tuner(naive, param_space=space, tune_config=tune.TuneConfig(reuse_actors=False),
           run_config=tune.RunConfig(storage_path={storage!r}, verbose=0)).fit()
print("NAIVE", time.perf_counter() - started)
"""


def naive_seconds(seeds: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        script = NAIVE.format(root=str(ROOT), seeds=seeds, storage=folder)
        env = os.environ | {"RAY_AIR_NEW_OUTPUT": "0", "RAY_AUTH_MODE": "token"}
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    return float(re.search(r"NAIVE ([0-9.]+)", result.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for the test suite (figures not meaningful)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    quick = args.quick
    results: dict[str, object] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
        "quick": quick,
    }
    results |= bench_trial(repeats=1 if quick else 5)
    results |= bench_epoch(samples=2_000 if quick else 60_000, repeats=1 if quick else 5)
    results |= bench_fused(repeats=1 if quick else 5, epochs=1 if quick else None)  # quick: one epoch, one run
    if not quick:
        results["floor_seconds"] = floor_paper(seeds=5)
        results["study_seconds"] = study_seconds(ROOT / "configs" / "paper.yaml")
        with tempfile.TemporaryDirectory() as folder:  # the same study with fuse: 5 (one group per method)
            fused = Path(folder) / "paper-fused.yaml"
            fused.write_text((ROOT / "configs" / "paper.yaml").read_text() + "fuse: 5\n")
            results["study_fused_seconds"] = study_seconds(fused)
        results["naive_seconds"] = naive_seconds(seeds=5)
        results["study_vs_floor"] = results["study_seconds"] / results["floor_seconds"]
        results["study_fused_vs_floor"] = results["study_fused_seconds"] / results["floor_seconds"]
        results["naive_vs_study"] = results["naive_seconds"] / results["study_seconds"]
    args.output.write_text(json.dumps(results, indent=2))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"benchmarks ({'quick' if quick else 'full'}) -> {args.output}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in results.items():
        table.add_row(name, f"{value:.3f}" if isinstance(value, float) else str(value))
    Console().print(table)


if __name__ == "__main__":
    main()
