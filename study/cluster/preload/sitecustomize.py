"""Warm Ray workers: imported by every Python process of a Ray node that `taugate` starts (the node's
processes get this folder on PYTHONPATH and TAUGATE_PRELOAD set), it imports what a trial needs (torch, Ray
Tune, the trainable) as soon as a Ray worker process is born, before the worker registers with its node and so
before any trial is placed on it. Ray starts a node's idle workers as a driver connects
(`RAY_enable_worker_prestart`), so a study's workers import torch while its driver still sets up Tune, instead
of after its first trial is placed. Any other process (Ray's agents, a user's Python) is left alone. See
study.cluster.warm.

The imports run here, in the worker's main thread, before Ray's worker code starts: never on a thread beside
it. A background thread importing Ray Tune while the main thread unpickled Tune's trial actor (which imports
`ray.tune.trainable`) broke Ray Tune's circular imports ("cannot import name 'Trainable' from partially
initialized module"): the actor died, and a 400-trial study ran on one of its two workers to the end.
"""

import os
import sys


def _preload() -> None:
    import importlib

    for name in os.environ["TAUGATE_PRELOAD"].split(","):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 - a trial that needs the module imports it and says why
            continue


def _next_sitecustomize() -> None:
    """Run the `sitecustomize` this one hides (a later folder of sys.path), as Python would have."""
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        candidate = os.path.join(entry or os.curdir, "sitecustomize.py")
        if os.path.abspath(entry or os.curdir) != here and os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_sitecustomize_hidden", candidate)
            if spec and spec.loader:
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


_next_sitecustomize()


if os.environ.get("TAUGATE_PRELOAD") and sys.argv and sys.argv[0].endswith("default_worker.py"):
    _preload()
