"""The study folder: shared foundations and the ledger of finished trials.

Layout (every node of a cluster must see the same folder):
    spec.yaml, study.json          the spec as run and the study's metadata
    foundations/<key>.safetensors  one foundation per (seed, foundation settings)
    trials/<key>/                  config.json, metrics.json, gate_stats.json, adapter/
    tune/                          the Ray Tune experiment (the standard layout)
    mlflow.db, optuna.db           default tracking store and Optuna storage
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from analysis.table.load import ledger_damage, ledger_entry
from study.folder.filenames import CONFIG_FILE, METRICS_FILE
from study.folder.validate import quarantine
from study.spec.plan import foundation_key, run_name, table_columns
from trainables.config import TrialConfig
from trainables.errors import TauGateError
from trainables.files import DamagedFile, write_json

if TYPE_CHECKING:  # torch's: a trial's worker loads and trains foundations, a study's driver only plans and reads
    from trainables.data import Mode
    from trainables.model import MLP


class StorageError(TauGateError, RuntimeError):
    """The study folder cannot be used (unwritable, full, or not a study)."""


def check_writable(folder: Path) -> None:
    """Fail before any trial starts when the study folder cannot take files."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"\0" * 65536)
        probe.unlink()
    except OSError as err:
        raise StorageError(f"output folder {folder} is not writable ({err.strerror or err})") from None


class FoundationStore:
    """Foundations trained once per key and shared by every trial with that key.

    A file lock makes concurrent trials on any node wait for the one that trains it; a
    process that runs several trials (actor reuse) keeps the last few it used in memory, enough
    for a fused group's seeds (a default MLP's foundation is 0.5 MB).
    """

    KEEP = 8

    def __init__(self, study_dir: Path):
        self.folder = Path(study_dir) / "foundations"
        self._loaded: dict[str, MLP] = {}

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def get(self, config: TrialConfig, modes: dict[float, Mode]) -> MLP:
        from trainables.engine.fit import train_foundation
        from trainables.formats.checkpoints import CheckpointError, load_foundation, save_foundation

        key = foundation_key(config)
        if key in self._loaded:
            self._loaded[key] = self._loaded.pop(key)  # most recently used last
            return self._loaded[key]
        device = next(iter(modes.values())).train_x.device
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        with FileLock(str(path) + ".lock"):
            model = None
            if path.is_file():
                try:
                    model = load_foundation(path, config.hidden).to(device)
                except CheckpointError as err:
                    # a damaged foundation fails every trial that loads it the same way: set it aside and train
                    # it again, once (the next trial finds the new file), instead of Tune's retries of a certain failure
                    kept = quarantine(path)
                    print(f"warning: {err}; set aside as {kept.name} and trained again", file=sys.stderr, flush=True)
            if model is None:
                model = train_foundation(config, modes)
                save_foundation(model, path)
        self._loaded[key] = model
        while len(self._loaded) > self.KEEP:  # keep memory flat: drop the longest unused
            del self._loaded[next(iter(self._loaded))]
        return model


def record_of(variant: dict[str, Any], config: TrialConfig, *, base: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The ledger's config.json of a trial: what ran, its name and results-table columns (`base`: the
    study's shared fields, whose protocol a method's own budget overrides)."""
    return {"variant": variant, "run_name": run_name(variant), "config": config.model_dump(),
            "columns": table_columns(config, variant, base)} | extra  # fmt: skip


class TrialLedger:
    """Finished trials by key. A trial found here is never trained again (resume, retries)."""

    def __init__(self, study_dir: Path):
        self.folder = Path(study_dir) / "trials"

    def trial_dir(self, key: str) -> Path:
        return self.folder / key

    def finished(self, key: str) -> dict[str, Any] | None:
        """The trial's metrics when its entry is complete and valid; None when it is absent or damaged (the
        trial is trained again: `analysis.table.load.ledger_entry` checks both files; `damaged` lists them)."""
        try:
            entry = ledger_entry(self.trial_dir(key))
        except DamagedFile:
            return None
        return None if entry is None else entry[1]

    def record(self, key: str, config: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Atomic writes: a reader (another trial, `taugate status`) never sees half a file."""
        write_json(self.trial_dir(key) / CONFIG_FILE, config)
        write_json(self.trial_dir(key) / METRICS_FILE, metrics)  # written last: its presence means done

    def damaged(self) -> list[DamagedFile]:
        """Every damaged entry of the ledger: each counts as not run."""
        return ledger_damage(self.folder.parent)

    def all_finished(self) -> dict[str, dict[str, Any]]:
        if not self.folder.is_dir():
            return {}
        found = {}
        for folder in sorted(self.folder.iterdir()):
            metrics = self.finished(folder.name)
            if metrics is not None:
                found[folder.name] = metrics
        return found
