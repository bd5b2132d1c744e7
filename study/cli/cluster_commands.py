"""`taugate cluster start|stop|status` (the warm local cluster, study.cluster.head) and `taugate submit`
(a study as a Ray Job on a cluster)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from study.cli.common import console, fail, spec_or_exit
from study.cluster.cluster_error import ClusterError
from study.cluster.head import STATE_ENV, alive, end_cluster, read_state, start_cluster, state_file
from study.commands import shell_command

app = typer.Typer(
    add_completion=False, no_args_is_help=True,
    help="A warm local Ray cluster on 127.0.0.1 (token auth) for `taugate run --address`.",
)  # fmt: skip


def _fail(err: ClusterError) -> None:
    fail(str(err), err.code)


@app.command()
def start(
    port: Annotated[int, typer.Option(help="the GCS port on 127.0.0.1")] = 6379,
    num_cpus: Annotated[int | None, typer.Option(min=1, help="CPUs Ray may use (default: all)")] = None,
    temp_dir: Annotated[Path | None, typer.Option(help="Ray's temp folder (default: Ray's, /tmp/ray)")] = None,
) -> None:
    """Start a single-node Ray on 127.0.0.1 with token authentication, kept up until `stop`."""
    try:
        state = start_cluster(port, num_cpus, temp_dir)
    except ClusterError as err:
        _fail(err)
    console.print(f"Ray cluster up at {state['address']} (pid {state['pid']}, {state['num_cpus']} CPUs, "
                  f"log {state['log']}); run studies on it with:")  # fmt: skip
    console.print(f"  {shell_command('taugate', 'run', 'SPEC', '--address', state['address'])}", highlight=False)
    console.print(f"and stop it with `{cluster_command('stop')}`.", highlight=False)


def cluster_command(name: str) -> str:
    """`taugate cluster NAME` as printed for the user: with the state file's variable when this cluster is
    recorded elsewhere than the default (TAUGATE_CLUSTER_FILE), so that it finds this cluster from any shell."""
    prefix = f"{STATE_ENV}={shell_command(state_file().resolve())} " if os.environ.get(STATE_ENV) else ""
    return prefix + shell_command("taugate", "cluster", name)


@app.command()
def stop() -> None:
    """Stop the recorded cluster by its PID (never `ray stop`: other Ray clusters may run here)."""
    try:
        state = read_state()
    except ClusterError as err:
        _fail(err)
    if state is None:
        _fail(ClusterError(f"no taugate cluster is recorded ({state_file()}); nothing to stop", code=1))
    path = state_file()
    if not alive(state):
        path.unlink(missing_ok=True)
        _fail(ClusterError(f"the cluster recorded at {state['address']} (pid {state['pid']}) is no longer "
                           f"running; removed the stale {path}", code=1))  # fmt: skip
    end_cluster(int(state["pid"]), state["start_time"])
    path.unlink(missing_ok=True)
    console.print(f"stopped the Ray cluster at {state['address']} (pid {state['pid']})")


@app.command()
def status() -> None:
    """The recorded cluster as JSON {address, alive, pid, num_cpus, uptime_s}; exit 1 when none runs."""
    try:
        state = read_state()
    except ClusterError as err:
        _fail(err)
    if state is None:
        console.print(f"no taugate cluster is running (none recorded in {state_file()})")
        raise typer.Exit(1)
    running = alive(state)
    print(json.dumps({"address": state["address"], "alive": running, "pid": state["pid"],
                      "num_cpus": state.get("num_cpus"),
                      "uptime_s": round(time.time() - state["started"], 1) if running else None}))  # fmt: skip
    if not running:
        console.print(f"the cluster recorded at {state['address']} is not running; `{cluster_command('stop')}` "
                      "removes the record", highlight=False)  # fmt: skip
        raise typer.Exit(1)


def submit(
    spec: Annotated[Path, typer.Argument(help="study spec (YAML)")],
    address: Annotated[str, typer.Option(help="the cluster's job server, e.g. http://127.0.0.1:8265")],
    output: Annotated[str | None, typer.Option(help="study folder on the cluster's shared storage")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI as the cluster sees it")] = None,
    follow: Annotated[bool, typer.Option(help="stream the job's logs until it ends")] = True,
) -> None:
    """Run a study as a Ray Job on a cluster (Ray token authentication); exits with the job's status."""
    from study.cluster.submit import SubmitError
    from study.cluster.submit import submit as submit_job

    study_spec = spec_or_exit(spec)
    try:
        job_id, job_status = submit_job(spec, study_spec, address, output, tracking_uri, follow=follow)
    except SubmitError as err:
        fail(str(err))
    console.print(f"job {job_id}: {job_status}")
    if follow and job_status != "SUCCEEDED":
        raise typer.Exit(1)
