"""The environment variables the study service sets, each explained once, in one place.

`apply()` runs when this module is first imported: every module that starts Ray, Tune or MLflow
imports it before them (Ray and Tune read most of these when they are first imported). Values
the user set already are kept (`setdefault`). The `ray start` process of `taugate cluster start`
gets an environment of its own, `study.cluster.head.ENVIRONMENT`, explained there.
"""

from __future__ import annotations

import os

DEFAULTS = {
    # our progress lines replace Tune's tables
    "RAY_AIR_NEW_OUTPUT": "0",
    # Ray's token authentication stays on; Ray reads this when it is first imported, so set it first.
    "RAY_AUTH_MODE": "token",
    # An unreachable tracking server should cost seconds, not MLflow's default minutes of retries.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # A normal run prints only the study's own lines and real warnings: MLflow's tqdm bar on every
    # artifact download (logging a bank model reads its files back) and its INFO lines ("Validating
    # input example against model signature") are noise. MLflow reads both when it is first imported.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # Tune's automatic loggers include TensorBoard's, whose import and event files cost the driver
    # seconds per study; the JSON and CSV loggers (which the analysis reads) are added explicitly.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # Ctrl-C and SIGTERM stop a study through study.cluster.interrupt; Tune's own SIGINT handler would
    # print its `Tuner.restore(...)` hint, which is not how a study resumes.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    # A diverged trial has no accuracy to report; the scheduler and Optuna see it as a trial without
    # the metric (not an error that stops the study).
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # Long trials checkpoint every epoch (num_to_keep=2), which forces an experiment snapshot each time;
    # Tune warns about that on every short epoch, which is noise here.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}


def apply() -> None:
    """Set every default the user has not set (idempotent)."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)


apply()
