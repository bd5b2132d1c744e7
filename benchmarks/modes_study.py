"""The modes study's wall time, run on demand (never a timed test): `python -m benchmarks.modes_study`.

Issue 12's goal: `taugate run configs/modes.yaml` finishes on a 2-core machine in at most 5 minutes,
report included (the limits map, the unit sets and the interventions). Runs the command as a user
does, in a fresh folder, and writes benchmarks/modes_results.json: the whole process's wall time,
the study time the CLI reports (Ray's start to final results) and the rest (start-up, the report).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.entry import study_benchmark

ROOT = Path(__file__).resolve().parent.parent
TAUGATE = Path(sys.executable).parent / "taugate"
SPEC = ROOT / "configs" / "modes.yaml"
RESULTS = Path(__file__).resolve().parent / "modes_results.json"
GOAL_SECONDS = 300.0


def run_modes(spec: Path = SPEC, keep: Path | None = None) -> dict[str, object]:
    """Run the study in a fresh folder (`keep`: this one, kept afterwards; else a temporary one)."""
    with tempfile.TemporaryDirectory() as scratch:
        study = keep if keep is not None else Path(scratch, "study")
        started = time.perf_counter()
        result = subprocess.run([str(TAUGATE), "run", str(spec), "--output", str(study)],
                                capture_output=True, text=True, check=False, cwd=ROOT)  # fmt: skip
        wall = time.perf_counter() - started
        report = study / "report" / "report.md"
        sections = report.read_text() if report.is_file() else ""
    found = re.search(r"(\d+)/(\d+) trials finished, 0 failed, ([0-9.]+)s; results", result.stderr)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"taugate run {spec} failed:\n{result.stderr[-3000:]}")
    trials, study = int(found.group(1)), float(found.group(3))
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"taugate run {spec.relative_to(ROOT)}",
        "trials": trials,
        "wall_seconds": round(wall, 1),
        "study_seconds": study,
        "outside_study_seconds": round(wall - study, 1),  # the CLI's imports, Ray's shutdown, the report
        "goal_seconds": GOAL_SECONDS,
        "met": wall <= GOAL_SECONDS,
        # one study's sections, or each budget's ("### Budget dense: neurons per mode") beside the others
        "report_has_modes_sections": all(
            re.search(title, sections, re.IGNORECASE | re.MULTILINE)
            for title in (
                r"^### Limits map",
                r"^### (Budget .+: )?Neurons per mode",
                r"^### (Budget .+: )?Attribution by intervention",
            )
        ),  # fmt: skip
    }


def main() -> None:
    study_benchmark(__doc__, SPEC, RESULTS, run_modes, keep_help="run the study in this (new) folder and keep it")


if __name__ == "__main__":
    main()
