"""An Optuna study that draws one configuration twice counts it once, everywhere: the summary line,
`taugate status`, the ledger, the report and MLflow agree; Optuna keeps every draw, marks the
repeat and answers it with the first draw's values; the study names its objectives; Optuna's own
INFO lines stay out of the run; the progress line counts the trials that run."""

from __future__ import annotations

import json
import re
import subprocess

import mlflow
import optuna
import pytest

from tests.support.cli import BIN, taugate
from tests.support.study_folder import ledger_metrics, optuna_study, tune_results

pytestmark = pytest.mark.slow

# two configurations (frozen or bitfit, nothing else searched) and four draws: a repeat is certain
SPEC = """
name: repeats
foundation: {epochs: 1}
epochs: 1
seeds: [0, 1]
methods: {frozen: {}, bitfit: {}}
search:
  kind: optuna
  num_samples: 4
  objectives:
    - {metric: val_acc_45, mode: max}
    - {metric: trainable_params, mode: min}
"""


@pytest.fixture(scope="module")
def repeats(tmp_path_factory, warm_cluster):
    """The study run by the installed `taugate` as a real process (its whole stderr, Optuna's
    logging included), joined to the session's warm cluster."""
    folder = tmp_path_factory.mktemp("repeats")
    (folder / "spec.yaml").write_text(SPEC)
    study_dir = folder / "study"
    result = subprocess.run(
        [str(BIN / "taugate"), "run", str(folder / "spec.yaml"), "--output", str(study_dir),
         "--address", warm_cluster.address],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    (folder / "stderr.txt").write_text(result.stderr)  # kept beside the study for a failing test's reader
    assert result.returncode == 0, result.stderr[-3000:]
    return study_dir, result.stderr


def test_every_place_counts_a_configuration_drawn_twice_once(repeats):
    study_dir, stderr = repeats
    study = optuna_study(study_dir)
    draws = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    configurations = {t.params["method"] for t in draws}
    assert len(draws) == 4 and configurations == {"frozen", "bitfit"}  # Optuna keeps all four draws
    trials = 2 * len(configurations)  # each configuration on both seeds, once

    summary = re.search(r"study repeats: (\d+)/(\d+) trials finished \((.*?)\), (\d+) failed", stderr)
    assert summary, stderr[-2000:]
    assert (int(summary[1]), int(summary[2]), int(summary[4])) == (trials, trials, 0)
    said = "2 of Optuna's 4 draws repeated an earlier configuration, counted once and answered from its results"
    assert summary[3] == said

    status = json.loads(taugate("status", str(study_dir)).stdout)
    assert status == {"name": "repeats", "planned": trials, "finished": trials, "diverged": 0, "failed": 0,
                      "remaining": 0, "stopped": 0, "draws": 4, "repeated_draws": 2}  # fmt: skip

    assert len(ledger_metrics(study_dir)) == trials
    assert len((study_dir / "report" / "results.csv").read_text().splitlines()) - 1 == trials
    metadata = json.loads((study_dir / "report" / "metadata.json").read_text())
    assert metadata["trials planned"] == metadata["trials in table"] == trials
    assert metadata["optuna draws"] == summary[3]
    assert "PARTIAL" not in (study_dir / "report" / "report.md").read_text()

    client = mlflow.MlflowClient(f"sqlite:///{study_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("repeats").experiment_id
    runs = client.search_runs([experiment], "tags.`taugate.kind` = 'trial'")
    assert len(runs) == trials
    (parent,) = client.search_runs([experiment], "tags.`taugate.kind` = 'study'")
    assert parent.data.metrics["trials_finished"] == trials
    assert (parent.data.metrics["optuna_draws"], parent.data.metrics["repeated_draws"]) == (4, 2)


def test_a_repeat_is_marked_and_answered_from_the_first_draw_without_training(repeats):
    study_dir, _ = repeats
    draws = optuna_study(study_dir).trials
    by_number = {t.number: t for t in draws}
    repeats_ = [t for t in draws if "repeat_of" in t.user_attrs]
    assert len(repeats_) == 2
    for repeat in repeats_:
        first = by_number[repeat.user_attrs["repeat_of"]]
        assert first.number < repeat.number and "repeat_of" not in first.user_attrs
        assert first.params == repeat.params and first.values == repeat.values
    # the Tune trials of the repeats found every seed in the ledger: nothing was trained twice
    finals = [rows[-1] for rows in tune_results(study_dir).values()]
    assert len(finals) == 4
    reused = sorted(all(m["reused"] for m in final["members"]) for final in finals)
    assert reused == [False, False, True, True]


def test_the_optuna_study_names_its_objectives(repeats):
    study_dir, _ = repeats
    assert optuna_study(study_dir).metric_names == ["val_acc_45", "trainable_params"]


def test_optuna_prints_no_info_lines(repeats):
    _, stderr = repeats
    assert "A new study created" not in stderr
    assert not re.search(r"^\[I \d{4}-\d\d-\d\d", stderr, re.MULTILINE), stderr[-2000:]


def test_the_progress_line_counts_the_trials_that_run(repeats):
    _, stderr = repeats
    lines = [tuple(map(int, m)) for m in re.findall(r"\] (\d+)/(\d+) done, (\d+) running, (\d+) failed", stderr)]
    assert lines, stderr[-2000:]
    assert lines[-1][:3] == (4, 4, 0), stderr
    # after a trial finished and before the last did, the line counts the trials still running (a
    # configuration runs both seeds), not the moment between one trial's end and the next one's start
    between = [running for done, total, running, _ in lines if 0 < done < total]
    assert between and max(between) >= 2, lines


def test_a_repeat_reports_the_epoch_metrics_a_scheduler_keeps(repeats):
    """A repeat's Tune trial ends with its configuration's last epoch, read back from the learning curves:
    a scheduler keeps every trial's final result and reads its epoch metrics when it judges the others
    (a repeat without them once crashed median stopping with KeyError: 'val_acc')."""
    from ray.tune.schedulers import MedianStoppingRule

    from study.spec.scheduler_spec import EPOCH_METRICS

    study_dir, _ = repeats
    finals = [rows[-1] for rows in tune_results(study_dir).values()]
    first = {tuple(final["member_keys"]): final for final in finals if not any(m["reused"] for m in final["members"])}
    answered = [final for final in finals if all(m["reused"] for m in final["members"])]
    assert len(answered) == 2 and len(first) == 2
    for repeat in answered:
        original = first[tuple(repeat["member_keys"])]
        for name in (*EPOCH_METRICS, "val_acc_45", "training_iteration"):
            assert repeat[name] == pytest.approx(original[name], abs=1e-12), name
        histories = [json.loads((study_dir / "trials" / key / "history.json").read_text())["epochs"]
                     for key in repeat["member_keys"]]  # fmt: skip
        assert repeat["val_acc"] == pytest.approx(sum(h[-1]["val_acc"] for h in histories) / len(histories))
    # Ray's median stopping rule, given a finished repeat, judges the next trial's epoch on every metric
    for metric in (*EPOCH_METRICS, "val_acc_45"):
        mode = "min" if metric == "loss" else "max"
        rule = MedianStoppingRule(time_attr="training_iteration", metric=metric, mode=mode, grace_period=1,
                                  min_samples_required=1)  # fmt: skip
        rule.on_trial_complete(None, "repeat", answered[0])
        original = next(iter(first.values()))
        assert rule.on_trial_result(None, "running", original) in ("CONTINUE", "STOP", "PAUSE")
