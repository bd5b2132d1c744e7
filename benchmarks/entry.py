"""The command line a study benchmark shares: `--spec`, `--output` (its results file) and `--keep`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def study_benchmark(doc: str, spec: Path, results: Path, run: Callable[[Path, Path | None], dict[str, Any]],
                    keep_help: str) -> None:  # fmt: skip
    """Parse the arguments, run the benchmark, write its results as JSON and print them."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=spec)
    parser.add_argument("--output", type=Path, default=results)
    parser.add_argument("--keep", type=Path, default=None, help=keep_help)
    args = parser.parse_args()
    outcome = run(args.spec.resolve(), args.keep.resolve() if args.keep else None)
    args.output.write_text(json.dumps(outcome, indent=2) + "\n")
    print(json.dumps(outcome, indent=2))
