"""What every command shares: the console (standard error), `fail`, and reading the files a command is given."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.text import Text

from study.commands import study_command

console = Console(stderr=True, soft_wrap=True)
WARN_AT_MOST = 10  # damaged files named one by one before the rest are counted


def fail(message: str, code: int = 2) -> None:
    # the message is text, never markup: `pip install '.[directml]'` must print as written
    console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
    raise typer.Exit(code)


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        fail(f"{path}: file not found")
    except yaml.YAMLError as err:
        fail(f"{path}: YAML syntax error: {err}")
    if not isinstance(data, dict):
        fail(f"{path}: expected a mapping of config fields")
    return data


def warn(message: str) -> None:
    console.print(Text.assemble(("warning:", "yellow"), " ", message), highlight=False)


def study_or_exit(study_dir: Path, *, needs_mlflow: bool = False):
    """The (spec, metadata) of a study folder, read through its validating readers (study.folder.validate),
    or a clear error and exit code 2: a damaged study.json, spec.yaml, plan.json or optuna.db stops the
    command naming the file and the fix, and so does a damaged mlflow.db for a command that `needs_mlflow`
    and logs to the study's own store (track; for the others it is a warning: tracking is best effort). A
    damaged ledger entry (the trial counts as not run) or history (its curve is missing) or foundation (set
    aside and trained again by the trial that needs it) is a warning naming the file."""
    from study.folder.metadata import load_study
    from study.folder.storage import StorageError
    from study.folder.validate import (
        DamagedFile,
        check_optuna,
        entry_warnings,
        foundation_damage,
        mlflow_damage,
        read_plan,
    )
    from study.spec.loader import SpecError

    try:
        spec, study = load_study(study_dir)
        read_plan(study_dir)
        if spec.search.kind == "optuna":
            check_optuna(study_dir, study)
    except (SpecError, StorageError, DamagedFile) as err:
        fail(str(err))
    store = mlflow_damage(study_dir)
    if store is not None and needs_mlflow and not study.get("tracking_uri"):  # the command writes to this store
        fail(str(store))
    damage = ([store] if store is not None else []) + entry_warnings(study_dir) + foundation_damage(study_dir)
    for found in damage[:WARN_AT_MOST]:
        warn(str(found))
    if len(damage) > WARN_AT_MOST:
        more = study_command("status", study_dir, "--check")
        warn(f"{len(damage) - WARN_AT_MOST} more damaged files in {study_dir}: `{more}` lists them all")
    return spec, study


def spec_or_exit(path: Path):
    from study.spec.loader import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as err:
        fail(str(err))


def cluster_options(address: str | None) -> list[str]:
    """`--address HOST:PORT` of the cluster a study driver joined (its --address, else RAY_ADDRESS; `auto`
    resolved to the cluster it found), so that a printed command joins it too; none for a local Ray."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address == "auto":
        from study.cluster.cluster_error import ClusterError
        from study.cluster.connect import cluster_address

        with contextlib.suppress(ClusterError):  # none found: `auto` as given (the driver said why)
            address = cluster_address(address) or address
    return ["--address", address] if address else []
