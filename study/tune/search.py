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

import pickle
import threading
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from study.folder.optuna_db import (
    ASKED_AHEAD,
    INTERRUPTED,
    REPEAT_OF,
    completed_trials,
    configuration_of,
    count_trials,
    prune_not_run,
    prune_stale,
    storage_url,
)
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
    """Ray Tune's `OptunaSearch`, asking ahead, where a draw repeating an earlier trial's configuration
    never trains it twice.

    Asking ahead: a thread keeps `ahead` draws asked (Optuna's ask and the define-by-run space) while
    the workers train, so Tune's `suggest` hands one out at once when a worker frees; `ahead` is the
    study's concurrent trials (Tune's `ConcurrencyLimiter` says how many: `set_max_concurrency`). It
    never asks more than `budget` draws (Tune's `num_samples`), so a study that runs to its end hands
    every draw to Tune; `close` prunes the ones an interrupted study leaves (study.folder.optuna_db,
    `not_run`). The sampler is TPE with the constant liar: a draw asked while others run is kept
    away from their points. One lock serialises the storage between that thread and Tune's.

    Repeats: a repeat of a finished configuration is marked `repeat_of` and runs (the ledger answers
    it with the earlier values); a repeat of one still running here waits (Tune is told "not ready")
    until that one finishes, so two workers never train the same configuration at once."""

    def __init__(self, *args: Any, seed: int | None = None, budget: int | None = None, ahead: int = 1, **kwargs: Any):
        # before super(): it sets up the study
        self._waiting: list[tuple[optuna.Trial, dict[str, Any]]] = []
        self._asked: deque[tuple[optuna.Trial, dict[str, Any]]] = deque()  # asked ahead, not handed out yet
        self._budget, self._ahead, self._draws, self._closed = budget, ahead, 0, False
        self._lock, self._more, self._filler = threading.RLock(), threading.Condition(), None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # Optuna 4 calls it experimental
            # the constant liar (Optuna 5's default, spelled out): draws asked while others run avoid their points
            sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
        super().__init__(*args, sampler=sampler, **kwargs)
        self._seed = seed  # Ray's record of the sampler's seed (it takes a sampler or a seed)

    # ---- asking ahead -------------------------------------------------------------------------------

    def _left(self) -> int:
        return self._budget - self._draws if self._budget is not None else 1 << 30

    def _ask(self) -> None:
        """One draw, appended to the asked-ahead queue (under the storage lock)."""
        with self._lock:
            if self._closed or self._left() <= 0:
                return
            ot_trial = self._ot_study.ask()
            config = self._suggest_from_define_by_run_func(self._space, ot_trial)
            self._draws += 1
            self._asked.append((ot_trial, config))

    def _fill(self) -> None:
        while True:
            with self._more:
                self._more.wait_for(lambda: self._closed or (len(self._asked) < self._ahead and self._left() > 0))
                if self._closed:
                    return
            self._ask()

    def _start_filler(self) -> None:
        if self._filler is None and not self._closed and self._left() > 0:
            self._filler = threading.Thread(target=self._fill, name="optuna-ask-ahead", daemon=True)
            self._filler.start()

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Tune's `ConcurrencyLimiter` says how many trials run at once: ask that many ahead (and let it limit)."""
        with self._more:
            self._ahead = max(1, max_concurrent)
            self._more.notify_all()
        self._start_filler()  # Tune runs: nothing is asked before (a study stopped before Tune ran drew nothing)
        return False

    def close(self) -> None:
        """The study ended (finished or interrupted): stop asking, and prune every draw of this searcher
        still RUNNING: asked ahead and never handed out, or stopped with the study (`not_run` says which)."""
        with self._more:
            self._closed = True
            self._more.notify_all()
        if self._filler is not None:
            self._filler.join()
            self._filler = None
        with self._lock:
            unused = [ot_trial for ot_trial, _ in [*self._asked, *self._waiting]]
            self._asked.clear()
            self._waiting.clear()
            handed = [t for t in self._ot_trials.values() if t not in unused]
            running = {t.number for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            for ot_trial, why in [(t, ASKED_AHEAD) for t in unused] + [(t, INTERRUPTED) for t in handed]:
                if ot_trial.number in running:
                    prune_not_run(self._ot_study, ot_trial, why)

    def _next_asked(self) -> tuple[optuna.Trial, dict[str, Any]] | None:
        self._start_filler()
        with self._lock:
            if not self._asked:
                self._ask()  # none asked ahead yet (the study's first trials, or asking is slower than training)
            item = self._asked.popleft() if self._asked else None
        with self._more:
            self._more.notify_all()  # ask the next one meanwhile
        return item

    # ---- repeats ------------------------------------------------------------------------------------

    def _running_here(self, configuration: str, number: int) -> bool:
        return any(
            t.number != number and configuration_of(t.params) == configuration
            for tid, t in self._ot_trials.items()
            if tid not in self._completed_trials
        )

    def _mark_if_repeat(self, ot_trial: optuna.Trial) -> None:
        configuration = configuration_of(ot_trial.params)
        with self._lock:
            for earlier in self._ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
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
            return None  # no further draw meanwhile: a draw handed out now might never let the repeat run
        item = self._next_asked()
        if item is None:
            return None
        ot_trial, config = item
        if self._running_here(configuration_of(ot_trial.params), ot_trial.number):
            self._waiting.append((ot_trial, config))
            return None
        self._ot_trials[trial_id] = ot_trial
        self._mark_if_repeat(ot_trial)
        return config

    # ---- the storage, one thread at a time ------------------------------------------------------------

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        with self._lock:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        with self._lock:
            super().on_trial_complete(trial_id, result, error)

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its searcher (tuner.pkl, experiment checkpoints): without the thread and locks."""
        state = self.__dict__.copy()
        for name in ("_lock", "_more", "_filler"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock, self._more, self._filler = threading.RLock(), threading.Condition(), None

    def save(self, checkpoint_path: str) -> None:
        with self._lock, open(checkpoint_path, "wb") as out:
            pickle.dump(self.__getstate__(), out)


def trial_slots(resources: dict[str, float]) -> int:
    """How many trials of `resources` the connected Ray cluster runs at once: an Optuna study's
    `max_concurrent_trials` unless the spec says. Without it Tune asks a searcher for one trial at a
    time (one pending trial), and a study on two CPUs trained one configuration at a time."""
    import ray

    total = ray.cluster_resources()
    slots = [int(total.get(name.upper(), 0) // amount) for name, amount in resources.items() if amount]
    return max(1, min(slots, default=1))


def quiet_optuna() -> None:
    """Optuna's INFO lines ("A new study created in RDB", "Trial 3 finished with values") stay out of
    a normal run; its warnings still show."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def optuna_searcher(spec: StudySpec, study: dict[str, Any], db_path: Path):
    """The Ray Tune searcher and how many trials the persisted Optuna study already completed."""
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
    prune_stale(created)  # a killed driver's draws: no RUNNING trial is left for the constant liar to avoid
    searcher = RepeatAwareSearch(
        space=ConditionalSpace(spec),
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(modes) > 1 else modes[0],
        storage=storage,
        study_name=name,
        seed=drawn,
        # the runner's num_samples: each draw to come is asked once, ahead of the worker that trains it
        budget=max(0, spec.search.num_samples - done),
    )
    return searcher, done
