"""Load a study into the results table: from its Ray Tune experiment folder (the source of truth)
or from its MLflow experiment. Both give the same columns and the same rows.

One row per distinct trial (`trial_id` = the trial's config key): a trial that ran in several Tune
runs (a resume, a retry) is one row; a trial that errored and later succeeded counts as a success.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pandas as pd

from analysis.table.results import BOOKKEEPING_COLUMNS, OUTCOME_COLUMNS, is_metric
from trainables.config import (
    TrialConfig,
    TrialMetrics,
    accuracy_name,
    parse_config,
)
from trainables.engine.resume import HISTORY_FILE, read_history
from trainables.files import DamagedFile, read_json

TUNE_DIR, TRIALS_DIR, GATE_STATS = "tune", "trials", "gate_stats.json"
METRICS_FILE, CONFIG_FILE = "metrics.json", "config.json"  # a ledger entry (study/folder/storage.py)
PLAN_FILE = "plan.json"  # every planned trial's key, name and columns (study/spec/plan.py)
ORDER = ("trial_id", "run_name", "status", "error", *OUTCOME_COLUMNS, "method", "seed")


def _variant(params: dict[str, Any]) -> dict[str, Any]:
    """The varying part of a Tune trial's config: grid trials carry `variant`, Optuna ones are flat."""
    return params.get("variant") or {k: v for k, v in params.items() if k != "base"}


def _row(trial_id: str, run_name: str, status: str, columns: dict, metrics: dict, error: str | None) -> dict:
    row = {"trial_id": trial_id, "run_name": run_name, "status": status, "error": error} | columns
    for name, value in metrics.items():
        if is_metric(name) or name in OUTCOME_COLUMNS:
            row[name] = value
    return row


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=list(ORDER))
    first = [c for c in ORDER if c in df.columns]
    config = sorted(c for c in df.columns if c not in first and not is_metric(c) and c not in BOOKKEEPING_COLUMNS)
    metrics = sorted(c for c in df.columns if is_metric(c))
    return (
        df[first + config + metrics].sort_values(["method", "seed", "trial_id"], kind="stable").reset_index(drop=True)
    )


