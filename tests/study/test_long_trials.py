"""Long trials the Ray Tune way: per-epoch results, early stopping (ASHA over a grid, median
stopping under Optuna), epoch checkpoints and `reuse_actors`, through `taugate run` on a local Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.table.load import load_tune
from tests.support.cli import assert_spec_refused, run_spec, taugate
from tests.support.study_folder import optuna_study, tune_results

pytestmark = pytest.mark.slow

EPOCHS = 4
# One trial at a time: ASHA's decisions depend on the order results arrive, and this fixes it.
ASHA = f"""
name: asha
foundation: {{epochs: 1}}
epochs: {EPOCHS}
lr_scale: 1.0
seeds: [0, 1]
max_concurrent_trials: 1
reuse_actors: false
checkpoint_after_s: 0
methods:
  bitfit: {{}}
  taugate: {{gate_sharpness: [10], sparsity_weight: [0.0, 1.0]}}
  lora: {{lora_rank: [1, 8]}}
scheduler: {{kind: asha, grace_period: 1, reduction_factor: 2}}
"""
TRIALS = 10

OPTUNA_MEDIAN = """
name: median
foundation: {epochs: 1}
epochs: 3
seeds: [0, 1]
methods: {taugate: {}, lora: {}}
search:
  kind: optuna
  num_samples: 5
  objectives: [{metric: val_acc_45, mode: max}]
