"""The benchmark harness (benchmarks/run.py, micro.py, studies.py) on its smallest inputs: what
`--quick` changes and records, the JSON it writes, how each figure and ratio is computed from its
measurements, the specs and commands the study measurements run, and that it reads the CLI's own
output. The in-process measurements run at tiny sizes; the study-level ones (fresh processes with
Ray) are stood in for by made-up measurements, whose figures the real harness then derives. No
timing is asserted."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from benchmarks import micro, run, studies
from benchmarks.loop import trial_configs
from study.spec.loader import parse_spec

# the smallest trial: one hidden layer of 8 units, one epoch per stage
TINY = {"hidden": [8], "foundation_epochs": 1, "epochs": 1}


def cli_stderr(spec: Path, trials: int, every: float, seconds: float) -> str:
    """What `taugate run SPEC` writes on stderr for a study of `trials` trials that finish one every
    `every` seconds and that reports `seconds`: the CLI's own progress lines (study.tune.callbacks) and
    summary (study.cli.study_commands), made without Ray by standing in for the study's execution only."""
    import study.tune.runner
    from study.cli.study_commands import _run_study
    from study.tune.callbacks import ProgressCallback
    from study.tune.runner import StudyOutcome

    def execute(spec, study, study_dir, **_):
        callback = ProgressCallback(trials)
        trial = SimpleNamespace(config={"base": {}, "variant": {"seed": 0}}, last_result={"trial_key": "key"})
        callback.on_trial_start(0, [], trial)
        for done in range(1, trials + 1):
            callback.started -= every  # `every` seconds pass before each trial finishes
            callback.on_trial_complete(0, [], trial)
            if done < trials:
                callback.on_trial_start(0, [], trial)  # as Tune does: the next trial takes its place
        callback.on_experiment_end([])
        return StudyOutcome(study_dir, finished=trials, failed=0, total=trials, seconds=seconds)

    parsed = parse_spec(yaml.safe_load(spec.read_text()), source=str(spec))
    written = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(written):
        patch.setattr(study.tune.runner, "execute", execute)
        _run_study(parsed, None, spec.parent / "study", None, None, report=False)
    return written.getvalue()