def _dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per trial id; successes win over errors of the same configuration."""
    by_id: dict[str, dict[str, Any]] = {}
    for row in rows:
        by_id.setdefault(row["trial_id"], row)
    succeeded = {json.dumps(_identity(r), sort_keys=True) for r in by_id.values() if r["status"] != "error"}
    return [
        r for r in by_id.values()
        if r["status"] != "error" or json.dumps(_identity(r), sort_keys=True) not in succeeded
    ]  # fmt: skip


def _identity(row: dict[str, Any]) -> dict[str, Any]:
    skip = {"trial_id", "run_name", "status", "error", *OUTCOME_COLUMNS}
    return {k: v for k, v in row.items() if k not in skip and not is_metric(k)}


def _ledger(study_dir: Path) -> tuple[list[dict[str, Any]], set[str]]:
    """Rows of every trial the study folder's ledger holds (`<study>/trials/<key>/`: its config
    record and metrics, metrics written last), and the variants they ran (as canonical JSON)."""
    rows, ran = [], set()
    for metrics_file in sorted(Path(study_dir, TRIALS_DIR).glob(f"*/{METRICS_FILE}")):
        try:
            record, metrics, _ = ledger_entry(metrics_file.parent)
        except DamagedFile:
            continue  # a damaged entry is not a result: the trial shows as not run (`ledger_damage` says why)
        key = metrics_file.parent.name
        rows.append(_row(key, record.get("run_name", key), metrics.get("status", "ok"), record.get("columns", {}),
                         metrics, None))  # fmt: skip
        ran.add(_canonical(record.get("variant", {})))
    return rows, ran


def _retrain(folder: Path) -> str:
    study = shlex.quote(str(folder.parent.parent.resolve()))
    return f"the trial counts as not run: `taugate resume {study}` trains it again"


# the fields every ledger metrics.json holds (`TrialMetrics`' required ones; the ledger adds bookkeeping such as
# node_id, so only these are checked, each for its type)
_REQUIRED_METRICS = {
    "status": str,
    "method": str,
    "seed": int,
    "trainable_params": int,
    "train_seconds": (int, float, type(None)),
}
_STATUSES = get_args(TrialMetrics.model_fields["status"].annotation)


def _metrics_problem(metrics: dict[str, Any], config: TrialConfig) -> str | None:
    missing = [name for name in _REQUIRED_METRICS if name not in metrics]
    if missing:
        return f"no {', '.join(missing)}"
    for name, kind in _REQUIRED_METRICS.items():
        if isinstance(metrics[name], bool) or not isinstance(metrics[name], kind):
            return f"{name} is {type(metrics[name]).__name__} {metrics[name]!r}, not a {name} value"
    if metrics["status"] not in _STATUSES:
        return f"status {metrics['status']!r} is none of {', '.join(_STATUSES)}"
    for field in ("method", "seed"):
        if metrics[field] != getattr(config, field):
            return f"{field} {metrics[field]!r} is not its config.json's {getattr(config, field)!r}"
    target = accuracy_name(config.target_angle)
    if metrics["status"] == "ok" and not isinstance(metrics.get(target), int | float):
        return f"status ok without its test accuracy {target}"
    return None


def ledger_entry(folder: Path, complete: bool = True) -> tuple[dict[str, Any], dict[str, Any], TrialConfig] | None:
    """A ledger entry (`trials/<key>/`): its config record, metrics and parsed config, None when it holds no
    metrics.json (not finished). A damaged entry (invalid JSON, another type, a missing field, a status
    without its metrics, a config that does not parse) raises `DamagedFile` naming the file: it is not a result.
    `complete=False` checks the files and the config only, not the metrics' fields (`ledger_trials`)."""
    folder = Path(folder)
    metrics_file, config_file = folder / METRICS_FILE, folder / CONFIG_FILE
    if not metrics_file.is_file():
        return None
    try:
        metrics = read_json(metrics_file, ValueError)
    except ValueError as err:
        raise DamagedFile(metrics_file, str(err).removeprefix(f"{metrics_file}: "), _retrain(folder)) from None
    try:
        record = read_json(config_file, ValueError)
        if not isinstance(record.get("config"), dict):
            raise ValueError("no `config` mapping")
        config = parse_config(record["config"])
        if not isinstance(record.get("variant", {}), dict) or not isinstance(record.get("run_name", ""), str):
            raise ValueError("variant or run_name of another type")
    except (ValueError, TypeError) as err:
        problem = str(err).removeprefix(f"{config_file}: ")
        raise DamagedFile(config_file, problem, _retrain(folder)) from None
    if complete and (problem := _metrics_problem(metrics, config)) is not None:
        raise DamagedFile(metrics_file, problem, _retrain(folder))
    return record, metrics, config


def ledger_damage(study_dir: Path) -> list[DamagedFile]:
    """Every damaged entry of the study's ledger (each counts as not run)."""
    damage = []
    for folder in sorted(p.parent for p in Path(study_dir, TRIALS_DIR).glob(f"*/{METRICS_FILE}")):
        try:
            ledger_entry(folder)
        except DamagedFile as err:
            damage.append(err)
    return damage


def history_damage(folder: Path) -> DamagedFile | None:
    """What is wrong with a trial's `history.json` (None when it is fine or absent: an old study, no epoch)."""
    path = Path(folder) / HISTORY_FILE
    if not path.is_file():
        return None
    fix = (
        "the report has no learning curve for this trial, its results are kept; "
        f"delete {path.name} to accept that, or its metrics.json and `taugate resume` to train it again"
    )
    try:
        data = read_json(path, ValueError)
    except ValueError as err:
        return DamagedFile(path, str(err).removeprefix(f"{path}: "), fix)
    epochs = data.get("epochs")
    if not isinstance(epochs, list):
        return DamagedFile(path, "no list of epochs", fix)
    bad = [i for i, e in enumerate(epochs) if not (isinstance(e, dict) and isinstance(e.get("epoch"), int))]
    if bad:
        return DamagedFile(path, f"epoch record {bad[0]} is not an epoch", fix)
    return None


