"""The pieces of benchmarks/scale.py and benchmarks/loop.py (issue 16) that decide what is compared:
the loop runs exactly the study's trials, the ablation specs have the sizes they claim, and the
rate, memory and growth readings compute what they say. No timing is asserted."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import yaml

from benchmarks.loop import trial_configs
from benchmarks.scale import MemorySampler, ablation_spec, driver_growth_per_1000, is_worker, steady_rate
from benchmarks.studies import sweep_spec
from study.spec.loader import parse_spec
from study.spec.plan import planned_trials, trial_key, variants
from trainables.config import parse_config

ROOT = Path(__file__).resolve().parents[2]


def spec_of(path: Path):
    return parse_spec(yaml.safe_load(path.read_text()), source=str(path))


def test_the_loop_runs_exactly_the_studys_trials():
    spec = spec_of(ROOT / "configs" / "paper.yaml")
    configs = trial_configs(ROOT / "configs" / "paper.yaml")
    planned = planned_trials(spec, variants(spec))
    assert len(configs) == len(planned) == 50
    assert {trial_key(parse_config(c)) for c in configs} == set(planned)


def test_ablation_specs_have_the_sizes_they_claim(tmp_path):
    for trials in (25, 400, 2000):
        spec = spec_of(ablation_spec(tmp_path, trials))
        assert len(variants(spec)) == trials
        assert spec.fuse == 5 and list(spec.methods) == ["taugate"]
        weights = spec.methods["taugate"].sparsity_weight
        assert len(set(weights)) == trials // 5 and min(weights) == 1e-4 and max(weights) == 1.0


def test_the_bare_loop_trains_each_foundation_once_and_every_trial(tmp_path, monkeypatch):
    """`python -m benchmarks.loop TRIALS.json`, run in this process on four tiny trials over two foundations."""
    import trainables.engine.fit
    import trainables.engine.trial

    base = {"hidden": [8], "foundation_epochs": 1, "epochs": 1, "device": "cpu", "seed": 0}
    configs = [base | {"method": m} for m in ("frozen", "bitfit", "taugate")] + [base | {"seed": 1, "method": "frozen"}]
    path = tmp_path / "trials.json"
    path.write_text(json.dumps(configs))
    calls = {"foundations": 0, "trials": 0}

    def counted(name, function):
        def call(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(
        trainables.engine.fit, "train_foundation", counted("foundations", trainables.engine.fit.train_foundation)
    )
    monkeypatch.setattr(trainables.engine.trial, "run_trial", counted("trials", trainables.engine.trial.run_trial))
    monkeypatch.setattr(sys, "argv", ["loop", str(path)])
    runpy.run_path(str(ROOT / "benchmarks" / "loop.py"), run_name="__main__")
    assert calls == {"foundations": 2, "trials": 4}


def test_rates_and_growth_read_what_they_say():
    # 10 trials at 2 s, then one every second until 100: the steady rate leaves the start-up out
    progress = [(2.0, 10)] + [(2.0 + i, 10 + i) for i in range(1, 91)]
    assert abs(steady_rate(progress) - 60.0) < 1e-9
    # the driver grows by 5 MiB per 100 trials: 50 MiB per 1,000
    samples = [(100.0 + t, (200 + d * 0.05) * 1024 * 1024) for t, d in progress]
    run = {"progress": progress, "driver_rss": samples, "trials": 100}
    assert abs(driver_growth_per_1000(run, 0.0) - 50.0) < 1e-6
    assert is_worker("ray::ImplicitFunc.train") and is_worker("ray::IDLE")
    assert not is_worker("ray::DashboardAgent") and not is_worker("ray::RuntimeEnvAgent") and not is_worker("raylet")


def test_the_memory_sampler_sees_a_child_allocate():
    code = "import time; block = bytearray(300 * 1024 * 1024); time.sleep(2)"
    spawn = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {code!r}])"
    parent = subprocess.Popen([sys.executable, "-c", spawn])
    with MemorySampler(parent.pid, interval=0.1) as sampler:
        parent.wait(timeout=60)
    summary = sampler.summary()
    assert max(rss for _, rss in sampler.peaks.values()) > 250 * 1024 * 1024
    assert summary["driver_peak_mib"] < 250  # the parent itself never held the block
    assert sampler.samples, "the root process was sampled over time"


def test_the_compute_figure_trains_each_foundation_once_and_the_studys_fused_groups(tmp_path, monkeypatch):
    """`python -m benchmarks.compute SPEC`, run in this process on a tiny sweep: 2 seeds x 2 weights, fuse 2."""
    import trainables.engine.fit
    import trainables.engine.fused
    from study.spec.plan import fused_groups, member_config

    path = sweep_spec(tmp_path, "tiny", trials=4, seeds=2, fuse=2)
    spec = yaml.safe_load(path.read_text())
    spec["foundation"] |= {"hidden": [8], "epochs": 1}
    spec["epochs"] = 1
    path.write_text(yaml.safe_dump(spec))
    calls: dict[str, list] = {"foundations": [], "groups": []}

    def counted(name, function):
        def call(*args, **kwargs):
            calls[name].append(args[0])
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(trainables.engine.fit, "train_foundation",
                        counted("foundations", trainables.engine.fit.train_foundation))  # fmt: skip
    monkeypatch.setattr(trainables.engine.fused, "run_fused", counted("groups", trainables.engine.fused.run_fused))
    monkeypatch.setattr(sys, "argv", ["compute", str(path)])
    runpy.run_path(str(ROOT / "benchmarks" / "compute.py"), run_name="__main__")
    planned = fused_groups(spec_of(path), variants(spec_of(path)))
    assert len(calls["foundations"]) == 2 and {c.seed for c in calls["foundations"]} == {0, 1}
    assert [[trial_key(c) for c in group] for group in calls["groups"]] == [
        [trial_key(member_config(spec_of(path).base_config(), member)) for member in group] for group in planned
    ]
    assert len(planned) == 2 and all(len(group) == 2 for group in planned)
