"""Foundation training, specialisation, evaluation and neuron-level gate statistics."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import STRONG_ACTIVATION_LEVEL, TrialConfig
from trainables.data import Mode, mixture
from trainables.epochs import EpochHook, TrainState
from trainables.methods import adapt, specialisation_lr
from trainables.methods.taugate import GatedReLU, mean_soft_gate, set_hard
from trainables.model import MLP
from trainables.optim import Adam


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
    a non-finite epoch stops training and is reported as diverged. `hook` (trainables.epochs)
    is told each epoch's loss and may resume training from a saved state.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params or epochs == 0:
        with torch.no_grad():
            return FitResult(final_loss=F.cross_entropy(model(x), y).item())
    optimizer = Adam(params, lr)  # torch.optim.Adam's arithmetic, bit for bit (trainables/optim.py)
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
    (`hook(model)` builds the epoch hook of the adapted model, see trainables.epochs)."""
    model = adapt(foundation, config)
    result = fit(
        model, target.train_x, target.train_y, epochs=config.epochs, lr=specialisation_lr(config),
        batch_size=config.batch_size, seed=config.seed,
        sparsity_weight=config.sparsity_weight if config.gated else 0.0, hook=hook(model) if hook else None,
    )  # fmt: skip
    model.eval()
    return model, result


def split_of(mode: Mode, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A mode's `test` or `val` digits and labels (never its training digits)."""
    if split == "test":
        return mode.test_x, mode.test_y
    if split == "val":
        return mode.val_x, mode.val_y
    raise ValueError(f"split: {split!r} is not 'test' or 'val'")


@torch.no_grad()
def evaluate(model: nn.Module, mode: Mode, hard: bool = False, split: str = "test") -> float:
    """Accuracy on one mode's test (or validation) digits; `hard` evaluates with step gates 1[z > tau]."""
    x, y = split_of(mode, split)
    set_hard(model, hard)
    try:
        return (model(x).argmax(1) == y).float().mean().item()
    finally:
        set_hard(model, False)


@dataclass
class GateStats:
    """Per-neuron firing on one mode's test digits (hard gates)."""

    rate: list[list[float]]  # [layer][neuron]: fraction of digits on which the neuron fires
    rate_by_class: list[list[list[float]]]  # [layer][class][neuron]
    # Readings of "high activation" (the paper leaves it undefined), each averaged over hidden units
    # and digits. A soft gate above 0.5 is the hard gate (sigmoid(s(z - tau)) > 0.5 iff z > tau).
    high_activation_ratio: float | None  # hard gate on, z > tau (gated methods)
    active_ratio: float  # hard-gated activation non-zero: ReLU on and, for gated methods, gate on
    strong_activation_ratio: float  # hard-gated activation gamma * 1[z > tau] * relu(z) > STRONG_ACTIVATION_LEVEL
    mean_gate: float | None  # mean soft gate


@torch.no_grad()
def gate_statistics(model: MLP, mode: Mode, split: str = "test") -> GateStats:
    """Which neurons fire on a mode's test (or validation) digits: a neuron fires when its
    hard-gated activation is non-zero (ReLU on and, for gated methods, z above tau)."""
    x, y = split_of(mode, split)
    _, pre_activations = model.trace(x)
    fires, strong, gate_on, soft = [], [], [], []
    for z, activation in zip(pre_activations, model.activations, strict=True):
        on, value = z > 0, torch.relu(z)
        if isinstance(activation, GatedReLU):
            value = value * activation.gamma
            if activation.has_gate:
                hard = activation.gate(z, hard=True).bool()
                gate_on.append(hard)
                soft.append(activation.gate(z, hard=False))
                on = on & hard
                value = value * hard
        fires.append(on.float())
        strong.append(value > STRONG_ACTIVATION_LEVEL)
    classes = int(y.max().item()) + 1
    by_class = [
        [layer[y == c].mean(0).tolist() if (y == c).any() else [0.0] * layer.shape[1] for c in range(classes)]
        for layer in fires
    ]
    return GateStats(
        rate=[layer.mean(0).tolist() for layer in fires],
        rate_by_class=by_class,
        high_activation_ratio=torch.cat(gate_on, dim=1).float().mean().item() if gate_on else None,
        active_ratio=torch.cat(fires, dim=1).mean().item(),
        strong_activation_ratio=torch.cat(strong, dim=1).float().mean().item(),
        mean_gate=torch.cat(soft, dim=1).mean().item() if soft else None,
    )
