"""`taugate resume` continues a trial from the checkpoints an interrupted driver left (issue 28, item 4).

A 40-epoch trial that checkpoints every epoch is driven by a real `taugate run`, interrupted with
Ctrl-C (SIGINT to the driver's process group) once Tune's results show epoch 15, and resumed: the
resumed trial (a new Tune experiment, `tune/run-2`) starts after the newest checkpointed epoch, its
learning curve holds each epoch once, and it ends exactly as an uninterrupted study of the same spec.
No trial keeps more than `num_to_keep` checkpoint folders. A copy of the interrupted study whose
newest checkpoint is damaged resumes from the older one, with a warning. Without Ray: how a trial
recognises its own checkpoints (a fused group's keys, in order) and passes over states that do not fit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from study.folder.filenames import TUNE_DIR
from study.tune.epoch_reports import HISTORIES_IN_CHECKPOINT, EarlierRuns, SavedCheckpoint, trim_checkpoints
from tests.support.cli import taugate
from tests.support.processes import TOKEN_ENV, taugate_process, wait_until
from tests.support.study_folder import ledger_metrics, trial_results
from trainables.engine.optim import Adam
from trainables.engine.resume import Resumption, TrainState, read_history

EPOCHS = 40
KEPT = 2  # the runner's CheckpointConfig(num_to_keep)
SPEC = f"""
name: resumeckpt
foundation: {{epochs: 1}}
epochs: {EPOCHS}
seeds: [0]
checkpoint_after_s: 0
methods:
  taugate: {{gate_sharpness: [10], sparsity_weight: [0.0]}}
"""


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("train_seconds", "node_id")}


def curve(history: list[dict]) -> list[dict]:
    """A learning curve without its clock (`seconds` counts from the trial's (re)start)."""
    return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in history]


def checkpoints(study_dir: Path) -> list[Path]:
    return sorted(study_dir.glob(f"{TUNE_DIR}/run-*/*/checkpoint_*"))


def saved_epoch(checkpoint: Path) -> int:
    return json.loads((checkpoint / "state.json").read_text())["epoch"]


def newest_epoch(study_dir: Path) -> int:
    return max((r["epoch"] for f in study_dir.glob(f"{TUNE_DIR}/run-1/*/") for r in trial_results(f)), default=0)


@pytest.fixture(scope="module")
def studies(tmp_path_factory, warm_cluster) -> dict:
    folder = tmp_path_factory.mktemp("resumeckpt")
    spec = folder / "spec.yaml"
    spec.write_text(SPEC)
    study_dir, damaged = folder / "study", folder / "damaged"
    warm = ["--address", warm_cluster.address]
    seen: dict = {"study_dir": study_dir, "damaged": damaged}

    driver = taugate_process("run", str(spec), "--output", str(study_dir), "--no-report", *warm,
                             env=os.environ | TOKEN_ENV)  # fmt: skip
    try:
        wait_until(lambda: newest_epoch(study_dir) >= 15, process=driver, poll=0.1)
        seen["seen_epoch"] = newest_epoch(study_dir)
        os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground process group
        seen["interrupt"] = driver.communicate(timeout=120)[1]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    seen["code"] = driver.returncode
    seen["after_interrupt"] = {c.name: saved_epoch(c) for c in checkpoints(study_dir)}
    seen["trials_after_interrupt"] = {c.parent for c in checkpoints(study_dir)}
    seen["finished_after_interrupt"] = len(ledger_metrics(study_dir))

    # a copy whose newest checkpoint is torn (half its tensors file): it resumes from the older one
    shutil.copytree(study_dir, damaged)
    newest = max(checkpoints(damaged), key=saved_epoch)
    tensors = newest / "state.safetensors"
    tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])
    seen["torn"] = newest.relative_to(damaged)

    seen["resume"] = taugate("resume", str(study_dir), "--no-report", *warm)
    seen["resume_damaged"] = taugate("resume", str(damaged), "--no-report", *warm)
    seen["clean"] = folder / "clean"
    seen["clean_run"] = taugate("run", str(spec), "--output", str(seen["clean"]), "--no-report", *warm)
    return seen


def resumed_results(study_dir: Path) -> list[dict]:
    [trial] = list(study_dir.glob(f"{TUNE_DIR}/run-2/*/"))
    return trial_results(trial)


def only(study_dir: Path) -> tuple[dict, list[dict]]:
    """The study's one trial: its metrics and learning curve from the ledger."""
    [(key, metrics)] = ledger_metrics(study_dir).items()
    return metrics, read_history(study_dir / "trials" / key)


