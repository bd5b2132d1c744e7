"""Training: the one training loop (a lone trial or a fused group), foundation training and specialisation."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import TrialConfig
from trainables.data import Mode, mixture
from trainables.engine.optim import Adam
from trainables.engine.resume import EpochHook, TrainState
from trainables.methods import adapt, specialisation_lr
from trainables.methods.taugate.control import SparsityControl
from trainables.methods.taugate.gate import gates, mean_soft_gate
from trainables.model import MLP


@dataclass
class FitResult:
    final_loss: float | None  # mean training loss of the last epoch (None when diverged)
    diverged_at_step: int | None = None
    steps: int = 0  # optimiser steps taken
    sparsity_weight: float | None = None  # lambda at the end, when a sparsity target adapted it


class Trainee(Protocol):
    """What `train` trains: `members` models (one trial, or a fused group) whose trainable tensors are
    `params` (stacked with a leading member dimension when fused)."""

    members: int
    params: list[torch.Tensor]
    multipliers: list[list[float]] | None  # per tensor of `params`, each member's lr factor (None: all 1)
    control: SparsityControl | None  # lambda adapted toward a sparsity target (None: lambda fixed or absent)

    def losses(self, index: torch.Tensor) -> torch.Tensor:
        """Each member's loss on its batch: `index` [members, batch] rows of the training set -> [members]."""

    def pause(self) -> None:
        """Before the epoch hook: the members' models hold their tensors, ready to evaluate."""

    def resume(self) -> None:
        """After the epoch hook: back to training."""


def train(
    trainee: Trainee, n: int, device: torch.device, *, epochs: int, lrs: Sequence[float], batch_size: int,
    seeds: Sequence[int], hook: EpochHook | None = None,
) -> list[FitResult]:  # fmt: skip
    """The training loop, written once for a lone trial and a fused group: Adam on the trainable tensors
    (member k at lrs[k]); member k's batches are slices of its own random order of the `n` training
    rows (a generator seeded by seeds[k]). Losses are summed on the device and checked once per epoch
    (no per-step host sync): a member whose epoch loss is not finite is reported diverged and left out
    (no tensor mixes members in the backward pass, so the others go on), and training stops when every
    member diverged. `hook` (trainables.engine.resume) is told each epoch's losses (None for a diverged
    member) and may resume training from a saved state."""
    members = trainee.members
    # torch.optim.Adam's arithmetic, bit for bit (engine/optim.py)
    optimizer = Adam(trainee.params, list(lrs), trainee.multipliers)
    control = trainee.control
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    step, first = 0, 0
    diverged: list[int | None] = [None] * members
    final: list[float | None] = [None] * members
    if hook is not None and (state := hook.resume()) is not None:
        state.restore(optimizer, generators, control)
        first, step, final, diverged = state.epoch, state.step, list(state.final), list(state.diverged)
    trainee.resume()
    for epoch in range(first, epochs):
        orders = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
        total = torch.zeros(members, device=device)
        for start in range(0, n, batch_size):
            index = orders[:, start : start + batch_size]
            losses = trainee.losses(index)
            optimizer.zero_grad()
            losses.sum().backward()  # each member's gradient is exactly its own loss's
            optimizer.step()
            total += losses.detach() * index.shape[1]
            step += 1
        for k, value in enumerate((total / n).tolist()):  # one host sync per epoch
            if diverged[k] is None:
                final[k] = value if math.isfinite(value) else None
                diverged[k] = None if math.isfinite(value) else step
        if all(d is not None for d in diverged):
            break
        if hook is not None:
            trainee.pause()
            losses_now = [loss if d is None else None for loss, d in zip(final, diverged, strict=True)]
            snapshot = partial(TrainState.capture, epoch + 1, step, optimizer, generators, list(final), list(diverged),
                               control)  # fmt: skip
            hook.after_epoch(epoch + 1, losses_now, snapshot)
            trainee.resume()
    trainee.pause()
    weights = control.weights() if control is not None else [None] * members
    return [
        FitResult(final_loss=loss, diverged_at_step=d, steps=step, sparsity_weight=w)
        for loss, d, w in zip(final, diverged, weights, strict=True)
    ]


