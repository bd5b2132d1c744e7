"""The results commands: `taugate report` (the ablation report) and `taugate ui` (the MLflow UI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from study.cli.common import console, fail, study_or_exit
from study.cli.driver import one_driver


def report(
    study_dir: Annotated[Path, typer.Argument(help="a study folder")],
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: the study's own)")] = None,
) -> None:
    """Write the ablation report (report.html, report.md, results.csv) and log it to MLflow."""
    study_or_exit(study_dir)
    with one_driver(study_dir, read_only_ok=True):
        from study.pipeline.service import write_report

        write_report(study_dir, tracking_uri, console)


def ui(
    study_dir: Annotated[Path, typer.Argument(help="a study folder")],
    port: Annotated[int, typer.Option()] = 5000,
    host: Annotated[str, typer.Option(help="127.0.0.1 keeps it on this machine; opt in to expose it")] = "127.0.0.1",
) -> None:
    """Open the study's MLflow store in the MLflow UI (on 127.0.0.1 by default)."""
    import os

    from study.tracking.mlflow_store import default_tracking_uri

    if not (study_dir / "mlflow.db").is_file():
        fail(f"{study_dir}: no mlflow.db (was the study tracked on a server? open that server instead)")
    command = ["mlflow", "ui", "--backend-store-uri", default_tracking_uri(study_dir), "--host", host,
               "--port", str(port), "--workers", "1"]  # fmt: skip
    console.print(f"MLflow UI on http://{host}:{port} (Ctrl-C stops it)")
    os.execvp(command[0], command)
