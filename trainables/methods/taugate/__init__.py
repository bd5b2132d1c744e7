"""TauGate: a learned threshold `tau` and gain `gamma` per hidden neuron gate its activation
(the gate itself is in `trainables.methods.taugate.gate`)."""

from trainables.config import TrialConfig
from trainables.methods.taugate.gate import install_gates
from trainables.model import MLP

NAME = "taugate"
DEFAULT_LR = 1e-2
DIMENSIONS: tuple[str, ...] = ("gate_sharpness", "sparsity_weight")


def install(model: MLP, config: TrialConfig) -> None:
    install_gates(model, config, learn_tau=True, learn_gamma=True)