def _canonical(variant: dict[str, Any]) -> str:
    return json.dumps(variant, sort_keys=True, default=str)


def load_tune(study_dir: Path) -> pd.DataFrame:
    """The results table of a study folder: every trial its ledger holds (the source of truth,
    whatever Tune's own files say of an interrupted or retried trial), plus one `error` row per
    planned trial whose Tune trial failed and that never reached the ledger (from
    `<study>/tune/run-*/<trial>/params.json` and its `error.txt`)."""
    rows, ran = _ledger(Path(study_dir))
    plan = _plan(Path(study_dir))
    for trial_dir in sorted(Path(study_dir, TUNE_DIR).glob("run-*/*/")):
        params_file = trial_dir / "params.json"
        if not params_file.is_file():
            continue
        params = read_json(params_file, ValueError)
        variant = _variant(params)
        members = variant.get("members") or (
            [variant | {"seed": seed} for seed in params["seeds"]] if "seeds" in params else [variant]
        )
        missing = [m for m in members if _canonical(m) not in ran]
        if not missing:
            continue
        error_file = trial_dir / "error.txt"
        if not error_file.is_file():  # stopped before it reported (an interrupted or killed driver): still to run
            continue
        error = error_file.read_text().strip().splitlines()[-1]
        name = trial_dir.name.rsplit("_", 2)[0]
        for member in missing:
            label = name if len(members) == 1 else f"{name}#{members.index(member)}"
            key, record = plan.get(_canonical(member), (label, {}))
            # the plan names and groups a failed trial as its finished siblings are (defaults included)
            rows.append(_row(f"error:{key}", record.get("run_name", label), "error", record.get("columns", member), {},
                             error))  # fmt: skip
            ran.add(_canonical(member))  # a retried trial is one error row, not one per attempt
    return _frame(_dedupe(rows))


