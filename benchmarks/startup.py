"""The light command path, run on demand: `python -m benchmarks.startup [--rounds 3] [--only imports own warm]`.

What a user waits for around a study's trials: `taugate run configs/paper.yaml --output TMP --no-report
--yes`, a whole process as a user runs it, (a) on its own Ray and (b) on a warm cluster (`taugate cluster
start`, then `--address`; `benchmarks.scale.warm_cluster`). For each run:

- `first_trial_seconds`: from the command's start to the first trial's start, the earliest
  `started_at` in the study folder's ledger (`trials/<key>/config.json`). A trial's worker stamps it
  (`time.time()`, the same clock as the command's start on this machine) when the trial body begins,
  before its foundation and training: the moment the study's work starts. Tune's trial folders appear
  when Tune *schedules* a trial, before a worker runs it, and the first progress line is printed by
  the driver's callback when Tune *starts* the actor: both earlier than work begins and both printed
  by the driver we measure, so neither is the reliable marker.
- `last_result_to_exit_seconds`: from the last result, the latest `ended_at` in the ledger (the
  worker's stamp as its trial's metrics are final), to the process's exit (the prompt): Tune's last
  result handling, Ray's shutdown, the final MLflow sync, the summary line, and the interpreter's exit.
- `summary_to_exit_seconds`: from the summary line (`study paper: 50/50 trials finished ...`) reaching
  this process to the exit: what follows the last printed line.
- `plan_line_seconds`: from the command's start to the line `study paper: 50 trials, 50 to run`,
  printed once the plan is written, before Ray starts or is joined.
- `torch_in_driver`: whether the driver process mapped libtorch (its `/proc/PID/maps`, read every
  0.2 s while it runs), and `torch_seen_seconds`, when first seen.
- `driver_peak_rss_mib`: the driver's peak resident memory (`VmHWM` in `/proc/PID/status`).

And, in fresh processes, `cli_import_seconds` (`import study.cli.main`, timed inside the process, with
whether torch was then in `sys.modules`) and `help_seconds` (`taugate --help`, start to exit). Every
figure is the median of `--rounds` rounds (each round's values kept). `--source DIR` measures another
checkout's `trainables`, `study` and `analysis` (put first on PYTHONPATH, which the driver hands to its
Ray workers): how the figures before a change were taken. `--label` names the results' entry in
benchmarks/startup_results.json (entries under other labels are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scale import PAPER, SUMMARY, TAUGATE, machine, taugate_env, warm_cluster  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "startup_results.json"
PLAN_LINE = " trials, "  # `study NAME: N trials, M to run, folder ...`
POLL_S = 0.2


class DriverWatch:
    """Reads the driver's /proc entries while it runs: whether (and when) it maps libtorch, its peak RSS."""

    def __init__(self, pid: int, started: float) -> None:
        self.pid, self.started = pid, started
        self.torch_seen: float | None = None
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.torch_seen is None:
                    with open(f"/proc/{self.pid}/maps") as maps:
                        if any("libtorch" in line for line in maps):
                            self.torch_seen = time.time() - self.started
                with open(f"/proc/{self.pid}/status") as status:
                    for line in status:
                        if line.startswith("VmHWM:"):
                            self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except (OSError, ValueError):
                pass  # gone (or a zombie): the last reading stands
            self._stop.wait(POLL_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def ledger_times(folder: Path) -> tuple[float, float, int]:
    """(earliest started_at, latest ended_at, entries) over the study folder's ledger."""
    starts, ends = [], []
    for record in (folder / "trials").glob("*/config.json"):
        entry = json.loads(record.read_text())
        starts.append(entry["started_at"])
        ends.append(entry["ended_at"])
    if not starts:
        raise RuntimeError(f"{folder}: no ledger entries")
    return min(starts), max(ends), len(starts)


def timed_run(spec: Path, folder: Path, env: dict[str, str], address: str | None = None) -> dict[str, Any]:
    """`taugate run SPEC --output FOLDER --no-report --yes [--address A]`, timed around its trials."""
    command = [str(TAUGATE), "run", str(spec), "--output", str(folder), "--no-report", "--yes"]
    command += ["--address", address] if address else []
    lines: list[tuple[float, str]] = []
    started = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env=env)  # fmt: skip
    watch = DriverWatch(process.pid, started)

    def read() -> None:
        for line in process.stderr:
            lines.append((time.time(), line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    process.wait()
    ended = time.time()
    watch.stop()
    reader.join(timeout=30)  # a process the driver left behind may hold the pipe: its lines are not ours
    text = "".join(line for _, line in lines)
    summary = [at for at, line in lines if SUMMARY.search(line)]
    found = SUMMARY.search(text)
    if process.returncode != 0 or found is None or found.group(3) != "0":
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{text[-3000:]}")
    first_start, last_end, entries = ledger_times(folder)
    plan = [at for at, line in lines if line.startswith("study ") and PLAN_LINE in line]
    return {
        "wall_seconds": ended - started,
        "window_seconds": float(found.group(4)),
        "trials": entries,
        "plan_line_seconds": plan[0] - started if plan else None,
        "first_trial_seconds": first_start - started,
        "last_result_to_exit_seconds": ended - last_end,
        "summary_to_exit_seconds": ended - summary[0],
        "torch_in_driver": watch.torch_seen is not None,
        "torch_seen_seconds": watch.torch_seen,
        "driver_peak_rss_mib": round(watch.peak_kib / 1024, 1),
    }


def cli_import(env: dict[str, str], source: Path) -> dict[str, Any]:
    """`import study.cli.main` in a fresh interpreter, timed inside it, and whether torch came with it
    (run in `source`: `python -c` puts its working folder first on sys.path)."""
    code = ("import sys, time; t = time.perf_counter(); import study.cli.main; "
            "print(time.perf_counter() - t, 'torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=source, check=True, capture_output=True, text=True)
    seconds, torch = out.stdout.split()
    return {"cli_import_seconds": float(seconds), "cli_imports_torch": torch == "True"}


def help_seconds(env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([str(TAUGATE), "--help"], env=env, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def median_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each numeric figure's median over the rounds (with its samples); a flag is true if any round's was."""
    out: dict[str, Any] = {}
    for name in rounds[0]:
        values = [r[name] for r in rounds]
        if all(isinstance(v, bool) for v in values):
            out[name] = any(values)
        elif all(isinstance(v, int | float) for v in values):
            out[name] = round(statistics.median(values), 3)
            out[f"{name}_samples"] = [round(v, 2) for v in values]
        else:
            out[f"{name}_samples"] = values
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=("imports", "own", "warm"), default=None)
    parser.add_argument("--source", type=Path, default=None, help="a checkout whose code to measure")
    parser.add_argument("--label", default="latest", help="the results' entry in the output file")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    chosen = args.only or ["imports", "own", "warm"]
    env = taugate_env()
    if args.source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(args.source.resolve()), *filter(None, [env.get("PYTHONPATH")])])
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="taugate-startup-") as tmp:
        folder = Path(tmp)
        if "imports" in chosen:
            source = args.source or ROOT
            rounds = [cli_import(env, source) | {"help_seconds": help_seconds(env)} for _ in range(args.rounds)]
            figures |= median_of(rounds)
        if "own" in chosen:
            rounds = [timed_run(PAPER, folder / f"own-{i}", env) for i in range(args.rounds)]
            figures["own_ray"] = median_of(rounds)
        if "warm" in chosen:
            # warm_cluster starts the cluster with this process's environment: the measured code's too
            saved = os.environ.get("PYTHONPATH")
            os.environ.update({"PYTHONPATH": env["PYTHONPATH"]} if "PYTHONPATH" in env else {})
            try:
                with warm_cluster(folder) as (address, _, start_seconds):
                    rounds = [timed_run(PAPER, folder / f"warm-{i}", env, address) for i in range(args.rounds)]
            finally:
                os.environ.pop("PYTHONPATH", None) if saved is None else os.environ.update(PYTHONPATH=saved)
            figures["warm_cluster"] = median_of(rounds) | {"cluster_start_seconds": round(start_seconds, 2)}
    load = os.getloadavg()
    figures |= {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
                "load_average_after": [round(x, 2) for x in load], "source": str(args.source or ROOT)}  # fmt: skip
    results = json.loads(args.output.read_text()) if args.output.is_file() else {}
    results[args.label] = figures
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
