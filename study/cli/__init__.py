"""The `taugate` command line: one module per command group, assembled in `study.cli.main`.

`app` and `main` are re-exported so `study.cli:main` (the console script of installs made before the
split) and `from study.cli import app` keep working."""

from study.cli.main import app, main

__all__ = ["app", "main"]
