"""What a study command holds while it runs: the study folder's driver lock, and the stop signals."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import typer
from rich.text import Text

from study.cli.common import cluster_options, console, fail
from study.commands import study_command
from study.tracking.mlflow_store import tracking_options


@contextlib.contextmanager
def one_driver(study_dir: Path, read_only_ok: bool = False):
    """Hold the study folder's driver lock (`study.folder.lock`) for the block; a live driver holding it
    is refused with exit 2 naming its host and pid, a stale one (killed, machine lost) is taken
    over. `read_only_ok`: on a folder this user cannot write, only check that no driver is alive."""
    from study.folder.lock import DriverLock, StudyLocked
    from study.folder.storage import StorageError, check_writable

    def lost(holder: dict) -> None:  # this driver was judged dead (a long pause) and replaced
        who = f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}"
        console.print(
            Text.assemble(("error:", "bold red"), f" another driver ({who}) took over {study_dir}; this one stops")
        )
        os.kill(os.getpid(), signal.SIGTERM)

    lock = DriverLock(study_dir, on_lost=lost)
    try:
        check_writable(study_dir)
        lock.acquire()
    except StudyLocked as err:
        fail(str(err))
    except (StorageError, OSError) as err:
        if not read_only_ok:
            fail(str(err) if isinstance(err, StorageError) else f"{study_dir}: cannot take the driver lock ({err})")
        try:
            lock.check()
        except StudyLocked as locked:
            fail(str(locked))
        yield
        return
    if gone := lock.taken_over:
        who = f"host {gone.get('host', '?')}, pid {gone.get('pid', '?')}: {gone['why']}"
        console.print(Text.assemble(("warning:", "yellow"), f" took over the lock of a driver that is gone ({who})"))
    try:
        yield
    finally:
        lock.release()


def stop_on_signals() -> None:
    """SIGINT and SIGTERM end the study cleanly (`study.cluster.interrupt`); a second one ends it at once."""
    from study.cluster.interrupt import install, name

    def notify(signum: int) -> None:
        console.print(f"{name(signum)}: stopping the study; finished trials are kept (again to stop at once)",
                      highlight=False)  # fmt: skip

    install(notify)


def interrupted(
    spec, study, study_dir: Path, signum: int, seconds: float | None = None, *, address: str | None = None,
    tracking_uri: str | None = None,
) -> None:  # fmt: skip
    """The summary of an interrupted study, and exit 128 + the signal (130 for Ctrl-C, 143 for SIGTERM).
    Its `continue with:` command runs pasted anywhere: the study folder's absolute path, the cluster the
    driver joined (`address`) and a tracking store other than the study's own."""
    from study.cluster.interrupt import exit_code, name
    from study.folder.progress import study_progress

    progress = study_progress(study_dir, spec, study)
    took = f", {seconds:.1f}s" if seconds is not None else ""
    folder = Path(study_dir).resolve()
    tracking = tracking_options(folder, tracking_uri, study.get("tracking_uri"))
    resume = study_command("resume", folder, *cluster_options(address), *tracking)
    console.print(
        f"study {spec.name} interrupted ({name(signum)}): {progress.finished}/{progress.planned} trials finished, "
        f"{progress.failed} failed, {progress.remaining} remaining{took}; no report written "
        f"(`{study_command('report', folder, *tracking)}` writes one for the partial study)"
        f"\ncontinue with: {resume}",
        highlight=False,
    )
    raise typer.Exit(exit_code(signum))
