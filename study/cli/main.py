"""The `taugate` command line: every command group registered on one Typer app, and `main`, the console script."""

from __future__ import annotations

import contextlib
import os
import sys

import typer

from study.cli import bank_commands, cluster_commands, docs_commands, report_commands, study_commands, trial_commands

app = typer.Typer(add_completion=False, no_args_is_help=True, help="TauGate ablation study service.")
app.add_typer(cluster_commands.app, name="cluster")  # taugate cluster start|stop|status (study/cli/cluster_commands.py)
# in the order `taugate --help` lists them
app.command()(trial_commands.trial)
app.command()(trial_commands.paper)
app.command("spec-schema")(study_commands.spec_schema)
app.command()(study_commands.plan)
app.command()(study_commands.run)
app.command()(study_commands.resume)
app.command()(study_commands.status)
app.command()(study_commands.track)
app.command()(report_commands.report)
app.command()(bank_commands.bank)
app.command()(cluster_commands.submit)
app.command()(report_commands.ui)
app.command()(docs_commands.readme)


def main() -> None:
    """Run the command; a study that joined a running cluster then ends its process as soon as
    everything Python-level is done.

    After such a study the interpreter's own finalization (module teardown, the native destructors
    of Ray's core worker, gRPC and torch) takes ~2.7 s on 2 cores, longer than a small study's
    trials on a warm cluster (benchmarks/README.md, "At scale"). Every command has closed its files
    by the time it returns; the non-daemon threads are joined and the atexit handlers (Ray's
    shutdown, logging's flush) run as at any exit, then the standard streams are flushed and the
    process ends with the command's exit code. A driver that started its own Ray exits the usual
    way: the last of that Ray's worker processes end during it."""
    import atexit
    import threading

    try:
        app(standalone_mode=True)
        status: int | str | None = 0
    except SystemExit as done:
        status = done.code
    runner = sys.modules.get("study.cluster.connect")
    if runner is None or runner.started_local_ray or "ray" not in sys.modules:  # no study on a cluster
        sys.exit(status)
    if isinstance(status, str):
        print(status, file=sys.stderr)
    code = status if isinstance(status, int) else (0 if status is None else 1)
    threading._shutdown()  # what the interpreter does first at exit: wait for non-daemon threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
