"""TauGate ablation without the gain: a learned threshold gate per hidden neuron, gain fixed at 1."""

from __future__ import annotations

from trainables.config import TrialConfig
from trainables.methods.taugate import GATE_DIMENSIONS, GATE_SEARCH, NO_PEFT_GATE
from trainables.methods.taugate.gate import install_gates
from trainables.model import MLP
from trainables.registry import GateBanking, Method, register


def install(model: MLP, config: TrialConfig) -> None:
    install_gates(model, config, learn_tau=True, learn_gamma=False)


METHOD = register(Method(
    "threshold_only", install, default_lr=1e-2, dimensions=GATE_DIMENSIONS, gated=True, search=GATE_SEARCH,
    bank=GateBanking(tau=True, gamma=False), peft_note=NO_PEFT_GATE,
))  # fmt: skip
