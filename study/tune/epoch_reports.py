"""A study trial's epochs: reported to Ray Tune, written to the ledger, checkpointed when long.

`TuneProgress` is the `trainables.engine.resume.Progress` of one Tune trial (a single trial or a fused
group). After every epoch it
- writes each member's learning curve to `<study>/trials/<key>/history.json`,
- reports one Tune result (`training_iteration` = epoch): `epoch`, `loss`, `val_acc` and the
  target's `val_acc_<angle>[_hard]` (a group reports its members' means, what a scheduler or
  Optuna reads), plus `members_epoch` (each member's record, for `record_stopped`),
- once the trial has run longer than `checkpoint_after` seconds, attaches a Tune checkpoint
  (`trainables.engine.resume.TrainState` + the histories) so a retried trial resumes after that epoch.
The last epoch is not reported on its own: its values join the trial's final result, so a trial
of E epochs reports exactly E results; `training_iteration` is the epoch, also in a resumed trial.

Resuming (`TuneProgress.resume`): a trial retried within its Tune experiment gets its newest checkpoint
from Tune (`tune.get_checkpoint`). Each `taugate run` or `resume` is a new experiment (`tune/run-N`), so
a trial that an interrupted experiment left unfinished also looks for its checkpoints in the earlier
experiments (`EarlierRuns`: its trial folders there, recognised by the trial keys a checkpoint holds)
and resumes from the newest that loads and fits it (`trainables.engine.resume.Resumption`): a damaged or
foreign one is passed over with a note, and without one the trial starts at epoch 1. Its first result
says where it resumed (`resumed_after_epoch`, `resumed_from`, `checkpoints_skipped`; the driver prints
them, study.tune.callbacks.ResumeNotes). Once it has a checkpoint of its own in the new experiment, or
has finished, its checkpoints in the earlier ones are deleted: a trial keeps `CHECKPOINTS_KEPT` in all.

A scheduler that stops a trial ends it inside `tune.report`; the driver then writes each member's
ledger entry with status `stopped` from the last result (`record_stopped`).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from study.folder.storage import TrialLedger, record_of
from trainables.config import TrialConfig, accuracy_name
from trainables.engine.resume import HISTORY_FILE, STATE_JSON, EpochRecord, Resumption, TrainState, read_history
from trainables.files import write_json

HISTORIES_IN_CHECKPOINT = "histories.json"  # in a checkpoint: {trial key: its learning curve so far}, in member order
CHECKPOINTS_KEPT = 2  # per trial: Tune's `num_to_keep`, and what `trim_checkpoints` leaves of an ended experiment
CHECKPOINT_FOLDERS = "checkpoint_*"  # Tune's name for a trial's checkpoint folders: checkpoint_<zero-padded index>


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def epoch_result(first: TrialConfig, records: list[EpochRecord]) -> dict[str, Any]:
    """One epoch of a Tune trial as its result: the members' means of `loss`, `val_acc` and the target's
    `val_acc_<angle>[_hard]` (what a scheduler or Optuna reads), at `training_iteration` = the epoch."""
    losses, accuracies = [r.loss for r in records], [r.val_acc for r in records]
    # `training_iteration` is Tune's count of results unless given: a trial resumed in a new experiment
    # counts on from its checkpoint, as a scheduler (`time_attr`) and the results files expect
    result: dict[str, Any] = {"epoch": records[0].epoch, "training_iteration": records[0].epoch,
                              "loss": _mean(losses), "val_acc": _mean(accuracies)}  # fmt: skip
    result[accuracy_name(first.target_angle, validation=True)] = result["val_acc"]
    if first.gated:
        result[accuracy_name(first.target_angle, hard=True, validation=True)] = _mean([r.val_acc_hard for r in records])
    return result


def recorded_last_epoch(ledger: TrialLedger, keys: list[str], configs: list[TrialConfig]) -> dict[str, Any]:
    """The last epoch result of a Tune trial whose members the ledger already holds (an Optuna repeat, a
    retried trial): what it reported when it trained, read back from the members' learning curves. A
    scheduler keeps every trial's final result and reads its epoch metrics in the other trials' decisions,
    so a trial answered from the ledger must carry them too. Empty when a member has no learning curve
    (a study older than learning curves, a trial that trained no epoch)."""
    records = []
    for key in keys:
        history = read_history(ledger.trial_dir(key))
        if not history:
            return {}
        fields = {k: v for k, v in history[-1].items() if k in EpochRecord.__dataclass_fields__}
        records.append(EpochRecord(**{"loss": None, "val_acc": None, "seconds": 0.0} | fields))
    result = epoch_result(configs[0], records)
    result["training_iteration"] = result["epoch"] = max(r.epoch for r in records)
    return {k: v for k, v in result.items() if v is not None}


class SavedCheckpoint:
    """A checkpoint folder of a Tune trial (`TrainState` + `HISTORIES_IN_CHECKPOINT`), as a state the trial
    may resume from: `load` reads it and checks that it is this trial's (the same trial keys, in order)
    and whole (a learning curve of every epoch up to the saved one, before the last), else raises."""

    def __init__(self, folder: Path, keys: list[str], epochs: int, name: str | None = None) -> None:
        self.folder, self.keys, self.epochs, self.name = Path(folder), keys, epochs, name or str(folder)
        self.histories: list[list[dict[str, Any]]] = []  # the members' learning curves, once loaded

    def __str__(self) -> str:
        return self.name

    def load(self) -> TrainState:
        return self._load(self.folder)

    def _load(self, folder: Path) -> TrainState:
        saved = json.loads((folder / HISTORIES_IN_CHECKPOINT).read_text())
        if not isinstance(saved, dict) or list(saved) != self.keys:
            found = list(saved) if isinstance(saved, dict) else type(saved).__name__
            raise ValueError(f"a checkpoint of trial(s) {found}, not of {self.keys}")
        state = TrainState.load(folder)
        if not 0 < state.epoch < self.epochs:
            raise ValueError(f"saved after epoch {state.epoch}, the trial has {self.epochs} epochs")
        for key in self.keys:
            if [e.get("epoch") if isinstance(e, dict) else None for e in saved[key]] != list(range(1, state.epoch + 1)):
                raise ValueError(f"the learning curve of {key} is not epochs 1..{state.epoch}")
        self.histories = [list(saved[key]) for key in self.keys]
        return state


class TuneCheckpoint(SavedCheckpoint):
    """The checkpoint Tune hands a trial it retries within one experiment (`tune.get_checkpoint`)."""

    def __init__(self, checkpoint: tune.Checkpoint, keys: list[str], epochs: int) -> None:
        super().__init__(Path(checkpoint.path), keys, epochs, name=f"Tune's checkpoint {checkpoint.path}")
        self.checkpoint = checkpoint

    def load(self) -> TrainState:
        with self.checkpoint.as_directory() as folder:
            return self._load(Path(folder))


def _saved_epoch(folder: Path) -> int:
    """The epoch a checkpoint folder says it was saved after (-1: unreadable, tried last)."""
    try:
        epoch = json.loads((folder / STATE_JSON).read_text())["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return -1
    return epoch if isinstance(epoch, int) else -1


def _checkpoint_keys(folder: Path) -> list[str] | None:
    try:
        saved = json.loads((folder / HISTORIES_IN_CHECKPOINT).read_text())
    except (OSError, ValueError):
        return None
    return list(saved) if isinstance(saved, dict) else None


@dataclass(frozen=True)
class EarlierRuns:
    """What a Tune trial left in the study's earlier Tune experiments. Each `taugate run` or `resume` is an
    experiment `<study>/tune/run-N`, whose trial folders are `<trial name>_<trial id>` (study.tune.runner);
    a trial name (`run_name`) may be shared, so a folder is this trial's when a checkpoint in it holds
    exactly this trial's keys, in order (a fused group: its members')."""

    tune_dir: Path
    experiment: str  # this experiment's name: its own checkpoints come from Tune
    trial_name: str

    def trial_folders(self, keys: list[str]) -> list[Path]:
        pattern = f"run-*/{glob.escape(self.trial_name)}_*"
        return sorted(
            folder for folder in self.tune_dir.glob(pattern)
            if folder.is_dir() and folder.parent.name != self.experiment
            and any(_checkpoint_keys(c) == keys for c in folder.glob(CHECKPOINT_FOLDERS))
        )  # fmt: skip

    def checkpoints(self, folders: list[Path], keys: list[str], epochs: int) -> list[SavedCheckpoint]:
        """Every checkpoint in these folders, the newest epoch first (unreadable ones last: tried, and noted)."""
        found = [c for folder in folders for c in folder.glob(CHECKPOINT_FOLDERS) if c.is_dir()]
        found.sort(key=lambda c: (_saved_epoch(c), c.parent.parent.name, c.name), reverse=True)
        study = self.tune_dir.parent
        return [SavedCheckpoint(c, keys, epochs, name=str(c.relative_to(study))) for c in found]


def trim_checkpoints(experiment: Path, keep: int = CHECKPOINTS_KEPT) -> int:
    """Leave each trial folder of an ended Tune experiment its newest `keep` checkpoints; returns how many
    folders it deleted. Tune deletes the older checkpoints it registered, but a function trainable writes
    a checkpoint inside `tune.report`, before the driver sees the result: a trial the driver stopped
    (Ctrl-C, SIGTERM) or lost (a killed driver) may have written one that Tune never registered, a
    third folder. It is the newest, so it stays and the oldest goes."""
    deleted = 0
    trials = [folder for folder in experiment.iterdir() if folder.is_dir()] if experiment.is_dir() else []
    for trial in trials:
        found = sorted(c for c in trial.glob(CHECKPOINT_FOLDERS) if c.is_dir())  # zero-padded index: oldest first
        for old in found[: max(0, len(found) - keep)]:
            shutil.rmtree(old, ignore_errors=True)
            deleted += 1
    return deleted


class TuneProgress:
    def __init__(self, ledger: TrialLedger, keys: list[str], configs: list[TrialConfig],
                 checkpoint_after: float | None, earlier: EarlierRuns | None = None) -> None:  # fmt: skip
        self.ledger, self.keys, self.configs = ledger, keys, configs
        self.checkpoint_after = checkpoint_after
        self.earlier = earlier
        self.started_at = time.time()  # the trial's own start (MLflow shows it), resumed or not
        self.started = time.monotonic()
        self.histories: list[list[dict[str, Any]]] = [[] for _ in keys]
        self.last: dict[str, Any] = {}  # the last epoch's values: part of the final result
        self.resumption: Resumption | None = None  # until the first epoch: where training resumed
        self.earlier_folders: list[Path] = []  # this trial's folders in earlier experiments

    def resume(self) -> Resumption | None:
        """The states this trial may resume from, best first: Tune's checkpoint (a retry in this
        experiment), then its checkpoints in earlier experiments, newest first."""
        epochs = self.configs[0].epochs
        candidates: list[SavedCheckpoint] = []
        if (checkpoint := tune.get_checkpoint()) is not None:
            candidates.append(TuneCheckpoint(checkpoint, self.keys, epochs))
        if self.earlier is not None:
            self.earlier_folders = self.earlier.trial_folders(self.keys)
            candidates += self.earlier.checkpoints(self.earlier_folders, self.keys, epochs)
        self.resumption = Resumption(candidates) if candidates else None
        return self.resumption

    def forget_earlier(self) -> None:
        """Delete this trial's checkpoints in earlier experiments: it has a newer one in this experiment,
        or it has finished."""
        for folder in self.earlier_folders:
            for checkpoint in folder.glob(CHECKPOINT_FOLDERS):
                shutil.rmtree(checkpoint, ignore_errors=True)
        self.earlier_folders = []

    def _resumed(self) -> dict[str, Any]:
        """Once, on the first epoch after `resume`: take the restored checkpoint's learning curves, and
        say where training resumed (the first result's `resumed_after_epoch`, `resumed_from`,
        `checkpoints_skipped`)."""
        resumption, self.resumption = self.resumption, None
        if resumption is None:
            return {}
        note: dict[str, Any] = {"resumed_after_epoch": resumption.epoch}
        if isinstance(resumption.chosen, SavedCheckpoint):
            self.histories = [list(history) for history in resumption.chosen.histories]
            note["resumed_from"] = str(resumption.chosen)
        if resumption.skipped:
            note["checkpoints_skipped"] = resumption.skipped
        return note

    def report(self, records: list[EpochRecord], snapshot) -> None:
        epoch = records[0].epoch
        note = self._resumed()
        for key, history, record in zip(self.keys, self.histories, records, strict=True):
            history.append(record.to_dict())
            write_json(self.ledger.trial_dir(key) / HISTORY_FILE, {"epochs": history})
        result = self.result(records) | note
        if epoch >= self.configs[0].epochs:
            self.last = result  # joins the final result: one Tune result per epoch
            return
        if self.checkpoint_after is not None and time.monotonic() - self.started >= self.checkpoint_after:
            from ray.tune import Checkpoint

            with tempfile.TemporaryDirectory(prefix="taugate-checkpoint-") as folder:
                snapshot().save(folder)
                histories = dict(zip(self.keys, self.histories, strict=True))
                Path(folder, HISTORIES_IN_CHECKPOINT).write_text(json.dumps(histories))
                tune.report(result, checkpoint=Checkpoint.from_directory(folder))
            self.forget_earlier()  # the checkpoint above is in this experiment's folder now
        else:
            tune.report(result)

    def result(self, records: list[EpochRecord]) -> dict[str, Any]:
        result = epoch_result(self.configs[0], records)
        now = time.time()
        result["members_epoch"] = [
            {"trial_key": key, "started_at": self.started_at, "at": now, "pid": os.getpid()} | record.to_dict()
            for key, record in zip(self.keys, records, strict=True)
        ]
        return {k: v for k, v in result.items() if v is not None}

    def record_extras(self) -> dict[str, Any]:
        """What the ledger record of a finished member adds: its own start and end, its worker."""
        return {"started_at": self.started_at, "ended_at": time.time(), "worker_pid": os.getpid()}


def record_stopped(
    study_dir: Path, members: list[tuple[dict[str, Any], TrialConfig]], last: dict[str, Any],
    base: dict[str, Any],
) -> int:  # fmt: skip
    """Write a `stopped` ledger entry for each member of a Tune trial a scheduler stopped (its last
    result's epoch record), unless the ledger holds it already. Returns how many it wrote."""
    from study.spec.plan import trainable_count, trial_key

    ledger, written = TrialLedger(Path(study_dir)), 0
    epochs = {entry["trial_key"]: entry for entry in last.get("members_epoch", [])}
    for variant, config in members:
        key = trial_key(config)
        entry = epochs.get(key)
        if entry is None or ledger.finished(key) is not None:
            continue
        metrics: dict[str, Any] = {
            "status": "diverged" if entry.get("diverged") else "stopped",
            "method": config.method, "seed": config.seed, "trainable_params": trainable_count(config),
            "train_seconds": entry.get("seconds", 0.0),
        }  # fmt: skip
        if not entry.get("diverged"):  # a member that diverged earlier: its step is not known here
            metrics |= {"stopped_at_epoch": entry["epoch"], "final_loss": entry.get("loss")}
            if entry.get("val_acc") is not None:
                metrics[accuracy_name(config.target_angle, validation=True)] = entry["val_acc"]
            if entry.get("val_acc_hard") is not None:
                metrics[accuracy_name(config.target_angle, hard=True, validation=True)] = entry["val_acc_hard"]
        extras = {"started_at": entry.get("started_at"), "ended_at": entry.get("at"), "worker_pid": entry.get("pid")}
        kept = {k: v for k, v in metrics.items() if v is not None}
        ledger.record(key, record_of(variant, config, base=base, **extras), kept)
        written += 1
    return written
