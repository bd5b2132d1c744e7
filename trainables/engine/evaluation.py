"""Evaluation and neuron-level gate statistics of an adapted model on one mode's digits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainables.config import STRONG_ACTIVATION_LEVEL
from trainables.data import Mode
from trainables.methods.taugate.gate import GatedReLU, gated, hard_gates
from trainables.model import MLP


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
    with hard_gates(model, hard):
        return (model(x).argmax(1) == y).float().mean().item()


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
        gamma = hard = None
        if isinstance(activation, GatedReLU):
            gamma, hard = activation.gamma, activation.gate(z, hard=True)
        on = z > 0
        if hard is not None:
            gate_on.append(hard.bool())
            soft.append(activation.gate(z, hard=False))
            on = on & gate_on[-1]
        fires.append(on.float())
        strong.append(gated(z, gamma, hard) > STRONG_ACTIVATION_LEVEL)  # the hard-gated activation
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
