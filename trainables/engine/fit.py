"""Foundation training, specialisation, evaluation and neuron-level gate statistics."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import TrialConfig
from trainables.data import Mode, mixture
from trainables.engine.optim import Adam
from trainables.engine.resume import EpochHook, TrainState
from trainables.methods import adapt, specialisation_lr
from trainables.methods.taugate.gate import mean_soft_gate
from trainables.model import MLP


@dataclass
class FitResult:
    final_loss: float | None  # mean training loss of the last epoch (None when diverged)
    diverged_at_step: int | None = None


def fit(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
    epochs: int, lr: float, batch_size: int, seed: int, sparsity_weight: float = 0.0,
    hook: EpochHook | None = None,
) -> FitResult:  # fmt: skip
    """Adam on the trainable tensors; batches are index slices of tensors already on the device.

    The loss is summed on the device and checked once per epoch (no per-step host sync);
    a non-finite epoch stops training and is reported as diverged. `hook` (trainables.engine.resume)
    is told each epoch's loss and may resume training from a saved state.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params or epochs == 0:
        with torch.no_grad():
            return FitResult(final_loss=F.cross_entropy(model(x), y).item())
    optimizer = Adam(params, lr)  # torch.optim.Adam's arithmetic, bit for bit (trainables/engine/optim.py)
    generator = torch.Generator().manual_seed(seed)
    n, step, first, epoch_loss = len(y), 0, 0, None
    if hook is not None and (state := hook.resume()) is not None:
        state.restore(optimizer, [generator])
        first, step, epoch_loss = state.epoch, state.step, state.final[0]
    model.train()
    for epoch in range(first, epochs):
        order = torch.randperm(n, generator=generator).to(x.device)
        total = torch.zeros((), device=x.device)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(x[index]), y[index])
            if sparsity_weight > 0:
                loss = loss + sparsity_weight * mean_soft_gate(model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(index)
            step += 1
        epoch_loss = (total / n).item()
        if not math.isfinite(epoch_loss):
            return FitResult(final_loss=None, diverged_at_step=step)
        if hook is not None:
            model.eval()
            snapshot = partial(TrainState.capture, epoch + 1, step, optimizer, [generator], [epoch_loss], [None])
            hook.after_epoch(epoch + 1, [epoch_loss], snapshot)
            model.train()
    model.eval()
    return FitResult(final_loss=epoch_loss)


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
        sparsity_weight=config.sparsity_weight if config.gated else 0.0, hook=hook(model) if hook else None,
    )  # fmt: skip
    model.eval()
    return model, result
