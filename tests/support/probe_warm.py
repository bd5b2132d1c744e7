"""Run by tests/study/test_warm_cluster.py in a pytest session of its own (not collected by the suite:
its name does not start with test_): starts the session's warm cluster, writes the cluster's
processes to $TAUGATE_PROBE_PIDS, then passes at once or waits to be interrupted."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

# Ctrl-C as a terminal delivers it: a process started by one that ignores SIGINT inherits the ignore,
# and Python then installs no KeyboardInterrupt handler (in the full suite some earlier in-process
# command leaves the test process ignoring SIGINT), so the probe takes Python's own handler back.
signal.signal(signal.SIGINT, signal.default_int_handler)


def test_start_the_warm_cluster_and_record_its_processes(warm_cluster):
    out = Path(os.environ["TAUGATE_PROBE_PIDS"])
    out.write_text(json.dumps({"tree": warm_cluster.tree(), "watchdog": warm_cluster.watchdog.pid}))
    if os.environ.get("TAUGATE_PROBE_WAIT"):
        (out.parent / "ready").touch()
        time.sleep(300)  # until the outer test interrupts or kills this session