def _plan(study_dir: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """`<study>/plan.json` (grid studies) by canonical variant: (trial key, its record)."""
    return {_canonical(record["variant"]): (key, record) for key, record in read_plan(study_dir).items()}


def read_plan(study_dir: Path) -> dict[str, dict[str, Any]]:
    """`<study>/plan.json`, every planned trial's record by key ({} when there is none: an Optuna study);
    a damaged file raises `DamagedFile`."""
    path = Path(study_dir, PLAN_FILE)
    if not path.is_file():
        return {}
    fix = f"delete it: `taugate resume {shlex.quote(str(Path(study_dir).resolve()))}` writes it again from the spec"
    try:
        plan = read_json(path, ValueError)
    except ValueError as err:
        raise DamagedFile(path, str(err).removeprefix(f"{path}: "), fix) from None
    for key, record in plan.items():
        if not isinstance(record, dict) or not isinstance(record.get("variant"), dict):
            raise DamagedFile(path, f"trial {key}: no variant mapping", fix)
    return plan


def load_mlflow(tracking_uri: str, experiment_name: str) -> pd.DataFrame:
    """The same table from the study's MLflow child runs (tags carry identity and columns)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise LookupError(f"no MLflow experiment {experiment_name!r} at {tracking_uri}")
    runs = client.search_runs([experiment.experiment_id], "tags.`taugate.kind` = 'trial'", max_results=50000)
    rows = []
    for run in runs:
        tags = run.data.tags
        columns = json.loads(tags.get("taugate.columns", "{}"))
        metrics = {
            k: (int(v) if k in ("trainable_params", *OUTCOME_COLUMNS) else v) for k, v in run.data.metrics.items()
        }
        rows.append(_row(tags["taugate.trial_key"], tags.get("mlflow.runName", ""), tags.get("taugate.status", "ok"),
                         columns, metrics, tags.get("taugate.error")))  # fmt: skip
    return _frame(_dedupe(rows))


def load_gate_stats(study_dir: Path, trial_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per-neuron firing statistics of each trial that wrote them (a damaged file, which `gate_stats_damage`
    names, loses that trial's firing map: they describe, nothing is selected on them)."""
    stats = {}
    for trial_id in trial_ids:
        path = Path(study_dir, TRIALS_DIR, trial_id, GATE_STATS)
        if path.is_file() and gate_stats_damage(path.parent) is None:
            stats[trial_id] = read_json(path, ValueError)
    return stats


def gate_stats_damage(folder: Path) -> DamagedFile | None:
    """What is wrong with a trial's gate_stats.json (None when it is fine or absent)."""
    path = Path(folder) / GATE_STATS
    if not path.is_file():
        return None
    try:
        read_json(path, ValueError)
    except ValueError as err:
        fix = "the report has no firing map for this trial, its results are kept; delete it to accept that"
        return DamagedFile(path, str(err).removeprefix(f"{path}: "), fix)
    return None


def load_histories(study_dir: Path, trial_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each trial's per-epoch reports (`history.json`'s "epochs"), for the trials that wrote them: an old
    study, a trial with no epochs and a damaged file (`history_damage` says what is wrong) have none."""
    histories = {str(t): read_history(Path(study_dir, TRIALS_DIR, str(t))) for t in trial_ids}
    return {trial_id: epochs for trial_id, epochs in histories.items() if epochs}


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """The table with float noise of storage (MLflow keeps doubles) rounded away, for equality checks."""
    out = df.copy()
    for column in out.columns:
        if out[column].dtype.kind == "f":
            out[column] = out[column].map(lambda v: v if v is None or math.isnan(v) else round(v, 9))
    return out


@dataclass
class LedgerTrial:
    """A finished trial of a study's ledger (`trials/<key>/`): its folder, parsed config and metrics."""

    key: str
    folder: Path
    config: TrialConfig
    metrics: dict[str, Any]


def ledger_trials(study_dir: Path) -> tuple[list[LedgerTrial], list[str]]:
    """Every finished trial of the ledger (whatever its status), in key order, and a note per entry that
    cannot be read (a torn or foreign file), which is skipped."""
    trials, unreadable = [], []
    for metrics_file in sorted(Path(study_dir, TRIALS_DIR).glob(f"*/{METRICS_FILE}")):
        folder = metrics_file.parent
        try:
            # the files and the config only: per-mode choices skip a trial without the metric they select on
            _, metrics, config = ledger_entry(folder, complete=False)
        except DamagedFile as err:
            unreadable.append(f"trial {folder.name}: skipped, damaged record ({err})")
            continue
        trials.append(LedgerTrial(folder.name, folder, config, metrics))
    return trials, unreadable


# The fields that set how far a trial's adapter could move and how sparse it was pushed: TauGate's own
# budget (gate sharpness, lambda, a sparsity target, tau's lr multiplier) and the protocol's lr and length.
# Trials of one (method, target angle) are compared on validation only within one budget: a study that runs
# TauGate dense and at a sparsity target reports each budget on its own (per-mode analysis, banks).
BUDGET_FIELDS = (
    "gate_sharpness", "sparsity_weight", "sparsity_target", "tau_lr_multiplier", "lr_scale", "epochs", "lr",
)  # fmt: skip
_BUDGET_SHORT = {"gate_sharpness": "s", "sparsity_weight": "lambda", "sparsity_target": "target",
                 "tau_lr_multiplier": "taulr", "lr_scale": "lrscale", "epochs": "epochs", "lr": "lr"}  # fmt: skip
_BUDGET_ORDER = (
    "sparsity_target", "sparsity_weight", "tau_lr_multiplier", "gate_sharpness", "lr_scale", "epochs", "lr",
)  # fmt: skip

Budget = tuple[tuple[str, Any], ...]  # (field, value) for each of BUDGET_FIELDS, in that order


def budget_of(config: TrialConfig) -> Budget:
    """A trial's budget: its values of `BUDGET_FIELDS` (hashable, comparable)."""
    return tuple((name, getattr(config, name)) for name in BUDGET_FIELDS)


def _order(budget: Budget) -> tuple:
    """Dense first (no sparsity target, then the smallest lambda), then by each field's value; None first."""
    values = dict(budget)
    return tuple((values[f] is not None, values[f] if values[f] is not None else 0) for f in _BUDGET_ORDER)


def ordered_budgets(budgets: Any) -> list[Budget]:
    """Distinct budgets, dense first."""
    return sorted(set(budgets), key=_order)


def _is_dense(values: dict[str, Any]) -> bool:
    return values["sparsity_target"] is None and values["sparsity_weight"] == 0


def _value(value: Any) -> str:
    return "none" if value is None else f"{value:g}"


def budget_labels(budgets: Any) -> dict[Budget, str]:
    """A short, readable, file-name-safe label per budget, unique among `budgets`: "" when there is only one
    (a study with one budget names nothing), else the fields that differ between them ("target0.4-taulr25"),
    and "dense" for the budget without a sparsity pressure (lambda 0, no target) when that is unambiguous."""
    distinct = ordered_budgets(budgets)
    if len(distinct) <= 1:
        return {b: "" for b in distinct}
    varying = [f for f in BUDGET_FIELDS if len({dict(b)[f] for b in distinct}) > 1]
    full = {b: "-".join(f"{_BUDGET_SHORT[f]}{_value(dict(b)[f])}" for f in varying) for b in distinct}
    sparsity = {"sparsity_weight", "sparsity_target", "tau_lr_multiplier"}
    dense = [b for b in distinct if _is_dense(dict(b))]
    if len(dense) == 1 and set(varying) <= sparsity:
        full[dense[0]] = "dense"
    return full


def describe_budget(budget: Budget, budgets: Any = ()) -> str:
    """The budget in words: every field that differs among `budgets` (all fields without them), e.g.
    "sparsity_weight 0, sparsity_target none, tau_lr_multiplier 1"."""
    distinct = ordered_budgets([budget, *budgets])
    varying = [f for f in BUDGET_FIELDS if len({dict(b)[f] for b in distinct}) > 1] or list(BUDGET_FIELDS)
    values = dict(budget)
    return ", ".join(f"{field} {_value(values[field])}" for field in varying)


@dataclass
class ModeChoice:
    """The trial that stands for one (budget, method, target angle): the best seed-free validation accuracy
    on its target, hard-gated for a gated method (the network inference runs), ties to the first key.
    Never a test metric. `trial` is None when no candidate has the metric."""

    method: str
    angle: float
    metric: str
    trial: LedgerTrial | None
    value: float | None
    candidates: dict[str, float]  # trial key -> its value, for every candidate that has one
    skipped: list[str]  # trial keys without a finite value of the metric
    budget: Budget = ()  # the candidates' budget (`budget_of`): choices never compare two budgets


def choose_per_mode(trials: list[LedgerTrial]) -> list[ModeChoice]:
    """One `ModeChoice` per (budget, method, target angle) among `trials` (typically one foundation's), in the
    order the triples first appear. Trials of different budgets (`BUDGET_FIELDS`) are never compared: a
    dense and a sparse TauGate adapter of one target are two choices, each reported in its own budget."""
    groups: dict[tuple[Budget, str, float], list[LedgerTrial]] = {}
    for trial in trials:
        groups.setdefault((budget_of(trial.config), trial.config.method, trial.config.target_angle), []).append(trial)
    choices = []
    for (budget, method, angle), group in groups.items():
        metric = accuracy_name(angle, hard=group[0].config.gated, validation=True)
        values = {t.key: t.metrics.get(metric) for t in group}
        usable = {k: float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}
        best = min(usable, key=lambda k: (-usable[k], k)) if usable else None
        choices.append(ModeChoice(
            method, angle, metric, next((t for t in group if t.key == best), None), usable.get(best),
            dict(sorted(usable.items())), sorted(set(values) - set(usable)), budget,
        ))  # fmt: skip
    return choices
