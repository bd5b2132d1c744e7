"""Performance at scale (issue 16), run on demand: `python -m benchmarks.scale [--only NAME ...]`.

Each figure is a ratio whose two sides run in one invocation, in fresh processes, as a user runs
them, taking turns for `--rounds` rounds (each figure the median, every round kept); results go to
benchmarks/scale_results.json and benchmarks/README.md ("At scale") says what each one means, its goal
and the latest values.

- warm: the bare loop (benchmarks/loop.py) and configs/paper.yaml on its own Ray, taking turns with no other
  Ray running, then the study on a warm cluster (`taugate cluster start`, then `taugate run --address`).
- s400: a 400-trial TauGate ablation through `taugate run` as shipped (fuse 5, its own Ray), whole
  process, against the bare sequential loop over the same 400 trials, and against its pure compute
  (benchmarks/compute.py: its fused groups in one process on one thread) divided by the cores.
- s2000: a 2,000-trial study (the default max_trials) and a 25-trial one of the same family: wall,
  trials per minute, and the resident memory of the driver and of every Ray process, sampled.
- optuna: configs/optuna.yaml with 40 configurations (seeds trained together in each Optuna trial)
  against the same trials (read from its ledger) one by one in the bare loop, taking turns with no other Ray
  running; then the study on a warm cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.loop import trial_configs  # noqa: E402
from benchmarks.studies import sweep_spec  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "scale_results.json"
TAUGATE = Path(sys.executable).parent / "taugate"
PAPER = ROOT / "configs" / "paper.yaml"
OPTUNA = ROOT / "configs" / "optuna.yaml"
PROGRESS = re.compile(r"\[\s*([0-9.]+)s\] (\d+)/\d+ done")
SUMMARY = re.compile(r"(\d+)/(\d+) trials finished.*?, (\d+) failed, ([0-9.]+)s; results")


def taugate_env() -> dict[str, str]:
    return os.environ | {"RAY_AUTH_MODE": "token"}


def ablation_spec(folder: Path, trials: int, seeds: int = 5) -> Path:
    """`trials` TauGate trials (the paper's protocol, fuse 5 as shipped): `seeds` seeds x
    trials/seeds sparsity weights, log-spaced over 1e-4..1."""
    return sweep_spec(folder, f"ablation-{trials}", trials, seeds, fuse=5, digits=6)


def is_worker(name: str) -> bool:
    """A Ray worker process (`ray::IDLE`, `ray::ImplicitFunc`, ...), not one of Ray's agents."""
    return name.startswith("ray::") and not any(agent in name for agent in ("Dashboard", "RuntimeEnv"))


class MemorySampler:
    """Resident memory (RSS) of a process and everything below it (a local study's Ray: GCS, raylet,
    workers) plus, if given, a cluster's processes, every `interval` seconds while it runs."""

    def __init__(self, root: int, others: list[int] = (), interval: float = 0.5) -> None:
        import psutil

        self.psutil, self.root, self.others, self.interval = psutil, root, list(others), interval
        self.samples: list[tuple[float, int]] = []  # (time, driver RSS)
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (name, peak RSS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _processes(self) -> list[Any]:
        found = []
        for pid in (self.root, *self.others):
            try:
                top = self.psutil.Process(pid)
                found += [top, *top.children(recursive=True)]
            except self.psutil.NoSuchProcess:
                continue
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            for process in self._processes():
                try:
                    rss, name = process.memory_info().rss, process.name()
                    if name.startswith("python") or name == "taugate":
                        name = " ".join(process.cmdline()[1:3])[:60] or name
                except self.psutil.Error:
                    continue
                if process.pid == self.root:
                    self.samples.append((time.monotonic(), rss))
                if rss > self.peaks.get(process.pid, ("", 0))[1]:
                    self.peaks[process.pid] = (name, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        mib = 1024 * 1024
        workers = {pid: (n, r) for pid, (n, r) in self.peaks.items() if is_worker(n) and pid != self.root}
        return {
            "driver_peak_mib": round(self.peaks.get(self.root, ("", 0))[1] / mib, 1),
            "worker_peak_mib": round(max((r for _, r in workers.values()), default=0) / mib, 1),
            "workers": {f"{n} (pid {pid})": round(r / mib, 1) for pid, (n, r) in sorted(workers.items())},
            "ray_processes_mib": {
                f"{n} (pid {pid})": round(r / mib, 1)
                for pid, (n, r) in sorted(self.peaks.items())
                if pid != self.root and pid not in workers
            },  # fmt: skip
        }


def run_study(spec: Path, folder: Path, address: str | None = None, sample: list[int] | None = None,
              extra: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """`taugate run SPEC --no-report --yes` into `folder`, a whole process as a user runs it: its
    wall time, the window the CLI reports (Ray start, or joining the cluster, to final results),
    (seconds since the window began, trials done) at each progress line, and with `sample` (pids of
    cluster processes, possibly empty) the memory of the driver, its Ray and those processes."""
    command = [str(TAUGATE), "run", str(spec), "--output", str(folder), "--no-report", "--yes", *extra]
    if address:
        command += ["--address", address]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env=taugate_env())  # fmt: skip
    sampler = MemorySampler(process.pid, sample) if sample is not None else None
    lines: list[str] = []
    with sampler or _nothing():
        for line in process.stderr:
            lines.append(line)
        process.wait()
    wall = time.perf_counter() - started
    text = "".join(lines)
    found = SUMMARY.search(text)
    if process.returncode != 0 or found is None or found.group(3) != "0":
        raise RuntimeError(f"taugate run {spec} failed ({process.returncode}):\n{text[-3000:]}")
    out = {"trials": int(found.group(2)), "wall_seconds": wall, "window_seconds": float(found.group(4)),
           "progress": [(float(t), int(d)) for t, d in PROGRESS.findall(text)]}  # fmt: skip
    if sampler is not None:
        out |= sampler.summary() | {"driver_rss": sampler.samples}
    return out


@contextmanager
def _nothing():
    yield None


def loop_seconds(configs: list[dict[str, Any]], folder: Path) -> float:
    """The bare sequential loop over these trial configs in a fresh process: start to exit."""
    path = folder / f"loop-{len(configs)}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(configs))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmarks.loop", str(path)], cwd=ROOT, check=True)
    return time.perf_counter() - started


def steady_rate(progress: list[tuple[float, int]]) -> float:
    """Trials finished per minute between the first and the last to finish (Ray's start and the
    first wave left out)."""
    done = [(t, d) for t, d in progress if d > 0]
    (t0, d0), (t1, d1) = done[0], done[-1]
    return (d1 - d0) / max(t1 - t0, 1e-9) * 60


def driver_growth_per_1000(run: dict[str, Any], started: float) -> float | None:
    """The driver's RSS growth per 1,000 finished trials, MiB: a least-squares line through
    (trials done, RSS) over the study's second half (after start-up allocations settle)."""
    progress, samples = run["progress"], run["driver_rss"]
    if len(progress) < 4 or not samples:
        return None
    window_start = samples[0][0]  # the progress clock starts a little after the process: align on the end
    offset = (samples[-1][0] - window_start) - progress[-1][0]
    points = []
    for t, rss in samples:
        elapsed = t - window_start - offset
        done = max((d for pt, d in progress if pt <= elapsed), default=0)
        if done >= run["trials"] / 2:
            points.append((done, rss / 1024 / 1024))
    if len({d for d, _ in points}) < 2:
        return None
    mean_d = statistics.fmean(d for d, _ in points)
    mean_r = statistics.fmean(r for _, r in points)
    slope = sum((d - mean_d) * (r - mean_r) for d, r in points) / sum((d - mean_d) ** 2 for d, _ in points)
    return slope * 1000


@contextmanager
def warm_cluster(folder: Path):
    """`taugate cluster start` on a free port (its own state file and Ray temp folder), stopped after."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = taugate_env() | {"TAUGATE_CLUSTER_FILE": str(folder / "cluster.json")}
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    started = time.perf_counter()
    subprocess.run([str(TAUGATE), "cluster", "start", "--port", str(port), "--temp-dir", str(temp)],
                   check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
    start_seconds = time.perf_counter() - started
    state = json.loads((folder / "cluster.json").read_text())
    try:
        yield state["address"], state["pid"], start_seconds
    finally:
        subprocess.run([str(TAUGATE), "cluster", "stop"], env=env, cwd=ROOT, check=False, stdout=subprocess.DEVNULL)


def bench_warm(folder: Path, rounds: int) -> dict[str, Any]:
    """The bare loop over the paper study's trials and the study on its own Ray take turns `rounds` times with
    no other Ray on the machine; then the study on a warm cluster, `rounds` times. Each figure is the median
    (every round kept). A study on its own Ray is measured as a user runs it, alone: with a warm cluster
    idling beside it on 2 cores it took 17.1 s instead of 12.5 s (2026-12-04)."""
    configs = trial_configs(PAPER)
    samples: dict[str, list[float]] = {"loop": [], "warm": [], "warm_window": [], "cold": [], "cold_window": []}
    for index in range(rounds):
        samples["loop"].append(loop_seconds(configs, folder))
        cold = run_study(PAPER, folder / f"cold-{index}")
        samples["cold"].append(cold["wall_seconds"])
        samples["cold_window"].append(cold["window_seconds"])
    with warm_cluster(folder) as (address, _, start_seconds):
        for index in range(rounds):
            warm = run_study(PAPER, folder / f"warm-{index}", address=address)
            samples["warm"].append(warm["wall_seconds"])
            samples["warm_window"].append(warm["window_seconds"])
    out: dict[str, Any] = {"paper_trials": len(configs), "cluster_start_seconds": start_seconds}
    for name, values in samples.items():
        out[f"paper_{name}_seconds"] = statistics.median(values)
        out[f"paper_{name}_seconds_samples"] = [round(v, 2) for v in values]
    out["study_warm_vs_floor"] = out["paper_warm_seconds"] / out["paper_loop_seconds"]
    out["study_cold_vs_floor"] = out["paper_cold_seconds"] / out["paper_loop_seconds"]
    return out


def medians(samples: dict[str, list[float]]) -> dict[str, Any]:
    """Each figure's median over the rounds, and every round kept beside it (`<name>_samples`)."""
    out: dict[str, Any] = {}
    for name, values in samples.items():
        out[name] = statistics.median(values)
        out[f"{name}_samples"] = [round(v, 2) for v in values]
    return out


def compute_seconds(spec: Path) -> dict[str, Any]:
    """The spec's fused groups run in one process on one thread (benchmarks/compute.py)."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.compute", str(spec)], cwd=ROOT, check=True,
                          capture_output=True, text=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_400(folder: Path, rounds: int) -> dict[str, Any]:
    """The 400-trial ablation: the bare loop, the study and its pure compute take turns `rounds` times."""
    spec = ablation_spec(folder, 400)
    configs, cores = trial_configs(spec), os.cpu_count() or 1
    samples: dict[str, list[float]] = {"s400_loop_seconds": [], "s400_study_seconds": [],
                                       "s400_study_window_seconds": [], "s400_steady_trials_per_minute": [],
                                       "s400_compute_seconds": [], "s400_foundation_seconds": []}  # fmt: skip
    for index in range(rounds):
        samples["s400_loop_seconds"].append(loop_seconds(configs, folder))
        study = run_study(spec, folder / f"s400-{index}")
        samples["s400_study_seconds"].append(study["wall_seconds"])
        samples["s400_study_window_seconds"].append(study["window_seconds"])
        samples["s400_steady_trials_per_minute"].append(steady_rate(study["progress"]))
        compute = compute_seconds(spec)
        samples["s400_compute_seconds"].append(compute["groups_seconds"])
        samples["s400_foundation_seconds"].append(compute["foundation_seconds"])
    out = medians(samples) | {"cores": cores}
    out["study_400_vs_loop"] = out["s400_study_seconds"] / out["s400_loop_seconds"]
    # the compute on one thread, spread over every core: the least wall time the machine allows
    out["study_400_vs_compute"] = out["s400_study_seconds"] / (out["s400_compute_seconds"] / cores)
    return out


def bench_2000(folder: Path, rounds: int, trials: int = 2000, small: int = 25) -> dict[str, Any]:
    samples: dict[str, list[float]] = {}
    kept: dict[str, Any] = {}
    for index in range(rounds):
        few = run_study(ablation_spec(folder, small), folder / f"s{small}-{index}")
        many = run_study(ablation_spec(folder, trials), folder / f"s{trials}-{index}", sample=[])
        rate_few, rate_many = steady_rate(few["progress"]), steady_rate(many["progress"])
        figures = {
            f"s{trials}_wall_seconds": many["wall_seconds"], f"s{trials}_window_seconds": many["window_seconds"],
            f"s{trials}_trials_per_minute": trials / many["window_seconds"] * 60,
            f"s{trials}_steady_trials_per_minute": rate_many, f"s{small}_steady_trials_per_minute": rate_few,
            f"s{small}_window_seconds": few["window_seconds"], "steady_rate_vs_small": rate_many / rate_few,
            "driver_peak_mib": many["driver_peak_mib"], "worker_peak_mib": many["worker_peak_mib"],
            "driver_growth_mib_per_1000_trials": driver_growth_per_1000(many, 0.0) or 0.0,
        }  # fmt: skip
        for name, value in figures.items():
            samples.setdefault(name, []).append(value)
        if many["driver_peak_mib"] >= max(samples["driver_peak_mib"]):  # the processes of the peak round
            kept = {"workers_peak_mib": many["workers"], "ray_processes_peak_mib": many["ray_processes_mib"]}
    return medians(samples) | kept


def bench_optuna(folder: Path, rounds: int, configurations: int = 40) -> dict[str, Any]:
    """The Optuna study (`configs/optuna.yaml`, `configurations` draws) on its own Ray and the bare loop over
    the trials it ran take turns `rounds` times, with no other Ray on the machine (as `bench_warm`); then the
    same study on a warm cluster, `rounds` times."""
    spec = yaml.safe_load(OPTUNA.read_text())
    spec["search"]["num_samples"] = configurations
    path = folder / "optuna-40.yaml"
    path.write_text(yaml.safe_dump(spec))
    names = ("optuna_study_seconds", "optuna_warm_study_seconds", "optuna_loop_seconds", "optuna_trials",
             "optuna_warm_trials")  # fmt: skip
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        study = run_study(path, folder / f"optuna-{index}")
        records = sorted((folder / f"optuna-{index}" / "trials").glob("*/config.json"))
        configs = [json.loads(record.read_text())["config"] for record in records]
        samples["optuna_study_seconds"].append(study["wall_seconds"])
        samples["optuna_loop_seconds"].append(loop_seconds(configs, folder))
        samples["optuna_trials"].append(len(configs))
    with warm_cluster(folder) as (address, _, _):
        for index in range(rounds):
            warm = run_study(path, folder / f"optuna-warm-{index}", address=address)
            samples["optuna_warm_study_seconds"].append(warm["wall_seconds"])
            samples["optuna_warm_trials"].append(warm["trials"])
    out = medians(samples) | {"optuna_configurations": configurations}
    out["optuna_vs_loop"] = out["optuna_study_seconds"] / out["optuna_loop_seconds"]
    # the warm study draws its own configurations (TPE), so its trial count differs a little from the loop's
    out["optuna_warm_vs_loop"] = out["optuna_warm_study_seconds"] / out["optuna_loop_seconds"]
    return out


def machine() -> str:
    import ray
    import torch

    return (f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), ray {ray.__version__}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=("warm", "s400", "s2000", "optuna"), default=None)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each comparison (each figure: the median)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    chosen = args.only or ["warm", "s400", "s2000", "optuna"]
    results: dict[str, Any] = json.loads(args.output.read_text()) if args.output.is_file() and args.only else {}
    command = (
        "python -m benchmarks.scale"
        + (f" --only {' '.join(chosen)}" if args.only else "")
        + (f" --rounds {args.rounds}" if args.rounds != 3 else "")
    )
    results |= {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "command": command}
    with tempfile.TemporaryDirectory(prefix="taugate-scale-") as tmp:
        folder = Path(tmp)
        for name in chosen:
            started = time.perf_counter()
            figures = {"warm": lambda: bench_warm(folder, args.rounds), "s400": lambda: bench_400(folder, args.rounds),
                       "s2000": lambda: bench_2000(folder, args.rounds),
                       "optuna": lambda: bench_optuna(folder, args.rounds)}[name]()  # fmt: skip
            results |= figures
            print(f"{name} ({time.perf_counter() - started:.0f}s): " + json.dumps(
                {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()
                 if not isinstance(v, (dict, list))}), flush=True)  # fmt: skip
            args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
