"""MLflow tracking: one parent run per study, one child run per trial, logged idempotently.

The study folder is the source of truth. Logging happens on the driver as trials finish; when
the tracking store is unreachable the study goes on and `taugate track DIR` backfills later.
Every run carries a tag with its identity (study id, trial key), so logging twice finds the
existing run instead of creating a duplicate.

The study's experiment carries MLflow's experiment kind tag set to model training
(`mlflow.experimentKind` = `custom_model_development`, the value MLflow's experiment-kind selector writes),
set on an existing experiment that has no kind yet (`taugate track`, `taugate ui`), never over one a user
chose. MLflow 3.17's own UI picks its GenAI or model-training view by the address's `workflowType`
parameter rather than this tag, so the address `taugate ui` prints names the view too.

The parent run spans the study: it starts when the study was created (`study.json`), before any trial,
and ends after the last trial is logged (and, in `taugate run`, after the banks and the report).

A trial's child run carries what its ledger entry holds: the config as params, the final
metrics, each epoch's `loss` / `val_acc` as metric histories (step = epoch, from `history.json`),
the trial's own start and end on its worker, and its training data as an MLflow dataset input
(split sizes computed from the dataset's per-class counts, no data loaded on the driver).

A child run is created first (with its identity tags) and ended last, so a driver killed, or a
server lost, part-way through logging a trial leaves a run that is RUNNING, with no end time and
perhaps no params, metrics, dataset input or artifacts. `sync` (`taugate track`, and the end of
every `taugate run` / `resume`) finds such half-logged runs and completes them from the ledger as a
normal run is logged (what is there already is not logged twice: MLflow keeps one copy of an
identical metric, param or dataset input), then ends them with the ledger's status and end time.
Two runs of one trial (a create call retried after its answer was lost) are one: the most complete
is kept, the others deleted.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from study.folder.filenames import CONFIG_FILE
from study.folder.storage import TrialLedger
from study.tracking.datasets import training_dataset
from study.tracking.mlflow_store import client_for, resolve_uri
from study.tracking.sqlite_runs import SqliteRuns, TrialRun, log_paths, sqlite_path
from trainables.engine.resume import read_history

log = logging.getLogger("taugate.tracking")

STUDY_TAG, TRIAL_TAG = "taugate.study_id", "taugate.trial_key"
PARENT_TAG, KIND_TAG = "mlflow.parentRunId", "taugate.kind"
# MLflow's experiment kind (the tag its kind selector sets): this is model training, not GenAI.
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
# A trial's ledger status -> its MLflow run status: a scheduler's stop is neither success nor failure.
RUN_STATUS = {"ok": "FINISHED", "diverged": "FAILED", "stopped": "KILLED"}
# What a child run carries from its ledger entry as artifacts.
TRIAL_ARTIFACTS = ("gate_stats.json", "adapter")
# MLflow's batch limits (mlflow.utils.validation): entities per call, params per call.
BATCH_ENTITIES, BATCH_PARAMS = 1000, 100


def flat_params(config: dict[str, Any]) -> dict[str, str]:
    """The trial config as MLflow params: every field, lists as text, unset fields left out."""
    return {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in config.items() if v is not None}


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items() if _finite(value)}


def _ms(seconds: Any) -> int | None:
    """Unix seconds (the ledger's times) as MLflow's milliseconds; None when absent."""
    return int(seconds * 1000) if _finite(seconds) else None


def run_metrics(metrics: dict[str, Any], history: list[dict[str, Any]], start_ms: int, end_ms: int) -> list:
    """Every metric of a child run: each epoch's numbers (`loss`, `val_acc`, ...) at step = epoch and
    the trial's time of that epoch, then the final metrics at the trial's end. A final metric named
    like an epoch series joins that series at its last epoch, so it never adds a stray step 0 to
    the chart the UI draws."""
    from mlflow.entities import Metric

    out, series, last_epoch = [], set(), 0
    for entry in history:
        seconds = entry.get("seconds")
        timestamp = start_ms + (int(seconds * 1000) if _finite(seconds) else 0)
        last_epoch = max(last_epoch, entry["epoch"])
        for name, value in entry.items():
            if name not in ("epoch", "seconds") and _finite(value):
                out.append(Metric(name, float(value), timestamp, entry["epoch"]))
                series.add(name)
    for name, value in numeric_metrics(metrics).items():
        out.append(Metric(name, value, end_ms, last_epoch if name in series else 0))
    return out


def study_start_ms(study: dict[str, Any]) -> int | None:
    """When the study was created (`study.json`'s `created`, whole seconds) as MLflow's milliseconds."""
    try:
        return int(datetime.fromisoformat(study["created"]).timestamp() * 1000)
    except (KeyError, TypeError, ValueError):
        return None


def mark_model_training(client: Any, experiment: Any) -> bool:
    """Tag an experiment as model training unless it has a kind already; True when it was tagged now."""
    if experiment.tags.get(EXPERIMENT_KIND_TAG):
        return False
    client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return True


def batches(params: Sequence, metrics: Sequence) -> Iterator[tuple[list, list]]:
    """(params, metrics) chunks within MLflow's limits per `log_batch`: one call for a usual trial."""
    params, metrics = list(params), list(metrics)
    while params or metrics:
        head = params[:BATCH_PARAMS]
        params = params[BATCH_PARAMS:]
        room = BATCH_ENTITIES - len(head)
        yield head, metrics[:room]
        metrics = metrics[room:]


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
        self._runs: dict[str, list[Any]] = {}  # trial key -> its child runs found in the store
        self.completed: list[str] = []  # runs `sync` completed (their names)
        self.merged = 0  # duplicate runs of one trial `sync` deleted
        self._datasets: dict[str, Any] = {}  # one dataset entity per distinct training data
        self._bulk: Path | bool | None = None  # the SQLite file `log_trials` writes directly (False: the client)
        self.written: set[str] = set()  # trial keys whose runs this tracker wrote whole (`sync` skips them)

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is not None:
                self._experiment_id = found.experiment_id
                mark_model_training(self.client, found)  # a study logged before the kind was set
            else:
                # a local SQLite store keeps its artifacts inside the study folder, never in ./mlruns
                local = self.uri.startswith("sqlite:")
                location = (self.study_dir / "mlartifacts").as_uri() if local else None
                self._experiment_id = self.client.create_experiment(
                    self.experiment_name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}
                )
        return self._experiment_id

    def _find_parent(self, study: dict[str, Any]) -> str | None:
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STUDY_TAG}` = '{study['study_id']}' and tags.`{KIND_TAG}` = 'study'",
            max_results=1,
        )
        return found[0].info.run_id if found else None

    def parent(self, study: dict[str, Any]) -> str:
        """The study's parent run, created once (tags: git commit, versions; the spec as artifact)."""
        if self._parent is not None:
            return self._parent
        if found := self._find_parent(study):
            self._parent = found
            return self._parent
        tags = {STUDY_TAG: study["study_id"], KIND_TAG: "study"}
        tags |= {f"taugate.{k}": str(v) for k, v in study.get("environment", {}).items()}
        # it starts with the study (before its first trial), not when the first trial is logged
        run = self.client.create_run(self.experiment_id, start_time=study_start_ms(study), run_name=study["name"],
                                     tags=tags)  # fmt: skip
        self._parent = run.info.run_id
        spec_file = self.study_dir / "spec.yaml"
        if spec_file.is_file():
            self.artifacts(run).log_artifact(str(spec_file))
        self.client.log_param(self._parent, "trials_planned", study.get("trials_planned", ""))
        return self._parent

    def artifacts(self, run: Any):
        """A run's artifact store (`run`: a Run or a run id), from the run's artifact URI as the store records it
        now. Never the client's `log_artifact(s)`: MLflow caches artifact stores by run id alone for the whole
        process, and a copied study's runs have the original's run ids (its artifacts would go to the original)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        run = self.client.get_run(run) if isinstance(run, str) else run
        return get_artifact_repository(run.info.artifact_uri, tracking_uri=self.uri)

    def logged_trials(self, parent: str) -> set[str]:
        """Trial keys with a child run in the store, complete or not (`sync` completes the others)."""
        if self._logged is None:
            query = f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{KIND_TAG}` = 'trial'"
            runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=50000)
            self._runs = {}
            for run in runs:
                self._runs.setdefault(run.data.tags.get(TRIAL_TAG), []).append(run)
            self._logged = set(self._runs)
        return self._logged

    def _trial_tags(self, study: dict[str, Any], parent: str, key: str, record: dict[str, Any],
                    metrics: dict[str, Any]) -> dict[str, str]:  # fmt: skip
        tags = {PARENT_TAG: parent, TRIAL_TAG: key, STUDY_TAG: study["study_id"], KIND_TAG: "trial",
                "taugate.status": metrics["status"]}  # fmt: skip
        if "columns" in record:
            tags["taugate.columns"] = json.dumps(record["columns"])
        for name, source in (("node_id", metrics), ("stopped_at_epoch", metrics), ("worker_pid", record)):
            if source.get(name) is not None:
                tags[f"taugate.{name}"] = str(source[name])
        return tags

    def log_trial(
        self, study: dict[str, Any], key: str, record: dict[str, Any], metrics: dict[str, Any],
        history: list[dict[str, Any]] | None = None,
    ) -> bool:  # fmt: skip
        """One child run for a finished trial through MLflow's client; False when it was already logged.
        `history` defaults to the ledger entry's `history.json`."""
        parent = self.parent(study)
        if key in self.logged_trials(parent):
            return False
        self._drop_failure(parent, key)  # a trial that failed before and finished since is one run
        trial_dir = self.study_dir / "trials" / key
        history = read_history(trial_dir) if history is None else history
        run = self.client.create_run(self.experiment_id, start_time=_ms(record.get("started_at")),
                                     tags=self._trial_tags(study, parent, key, record, metrics),
                                     run_name=record["run_name"])  # fmt: skip
        self._fill(run, trial_dir, record, metrics, history)
        self._logged.add(key)
        self.written.add(key)
        return True

    def log_trials(self, study: dict[str, Any], finished: Sequence[tuple[str, dict[str, Any], dict[str, Any]]]) -> int:
        """A child run for each finished trial (key, ledger record, metrics) the store lacks; how many were added.
        A SQLite store MLflow's schema of which `sqlite_runs` knows gets them all in one transaction
        (`SqliteRuns`), any other store one by one through MLflow's client (`log_trial`)."""
        parent = self.parent(study)
        logged, fresh = self.logged_trials(parent), {}
        for key, record, metrics in finished:
            if key not in logged:
                fresh[key] = (record, metrics)
        if not fresh:
            return 0
        if self._bulk is None:
            self._bulk = sqlite_path(self.uri) or False
        if not self._bulk:
            return sum(self.log_trial(study, key, record, metrics) for key, (record, metrics) in fresh.items())
        for key in fresh:
            self._drop_failure(parent, key)
        runs = [self._describe(study, parent, key, record, metrics) for key, (record, metrics) in fresh.items()]
        SqliteRuns(self._bulk, self.experiment_id).write(runs)
        self._logged.update(fresh)
        self.written.update(fresh)
        return len(runs)

    def _describe(self, study: dict[str, Any], parent: str, key: str, record: dict[str, Any],
                  metrics: dict[str, Any]) -> TrialRun:  # fmt: skip
        """A finished trial's whole run, as `log_trial` logs it through the client."""
        trial_dir = self.study_dir / "trials" / key
        now = int(time.time() * 1000)
        start_ms = _ms(record.get("started_at")) or now
        end_ms = _ms(record.get("ended_at")) or now
        history = read_history(trial_dir)
        return TrialRun(
            key=key, name=record["run_name"], tags=self._trial_tags(study, parent, key, record, metrics),
            params=flat_params(record["config"]), metrics=run_metrics(metrics, history, start_ms, end_ms),
            start_ms=start_ms, end_ms=end_ms, status=RUN_STATUS.get(metrics["status"], "FAILED"),
            dataset=self._dataset(record["config"]), artifacts=[trial_dir / name for name in TRIAL_ARTIFACTS],
        )  # fmt: skip

    def _fill(
        self, run: Any, trial_dir: Path, record: dict[str, Any], metrics: dict[str, Any],
        history: list[dict[str, Any]], artifacts: bool = True,
    ) -> None:  # fmt: skip
        """Log a trial's params, metrics, dataset input and artifacts to its run, then end it with the
        ledger's status and end time (last: a run interrupted before this stays RUNNING, for `sync`)."""
        from mlflow.entities import Param

        run_id, start_ms = run.info.run_id, run.info.start_time
        end_ms = _ms(record.get("ended_at")) or run.info.end_time or int(time.time() * 1000)
        # params a run has already are not sent again (MLflow refuses a param logged twice with another text)
        params = [Param(k, v) for k, v in flat_params(record["config"]).items() if k not in run.data.params]
        for chunk_params, chunk_metrics in batches(params, run_metrics(metrics, history, start_ms, end_ms)):
            self.client.log_batch(run_id, metrics=chunk_metrics, params=chunk_params)
        self._log_dataset(run_id, record["config"])
        if artifacts:
            # the run's artifact store straight from the run's URI (`artifacts`): the client's log_artifact(s)
            # would read the whole run back (tags, params, metrics) for each call just to find that URI
            log_paths(self.artifacts(run), [trial_dir / artifact for artifact in TRIAL_ARTIFACTS])
        self.client.set_terminated(run_id, status=RUN_STATUS.get(metrics["status"], "FAILED"), end_time=end_ms)

    def missing(self, run: Any, trial_dir: Path, record: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
        """What a trial's existing run lacks against its ledger entry ([] for a complete run): its end
        (RUNNING or no end time), the ledger's status, params, final metrics, dataset input, artifacts."""
        lacks = []
        if run.info.status == "RUNNING" or not run.info.end_time:
            lacks.append("end")
        elif run.info.status != RUN_STATUS.get(metrics["status"], "FAILED"):
            lacks.append("status")
        if set(flat_params(record["config"])) - set(run.data.params):
            lacks.append("params")
        if set(numeric_metrics(metrics)) - set(run.data.metrics):
            lacks.append("metrics")
        if not (run.inputs and run.inputs.dataset_inputs):
            lacks.append("dataset input")
        if not self._has_artifacts(run, trial_dir):
            lacks.append("artifacts")
        return lacks

    def _has_artifacts(self, run: Any, trial_dir: Path) -> bool:
        """Every artifact file of the ledger entry (`gate_stats.json`, `adapter/...`) is in the run, same size."""
        expected = {}
        for artifact in TRIAL_ARTIFACTS:
            path = trial_dir / artifact
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            expected |= {f.relative_to(trial_dir).as_posix(): f.stat().st_size for f in files if f.is_file()}
        if not expected:
            return True
        store = self.artifacts(run)
        found: dict[str, int | None] = {}
        folders = [None]
        while folders:
            for info in store.list_artifacts(folders.pop()):
                if info.is_dir:
                    folders.append(info.path)
                else:
                    found[info.path] = info.file_size
        return all(name in found and found[name] in (size, None) for name, size in expected.items())

    def _log_dataset(self, run_id: str, config: dict[str, Any]) -> None:
        """The trial's training data as the run's dataset input (context "training")."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        dataset = DatasetInput(self._dataset(config), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])
        self.client.log_inputs(run_id, datasets=[dataset])

    def _dataset(self, config: dict[str, Any]) -> Any:
        """The training data's dataset entity, one per distinct data in this tracker."""
        fields = ("dataset", "data_root", "target_angle", "test_fraction", "val_fraction")
        identity = json.dumps([config.get(name) for name in fields])
        if identity not in self._datasets:
            self._datasets[identity] = training_dataset(config)
        return self._datasets[identity]

    def _drop_failure(self, parent: str, key: str) -> None:
        failure = f"error:{key}"
        if failure in self.logged_trials(parent):
            query = f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{TRIAL_TAG}` = '{failure}'"
            for run in self.client.search_runs([self.experiment_id], filter_string=query, max_results=10):
                self.client.delete_run(run.info.run_id)
            self._logged.discard(failure)
            self._runs.pop(failure, None)

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
        self.written.add(key)

    def finish(self, study: dict[str, Any], status: str = "FINISHED", summary: dict[str, Any] | None = None) -> None:
        parent = self.parent(study)
        if summary:
            for name, value in numeric_metrics(summary).items():
                self.client.log_metric(parent, name, value)
        self.client.set_terminated(parent, status=status)

    def extend_end(self, study: dict[str, Any]) -> bool:
        """Move an ended parent run's end to now, its status kept (what the study logged after `finish`:
        banks, report); False when the study has no parent run or it is still running."""
        parent = self._parent or self._find_parent(study)
        if parent is None:
            return False
        status = self.client.get_run(parent).info.status
        if status == "RUNNING":
            return False
        self.client.set_terminated(parent, status=status, end_time=int(time.time() * 1000))
        return True

    def sync(self, study: dict[str, Any]) -> int:
        """Log every finished trial of the study folder that the store lacks, and complete its half-logged
        runs (`complete`); returns how many runs were added. `self.completed` / `self.merged` count the rest.
        Runs this tracker wrote whole itself (`written`: the study's tracking thread, when `taugate run` syncs
        with its tracker) are not read back: only runs found in the store are checked."""
        ledger = TrialLedger(self.study_dir)
        parent = self.parent(study)
        logged = self.logged_trials(parent)
        self.completed, self.merged, missing = [], 0, []
        for key, metrics in ledger.all_finished().items():
            if key in self.written:
                continue
            record = json.loads((ledger.trial_dir(key) / CONFIG_FILE).read_text())
            if key in logged:
                self.complete(key, record, metrics)
            else:
                missing.append((key, record, metrics))
        added = self.log_trials(study, missing)
        for key, runs in self._runs.items():  # a failed trial's run cut off before it was ended
            if key and key.startswith("error:"):
                for run in runs:
                    if run.info.status == "RUNNING" or not run.info.end_time:
                        self.client.set_terminated(run.info.run_id, status="FAILED")
                        self.completed.append(run.info.run_name or run.info.run_id)
        return added

    def complete(self, key: str, record: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
        """Complete a finished trial's existing run from the ledger when it lacks anything (`missing`), one run
        per trial kept; what was missing ([] when the run was complete)."""
        runs = self._runs.get(key, [])
        if not runs:
            return []
        trial_dir = self.study_dir / "trials" / key
        lacking = {r.info.run_id: self.missing(r, trial_dir, record, metrics) for r in runs}
        run, *extra = sorted(runs, key=lambda r: (len(lacking[r.info.run_id]), r.info.start_time or 0))
        for duplicate in extra:  # one trial, one run: a create retried after its answer was lost made two
            self.client.delete_run(duplicate.info.run_id)
            self.merged += 1
        self._runs[key] = [run]
        lacks = lacking[run.info.run_id]
        if lacks:
            log.info("completing run %s of trial %s: it lacked %s", run.info.run_id, key, ", ".join(lacks))
            self._fill(run, trial_dir, record, metrics, read_history(trial_dir), artifacts="artifacts" in lacks)
            self.completed.append(run.info.run_name or key)
        return lacks
