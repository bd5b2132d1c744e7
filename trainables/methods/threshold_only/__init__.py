"""TauGate ablation without the gain: a learned threshold gate per hidden neuron, gain fixed at 1."""

from trainables.config import TrialConfig
from trainables.methods.taugate.gate import install_gates
from trainables.model import MLP

NAME = "threshold_only"
DEFAULT_LR = 1e-2
DIMENSIONS: tuple[str, ...] = ("gate_sharpness", "sparsity_weight")


def install(model: MLP, config: TrialConfig) -> None:
    install_gates(model, config, learn_tau=True, learn_gamma=False)
