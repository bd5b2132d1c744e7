"""The light command path: a study's driver never imports torch. The CLI, the spec checks, the plan (its
grid, fused groups and longest-first order, which counts each trial's trainable parameters from the
method registry's records), the study folder, the runner, Tune's callbacks and the pickled trainable
all run in the driver without it; torch is imported on the workers, in the trial. `taugate run
--no-report` therefore keeps torch out of the driver's imports, memory and exit.

Each check runs in a fresh interpreter whose import system notes the first import of torch (where it
came from) and lets it go on, so a check fails naming the import chain that brought torch in."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "configs").glob("*.yaml"))

# Noted, not refused: a library that imports torch if it can must behave as in a real run.
WATCH = """
import atexit, sys, traceback
seen = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if (name == "torch" or name.startswith("torch.")) and not seen:
            frames = [f for f in traceback.extract_stack() if not f.filename.startswith("<")]
            seen.append("".join(traceback.format_list(frames[-12:])))
        return None
sys.meta_path.insert(0, Watch())
def _report():
    print("TORCH-IMPORTED" if "torch" in sys.modules else "TORCH-ABSENT", file=sys.stderr)
    if seen:
        print(seen[0], file=sys.stderr)
    sys.stderr.flush()
atexit.register(_report)
"""


def python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = os.environ | {"RAY_AUTH_MODE": "token"}
    return subprocess.run([sys.executable, "-c", WATCH + code, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def check_torch_free(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-4000:]
    assert "TORCH-ABSENT" in done.stderr, f"the driver imported torch:\n{done.stderr[-4000:]}"


def test_the_cli_and_planning_every_shipped_spec_import_no_torch():
    code = """
from pathlib import Path
import study.cli.main
from study.spec.loader import load_spec
from study.spec.plan import fused_groups, longest_first, planned_trials, summary, trial_config, variants
from study.spec.plan import trainable_count
for path in sys.argv[1:]:
    spec = load_spec(Path(path))
    summary(spec)
    if spec.search.kind == "grid":
        grid = variants(spec)
        planned_trials(spec, grid)
        units = [{"members": g} for g in fused_groups(spec, grid)] if spec.fuse > 1 else grid
        ordered = longest_first(spec, units)
        assert len(ordered) == len(units)
        assert all(trainable_count(trial_config(spec, v)) >= 0 for v in grid)
# what `taugate run` imports on its way to Ray and through a study
import study.folder.metadata, study.folder.progress, study.folder.storage, study.folder.validate
import study.tune.runner, study.tune.trainable, study.tune.callbacks, study.tune.epoch_reports, study.tune.search
import study.pipeline.service, study.tracking.tracker, study.cluster.connect
import ray.tune, ray.tune.logger
"""
    check_torch_free(python(code, *map(str, SPECS)))


def test_taugate_plan_imports_no_torch():
    code = """
from study.cli.main import main
sys.argv = ["taugate", "plan", sys.argv[1], "--json"]
main()
"""
    done = python(code, str(ROOT / "configs" / "paper.yaml"))
    check_torch_free(done)
    assert json.loads(done.stdout)["trials"] == 50


def test_the_plans_trainable_counts_are_the_built_models(monkeypatch):
    """The order and a stopped trial's `trainable_params` read the registry's counts: each equals the
    count of the model `adapt` builds (also without a record's count, by building it)."""
    from study.spec import plan
    from trainables import registry
    from trainables.config import parse_config
    from trainables.methods import adapt, count_trainable
    from trainables.model import MLP

    for name in registry.names():
        for hidden in ([128, 128], [16], [32, 8, 4]):
            config = parse_config({"method": name, "hidden": hidden, "lora_rank": 3})
            built = count_trainable(adapt(MLP(hidden=hidden), config))
            assert plan.trainable_count(config) == built, (name, hidden)
            counted = registry.get(name)
            monkeypatch.setitem(registry.REGISTRY, name, dataclasses.replace(counted, trainable=None))
            plan._trainable_count.cache_clear()
            assert plan.trainable_count(config) == built, (name, hidden, "built")
            monkeypatch.setitem(registry.REGISTRY, name, counted)
            plan._trainable_count.cache_clear()


@pytest.mark.slow
def test_a_study_run_without_its_report_never_imports_torch_in_the_driver(tmp_path, warm_cluster):
    """The whole `taugate run --no-report` on the warm cluster: plan, Tune, callbacks, MLflow, summary."""
    code = """
from study.cli.main import main
sys.argv = ["taugate", "run", *sys.argv[1:]]
main()
"""
    done = python(code, str(ROOT / "configs" / "smoke.yaml"), "--output", str(tmp_path / "smoke"), "--no-report",
                  "--address", warm_cluster.address)  # fmt: skip
    check_torch_free(done)
    assert "study smoke: 8/8 trials finished, 0 failed" in done.stderr, done.stderr[-3000:]
