"""Study-level measurements, each in fresh processes as a user would run them: the same work in
one bare process (the floor), `taugate run` with and without fusion, a naive Ray Tune setup, and
throughput as a study grows from 25 to 400 trials."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "configs" / "paper.yaml"
TAUGATE = Path(sys.executable).parent / "taugate"

NAIVE = """
import json, sys, time, ray
from ray import tune
from trainables.engine.trial import run_trial

def naive(config):
    tune.report(run_trial(config))  # trains its own foundation in every trial

started = time.perf_counter()
ray.init(address="local", _node_ip_address="127.0.0.2", include_dashboard=False, logging_level="error")
configs = json.load(open({trials!r}))
tune.Tuner(naive, param_space=tune.grid_search(configs), tune_config=tune.TuneConfig(reuse_actors=False),
           run_config=tune.RunConfig(storage_path={storage!r}, verbose=0)).fit()
print("NAIVE", time.perf_counter() - started)
"""


def paper_spec(folder: Path, seeds: int, fuse: int) -> Path:
    """configs/paper.yaml with `seeds` seeds and the given `fuse`."""
    spec = yaml.safe_load(PAPER.read_text()) | {"seeds": list(range(seeds)), "fuse": fuse}
    path = folder / f"paper-{seeds}seeds-fuse{fuse}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep_spec(folder: Path, name: str, trials: int, seeds: int = 5, fuse: int = 1, digits: int = 4) -> Path:
    """The paper spec as `trials` TauGate trials on `seeds` foundations: seeds x trials/seeds sparsity
    weights log-spaced over 1e-4..1 (rounded to `digits` significant digits; weights that collide
    there are a `ValueError`), fused `fuse` at a time; written to `folder/<name>.yaml`."""
    count = max(1, trials // seeds)
    weights = [float(f"{10 ** (-4 + 4 * i / max(1, count - 1)):.{digits}g}") for i in range(count)]
    if len(set(weights)) != count:
        raise ValueError(f"{trials} trials: sparsity weights collide at {digits} digits")
    spec = yaml.safe_load(PAPER.read_text()) | {
        "name": name, "seeds": list(range(seeds)), "fuse": fuse,
        "methods": {"taugate": {"gate_sharpness": [10], "sparsity_weight": weights}},
    }  # fmt: skip
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def scale_spec(folder: Path, trials: int, seeds: int = 5) -> Path:
    """`trials` TauGate trials on 5 foundations, each its own Tune trial (fuse 1)."""
    return sweep_spec(folder, f"scale-{trials}", trials, seeds)


def floor_seconds(spec: Path) -> float:
    """The spec's trials in the bare loop (benchmarks/loop.py: one fresh process, no Ray, MLflow or
    Tune, each foundation trained once): process start to exit, imports included."""
    from benchmarks.loop import trial_configs

    path = spec.with_suffix(".trials.json")
    path.write_text(json.dumps(trial_configs(spec)))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmarks.loop", str(path)], cwd=ROOT, check=True)
    return time.perf_counter() - started


def run_study(spec: Path) -> tuple[float, float, str]:
    """`taugate run SPEC --no-report` in a fresh folder, as a user runs it. Returns the process's wall
    time (start to exit: the CLI's imports, Ray's start and shutdown included), the time the CLI
    reports (Ray start to final results) and its progress output."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = subprocess.run(
            [str(TAUGATE), "run", str(spec), "--output", f"{folder}/study", "--yes", "--no-report"],
            capture_output=True, text=True, check=False, cwd=ROOT,
        )  # fmt: skip
        wall = time.perf_counter() - started
    window = window_of(result.stderr)
    if result.returncode != 0 or window is None:
        raise RuntimeError(f"taugate run {spec} failed:\n{result.stderr[-3000:]}")
    return wall, window, result.stderr


def window_of(stderr: str) -> float | None:
    """The time `taugate run` reports for a study with no failed trial (Ray's start to final results)."""
    found = re.search(r"trials finished, 0 failed, ([0-9.]+)s; results", stderr)
    return None if found is None else float(found.group(1))


