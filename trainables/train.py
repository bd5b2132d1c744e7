"""Foundation training, specialisation, evaluation and neuron-level gate statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import TrialConfig
from trainables.data import Mode, mixture
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
) -> FitResult:  # fmt: skip
    """Adam on the trainable tensors; batches are index slices of tensors already on the device.

    The loss is summed on the device and checked once per epoch (no per-step host sync);
    a non-finite epoch stops training and is reported as diverged.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params or epochs == 0:
        with torch.no_grad():
            return FitResult(final_loss=F.cross_entropy(model(x), y).item())
    optimizer = Adam(params, lr)  # torch.optim.Adam's arithmetic, bit for bit (trainables/optim.py)
    generator = torch.Generator().manual_seed(seed)
    n, step = len(y), 0
    model.train()
    for _ in range(epochs):
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
    model.eval()
    return FitResult(final_loss=epoch_loss)


def train_foundation(config: TrialConfig, modes: dict[float, Mode]) -> MLP:
    """The MLP pretrained on the mixture of modes (50/50 over 0 and 45 degrees by default)."""
    torch.manual_seed(config.seed)
    model = MLP(hidden=config.hidden).to(next(iter(modes.values())).train_x.device)
    x, y = mixture(modes, config.foundation_weights, config.seed)
    fit(model, x, y, epochs=config.foundation_epochs, lr=config.foundation_lr,
        batch_size=config.foundation_batch_size, seed=config.seed)  # fmt: skip
    model.eval()
    return model


def specialise(foundation: MLP, config: TrialConfig, target: Mode) -> tuple[MLP, FitResult]:
    """Adapt a copy of the frozen foundation to the target mode with the configured method."""
    model = adapt(foundation, config)
    result = fit(
        model, target.train_x, target.train_y, epochs=config.epochs, lr=specialisation_lr(config),
        batch_size=config.batch_size, seed=config.seed,
        sparsity_weight=config.sparsity_weight if config.gated else 0.0,
    )  # fmt: skip
    model.eval()
    return model, result


@torch.no_grad()
def evaluate(model: nn.Module, mode: Mode, hard: bool = False) -> float:
    """Test accuracy on one mode; `hard` evaluates with step gates 1[z > tau]."""
    set_hard(model, hard)
    try:
        return (model(mode.test_x).argmax(1) == mode.test_y).float().mean().item()
    finally:
        set_hard(model, False)


@dataclass
class GateStats:
    """Per-neuron firing on one mode's test digits (hard gates)."""

    rate: list[list[float]]  # [layer][neuron]: fraction of digits on which the neuron fires
    rate_by_class: list[list[list[float]]]  # [layer][class][neuron]
    high_activation_ratio: float | None  # fraction of hidden units whose hard gate is on (gated methods)
    active_ratio: float  # fraction of hidden units with a non-zero activation
    mean_gate: float | None  # mean soft gate over hidden units and digits


@torch.no_grad()
def gate_statistics(model: MLP, mode: Mode) -> GateStats:
    """Which neurons fire on a mode: a neuron fires when its hard-gated activation is non-zero
    (ReLU on and, for gated methods, z above tau)."""
    _, pre_activations = model.trace(mode.test_x)
    fires, gate_on, soft = [], [], []
    for z, activation in zip(pre_activations, model.activations, strict=True):
        on = z > 0
        if isinstance(activation, GatedReLU) and activation.has_gate:
            hard = activation.gate(z, hard=True).bool()
            gate_on.append(hard)
            soft.append(activation.gate(z, hard=False))
            on = on & hard
        fires.append(on.float())
    classes = int(mode.test_y.max().item()) + 1
    by_class = [
        [layer[mode.test_y == c].mean(0).tolist() if (mode.test_y == c).any() else [0.0] * layer.shape[1]
         for c in range(classes)]
        for layer in fires
    ]  # fmt: skip
    all_units = torch.cat(fires, dim=1)
    return GateStats(
        rate=[layer.mean(0).tolist() for layer in fires],
        rate_by_class=by_class,
        high_activation_ratio=torch.cat(gate_on, dim=1).float().mean().item() if gate_on else None,
        active_ratio=all_units.mean().item(),
        mean_gate=torch.cat(soft, dim=1).mean().item() if soft else None,
    )
