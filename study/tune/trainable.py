"""The Ray Tune function trainable: one study trial, run through the trial contract.

A trial whose key is already in the study's ledger is not trained again: it reports the
recorded metrics. That is what makes `taugate resume` and retries after a lost node safe.

The driver imports this module too (Tune pickles `train_trial` there): the training code, and torch
with it, is imported inside the trial, on its worker.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray
from ray import tune

from study.folder.filenames import TUNE_DIR
from study.folder.storage import FoundationStore, TrialLedger, record_of
from study.spec.plan import member_config, run_name, table_columns, trial_key
from study.tune.epoch_reports import EarlierRuns, TuneProgress, recorded_last_epoch
from trainables.config import TrialConfig, accuracy_name

# what a fused group's Tune result says of each member (the ledger holds the rest)
BRIEF = ("trial_key", "run_name", "seed", "status", "reused", "val_acc", "sparsity", "val_sparsity")
_stores: dict[str, FoundationStore] = {}  # per worker process, so reused actors keep foundations loaded


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(base, variant): grid trials carry `variant`; Optuna trials carry the suggested fields flat
    and `seeds`: a configuration evaluated on every seed, i.e. a group with one member per seed."""
    variant = config.get("variant") or {k: v for k, v in config.items() if k not in ("base", "seeds")}
    if "seeds" in config:
        variant = {"members": [variant | {"seed": seed} for seed in config["seeds"]]}
    return config["base"], variant


def sparsity(metrics: dict[str, Any], prefix: str = "") -> float | None:
    """1 - the fraction of active hidden units: gated methods by their hard gates, others by ReLU
    (`prefix="val_"`: on validation digits, what a search may select on)."""
    ratio = metrics.get(f"{prefix}high_activation_ratio", metrics.get(f"{prefix}active_ratio"))
    return None if ratio is None else 1.0 - ratio


def _store(study_dir: str) -> FoundationStore:
    if study_dir not in _stores:
        _stores[study_dir] = FoundationStore(Path(study_dir))
    return _stores[study_dir]


def member_report(
    key: str, variant: dict[str, Any], config: TrialConfig, metrics: dict, reused: bool, base: dict[str, Any]
) -> dict:
    report = metrics | {"trial_key": key, "run_name": run_name(variant), "reused": reused,
                        "columns": table_columns(config, variant, base)}  # fmt: skip
    if (accuracy := metrics.get(accuracy_name(config.target_angle, validation=True))) is not None:
        report["val_acc"] = accuracy  # what a scheduler reads every epoch, here at the end
    for prefix in ("", "val_"):
        if (value := sparsity(metrics, prefix)) is not None:
            report[f"{prefix}sparsity"] = value
    return report


def earlier_runs(study_dir: str, experiment: str | None, variant: dict[str, Any]) -> EarlierRuns | None:
    """Where the Tune trial of `variant` finds the checkpoints it left in the study's earlier Tune
    experiments (None: not run by the study's runner, which names its experiment)."""
    return EarlierRuns(Path(study_dir) / TUNE_DIR, experiment, run_name(variant)) if experiment else None


