"""A study driver's Ray: a local Ray on loopback by default, or an existing cluster (--address,
RAY_ADDRESS, `auto`), reached in seconds or refused with a `ClusterError`."""

from __future__ import annotations

import os
import socket

from study import environment  # noqa: F401 - before Ray is imported
from study.cluster.cluster_error import ClusterError
from study.cluster.ray_patches import single_node_on_loopback

# A local study's Ray node address. Ray 2.60 binds its servers (GCS, raylet, workers, agents,
# autoscaler monitor) to loopback only when the node address is 127.0.0.1 itself; any other
# address, 127.0.0.2 included, makes them listen on every interface. `connect` keeps Ray from
# rewriting 127.0.0.1 to the network address. TAUGATE_RAY_NODE_IP overrides it (at that cost).
LOCAL_NODE_IP = os.environ.get("TAUGATE_RAY_NODE_IP", "127.0.0.1")


# True once this driver started its own Ray: its exit then runs the interpreter's full shutdown,
# during which the last of Ray's worker processes end (study.cli.main.main)
started_local_ray = False


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when a `host:port` cluster address does not answer: Ray's own
    connection attempt retries for minutes before it gives up."""
    if not address or address == "auto":
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address {address!r}: expected host:port (for example 127.0.0.2:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ClusterError(f"cannot reach the Ray cluster at {address} ({err.strerror or err}); check the address "
                           "and that the head node is up") from None  # fmt: skip


def is_loopback(host: str) -> bool:
    from ray._common.network_utils import is_localhost

    return is_localhost(host)


def cluster_address(address: str | None) -> str | None:
    """The `host:port` a driver joins: --address, else RAY_ADDRESS; `auto` is the cluster `ray start`
    (or `taugate cluster start`) last started on this machine, as Ray records it."""
    from ray._private.services import get_ray_address_from_environment

    if address in (None, "auto"):
        try:
            found = get_ray_address_from_environment(address or "auto", None)
        except ConnectionError:
            raise ClusterError("--address auto: no Ray cluster is running on this machine; start one with "
                               "`taugate cluster start` or name its address") from None  # fmt: skip
        return None if found in (None, "auto") else found
    return address


def connect(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    global started_local_ray
    quiet = {"log_to_driver": False, "logging_level": "warning"}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        started_local_ray = True
        from study.cluster.warm import worker_environment

        os.environ.update(worker_environment())  # the node's workers inherit it: they import torch when born
        with single_node_on_loopback(LOCAL_NODE_IP):
            ray.init(address="local", _node_ip_address=LOCAL_NODE_IP, include_dashboard=False, **quiet)
    else:
        target = cluster_address(address)
        check_reachable(target)
        host = target.split("://")[-1].rpartition(":")[0] if target else ""
        loopback = {"_node_ip_address": host} if host and is_loopback(host) else {}
        try:  # an existing cluster, or the one a Ray Job runs on
            # a cluster on 127.0.0.1 (`taugate cluster start`) listens on loopback only: keep Ray
            # from rewriting the address (and this driver's node address) to the network address
            with single_node_on_loopback(host if loopback else ""):
                ray.init(address=address, **loopback, **quiet)
        except ConnectionError as err:
            raise ClusterError(
                f"cannot connect to the Ray cluster at {address or os.environ.get('RAY_ADDRESS')} ({err}); check the "
                "address and that this machine has the cluster's auth token (~/.ray/auth_token or RAY_AUTH_TOKEN)"
            ) from None


def shutdown_local_ray(address: str | None) -> None:
    """Stop the Ray this driver started (a cluster's Ray is not ours to stop)."""
    import ray

    from study.processes import descendants, end_processes

    if address is None and not os.environ.get("RAY_ADDRESS") and ray.is_initialized():
        ours = descendants(os.getpid())  # the Ray this driver started: GCS, raylet, workers, agents
        ray.shutdown()
        end_processes(ours)
