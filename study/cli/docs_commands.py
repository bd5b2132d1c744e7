"""`taugate readme`: the documentation's measured numbers and figures, from finished studies of the shipped specs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from study.cli.common import console, fail, study_or_exit


def readme(
    study_dirs: Annotated[list[Path], typer.Argument(help="finished studies of shipped specs (configs/*.yaml)")],
    root: Annotated[Path, typer.Option(help="the project folder whose README.md and docs/ are rewritten")] = Path(),
) -> None:
    """Record each study as its shipped spec's last run (docs/results/<spec>/: the report, its figures, the spec as
    run) and rewrite the README's and docs' `<!-- recorded: SPEC#PART -->` blocks from the recorded reports."""
    from analysis.report.parts import PartError
    from study.pipeline.recorded import record, shipped_spec, sync
    from study.pipeline.reporting import write_study_report

    root = root.resolve()
    if not (root / "configs").is_dir():
        fail(f"{root}: no configs/ folder: --root names the project folder (the one holding README.md and configs/)")
    try:
        for study_dir in study_dirs:
            shipped_spec(study_or_exit(study_dir)[0], root)  # refused before anything is written
            write_study_report(study_dir)  # the parts as this version writes them
            console.print(f"recorded {study_dir} as {record(study_dir, root).relative_to(root)}")
        for document, count in sync(root).items():
            console.print(f"{document.relative_to(root)}: {count} block(s) rewritten")
    except PartError as error:
        fail(str(error))
