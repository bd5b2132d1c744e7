"""TauGate ablation without the gain: a learned threshold gate per hidden neuron, gain fixed at 1."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainables.methods.taugate import GATE_DIMENSIONS, GATE_SEARCH, NO_PEFT_GATE, hidden_units
from trainables.registry import GateBanking, Method, register

if TYPE_CHECKING:
    from trainables.config import TrialConfig
    from trainables.model import MLP


def install(model: MLP, config: TrialConfig) -> None:
    from trainables.methods.taugate.gate import install_gates

    install_gates(model, config, learn_tau=True, learn_gamma=False)


METHOD = register(Method(
    "threshold_only", install, default_lr=1e-2, dimensions=GATE_DIMENSIONS, gated=True, search=GATE_SEARCH,
    bank=GateBanking(tau=True, gamma=False), peft_note=NO_PEFT_GATE, trainable=hidden_units,
))  # fmt: skip