scheduler: {kind: median, grace_period: 1, min_samples_required: 1}
"""


def entries(study_dir: Path) -> list[tuple[dict, dict, list[dict]]]:
    """(record, metrics, history) of every ledger entry."""
    out = []
    for folder in sorted((study_dir / "trials").iterdir()):
        history = folder / "history.json"
        out.append((json.loads((folder / "config.json").read_text()), json.loads((folder / "metrics.json").read_text()),
                    json.loads(history.read_text())["epochs"] if history.is_file() else []))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def asha_study(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("asha")
    (folder / "asha.yaml").write_text(ASHA)
    result = taugate("run", str(folder / "asha.yaml"), "--output", str(folder / "study"))
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "study", result.stderr


def test_asha_stops_trials_early_and_they_are_their_own_status(asha_study):
    study_dir, stderr = asha_study
    ledger = entries(study_dir)
    statuses = [m["status"] for _, m, _ in ledger]
    stopped = sum(s == "stopped" for s in statuses)
    assert len(ledger) == TRIALS  # a stopped trial is finished, never failed
    assert f"{TRIALS}/{TRIALS} trials finished ({stopped} stopped early by the scheduler), 0 failed" in stderr
    assert set(statuses) == {"ok", "stopped"}
    for record, metrics, history in ledger:
        if metrics["status"] == "stopped":
            # the last epoch's metrics and the epoch it stopped at; never a test metric
            assert 1 <= metrics["stopped_at_epoch"] < EPOCHS
            assert [h["epoch"] for h in history] == list(range(1, metrics["stopped_at_epoch"] + 1))
            assert metrics["val_acc_45"] == history[-1]["val_acc"]
            assert metrics["trainable_params"] > 0 and not any(k.startswith("acc_") for k in metrics)
        else:
            assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
            assert history[-1]["val_acc"] == metrics["val_acc_45"]
        assert record["started_at"] <= record["ended_at"]
    assert 1 <= stopped < TRIALS
    table = load_tune(study_dir)
    assert sorted(table["status"]) == sorted(statuses)
    stopped = table[table["status"] == "stopped"]
    assert stopped["stopped_at_epoch"].notna().all() and stopped["acc_45"].isna().all()


def test_every_epoch_is_one_tune_result_and_long_trials_checkpoint(asha_study):
    study_dir, _ = asha_study
    results = tune_results(study_dir)
    assert len(results) == TRIALS
    for name, reported in results.items():
        assert [r["training_iteration"] for r in reported] == [r["epoch"] for r in reported]
        assert [r["epoch"] for r in reported] == list(range(1, len(reported) + 1))
        assert all("val_acc" in r and "loss" in r for r in reported)
        folder = next((study_dir / "tune").glob(f"run-*/{name}"))
        # checkpoint_after_s: 0 checkpoints every epoch but the last (its result is the final one);
        # Tune keeps the newest two
        checkpoints = sorted(folder.glob("checkpoint_*"))
        assert len(checkpoints) == min(2, len(reported) - 1 if reported[-1].get("trial_key") else len(reported))


def test_reuse_actors_false_runs_each_trial_in_its_own_worker(asha_study):
    study_dir, _ = asha_study
    pids = [record["worker_pid"] for record, _, _ in entries(study_dir)]
    assert len(set(pids)) == len(pids)


def test_resume_of_a_scheduled_study_retrains_nothing(asha_study):
    study_dir, _ = asha_study
    before = {str(p): p.stat().st_mtime_ns for p in (study_dir / "trials").glob("*/metrics.json")}
    result = taugate("resume", str(study_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "0 to run" in result.stderr
    status = json.loads(taugate("status", str(study_dir)).stdout)
    stopped = sum(m["status"] == "stopped" for _, m, _ in entries(study_dir))
    assert (status["finished"], status["stopped"], status["failed"], status["remaining"]) == (TRIALS, stopped, 0, 0)
    assert {str(p): p.stat().st_mtime_ns for p in (study_dir / "trials").glob("*/metrics.json")} == before


def test_reused_actors_share_workers(smoke_study):
    pids = [record["worker_pid"] for record, _, _ in entries(smoke_study)]
    assert len(set(pids)) < len(pids)  # reuse_actors defaults to true: workers run several trials


def test_median_stopping_under_optuna_reads_the_seed_mean_every_epoch(tmp_path):
    study_dir = run_spec(tmp_path, OPTUNA_MEDIAN)
    study = optuna_study(study_dir)
    assert len(study.trials) == 5
    # TPE may draw a LoRA rank twice: a repeat is answered from the ledger (test_optuna_repeats.py)
    repeats = [t for t in study.trials if "repeat_of" in t.user_attrs]
    ledger = entries(study_dir)
    assert len(ledger) == 2 * (5 - len(repeats))  # every configuration on both seeds, once
    by_config: dict[str, list] = {}
    for record, metrics, history in ledger:
        config = {k: v for k, v in record["config"].items() if k != "seed"}
        by_config.setdefault(json.dumps(config, sort_keys=True), []).append((metrics, history))
    for repeat in repeats:
        assert repeat.value == study.trials[repeat.user_attrs["repeat_of"]].value
    for trial in (t for t in study.trials if "repeat_of" not in t.user_attrs):
        # Optuna saw every epoch's seed mean of the validation accuracy (its intermediate values)
        runs = next(v for k, v in by_config.items() if all(json.loads(k)[p] == x for p, x in trial.params.items()))
        assert len(runs) == 2 and len({m["status"] for m, _ in runs}) == 1  # a configuration stops as a whole
        metrics, history = runs[0]
        means = [sum(h[e]["val_acc"] for _, h in runs) / 2 for e in range(len(history))]
        # Tune hands Optuna each epoch's result, except the one its scheduler stops the trial on: that
        # one becomes the trial's value. A trial may be stopped on its last epoch: it trained every epoch
        # (`ok` in the ledger), and Optuna has every epoch but the last as intermediate values
        reported = len(trial.intermediate_values)
        stopped_on_last = metrics["status"] == "ok" and reported == len(history) - 1
        assert reported == len(history) - (metrics["status"] == "stopped" or stopped_on_last)
        assert sorted(trial.intermediate_values) == list(range(1, reported + 1))
        assert [trial.intermediate_values[e + 1] for e in range(reported)] == pytest.approx(means[:reported], abs=1e-9)
        assert trial.value == pytest.approx(means[-1], abs=1e-9)
    statuses = {m["status"] for _, m, _ in ledger}
    assert statuses <= {"ok", "stopped"} and "ok" in statuses


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("name: x\nfuse: 4\nmethods: {taugate: {}}\nscheduler: {kind: asha}\n", "scheduler"),
        ("name: x\nmethods: {taugate: {}}\nscheduler: {kind: asha, metric: acc_45}\n", "scheduler.metric"),
        ("name: x\nmethods: {taugate: {}}\nscheduler: {kind: median, metric: loss}\n", "scheduler.mode"),
        ("name: x\nmethods: {taugate: {}}\nscheduler: {kind: hyperband}\n", "scheduler.kind"),
        ("name: x\nmethods: {taugate: {}}\nscheduler: {kind: asha, grace_period: 5, max_epochs: 2}\n",
         "scheduler.grace_period"),
        ("name: x\nmethods: {taugate: {}}\nsearch: {kind: optuna, objectives: [{metric: val_sparsity, mode: max}]}\n"
         "scheduler: {kind: asha}\n", "search.objectives"),
        ("name: x\nmethods: {taugate: {}}\ncheckpoint_after_s: -1\n", "checkpoint_after_s"),
    ],
)  # fmt: skip
def test_scheduler_misuse_is_refused_naming_the_field(text, field, tmp_path):
    assert_spec_refused(text, field, tmp_path)


def test_plan_states_the_scheduler_and_checkpoints(tmp_path):
    spec = tmp_path / "asha.yaml"
    spec.write_text(ASHA)
    result = taugate("plan", str(spec))
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert "scheduler asha on val_acc (max), grace 1 epoch(s), reduction factor 2" in said
    assert "epoch checkpoints once a trial runs 0s" in said and "reuse_actors false" in said


def test_the_report_shows_learning_curves_and_what_the_scheduler_saved(asha_study):
    study_dir, _ = asha_study
    from tests.support.html_page import Page

    html = (study_dir / "report" / "report.html").read_text()
    page = Page()
    page.feed(html)
    ledger = entries(study_dir)
    spent = sum(len(history) for _, _, history in ledger)
    stopped = sum(m["status"] == "stopped" for _, m, _ in ledger)
    assert {"curves-table", "figure-learning-curves", "scheduler-savings-table"} <= page.ids
    assert f"{stopped} stopped by the scheduler" in html
    total = page.tables["scheduler-savings-table"][-1]  # trials, stopped, spent, full grid, saving
    assert total[:5] == ["all", str(TRIALS), str(stopped), str(spent), str(TRIALS * EPOCHS)]


def test_mlflow_ends_stopped_runs_killed_with_their_learning_curve(asha_study):
    import mlflow

    study_dir, _ = asha_study
    client = mlflow.MlflowClient(f"sqlite:///{study_dir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("asha").experiment_id], "tags.`taugate.kind` = 'trial'")
    ledger = {record["run_name"]: (metrics, history) for record, metrics, history in entries(study_dir)}
    assert len(runs) == TRIALS
    for run in runs:
        metrics, history = ledger[run.info.run_name]
        expected = {"ok": "FINISHED", "stopped": "KILLED"}[metrics["status"]]
        assert (run.data.tags["taugate.status"], run.info.status) == (metrics["status"], expected)
        curve = client.get_metric_history(run.info.run_id, "val_acc")
        assert [(m.step, m.value) for m in curve] == [(h["epoch"], pytest.approx(h["val_acc"])) for h in history]
