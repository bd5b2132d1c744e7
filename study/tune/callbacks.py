"""Ray Tune callbacks on the driver: MLflow logging, live progress and where trials resumed.

Tune pickles its run config (callbacks included) into the experiment folder, so each callback
keeps only plain settings and builds its clients and console on first use.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from ray import tune
from rich.console import Console
from rich.text import Text

from study.folder.filenames import CONFIG_FILE
from study.folder.storage import TrialLedger
from study.spec.plan import member_config, run_name, table_columns, trial_key
from study.tracking.tracker import Tracker
from study.tune.trainable import split_config
from trainables.config import ConfigError


class _Lazy(tune.Callback):
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("console", "tracker", "worker")}

    @cached_property
    def console(self) -> Console:
        return Console(stderr=True, soft_wrap=True)


def finished_keys(result: dict[str, Any]) -> list[str]:
    """The study trials a Tune trial's last result accounts for: its final result's keys, or a
    stopped trial's (the members of its last epoch result)."""
    if result.get("member_keys") or result.get("trial_key"):
        return list(result.get("member_keys") or [result["trial_key"]])
    return [entry["trial_key"] for entry in result.get("members_epoch", [])]


def stopped_early(result: dict[str, Any]) -> bool:
    """A Tune trial that ended on an epoch result, not its final one, and not because the study was
    interrupted: the scheduler stopped it."""
    from study.cluster.interrupt import received

    return not result.get("member_keys") and not result.get("trial_key") and bool(result.get("members_epoch")) \
        and received() is None  # fmt: skip


class SchedulerStops(tune.Callback):
    """Writes the ledger entries (status `stopped`) of the trials an early-stopping scheduler
    stopped, before the tracking and progress callbacks read the ledger. Stateless."""

    def __init__(self, study_dir: Path):
        self.study_dir = Path(study_dir)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        from study.tune.epoch_reports import record_stopped

        result = trial.last_result or {}
        if stopped_early(result):
            base, variant = split_config(trial.config)
            members = [(member, member_config(base, member)) for member in variant.get("members", [variant])]
            record_stopped(self.study_dir, members, result, base)


class ResumeNotes(_Lazy):
    """Says on the driver's console where a trial resumed from a checkpoint and which checkpoints it
    passed over (damaged, another trial's): the trainable notes it in its first result
    (study.tune.epoch_reports.TuneProgress), as the workers' own output does not reach the driver."""

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if "resumed_after_epoch" not in result:
            return
        for skipped in result.get("checkpoints_skipped", []):
            self.console.print(Text.assemble(("warning:", "yellow"), f" trial {trial}: checkpoint skipped: {skipped}"),
                               highlight=False)  # fmt: skip
        if result.get("resumed_from"):
            said = f"resumed after epoch {result['resumed_after_epoch']} from {result['resumed_from']}"
        else:
            said = "no usable checkpoint; it starts at epoch 1"
        self.console.print(f"trial {trial}: {said}", highlight=False, markup=False)


class Batches:
    """A background thread that hands what is put to it to `flush` in batches of at most `most`, in order: a
    batch closes `wait_s` after its first item, at `most` items, or when the queue is closed (`close` waits
    for the last)."""

    def __init__(self, flush: Callable[[list[Any]], None], wait_s: float, most: int, name: str):
        self.flush, self.wait_s, self.most = flush, wait_s, most
        self._items: list[Any] = []
        self._closed = False
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()

    def _take(self) -> list[Any] | None:
        with self._ready:
            while not self._items and not self._closed:
                self._ready.wait()
            if not self._items:
                return None
            deadline = time.monotonic() + self.wait_s
            while len(self._items) < self.most and not self._closed and (left := deadline - time.monotonic()) > 0:
                self._ready.wait(left)
            batch, self._items = self._items[: self.most], self._items[self.most :]
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            self.flush(batch)


