"""A study folder's spec and metadata (`spec.yaml`, `study.json`): written once by `prepare`, read by
`load_study` for resume, status, tracking and reports."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from study.commands import study_command
from study.folder.filenames import SPEC_FILE, STUDY_FILE
from study.folder.storage import StorageError, check_writable
from study.folder.validate import read_spec, read_study_json
from study.spec.loader import SpecError
from study.spec.plan import summary
from study.spec.study_spec import StudySpec
from trainables.files import write_json


def environment() -> dict[str, str]:
    """Versions, git commit and hardware: tags on the parent run and the report's metadata."""
    info = {"python": platform.python_version(), "machine": f"{platform.machine()} {os.cpu_count()} cpus",
            "host": platform.node()}  # fmt: skip
    for package in ("torch", "ray", "optuna", "mlflow", "taugate-study"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[package] = metadata.version(package)
    try:
        root = Path(__file__).resolve().parent.parent.parent
        info["git_commit"] = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = "unknown"
    return info


def load_study(study_dir: Path) -> tuple[StudySpec, dict[str, Any]]:
    """The spec and metadata of an existing study folder; `DamagedFile` when either is damaged."""
    study_file, spec_file = study_dir / STUDY_FILE, study_dir / SPEC_FILE
    if not study_file.is_file() or not spec_file.is_file():
        raise StorageError(f"{study_dir} is not a study folder (no {STUDY_FILE} / {SPEC_FILE})")
    # each file read and checked by its validating reader: a damaged one raises `DamagedFile` naming it
    return read_spec(study_dir), read_study_json(study_dir)


def prepare(spec: StudySpec, study_dir: Path, yes: bool = False, tracking_uri: str | None = None) -> dict[str, Any]:
    """Check everything that can fail before a trial starts; write the spec and metadata."""
    totals = summary(spec)
    if totals["trials"] > spec.max_trials and not yes:
        raise SpecError(
            f"max_trials: the study has {totals['trials']} trials, more than max_trials={spec.max_trials}; "
            "pass --yes to run it anyway or raise max_trials"
        )
    check_writable(study_dir)
    study_file = study_dir / STUDY_FILE
    if study_file.is_file():
        resume = study_command("resume", study_dir)
        raise StorageError(f"{study_dir} already holds a study; use `{resume}` or another --output")
    (study_dir / SPEC_FILE).write_text(yaml.safe_dump(spec.dump(), sort_keys=False))
    study = {
        "study_id": uuid.uuid4().hex,
        "name": spec.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "trials_planned": totals["trials"],
        "foundations_planned": totals["foundations"],
        "environment": environment(),
        "optuna_study_name": spec.search.study_name or f"{spec.name}-{uuid.uuid4().hex[:8]}",
        # part of the study's record: resume, track and report write where the run wrote
        "tracking_uri": tracking_uri or spec.tracking_uri,
        "experiment_name": spec.experiment_name or spec.name,
    }
    write_json(study_file, study)
    return study
