"""Patches of private Ray APIs, each for the pinned Ray (pyproject.toml) and each checked by a test.

- `use_prestarted_workers`: Tune's trial actors may start on the worker processes Ray prestarts
  (tests/study/test_study_local.py);
- `single_node_on_loopback`: a local Ray keeps 127.0.0.1 as its node address (tests/study/test_loopback.py).
"""

from __future__ import annotations

import contextlib


def use_prestarted_workers() -> None:
    """Let Tune's trial actors start on the worker processes Ray prestarts.

    Tune gives every trainable actor `runtime_env={"env_vars": {"PL_DISABLE_FORK": "1"}}` (a
    PyTorch Lightning setting, ray-project/ray#28197), and an actor with any runtime env cannot
    use the idle workers Ray starts with the driver: each trial actor waits for a fresh process
    instead (0.7 s on an idle 2-core machine, 1.4 s while Ray is still starting). We run no
    Lightning, so the default goes; variables Tune propagates from the driver's environment
    still make a runtime env (and then a fresh worker) as before. Ray is pinned (pyproject.toml);
    tests/study/test_study_local.py checks that this still takes effect.
    """
    from ray.tune.execution import class_cache

    class_cache.DEFAULT_ENV_VARS.pop("PL_DISABLE_FORK", None)


@contextlib.contextmanager
def single_node_on_loopback(node_ip: str):
    """Let `ray.init` keep 127.0.0.1 as the node address while it starts a local Ray.

    Ray 2.60 binds every server of a node to loopback when the node address is localhost, and to
    all interfaces otherwise; but `ray.init` first rewrites a localhost address to the machine's
    network address, unless Ray runs as a single-node cluster (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
    read once when Ray is imported, which Tune may already have done). A local study is one node,
    so it says so for the start only: Ray's processes get 127.0.0.1 on their command lines, and a
    later driver in this process that joins a cluster resolves its address as before. Ray is
    pinned (pyproject.toml); tests/study/test_loopback.py checks every listening socket of a study.
    """
    from ray._common.network_utils import is_localhost
    from ray._private import ray_constants

    if not is_localhost(node_ip):
        yield
        return
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
