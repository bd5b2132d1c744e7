"""`taugate submit`: run a study as a Ray Job on an existing cluster, with token authentication.

The job runs `taugate run` on the cluster, whose Ray address it inherits; the study folder
must be on storage every node sees.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

from study import environment
from study.spec.study_spec import StudySpec
from trainables.errors import TauGateError

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class SubmitError(TauGateError, RuntimeError):
    """A study that cannot be submitted: no auth token, or no job server at the address."""


def auth_token_available() -> bool:
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or path.is_file()


def submit(
    spec_path: Path, spec: StudySpec, address: str, output: str | None,
    tracking_uri: str | None, follow: bool = True, log=print,
) -> tuple[str, str]:  # fmt: skip
    """Submit the study; with `follow`, stream its logs until it ends. Returns (job id, status)."""
    environment.apply()  # Ray's token authentication stays on (RAY_AUTH_MODE)
    if os.environ["RAY_AUTH_MODE"] == "token" and not auth_token_available():
        raise SubmitError(
            "no Ray auth token: set RAY_AUTH_TOKEN, or put the cluster's token in ~/.ray/auth_token "
            "(or RAY_AUTH_TOKEN_PATH); `ray get-auth-token` on the head prints it"
        )
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise SubmitError(f"cannot reach the Ray job server at {address}: {err}") from None
    # The spec travels in an environment variable, not a working_dir: Ray garbage-collects a job's
    # working_dir while Tune still runs in it (ray-project/ray#52343).
    command = ["taugate", "run", "-"]
    if output:
        command += ["--output", output]
    if tracking_uri:
        command += ["--tracking-uri", tracking_uri]
    job_id = client.submit_job(
        entrypoint=f"printenv TAUGATE_SPEC | {shlex.join(command)}",
        runtime_env={"env_vars": {"TAUGATE_SPEC": spec_path.read_text(), "PYTHONUNBUFFERED": "1"}},
        metadata={"study": spec.name},
    )
    log(f"submitted job {job_id} to {address}")
    if not follow:
        return job_id, str(client.get_job_status(job_id))
    shown = 0
    while True:
        status = str(client.get_job_status(job_id)).split(".")[-1]
        logs = client.get_job_logs(job_id)
        if len(logs) > shown:
            log(logs[shown:].rstrip("\n"))
            shown = len(logs)
        if status in TERMINAL:
            return job_id, status
        time.sleep(1.0)
