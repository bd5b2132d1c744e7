"""TauGate: a learned threshold `tau` and gain `gamma` per hidden neuron gate its activation.

    a = gamma * g * relu(z),   g = sigmoid(s * (z - tau))  (soft, training)
                               g = 1[z > tau]              (hard, inference)

The Linear layers stay frozen; the gate replaces the hidden ReLU modules. `tau` starts at
-margin/s, so every gate starts open and the adapted model starts at the foundation's function.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from trainables.config import TrialConfig
from trainables.model import MLP

# --- the gate, written once: every path (a trial, a fused group, the bank, compact subnetworks,
# gate statistics) computes a gated unit with these two functions, whatever leading dimensions its
# tensors carry (elementwise math gives the same bits however tensors are stacked)


def step_or_sigmoid(
    z: torch.Tensor, tau: torch.Tensor, sharpness: torch.Tensor | float | None, hard: bool
) -> torch.Tensor:
    """The gate g: 1[z > tau] (hard, inference) or sigmoid(s * (z - tau)) (soft, training)."""
    if hard:
        return (z > tau).to(z.dtype)
    return torch.sigmoid(sharpness * (z - tau))


def gated(z: torch.Tensor, gamma: torch.Tensor | None, g: torch.Tensor | None) -> torch.Tensor:
    """The gated activation a = gamma * g * relu(z); no gate (gain only) is g = 1, no gain is gamma = 1
    (multiplying by an exact 1 changes no bit, so each form equals the full formula)."""
    scale = g if gamma is None else gamma if g is None else gamma * g
    return torch.relu(z) if scale is None else scale * torch.relu(z)


def mean_gate(soft: list[torch.Tensor], members: int) -> torch.Tensor:
    """The sparsity term's mean(g): each member's soft gates over every hidden unit and digit of its
    batch, as a [members] tensor (a lone trial is one member)."""
    return torch.cat([g.reshape(members, -1) for g in soft], dim=1).mean(1)


class HardSwitch:
    """A module whose gates can be switched between soft (training) and hard (inference): `hard`."""

    hard: bool


class GatedReLU(nn.Module, HardSwitch):
    """ReLU with a per-neuron gain and (optionally) a thresholded gate."""

    def __init__(self, width: int, sharpness: float, init_margin: float, learn_tau: bool, learn_gamma: bool):
        super().__init__()
        self.sharpness = sharpness
        self.has_gate = learn_tau
        self.hard = False
        self.last_gate: torch.Tensor | None = None  # the soft gates of the latest forward, for the sparsity loss
        tau = torch.full((width,), -init_margin / sharpness)
        gamma = torch.ones(width)
        # A tensor the method does not learn stays a buffer: it is saved, never trained or counted.
        self._register("tau", tau, learn_tau)
        self._register("gamma", gamma, learn_gamma)

    def _register(self, name: str, value: torch.Tensor, learn: bool) -> None:
        if learn:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def gate(self, z: torch.Tensor, hard: bool | None = None) -> torch.Tensor | None:
        """The gate on `z` (None without a threshold: the gate is always open)."""
        if not self.has_gate:
            return None
        return step_or_sigmoid(z, self.tau, self.sharpness, self.hard if hard is None else hard)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.last_gate = self.gate(z)
        return gated(z, self.gamma, self.last_gate)

    def extra_repr(self) -> str:
        return f"width={self.gamma.numel()}, s={self.sharpness:g}, gate={self.has_gate}, hard={self.hard}"


def install_gates(model: MLP, config: TrialConfig, learn_tau: bool, learn_gamma: bool) -> None:
    for index, width in enumerate(model.hidden):
        model.activations[index] = GatedReLU(
            width, config.gate_sharpness, config.gate_init_margin, learn_tau=learn_tau, learn_gamma=learn_gamma
        )


def gates(model: nn.Module) -> list[GatedReLU]:
    return [module for module in model.modules() if isinstance(module, GatedReLU) and module.has_gate]


def mean_soft_gate(model: nn.Module) -> torch.Tensor | None:
    """Mean gate over hidden units and batch of the latest forward (the sparsity term's g)."""
    latest = [g.last_gate for g in gates(model) if g.last_gate is not None]
    if not latest:
        return None
    return mean_gate(latest, 1)[0]


def set_hard(model: nn.Module, hard: bool) -> None:
    for module in model.modules():
        if isinstance(module, HardSwitch):
            module.hard = hard


@contextmanager
def hard_gates(model: nn.Module, hard: bool = True) -> Iterator[nn.Module]:
    """Within the block every gate of `model` is hard (or soft: `hard=False`); each gate's own
    setting is restored afterwards, also on an error (not simply switched back to soft)."""
    switches = [module for module in model.modules() if isinstance(module, HardSwitch)]
    before = [switch.hard for switch in switches]
    try:
        for switch in switches:
            switch.hard = hard
        yield model
    finally:
        for switch, setting in zip(switches, before, strict=True):
            switch.hard = setting


# A mode dimension: many (tau, gamma) pairs on one base (the mode bank's switching and mixed batches).
class IndexedGate(nn.Module):
    """`GatedReLU` for many modes at once: tau, gamma [modes, width], sharpness [modes].

    `forward(z, index)`: an int selects one mode for the whole batch (a view, no copy); a [batch]
    index tensor selects each sample's mode by a gather. The arithmetic is GatedReLU's, in its order
    (gamma * g * relu(z)): given the same pre-activations z, each sample's activation is bit for bit
    the one its own adapter gives."""

    def __init__(self, tau: torch.Tensor, gamma: torch.Tensor, sharpness: torch.Tensor):
        super().__init__()
        self.register_buffer("tau", tau)
        self.register_buffer("gamma", gamma)
        self.register_buffer("sharpness", sharpness)

    def forward(self, z: torch.Tensor, index: int | torch.Tensor, hard: bool = True) -> torch.Tensor:
        tau, gamma, sharpness = self.tau[index], self.gamma[index], self.sharpness[index]
        if isinstance(index, torch.Tensor):
            sharpness = sharpness.unsqueeze(1)
        return gated(z, gamma, step_or_sigmoid(z, tau, sharpness, hard))

    def extra_repr(self) -> str:
        modes, width = self.tau.shape
        return f"modes={modes}, width={width}"
