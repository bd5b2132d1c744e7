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
of E epochs reports exactly E results.

A scheduler that stops a trial ends it inside `tune.report`; the driver then writes each member's
ledger entry with status `stopped` from the last result (`record_stopped`).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ray import tune

from study.folder.storage import TrialLedger, record_of
from trainables.config import TrialConfig, accuracy_name
from trainables.engine.resume import HISTORY_FILE, EpochRecord, TrainState
from trainables.files import write_json

HISTORIES_IN_CHECKPOINT = "histories.json"


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


class TuneProgress:
    def __init__(self, ledger: TrialLedger, keys: list[str], configs: list[TrialConfig],
                 checkpoint_after: float | None) -> None:  # fmt: skip
        self.ledger, self.keys, self.configs = ledger, keys, configs
        self.checkpoint_after = checkpoint_after
        self.started_at = time.time()  # the trial's own start (MLflow shows it), resumed or not
        self.started = time.monotonic()
        self.histories: list[list[dict[str, Any]]] = [[] for _ in keys]
        self.last: dict[str, Any] = {}  # the last epoch's values: part of the final result

    def resume(self) -> TrainState | None:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            state = TrainState.load(folder)
            saved = json.loads((Path(folder) / HISTORIES_IN_CHECKPOINT).read_text())
        self.histories = [list(saved.get(key, [])) for key in self.keys]
        return state

    def report(self, records: list[EpochRecord], snapshot) -> None:
        epoch = records[0].epoch
        for key, history, record in zip(self.keys, self.histories, records, strict=True):
            history.append(record.to_dict())
            write_json(self.ledger.trial_dir(key) / HISTORY_FILE, {"epochs": history})
        result = self.result(records)
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
        else:
            tune.report(result)

    def result(self, records: list[EpochRecord]) -> dict[str, Any]:
        first = self.configs[0]
        losses, accuracies = [r.loss for r in records], [r.val_acc for r in records]
        result: dict[str, Any] = {"epoch": records[0].epoch, "loss": _mean(losses), "val_acc": _mean(accuracies)}
        result[accuracy_name(first.target_angle, validation=True)] = result["val_acc"]
        if first.gated:
            result[accuracy_name(first.target_angle, hard=True, validation=True)] = _mean(
                [r.val_acc_hard for r in records]
            )
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
