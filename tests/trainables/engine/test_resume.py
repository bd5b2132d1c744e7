"""Per-epoch progress of a trial (trainables.engine.resume): records each epoch, resumes exactly from a
saved training state, alone and fused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FAST
from trainables.config import parse_config
from trainables.engine.fused import run_fused
from trainables.engine.resume import EpochRecord, TrainState
from trainables.engine.trial import run_trial, shared

EPOCHS = 4


class Recorder:
    """A Progress that keeps every record; with `stop_at` it saves the state of that epoch to
    `folder` and then fails, as a trial on a lost node would; with `start` it resumes from it."""

    def __init__(self, folder: Path | None = None, stop_at: int | None = None, start: TrainState | None = None):
        self.records: list[list[EpochRecord]] = []
        self.folder, self.stop_at, self.start = folder, stop_at, start

    def resume(self) -> TrainState | None:
        return self.start

    def report(self, records, snapshot) -> None:
        self.records.append(records)
        if records[0].epoch == self.stop_at:
            snapshot().save(self.folder)
            raise KeyboardInterrupt("node lost")


def config(method: str = "taugate", **extra) -> dict:
    return FAST | {"epochs": EPOCHS, "method": method, "sparsity_weight": 0.01} | extra


def same_metrics(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if name != "train_seconds":
            assert a[name] == b[name], name


def matching_metrics(fused: dict, alone: dict) -> None:
    """A fused member against its trial alone: equal accuracies and counts; real-valued metrics
    within 1e-5 (batched and single matrix products may round differently in the last bit)."""
    assert fused.keys() == alone.keys()
    for name, value in alone.items():
        if name == "train_seconds":
            continue
        if isinstance(value, float) and not name.startswith(("acc", "val_acc")):
            assert fused[name] == pytest.approx(value, abs=1e-5), name
        else:
            assert fused[name] == value, name


@pytest.mark.parametrize("method", ["taugate", "lora", "bitfit", "full"])
def test_each_epoch_reports_loss_and_validation_accuracy_ending_at_the_final_metrics(method, foundation):
    progress = Recorder()
    metrics = run_trial(config(method), foundation=shared(foundation), progress=progress)
    epochs = [records[0] for records in progress.records]
    assert [r.epoch for r in epochs] == list(range(1, EPOCHS + 1))
    assert epochs[-1].val_acc == metrics["val_acc_45"]  # the validation split, never the test split
    assert epochs[-1].loss == pytest.approx(metrics["final_loss"], abs=1e-6)
    assert (epochs[-1].val_acc_hard == metrics.get("val_acc_45_hard")) or method != "taugate"
    assert all(0 <= r.val_acc <= 1 and r.loss > 0 for r in epochs)
    assert [r.seconds for r in epochs] == sorted(r.seconds for r in epochs)


def test_frozen_has_no_epochs_to_report(foundation):
    progress = Recorder()
    run_trial(config("frozen"), foundation=shared(foundation), progress=progress)
    assert progress.records == []


@pytest.mark.parametrize("method", ["taugate", "lora"])
def test_a_trial_resumed_from_its_saved_epoch_ends_as_an_uninterrupted_one(method, foundation, tmp_path):
    whole = run_trial(config(method), foundation=shared(foundation))
    with pytest.raises(KeyboardInterrupt):
        run_trial(config(method), foundation=shared(foundation), progress=Recorder(tmp_path, stop_at=2))
    resumed = Recorder(start=TrainState.load(tmp_path))
    metrics = run_trial(config(method), foundation=shared(foundation), progress=resumed)
    assert [records[0].epoch for records in resumed.records] == [3, 4]  # starts after the saved epoch
    same_metrics(metrics, whole)


def test_fused_members_report_each_epoch_and_resume_exactly(foundation, tmp_path):
    configs = [config(seed=0, gate_sharpness=s) for s in (5.0, 20.0)]
    alone = [Recorder(), Recorder()]
    lone = [run_trial(c, foundation=shared(foundation), progress=p) for c, p in zip(configs, alone, strict=True)]
    together = Recorder()
    fused = run_fused(configs, foundation=shared(foundation), progress=together)
    for k in range(2):
        assert [r[k].val_acc for r in together.records] == [r[0].val_acc for r in alone[k].records]
        matching_metrics(fused[k], lone[k])
    with pytest.raises(KeyboardInterrupt):
        run_fused(configs, foundation=shared(foundation), progress=Recorder(tmp_path, stop_at=1))
    resumed = Recorder(start=TrainState.load(tmp_path))
    again = run_fused(configs, foundation=shared(foundation), progress=resumed)
    assert [r[0].epoch for r in resumed.records] == [2, 3, 4]
    for k in range(2):
        same_metrics(again[k], fused[k])


def test_a_state_of_another_shape_is_refused_naming_it(foundation, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_trial(config("lora"), foundation=shared(foundation), progress=Recorder(tmp_path, stop_at=1))
    with pytest.raises(ValueError, match="checkpoint"):
        run_trial(config("taugate"), foundation=shared(foundation),
                  progress=Recorder(start=TrainState.load(tmp_path)))  # fmt: skip


def test_records_leave_out_what_does_not_apply():
    assert EpochRecord(2, 0.5, 0.8, 1.0).to_dict() == {"epoch": 2, "loss": 0.5, "val_acc": 0.8, "seconds": 1.0}
    assert EpochRecord(3, None, None, 1.5, diverged=True).to_dict() == {"epoch": 3, "seconds": 1.5, "diverged": True}
    assert parse_config(config()).epochs == EPOCHS