class Processes:
    """Stands in for the harness's three measurements that start processes (studies.floor_seconds,
    run_study, naive_seconds): records the spec each was given (its seeds, fuse and trial count) and
    returns made-up times, with the CLI's own output for the study of that spec. bench_studies and
    scaling run for real on them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.floors = iter([9.0, 7.0, 8.0])
        self.walls = iter([16.0, 19.0, 15.0, 18.0, 17.0, 20.0])  # fused and unfused take turns
        self.windows: list[float] = []
        monkeypatch.setattr(studies, "floor_seconds", lambda spec: self._record("floor", spec, next(self.floors)))
        monkeypatch.setattr(studies, "naive_seconds", lambda spec: self._record("naive", spec, 55.0))
        monkeypatch.setattr(studies, "run_study", self._study)

    def _record(self, kind: str, spec: Path, value):
        raw = yaml.safe_load(spec.read_text())
        self.calls.append((kind, {"seeds": len(raw["seeds"]), "fuse": raw["fuse"], "trials": len(trial_configs(spec))}))
        return value

    @staticmethod
    def every(trials: int) -> float:
        """The made-up seconds between two finished trials of a study of `trials` trials."""
        return 0.2 * (1 + trials // 100)

    @staticmethod
    def window(trials: int) -> float:
        """The made-up time a scaling study of `trials` trials reports."""
        return 2.0 + trials * Processes.every(trials)

    def _study(self, spec: Path) -> tuple[float, float, str]:
        trials = len(trial_configs(spec))
        if spec.name.startswith("scale-"):
            window = self.window(trials)
            wall = window + 4.0
        else:
            wall = next(self.walls)
            window = wall - 5.5  # the CLI's imports and Ray's shutdown lie outside the window
            self.windows.append(window)
        stderr = cli_stderr(spec, trials, self.every(trials), window)
        self._record("study", spec, None)
        return wall, studies.window_of(stderr), stderr

    def kinds(self, kind: str) -> list[dict]:
        return [spec for k, spec in self.calls if k == kind]


def test_quick_run_writes_its_figures(tmp_path, monkeypatch):
    """`python -m benchmarks.run --quick`'s main: every in-process measurement runs for real on the
    smallest trial, the study-level ones on made-up times (Processes)."""
    asked: dict[str, dict] = {}

    def smallest(name, measure, **tiny):
        def measured(**sizes):
            asked[name] = sizes
            return measure(**tiny)

        return measured

    monkeypatch.setattr(run, "bench_trial", smallest("trial", micro.bench_trial, repeats=1, overrides=TINY))
    monkeypatch.setattr(run, "bench_epoch", smallest("epoch", micro.bench_epoch, samples=64, repeats=1))
    monkeypatch.setattr(run, "matmul_peak", smallest("matmul", micro.matmul_peak, size=8, repeats=1))
    monkeypatch.setattr(run, "bench_fused", smallest("fused", micro.bench_fused, repeats=1, members=2, overrides=TINY))
    processes = Processes(monkeypatch)
    output = tmp_path / "results.json"
    run.main(["--quick", "--output", str(output)])

    figures = json.loads(output.read_text())
    assert figures["quick"] is True and figures["command"].endswith("--quick")
    assert set(asked) == {"trial", "epoch", "matmul", "fused"}
    positive = ("trial_seconds", "epoch_bare_seconds", "epoch_ours_seconds", "epoch_vs_bare", "epoch_gflops",
                "matmul_peak_gflops", "fused_speedup_k5", "floor_seconds", "study_seconds", "study_unfused_seconds",
                "naive_seconds", "study_vs_floor", "study_vs_naive", "steady_largest_vs_smallest")  # fmt: skip
    for name in positive:
        assert isinstance(figures[name], float) and figures[name] > 0, name
    # the ratios are the figures they are made of, not separate measurements
    assert figures["epoch_vs_bare"] == figures["epoch_ours_seconds"] / figures["epoch_bare_seconds"]
    assert figures["epoch_vs_peak"] == figures["epoch_gflops"] / figures["matmul_peak_gflops"]
    assert figures["fused_speedup_k5"] == figures["fused_sequential_seconds"] / figures["fused_seconds"]
    assert figures["fused_speedup_k5_nocache"] == figures["fused_sequential_seconds"] / figures["fused_nocache_seconds"]
    assert figures["study_vs_floor"] == figures["study_seconds"] / figures["floor_seconds"]
    assert figures["study_vs_naive"] == figures["naive_seconds"] / figures["study_window_seconds"]
    assert figures["study_window_seconds"] < figures["study_seconds"]  # the CLI's window lies inside its process
    for name in ("trials_per_minute", "trials_per_minute_steady"):
        assert set(figures[name]) == {"5", "10"} and all(v > 0 for v in figures[name].values()), name
    # quick: one round of one seed, the paper study fused as shipped and unfused, the floor and the
    # naive setup on the fused spec, then the scaling studies of 5 and 10 trials
    assert figures["study_seeds"] == 1 and figures["study_rounds"] == 1
    once = processes.kinds("floor") + processes.kinds("naive")
    assert [(spec["seeds"], spec["fuse"]) for spec in once] == [(1, 5), (1, 5)]
    assert [spec["fuse"] for spec in processes.kinds("study")[:2]] == [5, 1]
    assert [spec["trials"] for spec in processes.kinds("study")[2:]] == [5, 10]


def test_quick_picks_smaller_sizes_and_the_command_says_so(tmp_path, monkeypatch):
    """What `--quick` changes: every measurement's sizes and the study plan, the `quick` and
    `command` recorded; nothing is measured (each measurement returns a made-up figure)."""
    made_up = {"bench_trial": {"trial_seconds": 0.5}, "bench_epoch": {"epoch_gflops": 3.0},
               "matmul_peak": {"matmul_peak_gflops": 40.0}, "bench_fused": {"fused_speedup_k5": 2.0},
               "bench_studies": {"study_vs_floor": 1.9}}  # fmt: skip
    asked: dict[bool, dict[str, dict]] = {True: {}, False: {}}

    def recorder(quick: bool, name: str):
        def measure(*args, **sizes):
            asked[quick][name] = {"args": args, **sizes}
            return made_up[name]

        return measure

    for quick, flags in ((True, ["--quick"]), (False, [])):
        for name in made_up:
            monkeypatch.setattr(run, name, recorder(quick, name))
        output = tmp_path / f"quick-{quick}.json"
        run.main([*flags, "--output", str(output)])
        figures = json.loads(output.read_text())
        assert figures["quick"] is quick
        assert figures["command"] == "python -m benchmarks.run" + (" --quick" if quick else "")
        assert figures["epoch_vs_peak"] == figures["epoch_gflops"] / figures["matmul_peak_gflops"]
        for figure in made_up.values():  # every measurement's figures, as measured
            assert {name: figures[name] for name in figure} == figure
    assert asked[True]["bench_studies"]["args"] == (True,) and asked[False]["bench_studies"]["args"] == (False,)
    for name in made_up.keys() - {"bench_studies"}:
        quick, full = asked[True][name], asked[False][name]
        assert quick.keys() == full.keys() and quick != full, name
        for size, value in quick.items():  # None: the setting's own number of epochs
            assert full[size] is None or value <= full[size], (name, size)


def test_full_study_figures_are_medians_of_their_rounds_and_ratios_of_those(tmp_path, monkeypatch):
    """bench_studies without --quick, on made-up times: 3 rounds of 5 seeds, the scaling studies of
    25, 100 and 400 trials; each figure is its rounds' median, every round kept."""
    processes = Processes(monkeypatch)
    figures = studies.bench_studies(quick=False)

    floors, shipped = processes.kinds("floor"), len(trial_configs(studies.PAPER))  # the paper study as shipped
    assert floors == [{"seeds": 5, "fuse": 5, "trials": shipped}] * 3 == processes.kinds("naive") * 3
    assert figures["study_rounds"] == len(floors) and figures["study_seeds"] == floors[0]["seeds"]
    paper = [spec for spec in processes.kinds("study") if spec["trials"] == shipped]
    assert [spec["fuse"] for spec in paper] == [5, 1] * 3
    walls, windows = [16.0, 15.0, 17.0], processes.windows[0::2]  # the fused study's rounds
    assert figures["study_seconds_samples"] == walls and figures["study_seconds"] == sorted(walls)[1]
    assert figures["study_window_seconds"] == sorted(windows)[1]
    for name, made_up in (("study_unfused", [19.0, 18.0, 20.0]), ("floor", [9.0, 7.0, 8.0])):
        assert figures[f"{name}_seconds_samples"] == made_up and figures[f"{name}_seconds"] == sorted(made_up)[1]
    assert figures["study_vs_floor"] == figures["study_seconds"] / figures["floor_seconds"]
    assert figures["study_unfused_vs_floor"] == figures["study_unfused_seconds"] / figures["floor_seconds"]
    assert figures["study_window_vs_floor"] == figures["study_window_seconds"] / figures["floor_seconds"]
    assert figures["study_vs_naive"] == figures["naive_seconds"] / figures["study_window_seconds"]
    assert figures["study_unfused_vs_naive"] == figures["naive_seconds"] / figures["study_unfused_window_seconds"]

    sizes = [spec["trials"] for spec in processes.kinds("study") if spec["trials"] != shipped]
    assert sizes == [25, 100, 400]
    steady = figures["trials_per_minute_steady"]
    for size in sizes:  # a trial every `every` seconds is 60 / every a minute (the CLI prints tenths)
        assert steady[str(size)] == pytest.approx(60 / processes.every(size), rel=0.01)
        window = processes.window(size)
        assert figures["trials_per_minute"][str(size)] == pytest.approx(size / window * 60, rel=0.01)
    assert figures["steady_largest_vs_smallest"] == steady["400"] / steady["25"]


