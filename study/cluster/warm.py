"""What a Ray node started by taugate (`taugate cluster start`, a local study's own Ray) gives its workers:
the modules a trial imports, imported as each worker process is born (study/cluster/preload/sitecustomize.py),
so that a study joining the node finds workers with torch and Ray Tune already loaded instead of paying
their imports after its first trial is placed. A worker process belongs to one driver (Ray starts a node's
idle workers as a driver connects and ends them with it), so the import happens once per study and worker:
this moves it off the path to the first trial, it does not remove it."""

from __future__ import annotations

import os
from pathlib import Path

PRELOAD_DIR = Path(__file__).resolve().parent / "preload"
# What `study.tune.trainable.train_trial` imports on a worker, heaviest first.
PRELOADED = ("torch", "ray.tune", "trainables.engine.fused", "study.tune.trainable")
# How long the node keeps an idle worker it would otherwise end (Ray's default: 1 s). A driver's workers
# are born as it connects and take seconds to preload; Tune places its first trials after its own set-up,
# which for a large grid is seconds more. With Ray's second, the preloaded workers were ended as idle and
# Tune's trials waited for fresh ones to start and import torch again (a 400-trial study's first trial came
# ~6 s later; tests/study/test_warm_workers.py).
IDLE_WORKER_KEPT_MS = 30_000


def worker_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The variables a node's processes need for warm workers: the preload folder first on PYTHONPATH (a
    `sitecustomize` there runs in every Python process; it acts only in Ray workers), what to import, and
    the raylet's patience with idle workers (`IDLE_WORKER_KEPT_MS`)."""
    base = os.environ if base is None else base
    path = os.pathsep.join(p for p in (str(PRELOAD_DIR), base.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "TAUGATE_PRELOAD": ",".join(PRELOADED),
            "RAY_idle_worker_killing_time_threshold_ms": str(IDLE_WORKER_KEPT_MS)}  # fmt: skip