@pytest.mark.slow
def test_ctrl_c_leaves_the_trial_unfinished_with_at_most_num_to_keep_checkpoints(studies):
    assert studies["code"] == 130, studies["interrupt"][-3000:]
    assert studies["finished_after_interrupt"] == 0, "the signal should come mid-trial"
    # Tune registered two; the one the trial wrote while the driver stopped it is kept as the newest
    assert len(studies["trials_after_interrupt"]) == 1
    assert 1 <= len(studies["after_interrupt"]) <= KEPT, studies["after_interrupt"]
    assert max(studies["after_interrupt"].values()) >= studies["seen_epoch"] >= 15


@pytest.mark.slow
def test_resume_continues_after_the_newest_checkpoint_and_ends_as_an_uninterrupted_run(studies):
    result, clean = studies["resume"], studies["clean_run"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert clean.returncode == 0, clean.stderr[-3000:]
    checkpointed = max(studies["after_interrupt"].values())
    # the new experiment's Tune results start after the checkpointed epoch, one per epoch, to the last
    results = resumed_results(studies["study_dir"])
    assert [r["epoch"] for r in results] == list(range(checkpointed + 1, EPOCHS + 1))
    assert [r["training_iteration"] for r in results] == [r["epoch"] for r in results]
    assert results[0]["resumed_after_epoch"] == checkpointed >= 15
    assert results[0]["resumed_from"].startswith("tune/run-1/")
    assert f"resumed after epoch {checkpointed} from tune/run-1/" in result.stderr
    assert "warning" not in result.stderr
    # the ledger: each epoch once, the same curve and metrics as the uninterrupted study's
    metrics, history = only(studies["study_dir"])
    clean_metrics, clean_history = only(studies["clean"])
    assert [e["epoch"] for e in history] == list(range(1, EPOCHS + 1))
    assert curve(history) == curve(clean_history)
    assert metrics["status"] == "ok"
    assert comparable(metrics) == comparable(clean_metrics)


@pytest.mark.slow
def test_a_trial_keeps_at_most_num_to_keep_checkpoints_across_experiments(studies):
    for study_dir in (studies["study_dir"], studies["damaged"], studies["clean"]):
        found = checkpoints(study_dir)
        assert 1 <= len(found) <= KEPT, found
        assert {c.parent.parent.name for c in found} == {"run-2" if study_dir != studies["clean"] else "run-1"}


@pytest.mark.slow
def test_a_damaged_checkpoint_is_skipped_with_a_warning_for_the_older_one(studies):
    result = studies["resume_damaged"]
    assert result.returncode == 0, result.stderr[-3000:]
    torn = str(studies["torn"])
    assert f"checkpoint skipped: {torn}" in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    older = sorted(studies["after_interrupt"].values())[0]
    assert older < max(studies["after_interrupt"].values())
    assert f"resumed after epoch {older} from" in result.stderr
    assert resumed_results(studies["damaged"])[0]["epoch"] == older + 1
    metrics, history = only(studies["damaged"])
    clean_metrics, clean_history = only(studies["clean"])
    assert [e["epoch"] for e in history] == list(range(1, EPOCHS + 1))
    assert curve(history) == curve(clean_history)
    assert comparable(metrics) == comparable(clean_metrics)


# Without Ray: what a trial takes as its own checkpoint, and what it passes over


def saved_state(epoch: int, shapes: list[tuple[int, ...]], members: int = 1) -> TrainState:
    params = [torch.full(shape, float(epoch)) for shape in shapes]
    return TrainState(epoch=epoch, step=epoch * 10, params=params, exp_avg=[p.clone() for p in params],
                      exp_avg_sq=[p.clone() for p in params], adam_steps=epoch * 10,
                      generators=[torch.Generator().manual_seed(k).get_state() for k in range(members)],
                      final=[0.5] * members, diverged=[None] * members)  # fmt: skip


def write_checkpoint(folder: Path, state: TrainState, keys: list[str]) -> Path:
    state.save(folder)
    histories = {key: [{"epoch": e, "loss": 1.0} for e in range(1, state.epoch + 1)] for key in keys}
    (folder / HISTORIES_IN_CHECKPOINT).write_text(json.dumps(histories))
    return folder


def test_a_fused_group_finds_only_checkpoints_of_its_members_in_order_outside_its_own_experiment(tmp_path):
    tune_dir = tmp_path / TUNE_DIR
    keys = ["k1", "k2"]
    ours = tune_dir / "run-1" / "taugate-seed0+1_aaaaa_00000"
    write_checkpoint(ours / "checkpoint_000003", saved_state(4, [(3,)], members=2), keys)
    write_checkpoint(ours / "checkpoint_000004", saved_state(5, [(3,)], members=2), keys)
    (ours / "checkpoint_000005").mkdir()  # torn: a driver killed while Ray copied it
    # the same trial name with other members, and with them in another order: not this group's
    write_checkpoint(tune_dir / "run-1" / "taugate-seed0+1_bbbbb_00001" / "checkpoint_000000",
                     saved_state(9, [(3,)], members=2), ["k1", "k3"])  # fmt: skip
    write_checkpoint(tune_dir / "run-2" / "taugate-seed0+1_ccccc_00000" / "checkpoint_000000",
                     saved_state(9, [(3,)], members=2), ["k2", "k1"])  # fmt: skip
    # this experiment's own folder: its checkpoints come from Tune
    write_checkpoint(tune_dir / "run-3" / "taugate-seed0+1_ddddd_00000" / "checkpoint_000000",
                     saved_state(7, [(3,)], members=2), keys)  # fmt: skip
    earlier = EarlierRuns(tune_dir, "run-3", "taugate-seed0+1")
    folders = earlier.trial_folders(keys)
    assert folders == [ours]
    found = earlier.checkpoints(folders, keys, epochs=10)
    assert [str(c) for c in found] == [f"tune/run-1/{ours.name}/checkpoint_00000{i}" for i in (4, 3, 5)]

    # the newest that loads and fits is restored; the torn one is never reached
    generators = [torch.Generator(), torch.Generator()]
    live = torch.zeros(3)
    resumption = Resumption(found)
    resumption.restore(Adam([live], [0.1, 0.1]), generators)
    assert resumption.chosen is found[0] and resumption.epoch == 5 and resumption.skipped == []
    assert torch.equal(live, torch.full((3,), 5.0))
    assert [[e["epoch"] for e in h] for h in found[0].histories] == [[1, 2, 3, 4, 5]] * 2


def test_states_that_do_not_fit_are_passed_over_untouched_and_without_one_training_starts_at_epoch_1(tmp_path):
    keys = ["k1"]
    other_shape = write_checkpoint(tmp_path / "a", saved_state(6, [(3,), (4,)]), keys)  # 2nd tensor: (5,) live
    last_epoch = write_checkpoint(tmp_path / "b", saved_state(10, [(3,), (5,)]), keys)  # the trial has 10 epochs
    other_keys = write_checkpoint(tmp_path / "c", saved_state(4, [(3,), (5,)]), ["k9"])
    fits = write_checkpoint(tmp_path / "d", saved_state(3, [(3,), (5,)]), keys)
    live = [torch.zeros(3), torch.zeros(5)]
    optimizer, generators = Adam(live, [0.1]), [torch.Generator()]
    candidates = [SavedCheckpoint(f, keys, epochs=10) for f in (other_shape, last_epoch, other_keys)]
    resumption = Resumption(candidates)
    resumption.restore(optimizer, generators)
    assert resumption.chosen is None and resumption.epoch == 0 and resumption.step == 0
    assert resumption.final == [None] and resumption.diverged == [None]
    assert all(torch.equal(t, torch.zeros_like(t)) for t in live + optimizer.exp_avg), "nothing copied"
    assert optimizer.steps == 0
    reasons = "\n".join(resumption.skipped)
    assert "shape (4,)" in reasons and "saved after epoch 10" in reasons and "['k9']" in reasons

    resumption = Resumption([*candidates, SavedCheckpoint(fits, keys, epochs=10)])
    resumption.restore(optimizer, generators)
    assert resumption.epoch == 3 and len(resumption.skipped) == 3
    assert torch.equal(live[1], torch.full((5,), 3.0))


def test_trimming_an_ended_experiment_keeps_each_trials_newest_checkpoints(tmp_path):
    experiment = tmp_path / "run-1"
    for index in range(3):
        (experiment / "trial_a" / f"checkpoint_{index:06d}").mkdir(parents=True)
    (experiment / "trial_b" / "checkpoint_000007").mkdir(parents=True)
    assert trim_checkpoints(experiment, KEPT) == 1
    assert sorted(p.name for p in experiment.glob("*/checkpoint_*")) == [
        "checkpoint_000001", "checkpoint_000002", "checkpoint_000007",
    ]  # fmt: skip
