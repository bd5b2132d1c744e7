"""Ctrl-C (SIGINT) and SIGTERM stop a study; they do not fail it.

The first signal is recorded and the driver winds down: Tune stops its trials at its next step
(`study.tune.callbacks.StopOnSignal`), finished trials stay in the ledger, the MLflow parent run is
marked KILLED, Ray is shut down and the CLI exits 128 + the signal (130, 143) with the
`taugate resume` command. A second signal stops at once (KeyboardInterrupt); the ledger is
still consistent, since a trial is only ever recorded whole.

Tune's own SIGINT handler (which prints `Tuner.restore(...)`, not how this service resumes) is
switched off in `study.environment` with TUNE_DISABLE_SIGINT_HANDLER.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []
_handlers: list[Callable[[int, object], None]] = []


def received() -> int | None:
    """The first stop signal this process got, or None."""
    return _received[0] if _received else None


def exit_code(signum: int) -> int:
    return 128 + signum


def name(signum: int) -> str:
    return signal.Signals(signum).name


def install(notify: Callable[[int], None] | None = None) -> None:
    """Route SIGINT and SIGTERM to a clean stop (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: object) -> None:
        if _received:  # a second signal: stop at once
            raise KeyboardInterrupt
        _received.append(signum)
        if notify is not None:
            notify(signum)

    _handlers[:] = [stop]
    reinstall()


def reinstall() -> None:
    """Put the handlers back: `ray.init` installs its own SIGTERM handler (it logs a stack and
    dies), so the driver calls this once Ray is up."""
    if _handlers and threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _handlers[0])


def reset() -> None:
    """Forget a received signal (tests that call the CLI in-process)."""
    _received.clear()
