"""Optuna search: a define-by-run conditional space over the spec's methods, persisted in an RDB.

An Optuna trial is a configuration, evaluated on every seed of the spec (trained together as a
fused group, each seed its own ledger entry, MLflow run and results row); its objective values
are seed means of validation metrics. The seed is never a search parameter.

The LoRA rank only exists for LoRA trials, s and lambda only for gated ones, exactly as in the
grid. The Optuna study lives in `<study>/optuna.db` under a unique name, so
`optuna-dashboard sqlite:///<study>/optuna.db` opens it and a resumed study continues it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from study.folder.optuna_db import completed_trials, count_trials, storage_url
from study.spec.plan import OWN
from study.spec.study_spec import StudySpec
from trainables import registry
from trainables.registry import OWN_PROTOCOL_FIELDS


class ConditionalSpace:
    """The define-by-run space (a class, not a closure: Tune pickles its searcher to the study folder)."""

    def __init__(self, spec: StudySpec):
        self.spec = spec

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        spec, ranges = self.spec, self.spec.search.ranges
        method = trial.suggest_categorical("method", list(spec.methods))
        # no seed here: seeds are repeats, not a hyperparameter (a search would favour lucky seeds)
        own = []
        for axis, default in registry.get(method).search.items():  # the method's searched dimensions
            if axis not in ranges:  # an optional range the spec does not name: the config's value
                continue
            r = ranges[axis]
            if default.kind == "int":
                trial.suggest_int(axis, int(r.low), int(r.high), log=r.log)
            else:
                trial.suggest_float(axis, r.low, r.high, log=r.log)
            if axis in OWN_PROTOCOL_FIELDS:
                own.append(axis)
        # constants: the fields every trial shares, the seeds each configuration is evaluated on, and
        # the method's own fixed overrides (its lr, its epochs)
        chosen = spec.methods[method]
        fixed = {"lr": chosen.lr} | {name: values[0] for name, values in chosen.budget().items() if name not in own}
        overrides = {k: v for k, v in fixed.items() if v is not None}
        own += [name for name in OWN_PROTOCOL_FIELDS if name in overrides]
        return {"base": spec.base_config(), "seeds": list(spec.seeds)} | overrides | ({OWN: own} if own else {})


def optuna_searcher(spec: StudySpec, study: dict[str, Any], db_path: Path):
    """The Ray Tune searcher and how many trials the persisted Optuna study already completed."""
    from ray.tune.search.optuna import OptunaSearch

    name = study["optuna_study_name"]
    done = completed_trials(db_path, name)
    # a resumed search must not replay the points it already drew: seed the sampler by how many
    # trials the persisted study holds (deterministic, and different at every resume)
    drawn = count_trials(db_path, name, None)
    metrics = [o.metric for o in spec.search.objectives]
    modes = [o.mode for o in spec.search.objectives]
    searcher = OptunaSearch(
        space=ConditionalSpace(spec),
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(modes) > 1 else modes[0],
        storage=optuna.storages.RDBStorage(storage_url(db_path)),
        study_name=name,
        seed=drawn,
    )
    return searcher, done