class TrackingCallback(_Lazy):
    """Logs each finished trial as an MLflow child run, off Tune's event loop: finished trials queue up
    and a background thread logs them in batches (`Tracker.log_trials`: one transaction per batch in a
    SQLite store), so a run appears in MLflow within about `WAIT_S` of its trial's end. A tracking
    outage is one warning, never a failed study: after the first failure logging stops, the ledger keeps
    every result, and the end of the run (or `taugate track`) backfills."""

    WAIT_S, MOST = 2.0, 500  # a batch closes this long after its first trial, or at this many trials

    def __init__(self, study_dir: Path, tracking_uri: str | None, study: dict[str, Any]):
        self.study_dir, self.tracking_uri, self.study = Path(study_dir), tracking_uri, study
        self.down = False

    @cached_property
    def tracker(self) -> Tracker:
        return Tracker(self.study_dir, self.tracking_uri, self.study["experiment_name"])

    @cached_property
    def worker(self) -> Batches:
        return Batches(self._flush, self.WAIT_S, self.MOST, name="taugate-tracking")

    def _flush(self, batch: list[tuple[str, tuple]]) -> None:
        """Log a batch in order: runs of consecutive finished trials together, each failure on its own. Building
        the client (a URI whose driver is missing, an unreachable server) fails inside the guard too."""
        finished: list[tuple] = []
        try:
            for kind, args in [*batch, ("end", ())]:
                if self.down:
                    return
                if kind == "trial":
                    finished.append(args)
                    continue
                if finished:
                    self.tracker.log_trials(self.study, finished)
                    finished = []
                if kind == "failure":
                    self.tracker.log_failure(self.study, *args)
        except Exception as err:  # noqa: BLE001 - any tracking failure must not stop the study
            self.down = True
            self.console.print(
                f"[yellow]warning:[/] MLflow tracking at {self.tracking_uri} failed ({type(err).__name__}: "
                f"{str(err)[:200]}); the study goes on, results stay in the study folder, and "
                "`taugate track` backfills the runs",
                highlight=False,
            )

    def on_experiment_end(self, trials: list, **info) -> None:
        self.worker.close()

    def sound_tracker(self) -> Tracker | None:
        """The tracker that logged this experiment's runs when nothing failed (its `written` spares the
        end-of-study `sync` reading them back), else None."""
        return None if self.down or "tracker" not in self.__dict__ else self.tracker

    def _finished(self, ledger: TrialLedger, key: str) -> bool:
        metrics = ledger.finished(key)
        if metrics is None:
            return False
        record = json.loads((ledger.trial_dir(key) / CONFIG_FILE).read_text())
        self.worker.put(("trial", (key, record, metrics)))
        return True

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        ledger = TrialLedger(self.study_dir)
        for key in finished_keys(trial.last_result or {}):  # a fused trial: one MLflow run per member
            self._finished(ledger, key)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        """A FAILED run for each member that never reached the ledger, keyed by its trial key (so a
        later success replaces it); members that did run (an Optuna objective failed after them)
        are logged with their own results."""
        base, variant = split_config(trial.config)
        error = str(getattr(trial, "error_msg", None) or "trial failed")
        ledger = TrialLedger(self.study_dir)
        for member in variant.get("members", [variant]):
            try:  # named and grouped as its finished siblings (defaults included), as the plan names it
                config = member_config(base, member)
                key, columns = trial_key(config), table_columns(config, member, base)
            except ConfigError:
                key, columns = f"error:{run_name(member)}", member
            if not self._finished(ledger, key):
                self.worker.put(("failure", (key, run_name(member), base | member, columns, error)))


class ProgressCallback(_Lazy):
    """A status line whenever a trial starts, finishes or fails: done, running, failed, time left.
    Counts are study trials: a fused Tune trial counts as its members.

    The line for a finished trial waits until Tune has started what takes its place (or for a
    second in which nothing started), so that "running" counts what runs: printed at the moment of
    completion it would miss the next trial, which a searcher (Optuna) only suggests afterwards. In
    an Optuna study (`drawn`) a trial whose every member the ledger already held is a repeated draw
    of a finished configuration: it adds nothing, and the total drops by its members."""

    SETTLE_S = 1.0  # how long a finished trial's line waits for the next trial to start

    def __init__(self, total: int, already_done: int = 0, drawn: bool = False):
        self.total, self.done, self.running, self.failed = total, already_done, 0, 0
        self.started, self.done_this_run, self.drawn = time.monotonic(), 0, drawn
        self.due: float | None = None  # when a finished trial's line became due

    @staticmethod
    def _members(trial) -> int:
        return len(split_config(trial.config)[1].get("members", [None]))

    def _print(self) -> None:
        self.due = None
        elapsed = time.monotonic() - self.started
        remaining = self.total - self.done - self.failed
        left = f"~{elapsed / self.done_this_run * remaining:.0f}s left" if self.done_this_run else "estimating"
        self.console.print(
            f"[{elapsed:6.1f}s] {self.done}/{self.total} done, {self.running} running, {self.failed} failed, {left}",
            highlight=False,
        )

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self.running += self._members(trial)
        if self.due is not None or (self.done_this_run == 0 and self.failed == 0):
            self._print()  # the first wave, or the trial that took a finished one's place

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if self.due is not None and time.monotonic() - self.due > self.SETTLE_S:
            self._print()  # nothing started in its place

    def on_experiment_end(self, trials: list, **info) -> None:
        if self.due is not None:
            self._print()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        members = self._members(trial)
        self.running = max(0, self.running - members)
        result = trial.last_result or {}
        if not result.get("trial_key") and not result.get("member_keys") and not stopped_early(result):
            return  # stopped by an interrupt (or before it reported): still to run, not done
        if self.drawn and all(member.get("reused") for member in result.get("members") or [result]):
            self.total -= members  # a repeated draw: its configuration was counted when it first finished
        else:
            self.done, self.done_this_run = self.done + members, self.done_this_run + members
        self.due = self.due or time.monotonic()

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        members = self._members(trial)
        self.running, self.failed = max(0, self.running - members), self.failed + members
        self.due = self.due or time.monotonic()

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        # a failed attempt Tune retries: it stops running now and counts again when it restarts
        self.running = max(0, self.running - self._members(trial))


class StopOnSignal(tune.Stopper):
    """Stops every trial once the driver got SIGINT or SIGTERM (`study.cluster.interrupt`): Tune checks
    `stop_all` on each step of its loop, stops running trials and starts no new ones. Stateless,
    so Tune can pickle it into the experiment folder."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        from study.cluster.interrupt import received

        return received() is not None
