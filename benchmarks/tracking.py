"""The driver's CPU per trial for MLflow tracking, run on demand: `python -m benchmarks.tracking [STUDY]`.

A finished study's trials (its ledger) are logged to a new SQLite store in a copy of the study, once
through MLflow's client one trial at a time (`Tracker.log_trial`, how every run was logged before
batching) and once in batches (`Tracker.log_trials`, as the study's tracking thread does: one batch per
`TrackingCallback.WAIT_S`, here `--batch` trials). The process CPU seconds of each, per trial, are the
figure; results go to benchmarks/tracking_results.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from study.folder.filenames import CONFIG_FILE  # noqa: E402
from study.folder.storage import TrialLedger  # noqa: E402
from study.tracking.tracker import Tracker  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "tracking_results.json"
LEFT_OUT = shutil.ignore_patterns("mlflow.db", "mlartifacts", "tune", "report", "foundations")


def cpu_per_trial(study_dir: Path, folder: Path, batch: int | None) -> float:
    """CPU milliseconds per trial to log every finished trial of a copy of `study_dir` (batch None: one by one)."""
    copy = folder / f"copy-{time.monotonic_ns()}"
    shutil.copytree(study_dir, copy, ignore=LEFT_OUT)
    study = json.loads((copy / "study.json").read_text())
    tracker = Tracker(copy, None, study["experiment_name"])
    tracker.parent(study)  # the store opened and the parent run made before the clock starts
    ledger = TrialLedger(copy)
    finished = [(key, json.loads((ledger.trial_dir(key) / CONFIG_FILE).read_text()), metrics)
                for key, metrics in ledger.all_finished().items()]  # fmt: skip
    started = time.process_time()
    if batch is None:
        for entry in finished:
            tracker.log_trial(study, *entry)
    else:
        for index in range(0, len(finished), batch):
            tracker.log_trials(study, finished[index : index + batch])
    return (time.process_time() - started) * 1000 / len(finished)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="a finished study folder")
    parser.add_argument("--batch", type=int, default=20, help="trials per batch (about 2 s of a 400-trial study)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {"client": [], "batched": []}
    with tempfile.TemporaryDirectory(prefix="taugate-tracking-") as tmp:
        for _ in range(args.rounds):
            samples["client"].append(cpu_per_trial(args.study, Path(tmp), None))
            samples["batched"].append(cpu_per_trial(args.study, Path(tmp), args.batch))
    trials = len(TrialLedger(args.study).all_finished())
    results = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
               "command": f"python -m benchmarks.tracking STUDY --batch {args.batch} --rounds {args.rounds}",
               "trials": trials, "batch": args.batch}  # fmt: skip
    for name, values in samples.items():
        results[f"{name}_cpu_ms_per_trial"] = round(statistics.median(values), 2)
        results[f"{name}_cpu_ms_per_trial_samples"] = [round(v, 2) for v in values]
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