def test_study_rates_leave_the_start_up_out():
    # the first wave starts at 3 s, the first trial finishes at 5 s, then one every 0.5 s until 21
    lines = ["[   3.0s] 0/21 done, 2 running, 0 failed, estimating"]
    lines += [f"[{5.0 + 0.5 * i:6.1f}s] {1 + i}/21 done, 2 running, 0 failed, ~1s left" for i in range(21)]
    overall, steady = studies.rates(21, 14.0, "\n".join(lines))
    assert overall == 21 / 14.0 * 60
    assert steady == pytest.approx(120.0)  # 20 trials in the 10 s from the first to the last to finish


def test_the_harness_reads_the_clis_own_output(tmp_path):
    """The lines `taugate run` prints are the ones both harnesses parse (studies.py, scale.py)."""
    from benchmarks import scale

    spec = studies.scale_spec(tmp_path, 5)
    stderr = cli_stderr(spec, trials=5, every=1.5, seconds=12.34)
    done = studies.progress(stderr)
    assert [d for _, d in done] == [0, 1, 2, 3, 4, 5]
    assert all(t >= 1.5 * d for t, d in done)
    assert studies.window_of(stderr) == float(f"{12.34:.1f}")
    summary = scale.SUMMARY.search(stderr)
    assert summary is not None and summary.group(2) == "5" and summary.group(3) == "0"
    assert float(summary.group(4)) == studies.window_of(stderr)
    assert [(float(t), int(d)) for t, d in scale.PROGRESS.findall(stderr)] == done