def train_group(
    base: dict[str, Any], members: list[dict[str, Any]], study_dir: str, checkpoint_after: float | None = None,
    experiment: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A fused group: the members the ledger lacks train together (`trainables.engine.fused.run_fused`);
    each member is still its own ledger entry, MLflow run and results row."""
    from trainables.engine.fused import run_fused

    configs = [member_config(base, member) for member in members]
    keys, ledger = [trial_key(c) for c in configs], TrialLedger(Path(study_dir))
    found = [ledger.finished(key) for key in keys]
    todo = [i for i, metrics in enumerate(found) if metrics is None]
    last: dict[str, Any] = {}
    if todo:
        progress = TuneProgress(ledger, [keys[i] for i in todo], [configs[i] for i in todo], checkpoint_after,
                                earlier_runs(study_dir, experiment, {"members": members}))  # fmt: skip
        results = run_fused([configs[i] for i in todo], foundation=_store(study_dir).get,
                            artifact_dirs=[ledger.trial_dir(keys[i]) for i in todo], progress=progress)  # fmt: skip
        node, last = ray.get_runtime_context().get_node_id(), progress.last
        for i, metrics in zip(todo, results, strict=True):
            found[i] = metrics | {"node_id": node}
            record = record_of(members[i], configs[i], base=base, fused_with=len(todo), **progress.record_extras())
            ledger.record(keys[i], record, found[i])
        progress.forget_earlier()  # finished: no checkpoint of an earlier experiment is needed
    reports = [member_report(keys[i], members[i], configs[i], found[i], i not in todo, base)
               for i in range(len(members))]  # fmt: skip
    if not todo:  # all answered by the ledger: the epoch metrics a scheduler keeps, as the group last reported them
        last = recorded_last_epoch(ledger, keys, configs) or {
            name: sum(r[name] for r in reports) / len(reports)
            for name in ("val_acc", accuracy_name(configs[0].target_angle, validation=True))
            if all(name in r for r in reports)
        }
    return last | {"members": reports, "member_keys": keys, "fused": len(members)}


def seed_means(reports: list[dict[str, Any]], objectives: tuple[str, ...], name: str) -> dict[str, float]:
    """An Optuna trial's objective values: each objective's mean over the configuration's seeds.
    A seed without the value (diverged) fails the trial: a searcher must see a failure, not a
    mean over the lucky seeds."""
    out = {}
    for objective in objectives:
        missing = [r["seed"] for r in reports if objective not in r]
        if missing:
            raise RuntimeError(f"trial {name}: no {objective} on seed(s) {missing} (diverged or absent)")
        out[objective] = sum(r[objective] for r in reports) / len(reports)
    return out


def use_assigned_cpus() -> int:
    """Set torch's threads to the CPUs Ray gave this trial (its `OMP_NUM_THREADS`, else its assigned CPUs), and
    return them. Ray sets `OMP_NUM_THREADS` in a worker when it places a task there, which torch reads when it is
    imported; a warm worker (study.cluster.warm) imported torch at birth, before that, and would otherwise
    run every trial on all the machine's cores at once beside the node's other workers (on 2 cores, a fused
    group took ~10x longer)."""
    import torch

    cpus = os.environ.get("OMP_NUM_THREADS") or ray.get_runtime_context().get_assigned_resources().get("CPU") or 1
    threads = max(1, int(float(cpus)))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def train_trial(
    config: dict[str, Any], study_dir: str, objectives: tuple[str, ...] = (), checkpoint_after: float | None = None,
    experiment: str | None = None,
) -> None:  # fmt: skip
    """One Tune trial: a single study trial or a fused group (an Optuna configuration over its seeds,
    or same-shape grid trials). Every epoch is a Tune result (study.tune.epoch_reports); the final result
    holds the last epoch's values and the metrics dict. `experiment` is the Tune experiment's name
    (`run-N`): an unfinished trial resumes from what it left in the study's earlier ones."""
    from trainables.engine.trial import run_trial

    use_assigned_cpus()
    base, variant = split_config(config)
    if "members" in variant:
        result = train_group(base, variant["members"], study_dir, checkpoint_after, experiment)
        if objectives:  # an Optuna trial: one configuration over the study's seeds
            result |= seed_means(result["members"], objectives, run_name(variant))
        # Tune keeps every trial's last result in the driver's memory and rewrites them all in each
        # experiment snapshot: the members' full metrics stay in the ledger, Tune gets a summary
        result["members"] = [{k: r[k] for k in BRIEF if k in r} for r in result["members"]]
        tune.report(result)
        return
    trial_config = member_config(base, variant)
    key, ledger = trial_key(trial_config), TrialLedger(Path(study_dir))
    metrics = ledger.finished(key)
    reused = metrics is not None
    last = recorded_last_epoch(ledger, [key], [trial_config]) if reused else {}
    if metrics is None:
        progress = TuneProgress(ledger, [key], [trial_config], checkpoint_after,
                                earlier_runs(study_dir, experiment, variant))  # fmt: skip
        metrics = run_trial(trial_config, foundation=_store(study_dir).get, artifact_dir=ledger.trial_dir(key),
                            progress=progress)  # fmt: skip
        metrics["node_id"], last = ray.get_runtime_context().get_node_id(), progress.last
        ledger.record(key, record_of(variant, trial_config, base=base, **progress.record_extras()), metrics)
        progress.forget_earlier()  # finished: no checkpoint of an earlier experiment is needed
    report = last | member_report(key, variant, trial_config, metrics, reused, base)
    missing = [name for name in objectives if name not in report]
    if missing:  # a diverged trial has no accuracy: a searcher must see a failed trial, not a made-up value
        raise RuntimeError(f"trial {run_name(variant)} {metrics['status']}: no {', '.join(missing)} to report")
    tune.report(report)