def progress(stderr: str) -> list[tuple[float, int]]:
    """(elapsed seconds, trials done) of each progress line `[  7.4s] 3/25 done, ...`."""
    return [(float(t), int(d)) for t, d in re.findall(r"\[\s*([0-9.]+)s\] (\d+)/\d+ done", stderr)]


def rates(trials: int, seconds: float, stderr: str) -> tuple[float, float]:
    """(trials / study time, trials finished per minute between the first and the last to finish)
    of one study: its trial count, the time the CLI reported and its progress output."""
    done = [(t, d) for t, d in progress(stderr) if d > 0]
    (t_first, d_first), (t_last, d_last) = done[0], done[-1]
    return trials / seconds * 60, (d_last - d_first) / max(t_last - t_first, 1e-9) * 60


def scaling(sizes: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """trials_per_minute: trials / study time for each size. trials_per_minute_steady: trials
    finished per minute between the first and the last to finish, which leaves out the fixed
    start-up (Ray, workers, foundations) and shows whether the per-trial overhead grows."""
    overall, steady = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            _, seconds, stderr = run_study(scale_spec(Path(folder), size))
            overall[str(size)], steady[str(size)] = rates(size, seconds, stderr)
    return {"trials_per_minute": overall, "trials_per_minute_steady": steady}


def naive_seconds(spec: Path) -> float:
    """The spec's trials on a naive Ray Tune setup: no actor reuse, each trial trains its own foundation."""
    from benchmarks.loop import trial_configs

    with tempfile.TemporaryDirectory() as folder:
        trials = Path(folder) / "trials.json"
        trials.write_text(json.dumps(trial_configs(spec)))
        script = NAIVE.format(trials=str(trials), storage=folder)
        env = os.environ | {"RAY_AIR_NEW_OUTPUT": "0", "RAY_AUTH_MODE": "token"}
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                env=env, cwd=ROOT)  # fmt: skip
    return float(re.search(r"NAIVE ([0-9.]+)", result.stdout).group(1))


def bench_studies(quick: bool) -> dict[str, object]:
    """The floor, the fused study (configs/paper.yaml as shipped, `fuse: 5`) and the unfused one take
    turns `rounds` times; each figure is the median of its rounds, every round is kept in
    `*_samples`. The naive setup (about a minute) and the scaling studies run once.

    `study_seconds` is a whole `taugate run` process, like `floor_seconds`; `study_window_seconds`
    is the time the CLI reports (Ray start to final results), like `naive_seconds`."""
    seeds, rounds = (1, 1) if quick else (5, 3)
    sizes = (5, 10) if quick else (25, 100, 400)
    samples: dict[str, list[float]] = {name: [] for name in ("floor", "study", "study_window", "study_unfused",
                                                             "study_unfused_window")}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        fused, unfused = paper_spec(Path(folder), seeds, fuse=5), paper_spec(Path(folder), seeds, fuse=1)
        for _ in range(rounds):
            samples["floor"].append(floor_seconds(fused))
            for name, spec in (("study", fused), ("study_unfused", unfused)):
                wall, window, _ = run_study(spec)
                samples[name].append(wall)
                samples[f"{name}_window"].append(window)
        naive = naive_seconds(fused)
    results: dict[str, object] = {"study_seeds": seeds, "study_rounds": rounds}
    for name, values in samples.items():
        results[f"{name}_seconds"] = statistics.median(values)
        results[f"{name}_seconds_samples"] = [round(v, 3) for v in values]
    results["naive_seconds"] = naive
    results |= scaling(sizes)
    floor, naive = results["floor_seconds"], results["naive_seconds"]
    tpm = results["trials_per_minute_steady"]
    results |= {
        "study_vs_floor": results["study_seconds"] / floor,
        "study_unfused_vs_floor": results["study_unfused_seconds"] / floor,
        "study_window_vs_floor": results["study_window_seconds"] / floor,
        "study_vs_naive": naive / results["study_window_seconds"],
        "study_unfused_vs_naive": naive / results["study_unfused_window_seconds"],
        "steady_largest_vs_smallest": tpm[str(sizes[-1])] / tpm[str(sizes[0])],
    }
    return results
