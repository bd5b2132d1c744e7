"""MLflow tracking: one parent run per study, one child run per trial, logged idempotently.

The study folder is the source of truth. Logging happens on the driver as trials finish; when
the tracking store is unreachable the study goes on and `taugate track DIR` backfills later.
Every run carries a tag with its identity (study id, trial key), so logging twice finds the
existing run instead of creating a duplicate.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from study.mlflow_store import client_for, resolve_uri
from study.storage import CONFIG_FILE, TrialLedger

log = logging.getLogger("taugate.tracking")

STUDY_TAG, TRIAL_TAG = "taugate.study_id", "taugate.trial_key"
PARENT_TAG, KIND_TAG = "mlflow.parentRunId", "taugate.kind"


def flat_params(config: dict[str, Any]) -> dict[str, str]:
    """The trial config as MLflow params: every field, lists as text, unset fields left out."""
    return {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in config.items() if v is not None}


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[name] = float(value)
    return out


class Tracker:
    """Writes a study's runs to one MLflow tracking store."""

    def __init__(self, study_dir: Path, tracking_uri: str | None, experiment_name: str):
        self.study_dir = Path(study_dir).resolve()
        self.uri = resolve_uri(self.study_dir, tracking_uri)
        self.client = client_for(self.uri)
        self.experiment_name = experiment_name
        self._experiment_id: str | None = None
        self._parent: str | None = None
        self._logged: set[str] | None = None

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is not None:
                self._experiment_id = found.experiment_id
            else:
                # a local SQLite store keeps its artifacts inside the study folder, never in ./mlruns
                local = self.uri.startswith("sqlite:")
                location = (self.study_dir / "mlartifacts").as_uri() if local else None
                self._experiment_id = self.client.create_experiment(self.experiment_name, artifact_location=location)
        return self._experiment_id

    def parent(self, study: dict[str, Any]) -> str:
        """The study's parent run, created once (tags: git commit, versions; the spec as artifact)."""
        if self._parent is not None:
            return self._parent
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STUDY_TAG}` = '{study['study_id']}' and tags.`{KIND_TAG}` = 'study'",
            max_results=1,
        )
        if found:
            self._parent = found[0].info.run_id
            return self._parent
        tags = {STUDY_TAG: study["study_id"], KIND_TAG: "study"}
        tags |= {f"taugate.{k}": str(v) for k, v in study.get("environment", {}).items()}
        run = self.client.create_run(self.experiment_id, run_name=study["name"], tags=tags)
        self._parent = run.info.run_id
        spec_file = self.study_dir / "spec.yaml"
        if spec_file.is_file():
            self.client.log_artifact(self._parent, str(spec_file))
        self.client.log_param(self._parent, "trials_planned", study.get("trials_planned", ""))
        return self._parent

    def logged_trials(self, parent: str) -> set[str]:
        if self._logged is None:
            query = f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{KIND_TAG}` = 'trial'"
            runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=50000)
            self._logged = {r.data.tags.get(TRIAL_TAG) for r in runs}
        return self._logged

    def log_trial(self, study: dict[str, Any], key: str, record: dict[str, Any], metrics: dict[str, Any]) -> bool:
        """One child run for a finished trial; False when it was already logged."""
        from mlflow.entities import Metric, Param

        parent = self.parent(study)
        if key in self.logged_trials(parent):
            return False
        self._drop_failure(parent, key)  # a trial that failed before and finished since is one run
        tags = {PARENT_TAG: parent, TRIAL_TAG: key, STUDY_TAG: study["study_id"], KIND_TAG: "trial",
                "taugate.status": metrics["status"]}  # fmt: skip
        if "columns" in record:
            tags["taugate.columns"] = json.dumps(record["columns"])
        if "node_id" in metrics:
            tags["taugate.node_id"] = str(metrics["node_id"])
        run = self.client.create_run(self.experiment_id, run_name=record["run_name"], tags=tags)
        run_id = run.info.run_id
        params = [Param(k, v) for k, v in flat_params(record["config"]).items()]
        values = [Metric(k, v, 0, 0) for k, v in numeric_metrics(metrics).items()]
        self.client.log_batch(run_id, metrics=values, params=params)
        trial_dir = self.study_dir / "trials" / key
        for artifact in ("gate_stats.json", "adapter"):
            path = trial_dir / artifact
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=artifact)
            elif path.is_file():
                self.client.log_artifact(run_id, str(path))
        status = "FINISHED" if metrics["status"] == "ok" else "FAILED"
        self.client.set_terminated(run_id, status=status)
        self._logged.add(key)
        return True

    def _drop_failure(self, parent: str, key: str) -> None:
        failure = f"error:{key}"
        if failure in self.logged_trials(parent):
            query = f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{TRIAL_TAG}` = '{failure}'"
            for run in self.client.search_runs([self.experiment_id], filter_string=query, max_results=10):
                self.client.delete_run(run.info.run_id)
            self._logged.discard(failure)

    def log_failure(
        self, study: dict[str, Any], trial: str, name: str, config: dict[str, Any], columns: dict[str, Any],
        error: str,
    ) -> None:  # fmt: skip
        """A trial that errored (no metrics): a FAILED child run carrying the error, tagged with the
        trial's key (`error:<key>`), replaced by the trial's own run if it finishes later."""
        parent = self.parent(study)
        key = trial if trial.startswith("error:") else f"error:{trial}"
        if key in self.logged_trials(parent):
            return
        tags = {PARENT_TAG: parent, TRIAL_TAG: key, STUDY_TAG: study["study_id"], KIND_TAG: "trial",
                "taugate.status": "error",
                "taugate.error": error[:4900], "taugate.columns": json.dumps(columns)}  # fmt: skip
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        for k, v in flat_params(config).items():
            self.client.log_param(run.info.run_id, k, v)
        self.client.set_terminated(run.info.run_id, status="FAILED")
        self._logged.add(key)

    def finish(self, study: dict[str, Any], status: str = "FINISHED", summary: dict[str, Any] | None = None) -> None:
        parent = self.parent(study)
        if summary:
            for name, value in numeric_metrics(summary).items():
                self.client.log_metric(parent, name, value)
        self.client.set_terminated(parent, status=status)

    def sync(self, study: dict[str, Any]) -> int:
        """Log every finished trial of the study folder that the store lacks; returns how many."""
        ledger = TrialLedger(self.study_dir)
        added = 0
        for key, metrics in ledger.all_finished().items():
            record = json.loads((ledger.trial_dir(key) / CONFIG_FILE).read_text())
            added += self.log_trial(study, key, record, metrics)
        return added
