"""TauGate: a learned threshold `tau` and gain `gamma` per hidden neuron gate its activation
(the gate itself, written once, is `trainables.methods.taugate.gate`, imported when a model is built:
the method's record is read without torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainables.registry import GateBanking, Method, SearchRange, register

if TYPE_CHECKING:
    from trainables.config import TrialConfig
    from trainables.model import MLP

# the gate's own dimensions and their default Optuna ranges (its two ablations share them); the budget's
# ranges (tau's lr multiplier, a sparsity target, the method's own lr_scale and epochs) are optional:
# searched only when a spec's `search.ranges` names them
GATE_DIMENSIONS = ("gate_sharpness", "sparsity_weight", "tau_lr_multiplier", "sparsity_target")
GATE_SEARCH = {
    "gate_sharpness": SearchRange("float", 1, 100, log=True),
    "sparsity_weight": SearchRange("float", 1e-5, 1e-1, log=True),
    "tau_lr_multiplier": SearchRange("float", 1, 100, log=True, optional=True),
    "sparsity_target": SearchRange("float", 0.1, 0.9, optional=True),
    "lr_scale": SearchRange("float", 0.05, 5, log=True, optional=True),
    "epochs": SearchRange("int", 1, 15, optional=True),
}
NO_PEFT_GATE = "its threshold gate g = 1[z > tau] has no PEFT equivalent"


def hidden_units(widths, config) -> int:
    """One learned scalar per hidden neuron (a gate method's tau, or its gamma)."""
    return sum(widths[1:-1])


def install(model: MLP, config: TrialConfig) -> None:
    from trainables.methods.taugate.gate import install_gates

    install_gates(model, config, learn_tau=True, learn_gamma=True)


METHOD = register(Method(
    "taugate", install, default_lr=1e-2, dimensions=GATE_DIMENSIONS, gated=True, search=GATE_SEARCH,
    bank=GateBanking(tau=True, gamma=True), peft_note=NO_PEFT_GATE + " (PEFT's IA3 covers a gain, not a gate)",
    trainable=lambda widths, config: 2 * hidden_units(widths, config),  # tau and gamma
))  # fmt: skip
