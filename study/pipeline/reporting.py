"""`taugate report`: the study folder's results turned into the ablation report, logged to MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from analysis.table.load import load_gate_stats, load_histories, load_tune
from study.commands import study_command
from study.folder.filenames import OPTUNA_DB
from study.folder.metadata import load_study
from study.folder.progress import study_progress
from study.pipeline.calibrate import report_settings
from study.tracking.mlflow_store import tracking_options

REPORT_DIR = "report"


def write_study_report(study_dir: Path, wall_seconds: float | None = None) -> dict[str, Path]:
    """Write report.html, report.md and results.csv into `<study>/report/`."""
    from analysis.report.document import write_report

    spec, study = load_study(study_dir)
    df = load_tune(study_dir)
    metadata: dict[str, Any] = {
        "title": f"TauGate ablation report: {spec.name}",
        "study": study["name"],
        "study folder": str(Path(study_dir).resolve()),
        "created": study["created"],
        "trials planned": study["trials_planned"],
        "trials in table": len(df),
        "failed or diverged trials": int((~df["status"].isin(("ok", "stopped"))).sum()) if len(df) else 0,
        "environment": study.get("environment", {}),
        "spec": yaml.safe_load((Path(study_dir) / "spec.yaml").read_text()),
    }
    progress = study_progress(study_dir, spec, study, df)  # the same account as the CLI summary and `status`
    metadata["trials planned"] = progress.planned  # an Optuna configuration drawn twice is planned once
    if note := progress.draws_note():
        metadata["optuna draws"] = note
    if progress.remaining > 0:  # an interrupted study, not resumed yet
        resume = study_command("resume", study_dir, *tracking_options(study_dir, None, study.get("tracking_uri")))
        metadata = {
            "coverage": f"PARTIAL STUDY: {progress.finished + progress.failed} of {progress.planned} planned "
            f"trials ran, {progress.remaining} not run yet; `{resume}` completes it"
        } | metadata
        metadata["title"] += " (partial study)"
    stopped = int((df["status"] == "stopped").sum()) if len(df) else 0
    if stopped:  # not a failure: the scheduler's choice (the report's learning-curves section counts them)
        metadata["trials stopped by the scheduler"] = stopped
    if wall_seconds is None:  # a report written again later keeps the run's own wall time
        wall_seconds = _previous_metadata(study_dir).get("wall time (s)")
    if wall_seconds is not None:
        metadata["wall time (s)"] = round(wall_seconds, 1)
    optuna_study = None
    if spec.search.kind == "optuna" and (Path(study_dir) / OPTUNA_DB).is_file():
        import optuna

        from study.folder.optuna_db import storage_url

        optuna_study = optuna.load_study(study_name=study["optuna_study_name"],
                                         storage=storage_url(Path(study_dir) / OPTUNA_DB))  # fmt: skip
    gate_stats = load_gate_stats(study_dir, df["trial_id"].tolist()) if len(df) else {}
    histories = load_histories(study_dir, df["trial_id"].tolist()) if len(df) else {}
    mode_analysis = None
    if len(spec.target_angles) > 1:  # a modes study: per-mode units and interventions from the saved adapters
        from analysis.per_mode.mode_analysis import analyse_study_modes

        mode_analysis = analyse_study_modes(Path(study_dir))
    from study.pipeline.mode_banks import bank_summaries

    paths = write_report(df, Path(study_dir) / REPORT_DIR, metadata, gate_stats, optuna_study=optuna_study,
                         calibration=report_settings(spec), mode_analysis=mode_analysis,
                         banks=bank_summaries(Path(study_dir)), histories=histories)  # fmt: skip
    (Path(study_dir) / REPORT_DIR / "metadata.json").write_text(json.dumps(metadata, indent=1, default=str))
    return paths


def _previous_metadata(study_dir: Path) -> dict[str, Any]:
    path = Path(study_dir) / REPORT_DIR / "metadata.json"
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def log_report(study_dir: Path, tracking_uri: str | None) -> None:
    """Attach the report folder to the study's MLflow parent run."""
    from study.tracking.tracker import Tracker

    _, study = load_study(study_dir)
    tracker = Tracker(study_dir, tracking_uri or study.get("tracking_uri"), study["experiment_name"])
    # the parent run's own artifact store (`Tracker.artifacts`), never the client's log_artifacts: that caches
    # artifact stores by run id for the whole process, and a copied study's runs have the original's ids
    tracker.artifacts(tracker.parent(study)).log_artifacts(str(Path(study_dir) / REPORT_DIR), artifact_path=REPORT_DIR)