def tau_multipliers(params: Sequence[torch.Tensor], taus: Sequence[torch.Tensor], factors: Sequence[float]):
    """Adam's per-tensor factors: `factors` (one per member) for the tensors among `taus`, 1 for the rest;
    None when every factor is 1."""
    if all(f == 1.0 for f in factors):
        return None
    ones = [1.0] * len(factors)
    return [list(factors) if any(p is t for t in taus) else ones for p in params]


class _Alone:
    """One model as a trainee: its own forward, its mean batch loss plus lambda * mean(g) (lambda fixed,
    or adapted by `control` toward a sparsity target)."""

    members = 1

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, sparsity_weight: float,
                 tau_lr_multiplier: float = 1.0, control: SparsityControl | None = None) -> None:  # fmt: skip
        self.model, self.x, self.y, self.sparsity_weight = model, x, y, sparsity_weight
        self.params = [p for p in model.parameters() if p.requires_grad]
        taus = [g.tau for g in gates(model) if g.tau.requires_grad]
        self.multipliers = tau_multipliers(self.params, taus, [tau_lr_multiplier])
        self.control = control

    def losses(self, index: torch.Tensor) -> torch.Tensor:
        rows = index[0]
        loss = F.cross_entropy(self.model(self.x[rows]), self.y[rows])
        if self.control is not None:
            soft = [g.last_gate for g in gates(self.model)]
            loss = loss + self.control.term(soft)[0]
            self.control.update(soft)
        elif self.sparsity_weight > 0:
            loss = loss + self.sparsity_weight * mean_soft_gate(self.model)
        return loss.reshape(1)

    def pause(self) -> None:
        self.model.eval()

    def resume(self) -> None:
        self.model.train()


def fit(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
    epochs: int, lr: float, batch_size: int, seed: int, sparsity_weight: float = 0.0,
    tau_lr_multiplier: float = 1.0, control: SparsityControl | None = None, hook: EpochHook | None = None,
) -> FitResult:  # fmt: skip
    """Train one model (`train`, batches as index slices of tensors already on the device); a model
    with nothing to train, or no epochs, gets the loss of the model as it is. `tau_lr_multiplier`
    scales tau's learning rate; `control` adapts lambda toward a sparsity target (it then replaces
    `sparsity_weight`)."""
    trainee = _Alone(model, x, y, sparsity_weight, tau_lr_multiplier, control)
    if not trainee.params or epochs == 0:
        with torch.no_grad():
            return FitResult(final_loss=F.cross_entropy(model(x), y).item())
    return train(trainee, len(y), x.device, epochs=epochs, lrs=[lr], batch_size=batch_size, seeds=[seed],
                 hook=hook)[0]  # fmt: skip


def train_foundation(config: TrialConfig, modes: dict[float, Mode]) -> MLP:
    """The MLP pretrained on the mixture of modes (50/50 over 0 and 45 degrees by default)."""
    torch.manual_seed(config.seed)
    model = MLP(hidden=config.hidden).to(next(iter(modes.values())).train_x.device)
    x, y = mixture(modes, config.foundation_weights, config.seed, config.angles)
    fit(model, x, y, epochs=config.foundation_epochs, lr=config.foundation_lr,
        batch_size=config.foundation_batch_size, seed=config.seed)  # fmt: skip
    model.eval()
    return model


def specialise(
    foundation: MLP, config: TrialConfig, target: Mode, hook: Callable[[MLP], EpochHook] | None = None
) -> tuple[MLP, FitResult]:
    """Adapt a copy of the frozen foundation to the target mode with the configured method
    (`hook(model)` builds the epoch hook of the adapted model, see trainables.engine.resume)."""
    model = adapt(foundation, config)
    result = fit(
        model, target.train_x, target.train_y, epochs=config.epochs, lr=specialisation_lr(config),
        batch_size=config.batch_size, seed=config.seed,
        sparsity_weight=config.sparsity_weight if config.gated else 0.0, tau_lr_multiplier=config.tau_lr_multiplier,
        control=SparsityControl.of([config], target.train_x.device, target.train_x.dtype),
        hook=hook(model) if hook else None,
    )  # fmt: skip
    model.eval()
    return model, result
