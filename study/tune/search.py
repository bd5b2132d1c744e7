"""Optuna search: a define-by-run conditional space over the spec's methods, persisted in an RDB.

An Optuna trial is a configuration, evaluated on every seed of the spec (trained together as a
fused group, each seed its own ledger entry, MLflow run and results row); its objective values
are seed means of validation metrics. The seed is never a search parameter.

The LoRA rank only exists for LoRA trials, s and lambda only for gated ones, exactly as in the
grid. The Optuna study lives in `<study>/optuna.db` under a unique name and carries its
objectives' names, so `optuna-dashboard sqlite:///<study>/optuna.db` opens it with the metrics
named and a resumed study continues it.

A configuration Optuna draws again (a small categorical or integer space makes that likely) is one
configuration: every draw stays an Optuna trial (`num_samples` is Optuna's `n_trials`), and the
repeat is answered with the earlier trial's values without training again, as Optuna's FAQ ("How
can I ignore duplicated samples?") does it. Here the study's ledger answers it (the trainable finds
every seed there), the Optuna trial is marked with the user attribute `repeat_of` (the earlier
trial's number), and the counts (`study.folder.optuna_db.draw_counts`) count it once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from study.folder.optuna_db import REPEAT_OF, completed_trials, configuration_of, count_trials, storage_url
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


class RepeatAwareSearch(OptunaSearch):
    """Ray Tune's `OptunaSearch`, where a draw repeating an earlier trial's configuration never trains
    it twice: a repeat of a finished configuration is marked `repeat_of` and runs (the ledger answers
    it with the earlier values); a repeat of one still running here waits (Tune is told "not ready")
    until that one finishes, so two workers never train the same configuration at once."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._waiting: list[tuple[optuna.Trial, dict[str, Any]]] = []  # before super(): it sets up the study
        super().__init__(*args, **kwargs)

    def _running_here(self, configuration: str, number: int) -> bool:
        return any(
            t.number != number and configuration_of(t.params) == configuration
            for tid, t in self._ot_trials.items()
            if tid not in self._completed_trials
        )

    def _mark_if_repeat(self, ot_trial: optuna.Trial) -> None:
        configuration = configuration_of(ot_trial.params)
        for earlier in self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if configuration_of(earlier.params) == configuration:
                ot_trial.set_user_attr(REPEAT_OF, earlier.number)
                return

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        for index, (ot_trial, config) in enumerate(self._waiting):  # a waiting repeat goes first
            if not self._running_here(configuration_of(ot_trial.params), ot_trial.number):
                del self._waiting[index]
                self._ot_trials[trial_id] = ot_trial
                self._mark_if_repeat(ot_trial)
                return config
        if self._waiting:
            return None  # no further draw meanwhile: a draw asked now might never be handed to Tune
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials[trial_id]
        if self._running_here(configuration_of(ot_trial.params), ot_trial.number):
            self._waiting.append((self._ot_trials.pop(trial_id), config))
            return None
        self._mark_if_repeat(ot_trial)
        return config


def quiet_optuna() -> None:
    """Optuna's INFO lines ("A new study created in RDB", "Trial 3 finished with values") stay out of
    a normal run; its warnings still show."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def optuna_searcher(spec: StudySpec, study: dict[str, Any], db_path: Path):
    """The Ray Tune searcher and how many trials the persisted Optuna study already completed."""
    import warnings

    quiet_optuna()
    name = study["optuna_study_name"]
    done = completed_trials(db_path, name)
    # a resumed search must not replay the points it already drew: seed the sampler by how many
    # trials the persisted study holds (deterministic, and different at every resume)
    drawn = count_trials(db_path, name, None)
    metrics = [o.metric for o in spec.search.objectives]
    modes = [o.mode for o in spec.search.objectives]
    # the study is created here, with its objectives' names (the dashboard's and the report's axis
    # titles); Ray's searcher then loads it
    storage = optuna.storages.RDBStorage(storage_url(db_path))
    directions = ["maximize" if mode == "max" else "minimize" for mode in modes]
    created = optuna.create_study(storage=storage, study_name=name, directions=directions, load_if_exists=True)
    if created.metric_names != metrics:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # a notice, not a problem
            created.set_metric_names(metrics)
    searcher = RepeatAwareSearch(
        space=ConditionalSpace(spec),
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(modes) > 1 else modes[0],
        storage=storage,
        study_name=name,
        seed=drawn,
    )
    return searcher, done
