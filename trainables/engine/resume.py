"""Per-epoch progress of a trial: what each epoch reports, and the state that resumes training.

`fit` and `fit_fused` call an `EpochHook` after every specialisation epoch with each model's
epoch loss and a `TrainState` snapshot function; the trial evaluates the target mode's
validation digits and hands an `EpochRecord` per model to whoever runs it (the study reports
them to Ray Tune). A hook may return a saved `TrainState` from `resume()`, and training then
continues after that epoch exactly as if it had never stopped: the trainable tensors, Adam's
moments and step count, every batch-order generator and the divergence bookkeeping are restored.
It may instead return a `Resumption` (several saved states, best first): the first that loads and
fits is restored, the others are noted and passed over, and without one training starts at epoch 1.

A `TrainState` is saved as `state.safetensors` (tensors, generator states as uint8) plus
`state.json` (epoch counters), so a checkpoint is readable without pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # torch comes with a saved state's tensors: a study's driver reads histories without it
    import torch

    from trainables.engine.optim import Adam
    from trainables.methods.taugate.control import SparsityControl

STATE_TENSORS, STATE_JSON = "state.safetensors", "state.json"
HISTORY_FILE = "history.json"  # a trial's learning curve in its folder: {"epochs": [EpochRecord.to_dict(), ...]}


@dataclass
class EpochRecord:
    """One model's epoch: `loss` is its mean training loss (None once diverged), `val_acc` its
    accuracy on the target mode's validation digits (the trial's `val_acc_<target>`)."""

    epoch: int
    loss: float | None
    val_acc: float | None
    seconds: float  # since the trial's training started (a resumed trial counts from its restart)
    diverged: bool = False
    val_acc_hard: float | None = None  # hard gates (gated methods)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and not (k == "diverged" and not v)}


@dataclass
class TrainState:
    """Everything `fit`/`fit_fused` needs to continue after `epoch` epochs."""

    epoch: int
    step: int
    params: list[torch.Tensor]  # the optimiser's tensors, in its order
    exp_avg: list[torch.Tensor]
    exp_avg_sq: list[torch.Tensor]
    adam_steps: int
    generators: list[torch.Tensor]  # torch.Generator.get_state() per model
    final: list[float | None] = field(default_factory=list)  # per model: last finite epoch loss
    diverged: list[int | None] = field(default_factory=list)  # per model: the step it diverged at
    sparsity_weights: list[float] | None = None  # SparsityControl.state(): each model's integral, then its lambda

    @classmethod
    def capture(cls, epoch: int, step: int, optimizer: Adam, generators: Sequence[torch.Generator],
                final: Sequence[float | None], diverged: Sequence[int | None],
                control: SparsityControl | None = None) -> TrainState:  # fmt: skip
        return cls(
            epoch=epoch, step=step,
            params=[p.detach().clone() for p in optimizer.params],
            exp_avg=[t.clone() for t in optimizer.exp_avg], exp_avg_sq=[t.clone() for t in optimizer.exp_avg_sq],
            adam_steps=optimizer.steps, generators=[g.get_state() for g in generators],
            final=list(final), diverged=list(diverged),
            sparsity_weights=control.state() if control is not None else None,
        )  # fmt: skip

    def check(
        self, optimizer: Adam, generators: Sequence[torch.Generator], control: SparsityControl | None = None
    ) -> None:
        """Raise ValueError unless this state fits the trial whole (tensor counts and shapes, generators,
        sparsity control): `restore` checks before it copies anything, so a state that does not fit
        leaves the trial untouched."""
        import torch

        if len(self.params) != len(optimizer.params) or len(self.generators) != len(generators):
            raise ValueError(
                f"checkpoint: {len(self.params)} tensors and {len(self.generators)} generators, but the trial has "
                f"{len(optimizer.params)} and {len(generators)} (another method or model shape?)"
            )
        for name, saved_series in (("tensor", self.params), ("Adam moment", self.exp_avg),
                                   ("Adam moment", self.exp_avg_sq)):  # fmt: skip
            if len(saved_series) != len(optimizer.params):
                raise ValueError(f"checkpoint: {len(saved_series)} {name}s, the trial has {len(optimizer.params)}")
            for live, saved in zip(optimizer.params, saved_series, strict=True):
                if live.shape != saved.shape:
                    raise ValueError(f"checkpoint: a {name} of shape {tuple(saved.shape)}, the trial's is "
                                     f"{tuple(live.shape)}")  # fmt: skip
        for generator, state in zip(generators, self.generators, strict=True):
            if state.dtype != torch.uint8 or state.numel() != generator.get_state().numel():
                raise ValueError("checkpoint: a batch-order generator state of another size or type")
        if (control is None) != (self.sparsity_weights is None):
            raise ValueError("checkpoint: saved with and resumed without a sparsity target (or the reverse)")
        if control is not None and len(self.sparsity_weights) != 2 * control.members:
            raise ValueError(f"checkpoint: sparsity control of {len(self.sparsity_weights) // 2} members, the trial "
                             f"has {control.members}")  # fmt: skip
        if len(self.final) != len(generators) or len(self.diverged) != len(generators):
            raise ValueError(f"checkpoint: {len(self.final)} models' losses, the trial has {len(generators)}")

    def restore(
        self, optimizer: Adam, generators: Sequence[torch.Generator], control: SparsityControl | None = None
    ) -> None:
        """Put the saved tensors into the live optimiser's tensors (in place: models share them), once
        `check` found that the whole state fits."""
        import torch

        self.check(optimizer, generators, control)
        with torch.no_grad():
            for live, saved in zip(optimizer.params, self.params, strict=True):
                live.copy_(saved)
            for live, saved in zip(optimizer.exp_avg, self.exp_avg, strict=True):
                live.copy_(saved)
            for live, saved in zip(optimizer.exp_avg_sq, self.exp_avg_sq, strict=True):
                live.copy_(saved)
        optimizer.steps = self.adam_steps
        if control is not None:
            control.load_state(self.sparsity_weights)
        for generator, state in zip(generators, self.generators, strict=True):
            generator.set_state(state)

    def save(self, folder: Path | str) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for name, values in (("param", self.params), ("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq),
                             ("generator", self.generators)):  # fmt: skip
            tensors |= {f"{name}.{i}": t.detach().cpu().contiguous() for i, t in enumerate(values)}
        save_file(tensors, str(folder / STATE_TENSORS))
        meta = {"epoch": self.epoch, "step": self.step, "adam_steps": self.adam_steps, "final": self.final,
                "diverged": self.diverged, "tensors": len(self.params), "generators": len(self.generators),
                "sparsity_weights": self.sparsity_weights}  # fmt: skip
        (folder / STATE_JSON).write_text(json.dumps(meta))
        return folder

    @classmethod
    def load(cls, folder: Path | str, device: torch.device | str = "cpu") -> TrainState:
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = json.loads((folder / STATE_JSON).read_text())
        tensors = load_file(str(folder / STATE_TENSORS))

        def series(name: str, count: int, where: torch.device | str) -> list[torch.Tensor]:
            return [tensors[f"{name}.{i}"].to(where) for i in range(count)]

        n = meta["tensors"]
        return cls(
            epoch=meta["epoch"], step=meta["step"], adam_steps=meta["adam_steps"],
            params=series("param", n, device), exp_avg=series("exp_avg", n, device),
            exp_avg_sq=series("exp_avg_sq", n, device), generators=series("generator", meta["generators"], "cpu"),
            final=meta["final"], diverged=meta["diverged"], sparsity_weights=meta.get("sparsity_weights"),
        )  # fmt: skip


class SavedState(Protocol):
    """A saved state a trial may resume from, loaded only when tried; `str()` names it in a note."""

    def load(self) -> TrainState: ...


class Resumption:
    """Where a trial may resume: saved states, best first (e.g. the newest checkpoint, then older ones).
    `restore` (what `fit` calls on a `TrainState`) loads them in turn and restores the first that
    loads and fits the trial whole; each one it passes over (a damaged file, another trial's shapes) is
    noted in `skipped`, never raised. When none fits, the trial starts at epoch 1 (`epoch` stays 0)."""

    def __init__(self, candidates: Sequence[SavedState]) -> None:
        self.candidates = list(candidates)
        self.chosen: SavedState | None = None
        self.skipped: list[str] = []  # "<candidate>: <why>"
        self.epoch, self.step = 0, 0
        self.final: list[float | None] = []
        self.diverged: list[int | None] = []

    def restore(
        self, optimizer: Adam, generators: Sequence[torch.Generator], control: SparsityControl | None = None
    ) -> None:
        for candidate in self.candidates:
            try:
                state = candidate.load()
                state.restore(optimizer, generators, control)  # checks the whole state before it copies
            except Exception as err:  # noqa: BLE001 - any damaged or foreign state is passed over, never fatal
                self.skipped.append(f"{candidate}: {type(err).__name__}: {str(err)[:300]}")
                continue
            self.chosen = candidate
            self.epoch, self.step, self.final, self.diverged = state.epoch, state.step, state.final, state.diverged
            return
        self.final, self.diverged = [None] * len(generators), [None] * len(generators)


def read_history(folder: Path | str) -> list[dict[str, Any]]:
    """A trial folder's epochs (`HISTORY_FILE`); none for old studies, trials that trained no epoch,
    and a torn or foreign file."""
    try:
        epochs = json.loads((Path(folder) / HISTORY_FILE).read_text())["epochs"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not isinstance(epochs, list):
        return []
    return [e for e in epochs if isinstance(e, dict) and isinstance(e.get("epoch"), int)]


class EpochHook(Protocol):
    """What `fit` and `fit_fused` call: `resume()` once before training (a saved state or None),
    then `after_epoch(epoch, losses, snapshot)` after each epoch with one loss per model (None
    for a model that diverged) and a function that captures the training state on demand."""

    def resume(self) -> TrainState | Resumption | None: ...

    def after_epoch(self, epoch: int, losses: list[float | None], snapshot: Callable[[], TrainState]) -> None: ...


class Progress(Protocol):
    """What a trial reports to (`run_trial(progress=)`, `run_fused(progress=)`): `resume()` once
    (a saved state or None), then `report(records, snapshot)` after each epoch with one
    `EpochRecord` per model, in the order of the trial's configs."""

    def resume(self) -> TrainState | Resumption | None: ...

    def report(self, records: list[EpochRecord], snapshot: Callable[[], TrainState]) -> None: ...