def fake_taugate(folder: Path, stderr: str, sleep: float, code: int = 0) -> tuple[Path, Path]:
    """An executable standing in for `taugate`: records its arguments, runs `sleep` seconds, writes
    `stderr` and exits with `code`."""
    argv = folder / "argv.json"
    script = folder / "taugate"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys, time\n"
        f"json.dump(sys.argv[1:], open({str(argv)!r}, 'w'))\ntime.sleep({sleep})\n"
        f"sys.stderr.write({stderr!r})\nsys.exit({code})\n"
    )
    script.chmod(0o755)
    return script, argv


def test_a_study_is_timed_as_a_whole_process_that_reports_its_window(tmp_path, monkeypatch):
    """run_study runs `taugate run SPEC --output ... --yes --no-report` (options the CLI has) and
    times the whole process, which holds the window the CLI reports; a failed study is an error."""
    from typer.main import get_command

    from study.cli.main import app

    spec = studies.scale_spec(tmp_path, 5)
    reported, lives = 0.2, 0.4
    stderr = cli_stderr(spec, trials=5, every=0.01, seconds=reported)
    taugate, argv = fake_taugate(tmp_path, stderr, sleep=lives)
    monkeypatch.setattr(studies, "TAUGATE", taugate)
    wall, window, output = studies.run_study(spec)
    assert output == stderr and window == studies.window_of(stderr) == reported
    assert wall >= lives > window  # the process's whole life, the CLI's window inside it
    command = json.loads(argv.read_text())
    assert command[:2] == ["run", str(spec)] and command[3].endswith("/study")
    options = {opt for param in get_command(app).commands["run"].params for opt in param.opts + param.secondary_opts}
    assert {arg for arg in command[2:] if arg.startswith("--")} <= options

    for failed, code in ((stderr, 1), (stderr.replace(" 0 failed", " 1 failed"), 0)):
        taugate, _ = fake_taugate(tmp_path, failed, sleep=0, code=code)
        with pytest.raises(RuntimeError, match="failed"):
            studies.run_study(spec)


def recorded_run(calls: list, stdout: str = ""):
    """A stand-in for subprocess.run that records the command, its options and the trial configs file
    it names (read while it exists)."""

    def run(command, **options):
        script = command[-1]
        named = command[-1] if script.endswith(".json") else ast.literal_eval(re.search(r"open\((.+?)\)", script)[1])
        calls.append((command, options, json.loads(Path(named).read_text())))
        return subprocess.CompletedProcess(command, 0, stdout=stdout, stderr="")

    return run


def test_the_floor_runs_the_specs_trials_in_the_bare_loop(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(studies.subprocess, "run", recorded_run(calls))
    spec = studies.paper_spec(tmp_path, seeds=1, fuse=5)
    seconds = studies.floor_seconds(spec)
    [(command, options, trials)] = calls
    assert command[:3] == [sys.executable, "-m", "benchmarks.loop"] and options["cwd"] == studies.ROOT
    assert options["check"] is True and trials == trial_configs(spec)
    assert isinstance(seconds, float) and seconds > 0


def test_the_naive_setup_runs_the_specs_trials_without_reuse(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(studies.subprocess, "run", recorded_run(calls, stdout="NAIVE 61.25\n"))
    spec = studies.paper_spec(tmp_path, seeds=1, fuse=5)
    assert studies.naive_seconds(spec) == 61.25  # what the script printed
    [(command, options, trials)] = calls
    script = command[2]
    compile(script, "naive", "exec")
    assert command[:2] == [sys.executable, "-c"] and trials == trial_configs(spec)
    # every trial trains its own foundation (run_trial without a shared one), no actor reuse
    assert "run_trial(config)" in script and "reuse_actors=False" in script
    assert options["env"]["RAY_AUTH_MODE"] == "token" and options["env"]["PATH"] == os.environ["PATH"]


def test_the_specs_have_the_sizes_they_claim(tmp_path):
    shipped = parse_spec(yaml.safe_load(studies.PAPER.read_text()))
    per_seed = len(trial_configs(studies.PAPER)) // len(shipped.seeds)
    for seeds, fuse in ((1, 5), (5, 1)):
        path = studies.paper_spec(tmp_path, seeds, fuse)
        spec = parse_spec(yaml.safe_load(path.read_text()))
        assert (spec.seeds, spec.fuse) == (list(range(seeds)), fuse)
        assert spec.model_copy(update={"seeds": shipped.seeds, "fuse": shipped.fuse}) == shipped
        assert len(trial_configs(path)) == per_seed * seeds
    for trials in (5, 10, 25, 100, 400):
        path = studies.scale_spec(tmp_path, trials)
        spec = parse_spec(yaml.safe_load(path.read_text()))
        assert len(trial_configs(path)) == trials and spec.fuse == 1 and list(spec.methods) == ["taugate"]
