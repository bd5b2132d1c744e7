"""What ASHA saves on a long-trial sweep, run on demand (never a timed test): `python -m benchmarks.scheduler_savings`.

Issue 14's goals, on `configs/wide.yaml` (36 TauGate trials on a [1024, 1024] MLP, 8 epochs each):
- ASHA spends at most half the trial-epochs of the full grid;
- the configuration ASHA ranks best (on validation) is the full grid's best, or within that best
  configuration's seed interval.
Runs `taugate run` twice as a user does, in fresh folders: the spec as shipped (ASHA) and the same
spec with `scheduler: {kind: none}` (the full grid), and writes benchmarks/schedulers_results.json.

Ranking, on the target's validation accuracy (`val_acc_45`, what the scheduler reads), never test:
- the full grid: each configuration's mean over its seeds; the best is the highest mean, and its
  seed interval is the min-max over its seeds (with the 95% t-interval beside it);
- ASHA: a configuration's trials that ran every epoch (ASHA's top rung); its score is their mean,
  and a configuration none of whose trials reached the top rung is not ranked.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from scipy import stats

from benchmarks.entry import study_benchmark

ROOT = Path(__file__).resolve().parent.parent
TAUGATE = Path(sys.executable).parent / "taugate"
SPEC = ROOT / "configs" / "wide.yaml"
RESULTS = Path(__file__).resolve().parent / "schedulers_results.json"
METRIC = "val_acc_45"


def run_study(spec: Path, study: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run([str(TAUGATE), "run", str(spec), "--output", str(study), "--no-report"],
                            capture_output=True, text=True, check=False, cwd=ROOT)  # fmt: skip
    if result.returncode != 0 or not re.search(r"trials finished.*, 0 failed", result.stderr):
        raise RuntimeError(f"taugate run {spec} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def trials(study: Path) -> list[dict]:
    """Every ledger entry: its configuration (seed left out), seed, status, epochs run and planned."""
    out = []
    for folder in sorted((study / "trials").iterdir()):
        record = json.loads((folder / "config.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        config = record["config"]
        ran = metrics.get("stopped_at_epoch", config["epochs"]) if metrics["status"] != "diverged" else None
        columns = {k: v for k, v in record["columns"].items() if k != "seed"}
        out.append({"configuration": json.dumps(columns, sort_keys=True), "seed": config["seed"],
                    "status": metrics["status"], "epochs_run": ran, "epochs_planned": config["epochs"],
                    "value": metrics.get(METRIC), "seconds": metrics.get("train_seconds")})  # fmt: skip
    return out


def full_grid_ranking(entries: list[dict]) -> dict[str, dict]:
    by_config: dict[str, list[float]] = {}
    for entry in entries:
        if entry["status"] == "ok":
            by_config.setdefault(entry["configuration"], []).append(entry["value"])
    out = {}
    for config, values in by_config.items():
        mean = statistics.fmean(values)
        half = (stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
                if len(values) > 1 else float("nan"))  # fmt: skip
        out[config] = {"mean": mean, "min": min(values), "max": max(values), "ci95": [mean - half, mean + half],
                       "seeds": len(values)}  # fmt: skip
    return out


def asha_ranking(entries: list[dict]) -> dict[str, float]:
    top: dict[str, list[float]] = {}
    for entry in entries:
        if entry["status"] == "ok" and entry["epochs_run"] == entry["epochs_planned"]:
            top.setdefault(entry["configuration"], []).append(entry["value"])
    return {config: statistics.fmean(values) for config, values in top.items()}


def compare(asha: list[dict], grid: list[dict]) -> dict[str, object]:
    spent = sum(e["epochs_run"] or 0 for e in asha)
    full = sum(e["epochs_planned"] for e in grid)
    grid_rank, asha_rank = full_grid_ranking(grid), asha_ranking(asha)
    best = max(grid_rank, key=lambda c: grid_rank[c]["mean"])
    picked = max(asha_rank, key=asha_rank.get)
    interval = grid_rank[best]
    picked_mean = grid_rank[picked]["mean"]
    stops: dict[int, int] = {}
    for entry in asha:
        if entry["status"] == "stopped":
            stops[entry["epochs_run"]] = stops.get(entry["epochs_run"], 0) + 1
    return {
        "trials": len(asha),
        "asha_trial_epochs": spent,
        "full_grid_trial_epochs": full,
        "epochs_ratio": round(spent / full, 3),
        "goal_epochs_ratio": 0.5,
        "stopped_trials": sum(stops.values()),
        "stopped_at_epoch": dict(sorted(stops.items())),
        "full_grid_best": json.loads(best),
        "full_grid_best_mean": round(interval["mean"], 4),
        "full_grid_best_seed_range": [round(interval["min"], 4), round(interval["max"], 4)],
        "full_grid_best_ci95": [round(v, 4) for v in interval["ci95"]],
        "asha_best": json.loads(picked),
        "asha_best_score": round(asha_rank[picked], 4),
        "asha_best_full_grid_mean": round(picked_mean, 4),
        "asha_best_full_grid_rank": sorted(grid_rank, key=lambda c: -grid_rank[c]["mean"]).index(picked) + 1,
        "configurations": len(grid_rank),
        "full_grid_mean_trial_seconds": round(statistics.fmean(e["seconds"] for e in grid if e["seconds"]), 1),
        "same_best": picked == best,
        "within_seed_range": interval["min"] <= picked_mean <= interval["max"],
    }


def run(spec: Path = SPEC, keep: Path | None = None) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as scratch:
        folder = keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        raw = yaml.safe_load(spec.read_text())
        grid_spec = folder / "wide-full-grid.yaml"
        grid_spec.write_text(yaml.safe_dump(raw | {"name": f"{raw['name']}-grid", "scheduler": {"kind": "none"}}))
        asha_seconds = run_study(spec, folder / "asha")
        grid_seconds = run_study(grid_spec, folder / "grid")
        result = compare(trials(folder / "asha"), trials(folder / "grid"))
    met = result["epochs_ratio"] <= 0.5 and (result["same_best"] or result["within_seed_range"])
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.scheduler_savings",
        "spec": str(spec.relative_to(ROOT)) if spec.is_relative_to(ROOT) else str(spec),
        "asha_wall_seconds": round(asha_seconds, 1),
        "full_grid_wall_seconds": round(grid_seconds, 1),
        "wall_ratio": round(asha_seconds / grid_seconds, 3),
        **result,
        "met": met,
    }


def main() -> None:
    study_benchmark(__doc__, SPEC, RESULTS, run, keep_help="run both studies under this folder and keep them")


if __name__ == "__main__":
    main()
