"""Commands printed for the user to paste ("continue with:", "next:", "serve:", hints in errors and warnings).

Each runs as printed from any folder: absolute paths, every word quoted for a POSIX shell where it needs it.
`tests/study/test_printed_commands.py` pastes them into a shell.
"""

from __future__ import annotations

import shlex
from pathlib import Path


def shell_command(*words: str | Path) -> str:
    """A command line printed for the user to paste: each word quoted for a POSIX shell where it needs it."""
    return " ".join(shlex.quote(str(word)) for word in words)


def study_command(command: str, study_dir: Path | str, *options: str) -> str:
    """`taugate COMMAND /abs/STUDY OPTIONS...` for a study folder given by any path."""
    return shell_command("taugate", command, Path(study_dir).resolve(), *options)
