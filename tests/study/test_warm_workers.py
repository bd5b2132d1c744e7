"""Warm workers (study.cluster.warm): a Ray node that taugate starts gives each worker process torch, Ray Tune
and the trainable as it is born, so a study's first trial does not import them; no other process preloads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from study.cluster.warm import PRELOADED, worker_environment

PROBE = """
import json, sys, threading
# the script's first line, as Ray's worker code: what is imported already, and no thread still importing
print(json.dumps({"threads": threading.active_count(), "loaded": [m for m in sys.argv[1:] if m in sys.modules]}))
"""

# Ray's worker main thread unpickling Tune's trial actor (ImplicitFunc), at the moment a background preload
# would be inside Ray Tune's own imports: it must find Ray Tune whole.
ACTOR_CLASS_PROBE = """
import json, sys, time
deadline = time.monotonic() + 120
while "ray.tune" not in sys.modules and time.monotonic() < deadline:
    time.sleep(0.001)
try:
    from ray.tune.trainable import function_trainable
    print(json.dumps({"imported": function_trainable.__name__}))
except ImportError as error:
    print(json.dumps({"error": str(error)}))
"""


def probe(folder: Path, name: str, env: dict[str, str], text: str = PROBE) -> dict:
    script = folder / name
    script.write_text(text)
    done = subprocess.run([sys.executable, str(script), *PRELOADED], env=env, capture_output=True, text=True,
                          timeout=300, check=True)  # fmt: skip
    return json.loads(done.stdout)


def test_a_ray_worker_process_imports_what_a_trial_needs_as_it_is_born(tmp_path):
    env = os.environ | worker_environment()
    assert probe(tmp_path, "default_worker.py", env) == {"threads": 1, "loaded": list(PRELOADED)}


def test_a_worker_unpickling_tunes_trial_actor_finds_ray_tune_whole(tmp_path):
    """The preload ran on a thread beside Ray's worker code; a worker given Tune's trial actor while that thread
    was inside Ray Tune's circular imports died ("cannot import name 'Trainable' from partially initialized
    module"), and a 400-trial study ran on one of its two workers. The imports now finish before Ray's code runs."""
    env = os.environ | worker_environment()
    out = probe(tmp_path, "default_worker.py", env, ACTOR_CLASS_PROBE)
    assert out == {"imported": "ray.tune.trainable.function_trainable"}


def test_no_other_process_preloads(tmp_path):
    env = os.environ | worker_environment()
    assert probe(tmp_path, "agent.py", env) == {"threads": 1, "loaded": []}  # Ray's agents, a user's Python
    without = {k: v for k, v in env.items() if k != "TAUGATE_PRELOAD"}
    assert probe(tmp_path, "default_worker.py", without) == {"threads": 1, "loaded": []}


def test_a_sitecustomize_it_hides_still_runs(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    marker = tmp_path / "ran"
    (theirs / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').write('yes')\n")
    env = os.environ | worker_environment(os.environ | {"PYTHONPATH": str(theirs)})
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True, timeout=60)
    assert marker.read_text() == "yes"


def test_the_warm_clusters_workers_have_torch_before_the_first_task(warm_cluster, tmp_path):
    """A driver joins `taugate cluster start`'s cluster and asks a worker, in a task that imports nothing,
    whether torch is loaded: it is, by the time the task runs."""
    driver = tmp_path / "driver.py"
    driver.write_text(f"""
import json, sys
from study.cluster.connect import connect
connect({warm_cluster.address!r})
import ray

@ray.remote
def loaded():
    import sys
    return [m for m in {list(PRELOADED)!r} if m in sys.modules]

print(json.dumps(ray.get(loaded.remote())))
""")
    done = subprocess.run([sys.executable, str(driver)], env=os.environ | {"RAY_AUTH_MODE": "token"},
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torch" in json.loads(done.stdout.strip().splitlines()[-1])


def test_a_trial_on_a_warm_worker_uses_the_cpus_ray_gave_it(warm_cluster, tmp_path):
    """torch was imported at the worker's birth, before Ray set the worker's OMP_NUM_THREADS: the trainable sets
    torch's threads to the trial's CPUs (`use_assigned_cpus`), else each of a node's workers would use every core."""
    driver = tmp_path / "driver.py"
    driver.write_text(f"""
import json
from study.cluster.connect import connect
connect({warm_cluster.address!r})
import ray

@ray.remote(num_cpus=1)
def threads():
    import torch
    from study.tune.trainable import use_assigned_cpus
    return use_assigned_cpus(), torch.get_num_threads()

print(json.dumps(ray.get(threads.remote())))
""")
    done = subprocess.run([sys.executable, str(driver)], env=os.environ | {"RAY_AUTH_MODE": "token"},
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [1, 1]


LOCAL_DRIVER = """
import json, os, time
import psutil
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from study.cluster.connect import connect, shutdown_local_ray

def workers():
    # the driver's own Ray: its Python workers, by pid, and whether each has registered (title ray::IDLE)
    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            args = child.cmdline()
        except psutil.Error:
            continue
        if any(a.endswith("default_worker.py") for a in args[:2]) or args[:1] == ["ray::IDLE"]:
            found[child.pid] = args[:1] == ["ray::IDLE"]
    return found

connect(None)  # a local study's own Ray
deadline = time.monotonic() + 120
while not (born := workers()) or not all(born.values()):  # prestarted, preloaded and registered
    assert time.monotonic() < deadline, born
    time.sleep(0.2)
time.sleep(4)  # a driver setting up Tune: longer than Ray's own 1 s of patience with idle workers

@ray.remote(num_cpus=1)
class Trial:  # as Tune places a trial: an actor in its own placement group
    def where(self):
        import sys
        return os.getpid(), "torch" in sys.modules

groups = [placement_group([{"CPU": 1}]) for _ in born]
ray.get([group.ready() for group in groups])
trials = [Trial.options(scheduling_strategy=PlacementGroupSchedulingStrategy(group)).remote() for group in groups]
print(json.dumps({"born": sorted(born), "ran": ray.get([trial.where.remote() for trial in trials])}))
shutdown_local_ray(None)
"""


def test_a_local_studys_preloaded_workers_wait_for_its_first_trials(tmp_path):
    """The workers a local study's Ray prestarts as the driver connects, preloaded, are still there when Tune
    places its first trials seconds later, and run them: with Ray's default (an idle worker beyond the CPU
    count is ended after 1 s) they were ended and the trials waited for fresh workers to import torch again."""
    driver = tmp_path / "driver.py"
    driver.write_text(LOCAL_DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_idle_worker_killing_time_threshold_ms")}
    done = subprocess.run([sys.executable, str(driver)], env=env | {"RAY_AUTH_MODE": "token"}, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert {pid for pid, _ in out["ran"]} <= set(out["born"]), out  # no fresh worker: the preloaded ones ran them
    assert all(loaded for _, loaded in out["ran"])
