"""The results commands: `taugate report` (the ablation report) and `taugate ui` (the MLflow UI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from study.cli.common import console, fail, study_or_exit
from study.cli.driver import one_driver
from study.folder.filenames import STUDY_FILE


def report(
    study_dir: Annotated[Path, typer.Argument(help="a study folder")],
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: the study's own)")] = None,
) -> None:
    """Write the ablation report (report.html, report.md, results.csv) and log it to MLflow."""
    study_or_exit(study_dir)
    with one_driver(study_dir, read_only_ok=True):
        from study.pipeline.service import write_report

        write_report(study_dir, tracking_uri, console)


# `mlflow ui` imports starlette.middleware.wsgi, which warns that it is deprecated on every start: MLflow's
# code, nothing a user can act on. Only that warning is silenced (by its message), in the UI's processes only.
UI_WARNINGS = "ignore:starlette.middleware.wsgi is deprecated:UserWarning"
# MLflow 3.17's UI shows an experiment as GenAI (traces, evaluation runs) or machine learning (the runs
# table) by this query parameter, else by the browser's last choice, else GenAI: it does not read the
# experiment's `mlflow.experimentKind` tag. The printed address names the machine learning view.
ML_VIEW = "workflowType=machine_learning"


def ui(
    study_dir: Annotated[Path, typer.Argument(help="a study folder")],
    port: Annotated[int, typer.Option()] = 5000,
    host: Annotated[str, typer.Option(help="127.0.0.1 keeps it on this machine; opt in to expose it")] = "127.0.0.1",
) -> None:
    """Open the study's MLflow store in the MLflow UI (on 127.0.0.1 by default)."""
    import os
    import sys

    from study.tracking.mlflow_store import client_for, default_tracking_uri
    from study.tracking.tracker import mark_model_training

    if not (study_dir / "mlflow.db").is_file():
        fail(f"{study_dir}: no mlflow.db (was the study tracked on a server? open that server instead)")
    from study.folder.validate import mlflow_damage

    if (damaged := mlflow_damage(study_dir)) is not None:
        fail(str(damaged))
    uri, address = default_tracking_uri(study_dir), f"http://{host}:{port}"
    study_file = study_dir / STUDY_FILE  # a bare store (no study.json) opens on MLflow's own start page
    name = json.loads(study_file.read_text()).get("experiment_name") if study_file.is_file() else None
    client = client_for(uri)
    if name and (experiment := client.get_experiment_by_name(name)) is not None:
        mark_model_training(client, experiment)  # a study tracked before the kind was set
        address += f"/#/experiments/{experiment.experiment_id}/runs?{ML_VIEW}"
    bin_dir = Path(sys.executable).parent  # this environment's mlflow, which starts uvicorn from PATH
    mlflow_bin = bin_dir / "mlflow" if (bin_dir / "mlflow").is_file() else Path("mlflow")
    env = os.environ | {
        "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
        "PYTHONWARNINGS": ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), UI_WARNINGS])),
    }
    # MLflow's job runner serves GenAI jobs (eight more processes) that a study never submits
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    command = [str(mlflow_bin), "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port), "--workers", "1"]
    console.print(f"MLflow UI on {address} (Ctrl-C stops it)", highlight=False, markup=False, emoji=False)
    os.execvpe(command[0], command, env)
