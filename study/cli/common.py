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

console = Console(stderr=True, soft_wrap=True)


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


def study_or_exit(study_dir: Path):
    """The (spec, metadata) of a study folder, or a clear error and exit code 2."""
    from study.folder.metadata import load_study
    from study.folder.storage import StorageError
    from study.spec.loader import SpecError

    try:
        return load_study(study_dir)
    except (SpecError, StorageError) as err:
        fail(str(err))


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
