"""Benchmarks, run on demand (never timed tests): `python -m benchmarks.run [--quick]`.

Prints a table and writes benchmarks/results.json; benchmarks/README.md says what each figure
means and holds the latest ones. In-process measurements are in benchmarks/micro.py, study-level
ones (fresh processes, Ray) in benchmarks/studies.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.json"
sys.path.insert(0, str(ROOT))

from benchmarks.micro import bench_epoch, bench_fused, bench_trial, matmul_peak  # noqa: E402
from benchmarks.studies import bench_studies  # noqa: E402


def machine() -> str:
    import ray

    return (f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), ray {ray.__version__}")  # fmt: skip


def show(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {show(v)}" for k, v in value.items())
    return str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the harness runs")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    quick = args.quick
    results: dict[str, object] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": quick,
        "command": "python -m benchmarks.run" + (" --quick" if quick else ""),
    }
    results |= bench_trial(repeats=1 if quick else 5)
    results |= bench_epoch(samples=2_000 if quick else 60_000, repeats=1 if quick else 5)
    results |= matmul_peak(size=256 if quick else 2048, repeats=2 if quick else 10)
    results["epoch_vs_peak"] = results["epoch_gflops"] / results["matmul_peak_gflops"]
    results |= bench_fused(repeats=1 if quick else 5, epochs=1 if quick else None)  # quick: one epoch, one run
    results |= bench_studies(quick)
    args.output.write_text(json.dumps(results, indent=2) + "\n")

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"benchmarks ({'quick' if quick else 'full'}) -> {args.output}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in results.items():
        table.add_row(name, show(value))
    Console().print(table)


if __name__ == "__main__":
    main()
